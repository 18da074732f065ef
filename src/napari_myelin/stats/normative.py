"""Normative scoring of ROI/tract statistics: predictive z, FDR flags, multivariate distance; normative tables.

A subject's tract means are scored against a :class:`~napari_myelin.stats.normative_model.NormativeModel`
(built from the user's controls with :func:`napari_myelin.workflows.normative.build_normative_model`) by
:func:`score_subject`:

* per tract and map, the predictive t of the model (which includes the model's own estimation error),
  its normal-equivalent ``z`` and two-sided ``p`` (:mod:`~napari_myelin.stats.normative_scoring`);
* ``q``: Benjamini-Hochberg adjusted p over the subject's tracts of each map; ``abnormal = q <= alpha``;
* per tract, ``D = sqrt(z' S^-1 z)`` over its maps with the Ledoit-Wolf covariance ``S`` of the controls'
  leave-one-out z, its simulated null p-value ``D_p``, ``D_q`` (Benjamini-Hochberg over the subject's
  tracts) and ``D_abnormal = D_q <= alpha``.

Before scoring, a model that does not fit the subject is refused with one sentence
(:func:`check_compatible`): other units, another estimator method or setting, another atlas, a
covariate level the controls do not have; covariates outside the controls' range are warned about.

A *normative table* (long layout: ``label, name, map, units, n_subjects, mean, sd, statistic, source``)
is the older, covariate-free summary: :func:`build_normative` pools several subjects' statistics tables,
and :func:`compare_to_normative` scores against a table (as an intercept-only model: ``mean`` and ``sd``
of ``n_subjects`` controls, predictive t with ``n - 1`` degrees of freedom; a table has no covariance
between maps, so its ``D`` treats the maps as independent, ``D^2 ~ chi2(k)``).

References
----------
Marquand et al., "Understanding heterogeneity in clinical cohorts using normative models", Biol
Psychiatry 80:552 (2016); Crawford & Howell, Clin Neuropsychol 12:482 (1998); Benjamini & Hochberg,
J R Stat Soc B 57:289 (1995); Ledoit & Wolf, J Multivar Anal 88:365 (2004).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sstats

from napari_myelin.utils.errors import InputError
from napari_myelin.stats.normative_model import NormativeModel, flatten_parameters, model_from_table, unpack
from napari_myelin.stats.normative_scoring import (NULL_SEED, bh_qvalues, distance_null, mahalanobis_sq,
                                                   null_p_value, predictive_z)
from napari_myelin.stats.tables import read_stats_csv

#: Columns of a normative table, in order.
NORMATIVE_COLUMNS = ("label", "name", "map", "units", "n_subjects", "mean", "sd", "statistic", "source")
#: Default false-discovery rate of the flags.
ALPHA = 0.05

#: Fewest controls for the multivariate distance :math:`D`: its simulated null (:func:`distance_null`) treats the
#: controls' leave-one-out z as Gaussian, which fails on few degrees of freedom (a healthy demo subject scored
#: against 3 controls got 133 flagged tract rows); below this, D is NaN and nothing is flagged by it.
MIN_CONTROLS_DISTANCE = 10


def build_normative(
    tables: Sequence[pd.DataFrame], *, statistic: str = "mean", source: str = "", min_subjects: int = 2
) -> pd.DataFrame:
    """Normative table (mean and SD across subjects of each ROI's ``statistic``) from healthy subjects.

    Parameters
    ----------
    tables : sequence of DataFrame
        Long-layout statistics tables, one per subject (or several subjects per table, told apart by
        their ``subject`` column). Rows whose ``status`` is not ``"ok"`` are ignored.
    statistic : str
        Per-subject ROI statistic that is pooled (``"mean"`` or ``"median"``).
    source : str
        Free text stored in the ``source`` column (e.g. how the subjects were obtained).
    min_subjects : int
        Rows with fewer subjects are dropped (an SD needs at least two).

    Returns
    -------
    DataFrame
        Columns :data:`NORMATIVE_COLUMNS`; ``sd`` is the sample SD (n-1) across subjects.

    Raises
    ------
    InputError
        No table, a missing column, a map reported in different units by different subjects, or
        fewer than ``min_subjects`` subjects.
    """
    if not tables:
        raise InputError("normative: no statistics table was given; pass one per healthy subject.")
    parts = []
    for i, t in enumerate(tables):
        missing = {"label", "map", statistic} - set(t.columns)
        if missing:
            raise InputError(f"normative: table {i + 1} lacks the column(s) {sorted(missing)}.")
        t = t.copy()
        subj = t["subject"].fillna("").astype(str) if "subject" in t.columns else pd.Series("", index=t.index)
        t["_subject"] = np.where(subj == "", f"#table{i + 1}", subj)
        if "status" in t.columns:
            t = t[t["status"].fillna("ok") == "ok"]
        for col, default in (("units", ""), ("name", "")):
            if col not in t.columns:
                t[col] = default
        t["units"] = t["units"].fillna("").astype(str)
        parts.append(t)
    data = pd.concat(parts, ignore_index=True)
    data["map"] = data["map"].astype(str).str.lower()
    n_subjects = data["_subject"].nunique()
    if n_subjects < min_subjects:
        raise InputError(
            f"normative: {n_subjects} subject(s) given; a normative table needs at least {min_subjects} "
            "healthy subjects."
        )
    units = data.groupby("map")["units"].nunique()
    if (units > 1).any():
        bad = units[units > 1].index[0]
        found = sorted(data.loc[data["map"] == bad, "units"].unique())
        raise InputError(f"normative: map '{bad}' comes in different units {found}; use one unit for every subject.")
    per_subject = data.groupby(["label", "map", "_subject"], sort=True).agg(
        value=(statistic, "first"), name=("name", "first"), units=("units", "first")
    ).reset_index()
    per_subject = per_subject[np.isfinite(per_subject["value"].astype(float))]
    grouped = per_subject.groupby(["label", "map"], sort=True)
    table = grouped.agg(
        name=("name", "first"), units=("units", "first"), n_subjects=("value", "size"),
        mean=("value", "mean"), sd=("value", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan),
    ).reset_index()
    table = table[table["n_subjects"] >= min_subjects]
    table["statistic"] = statistic
    table["source"] = source
    table["label"] = table["label"].astype(int)
    return table[list(NORMATIVE_COLUMNS)].reset_index(drop=True)


def read_normative(path: str | os.PathLike) -> pd.DataFrame:
    """Read a normative table CSV (checks its columns)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: normative table not found.")
    try:
        table = pd.read_csv(path, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc}).") from None
    need = {"label", "map", "mean", "sd"}
    if not need <= set(table.columns):
        raise InputError(
            f"{path}: a normative table needs columns {sorted(need)}; found {list(table.columns)[:8]} "
            "(build one with 'napari-myelin normative')."
        )
    table["map"] = table["map"].astype(str).str.lower()
    table["label"] = table["label"].astype(int)
    if "units" not in table.columns:
        table["units"] = ""
    table["units"] = table["units"].fillna("").astype(str)
    return table


