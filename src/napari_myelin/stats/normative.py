"""Normative comparison of ROI/tract statistics: z-scores, multi-parameter distance, NAWM flags.

A *normative table* holds, per label and map, the mean and standard deviation across healthy
subjects of the per-subject ROI means (long layout: ``label, name, map, units, n_subjects, mean,
sd, statistic, source``). :func:`build_normative` makes one from several subjects' statistics
tables (:func:`napari_myelin.stats.roi.roi_statistics` or their CSVs); :func:`compare_to_normative`
scores a new subject:

* ``z = (x - mean_norm) / sd_norm`` per label and map, ``x`` the subject's ROI mean;
* ``abnormal = |z| > 1.96`` (outside the central 95 % of a normal population);
* ``D = sqrt(sum_k z_k^2)`` over the ``k`` maps with a z-score in that label (a Euclidean distance
  in z-space, i.e. the Mahalanobis distance ignoring correlations between maps); under the
  normative hypothesis ``D^2`` follows a chi-square law with ``k`` degrees of freedom, so
  ``D_abnormal = D^2 > chi2_{0.95}(k)``.

References
----------
Dwyer et al., "Improved z-score approach for NAWM abnormality in MS", and the tract-profile
normative modelling of Marquand et al., "Understanding heterogeneity in clinical cohorts using
normative models", Biol Psychiatry 80:552 (2016).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sstats

from napari_myelin.utils.errors import InputError
from napari_myelin.stats.tables import read_stats_csv

#: Columns of a normative table, in order.
NORMATIVE_COLUMNS = ("label", "name", "map", "units", "n_subjects", "mean", "sd", "statistic", "source")
Z_CRITICAL = 1.96


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


def compare_to_normative(
    stats: pd.DataFrame, normative: pd.DataFrame, *, z_critical: float = Z_CRITICAL, statistic: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Z-scores of a subject's ROI statistics against a normative table.

    Parameters
    ----------
    stats : DataFrame
        Long-layout statistics (one or more subjects).
    normative : DataFrame
        Normative table (:func:`build_normative`); matched on ``label`` and ``map``.
    z_critical : float
        ``abnormal`` flags ``|z| > z_critical`` (1.96: two-sided 5 %).
    statistic : str, optional
        Column of ``stats`` that is scored (default: the table's ``statistic`` column, else ``mean``).

    Returns
    -------
    scored : DataFrame
        ``stats`` with ``norm_mean, norm_sd, z, abnormal, D, D_abnormal`` (``D`` repeated on the rows
        of its label). Labels/maps absent from the table get NaN z and ``abnormal`` False.
    distance : DataFrame
        One row per (subject, label): ``subject, label, name, n_maps, D, D_abnormal, abnormal_maps``.

    Raises
    ------
    InputError
        A map whose units differ between the subject and the normative table, or no label/map in
        common.
    """
    if statistic is None:
        stat = normative["statistic"].dropna().unique() if "statistic" in normative.columns else []
        statistic = str(stat[0]) if len(stat) else "mean"
    norm = normative.copy()
    norm["map"] = norm["map"].astype(str).str.lower()
    norm = norm.drop_duplicates(["label", "map"])
    s = stats.copy()
    s["map"] = s["map"].astype(str).str.lower()
    if "subject" not in s.columns:
        s["subject"] = ""
    s["subject"] = s["subject"].fillna("").astype(str)
    if "units" in s.columns and "units" in norm.columns:
        units_norm = dict(zip(norm["map"], norm["units"].fillna("").astype(str)))
        for m, u in s[["map", "units"]].drop_duplicates().itertuples(index=False):
            un = units_norm.get(m)
            if un is not None and un and u and str(un) != str(u):
                raise InputError(
                    f"normative: map '{m}' is in units '{u}' but the normative table has '{un}'; convert one of them."
                )
    keys = norm[["label", "map", "mean", "sd"]].rename(columns={"mean": "norm_mean", "sd": "norm_sd"})
    scored = s.merge(keys, on=["label", "map"], how="left")
    if scored["norm_mean"].notna().sum() == 0:
        raise InputError("normative: no label and map of the statistics is in the normative table; "
                         "use a table built with the same atlas and maps.")
    x = scored[statistic].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - scored["norm_mean"]) / scored["norm_sd"]
    z[~np.isfinite(z)] = np.nan
    scored["z"] = z
    scored["abnormal"] = np.abs(z) > z_critical
    g = scored.assign(_z2=z ** 2, _has=np.isfinite(z)).groupby(["subject", "label"], sort=True)
    dist = g.agg(name=("name", "first") if "name" in scored else ("label", "first"),
                 n_maps=("_has", "sum"), _ss=("_z2", lambda v: float(np.nansum(v))),
                 abnormal_maps=("abnormal", lambda v: ",".join(scored.loc[v.index[v.to_numpy()], "map"])))
    dist = dist.reset_index()
    dist["n_maps"] = dist["n_maps"].astype(int)
    dist["D"] = np.where(dist["n_maps"] > 0, np.sqrt(dist["_ss"]), np.nan)
    crit = sstats.chi2.ppf(0.95, np.maximum(dist["n_maps"], 1))
    dist["D_abnormal"] = (dist["n_maps"] > 0) & (dist["_ss"] > crit)
    dist = dist.drop(columns="_ss")
    scored = scored.merge(dist[["subject", "label", "D", "D_abnormal"]], on=["subject", "label"], how="left")
    return scored, dist[["subject", "label", "name", "n_maps", "D", "D_abnormal", "abnormal_maps"]]


def load_stats_tables(paths: Sequence[str | os.PathLike]) -> list[pd.DataFrame]:
    """Read several long-layout statistics CSVs (subject defaults to the file name)."""
    tables = []
    for p in paths:
        t = read_stats_csv(p)
        t.loc[t["subject"] == "", "subject"] = Path(p).stem
        tables.append(t)
    return tables