#: Columns :func:`score_subject` adds to each row of the statistics (see ``COLUMN_DOC`` in
#: :mod:`~napari_myelin.stats.tables` and docs/statistics.md).
SCORE_COLUMNS = ("norm_mean", "norm_sd", "t", "df", "z", "p", "q", "abnormal", "D", "D_p", "D_q", "D_abnormal",
                 "normative_model")


@dataclass
class SubjectScores:
    """What :func:`score_subject` returns.

    Attributes
    ----------
    rows : DataFrame
        The statistics rows with :data:`SCORE_COLUMNS` added (NaN z and ``abnormal`` False where the model
        has no cell for the row's tract and map).
    tracts : DataFrame
        One row per (subject, label): ``subject, label, name, n_maps, D, D_p, D_q, D_abnormal,
        abnormal_maps, normative_model``.
    messages : list of str
        Warnings (covariates outside the controls' range).
    """

    rows: pd.DataFrame
    tracts: pd.DataFrame
    messages: list[str] = field(default_factory=list)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def check_compatible(stats: pd.DataFrame, model: NormativeModel, settings: Mapping[str, Mapping] | None = None) -> None:
    """Refuse, with one sentence, a model that does not fit these statistics.

    Parameters
    ----------
    stats : DataFrame
        Long-layout statistics (``label, name, map, units``; ``method`` optional).
    model : NormativeModel
    settings : mapping of map name to dict, optional
        The estimator parameters of the subject's maps (their sidecars' ``Parameters``), compared with
        the settings the model's controls share (``model.info["Maps"][map]["Settings"]``).

    Raises
    ------
    InputError
        No tract and map in common, a map in other units or from another method, another estimator
        setting, or tract names that differ from the model's (another atlas).
    """
    cells = model.tracts
    common = stats.merge(cells[["label", "map", "name", "units", "method"]], on=["label", "map"],
                         suffixes=("", "_model"))
    if common.empty:
        raise InputError(f"normative model {model.label}: has no tract and map of these statistics; use a model "
                         "built with the same atlas and maps.")
    for row in common.drop_duplicates("map").itertuples(index=False):
        if str(row.units) and str(row.units_model) and str(row.units) != str(row.units_model):
            raise InputError(f"normative: map '{row.map}' is in units '{row.units}' but the model has "
                             f"'{row.units_model}'; convert one of them.")
        method = str(getattr(row, "method", "") or "")
        if method and row.method_model and method != row.method_model:
            raise InputError(f"normative: map '{row.map}' comes from '{method}' but the model's controls from "
                             f"'{row.method_model}'; score it with a model built from the same estimator.")
    names = common[common["name"].astype(str).str.strip().str.lower()
                   != common["name_model"].astype(str).str.strip().str.lower()]
    if "name" in stats and not names.empty:
        r = names.iloc[0]
        raise InputError(f"normative: tract {r['label']} is '{r['name']}' here but '{r['name_model']}' in the model; "
                         "the model was built on another atlas.")
    recorded = model.info.get("Maps", {})
    for name, nested in (settings or {}).items():
        params = flatten_parameters(nested)
        for key, value in (recorded.get(name, {}).get("Settings") or {}).items():
            if key in params and not _same(params[key], value):
                raise InputError(f"normative: map '{name}' was estimated with {key}={params[key]!r} but the model's "
                                 f"controls with {key}={value!r}; use a model built from controls processed the same way.")


def _covariate_rows(rows: pd.DataFrame, model: NormativeModel, covariates) -> tuple[np.ndarray, list[str]]:
    """Design matrix of each row (its subject's covariates) and the extrapolation warnings."""
    design = model.design
    subjects = list(dict.fromkeys(rows["subject"]))
    if isinstance(covariates, pd.DataFrame):
        given = covariates.assign(subject=covariates["subject"].astype(str)).set_index("subject")
        per_subject = {s: (given.loc[s].to_dict() if s in given.index else {}) for s in subjects}
    else:
        per_subject = {s: dict(covariates or {}) for s in subjects}
    notes = []
    for s in subjects:
        notes += design.check_subject(per_subject[s], who=s or "the subject")
    table = pd.DataFrame([per_subject[s] for s in rows["subject"]], index=rows.index,
                         columns=design.names)
    return design.matrix(table), notes


def score_subject(stats: pd.DataFrame, model: NormativeModel, covariates=None, *, alpha: float = ALPHA,
                  statistic: str | None = None, settings: Mapping[str, Mapping] | None = None) -> SubjectScores:
    """Score statistics against a normative model (module docstring): predictive z, FDR flags, distance.

    Parameters
    ----------
    stats : DataFrame
        Long-layout statistics of one or more subjects (``subject`` tells them apart).
    model : NormativeModel
        Built with :func:`napari_myelin.workflows.normative.build_normative_model`, read with
        :func:`~napari_myelin.stats.normative_model.load_normative_model`, or a table
        (:func:`~napari_myelin.stats.normative_model.model_from_table`).
    covariates : mapping or DataFrame, optional
        The subject's covariates (``{"age": 41, "sex": "F"}``), or a table with a ``subject`` column and
        one row per subject; needed when the model has covariates.
    alpha : float
        False-discovery rate of ``abnormal`` (per map, over the subject's tracts) and ``D_abnormal``.
    statistic : str, optional
        Column scored (default: the model's, ``mean``).
    settings : mapping, optional
        The subject's estimator settings per map (see :func:`check_compatible`).

    Returns
    -------
    SubjectScores

    Raises
    ------
    InputError
        See :func:`check_compatible`; a covariate the model needs is missing or has a level the controls
        do not have; ``alpha`` outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha {alpha}: give a false-discovery rate between 0 and 1, e.g. 0.05.")
    rows = stats.copy()
    rows["map"] = rows["map"].astype(str).str.lower()
    rows["subject"] = rows["subject"].fillna("").astype(str) if "subject" in rows else ""
    rows["label"] = rows["label"].astype(int)
    check_compatible(rows, model, settings)
    statistic = statistic or str(model.info.get("Statistic", "mean"))
    x0, notes = _covariate_rows(rows, model, covariates)
    if model.folder is not None and (not model.covariance
                                     or min(n for _, _, n in model.covariance.values()) < MIN_CONTROLS_DISTANCE):
        notes.append(f"normative model {model.label}: no covariance of at least {MIN_CONTROLS_DISTANCE} controls, "
                     "so no multivariate distance D is computed (D and D_abnormal stay empty).")
    cell = pd.Series(np.arange(len(model.tracts)), index=pd.MultiIndex.from_frame(model.tracts[["label", "map"]]))
    idx = cell.reindex(pd.MultiIndex.from_frame(rows[["label", "map"]])).to_numpy()
    have = np.isfinite(idx)
    i = np.where(have, idx, 0).astype(int)
    beta, ginv = unpack(model.tracts, model.design)
    mu = np.einsum("rj,rj->r", x0, beta[i])
    quad = np.einsum("rj,rjk,rk->r", x0, ginv[i], x0)
    sd_pred = model.tracts["s"].to_numpy(float)[i] * np.sqrt(1.0 + quad)
    ok = have & (rows.get("status", pd.Series("ok", index=rows.index)).fillna("ok") == "ok").to_numpy()
    rows["norm_mean"] = np.where(have, mu, np.nan)
    rows["norm_sd"] = np.where(have, sd_pred, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows["t"] = np.where(ok, (rows[statistic].to_numpy(float) - mu) / sd_pred, np.nan)
    rows["df"] = np.where(have, model.tracts["df"].to_numpy(float)[i], np.nan)
    rows["z"], rows["p"] = predictive_z(rows["t"], rows["df"])
    rows["q"] = bh_qvalues(rows["p"], rows["subject"] + "|" + rows["map"])
    rows["abnormal"] = rows["q"].to_numpy() <= alpha
    tracts = _distances(rows, model, alpha)
    rows = rows.merge(tracts[["subject", "label", "D", "D_p", "D_q", "D_abnormal"]], on=["subject", "label"],
                      how="left")
    rows["D_abnormal"] = rows["D_abnormal"].fillna(False).astype(bool)
    rows["normative_model"] = model.label
    return SubjectScores(rows, tracts, notes)


def _distance(group: pd.DataFrame, model: NormativeModel, label: int, cache: dict) -> tuple[int, float, float]:
    """``(k, D, P_D)`` of one subject's tract (NaN when fewer than two maps can enter)."""
    z = group.set_index("map")["z"]
    z = z[np.isfinite(z.to_numpy(float))]
    if model.folder is None:  # a table: independent maps, D^2 ~ chi2(k)
        d2 = float((z ** 2).sum())
        return z.size, np.sqrt(d2) if z.size else np.nan, float(sstats.chi2.sf(d2, z.size)) if z.size else np.nan
    # a built model without a covariance for this tract (too few controls): its maps are correlated (MWF and
    # IEWF, MD and RD ...), so chi2(k) of the summed z^2 would flag healthy subjects; no distance is computed
    if label not in model.covariance:
        return z.size, np.nan, np.nan
    maps, cov, n = model.covariance[label]
    keep = [j for j, m in enumerate(maps) if m in z.index]
    if len(keep) < 2 or n < MIN_CONTROLS_DISTANCE:
        return len(keep), np.nan, np.nan
    sub = cov[np.ix_(keep, keep)]
    key = (label, tuple(keep))
    if key not in cache:
        cache[key] = distance_null(sub, n, seed=[NULL_SEED, label])
    d2 = float(mahalanobis_sq(z.loc[[maps[j] for j in keep]].to_numpy(float), sub))
    return len(keep), np.sqrt(d2), null_p_value(d2, cache[key])


def _distances(rows: pd.DataFrame, model: NormativeModel, alpha: float) -> pd.DataFrame:
    """One row per (subject, label): the multivariate distance, its p, q and flag, and the flagged maps."""
    cache = model.null_cache
    out = []
    for (subject, label), group in rows.groupby(["subject", "label"], sort=True):
        k, d, p = _distance(group, model, int(label), cache)
        out.append({"subject": subject, "label": int(label), "name": group["name"].iloc[0] if "name" in group else "",
                    "n_maps": k, "D": d, "D_p": p,
                    "abnormal_maps": ",".join(group.loc[group["abnormal"], "map"])})
    tracts = pd.DataFrame(out, columns=["subject", "label", "name", "n_maps", "D", "D_p", "abnormal_maps"])
    tracts["D_q"] = bh_qvalues(tracts["D_p"], tracts["subject"])
    tracts["D_abnormal"] = tracts["D_q"].to_numpy() <= alpha
    tracts["normative_model"] = model.label
    return tracts[["subject", "label", "name", "n_maps", "D", "D_p", "D_q", "D_abnormal", "abnormal_maps",
                   "normative_model"]]


def compare_to_normative(stats: pd.DataFrame, normative, *, alpha: float = ALPHA,
                         statistic: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score statistics against a normative table or model (:func:`score_subject`).

    Parameters
    ----------
    stats : DataFrame
        Long-layout statistics (one or more subjects).
    normative : DataFrame or NormativeModel
        A normative table (:func:`build_normative`, :func:`read_normative`; scored as an intercept-only
        model) or a covariate-free model.
    alpha : float
        False-discovery rate of the flags.
    statistic : str, optional
        Column of ``stats`` that is scored (default: the table's ``statistic`` column, else ``mean``).

    Returns
    -------
    scored, distance : DataFrame
        :attr:`SubjectScores.rows` and :attr:`SubjectScores.tracts`.
    """
    if isinstance(normative, NormativeModel):
        model = normative
    else:
        stat = normative["statistic"].dropna().unique() if "statistic" in normative.columns else []
        source = normative["source"].dropna().astype(str) if "source" in normative.columns else pd.Series([], dtype=str)
        synthetic = bool(len(source)) and source.str.startswith("SYNTHETIC").all()
        model = model_from_table(normative, {"Statistic": str(stat[0]) if len(stat) else "mean",
                                             "Synthetic": synthetic,
                                             "Name": "normative table"})
    scores = score_subject(stats, model, alpha=alpha, statistic=statistic)
    return scores.rows, scores.tracts

def load_stats_tables(paths: Sequence[str | os.PathLike]) -> list[pd.DataFrame]:
    """Read several long-layout statistics CSVs (subject defaults to the file name)."""
    tables = []
    for p in paths:
        t = read_stats_csv(p)
        t.loc[t["subject"] == "", "subject"] = Path(p).stem
        tables.append(t)
    return tables
