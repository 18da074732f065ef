"""Tract normative models: one linear model per tract and map, fitted to controls' estimator outputs.

For tract :math:`l` and map :math:`k`, the controls' tract means :math:`y_i` (one per control :math:`i`
with a value) follow :math:`y_i = x_i^\\top \\beta + \\varepsilon_i`, :math:`\\varepsilon_i \\sim
N(0, \\sigma^2)`, with :math:`x_i` the coded covariates (:mod:`~napari_myelin.stats.normative_design`).
Closed-form fit over the :math:`n` controls with a value:

.. math::

    G = \\sum_i x_i x_i^\\top, \\quad \\hat\\beta = G^{-1} \\sum_i x_i y_i, \\quad
    s^2 = \\frac{1}{n - p} \\sum_i (y_i - x_i^\\top \\hat\\beta)^2,

all tract x map cells at once (``einsum`` over stacked :math:`p \\times p` systems). It is the posterior
of Bayesian linear regression under the reference prior, whose predictive is the Student law of
:mod:`~napari_myelin.stats.normative_scoring`.

Each control's **leave-one-out** predictive t is the externally studentised residual (no refit):

.. math::

    h_i = x_i^\\top G^{-1} x_i, \\quad s_{(i)}^2 = \\frac{(n - p) s^2 - e_i^2 / (1 - h_i)}{n - p - 1},
    \\quad t_i = \\frac{e_i}{s_{(i)} \\sqrt{1 - h_i}} \\sim t_{n-p-1};

their z over a tract's maps give the Ledoit-Wolf covariance of the multivariate distance.

:class:`NormativeModel` holds the fitted cells (``tracts``: ``label, name, map, units, method, n, df, s,
beta_<column>, ginv_<i>_<j>, mean, sd``; ``mean`` and ``sd`` are the prediction and residual SD at the
centre of the covariates), the covariance per tract, and ``info`` (model.json: version, controls,
covariates, atlas, estimator settings, SYNTHETIC label). Saved as a folder (:func:`save_normative_model`):
``model.json``, ``tracts.csv``, ``multivariate.csv`` and, when built, ``voxelwise/``
(:mod:`~napari_myelin.stats.normative_voxel`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_myelin.stats.normative_design import Design
from napari_myelin.stats.normative_scoring import ledoit_wolf, predictive_z
from napari_myelin.stats.tables import table_to_csv_bytes
from napari_myelin.utils.errors import InputError

FORMAT = "napari-myelin normative model"
FORMAT_VERSION = 1
#: Controls with every map of a tract that its covariance needs.
MIN_COVARIANCE_CONTROLS = 5
#: Stacked systems with a larger condition number are left unfitted (a covariate confounded in that cell).
MAX_CONDITION = 1e10


@dataclass
class NormativeModel:
    """A fitted normative model (see the module docstring).

    Attributes
    ----------
    design : Design
        Coding of the covariates.
    tracts : DataFrame
        One row per (label, map).
    covariance : dict of int to (list of str, ndarray, int)
        Per label: its maps, the Ledoit-Wolf covariance of the controls' leave-one-out z, and the
        number of controls it was estimated from. Empty for a table without controls' values.
    info : dict
        The content of ``model.json``.
    folder : Path or None
        Where it was read from (its ``voxelwise/`` maps are read from there).
    null_cache : dict
        Simulated null distributions of the distance, kept while the model is in use.
    """

    design: Design
    tracts: pd.DataFrame
    covariance: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    folder: Path | None = None
    null_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("Synthetic", False))

    @property
    def label(self) -> str:
        """How outputs name the model: ``SYNTHETIC <name>`` for a synthetic model."""
        name = str(self.info.get("Name") or self.model_id)
        return f"SYNTHETIC {name}" if self.synthetic and not name.startswith("SYNTHETIC") else name

    @property
    def model_id(self) -> str:
        return str(self.info.get("ModelID", ""))

    @property
    def voxelwise(self) -> dict:
        return dict(self.info.get("Voxelwise") or {})


def _fit_cells(y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Stacked least squares of every column of ``y`` (controls x cells, NaN = missing) on ``x``."""
    w = np.isfinite(y)
    y0 = np.where(w, y, 0.0)
    n_ctl, p = x.shape
    g = np.einsum("im,ij,ik->mjk", w.astype(float), x, x)
    n = w.sum(axis=0)
    ok = n >= p + 2
    ok[ok] = np.linalg.cond(g[ok]) < MAX_CONDITION
    ginv = np.full(g.shape, np.nan)
    ginv[ok] = np.linalg.inv(g[ok])
    beta = np.einsum("mjk,mk->mj", ginv, np.einsum("im,ij->mj", y0, x))
    resid = np.where(w, y0 - x @ beta.T, np.nan)
    df = (n - p).astype(float)
    s2 = np.where(ok, np.nansum(resid ** 2, axis=0) / np.where(ok, df, 1.0), np.nan)
    # no spread among the controls (e.g. a map clipped at 0, all 0 in a one-voxel tract): a predictive interval
    # of width 0 would flag any value, so the cell is left unfitted (its rows are not scored)
    ok &= np.nan_to_num(s2) > 0
    h = np.einsum("ij,mjk,ik->im", x, ginv, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2_loo = (df * s2 - resid ** 2 / (1 - h)) / (df - 1)
        t_loo = resid / np.sqrt(s2_loo * (1 - h))
    z_loo, _ = predictive_z(t_loo, df - 1)
    return {"ok": ok, "n": n, "df": df, "beta": beta, "ginv": ginv, "s": np.sqrt(s2), "z_loo": z_loo}


def _covariances(z_loo: np.ndarray, cells: pd.DataFrame) -> dict:
    """Ledoit-Wolf covariance of the leave-one-out z of each label's maps (complete controls only)."""
    out = {}
    for label, idx in cells.groupby("label").indices.items():
        z = z_loo[:, idx]
        complete = np.isfinite(z).all(axis=1)
        if idx.size < 2 or complete.sum() < MIN_COVARIANCE_CONTROLS:
            continue
        cov, _ = ledoit_wolf(z[complete])
        out[int(label)] = (cells["map"].to_numpy()[idx].tolist(), cov, int(complete.sum()))
    return out


#: Backends of the tract model: the closed form above, or PCNtoolkit's BLR (:mod:`.normative_pcn`).
BACKENDS = ("ols", "pcn")


def _pcn_refit(fit: dict, y: np.ndarray, x: np.ndarray) -> dict:
    """The cells refitted by PCNtoolkit's BLR (:mod:`.normative_pcn`); the leave-one-out z of the closed form are
    kept for the multivariate covariance."""
    from napari_myelin.stats.normative_pcn import as_cells, fit_pcn_cells

    beta, quad, version = fit_pcn_cells(y, x)
    cells = as_cells(beta, quad)
    good = fit["ok"] & np.isfinite(cells["s"]) & (cells["s"] > 0)
    out = dict(fit, ok=good, version=version)
    for key in ("beta", "s", "ginv", "df"):
        out[key] = np.where(good.reshape((-1,) + (1,) * (cells[key].ndim - 1)), cells[key], fit[key])
    return out


def fit_tract_model(values: pd.DataFrame, covariates: pd.DataFrame, design: Design,
                    info: dict | None = None, backend: str = "ols") -> NormativeModel:
    """Fit one linear model per (label, map) to the controls' tract means.

    Parameters
    ----------
    values : DataFrame
        Long table of the controls (``subject, label, name, map, units, mean``; ``method`` optional),
        rows with ``status`` other than ``ok`` ignored.
    covariates : DataFrame
        One row per control: ``subject`` and the covariates of ``design``.
    design : Design
        Coding of the covariates (:func:`~napari_myelin.stats.normative_design.make_design`).
    info : dict, optional
        Entries for ``model.json`` (controls, atlas, estimator settings, ``Synthetic``, ``Name`` ...).
    backend : {"ols", "pcn"}
        ``ols``: the closed form (module docstring); ``pcn``: PCNtoolkit's Bayesian linear regression
        (:mod:`~napari_myelin.stats.normative_pcn`, optional extra ``normative-pcn``).

    Returns
    -------
    NormativeModel

    Raises
    ------
    InputError
        A map reported in different units or by different methods, no cell with enough controls
        (:math:`n \\ge p + 2`), an unknown backend, or ``pcn`` without PCNtoolkit.
    """
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}.")
    data = values[values.get("status", pd.Series("ok", index=values.index)).fillna("ok") == "ok"].copy()
    data["method"] = data["method"].fillna("").astype(str) if "method" in data else ""
    for col in ("units", "method"):
        several = data.groupby("map")[col].nunique()
        if (several > 1).any():
            bad = several[several > 1].index[0]
            found = sorted(data.loc[data["map"] == bad, col].unique())
            raise InputError(f"normative: the controls' map '{bad}' comes with different {col} {found}; "
                             f"process every control the same way.")
    subjects = covariates["subject"].astype(str).tolist()
    y_table = data.pivot_table(index="subject", columns=["label", "map"], values="mean", aggfunc="first")
    y_table = y_table.reindex(subjects)
    x = design.matrix(covariates)
    fit = _fit_cells(y_table.to_numpy(float), x)
    if backend == "pcn":
        fit = _pcn_refit(fit, y_table.to_numpy(float), x)
    cells = pd.DataFrame(list(y_table.columns), columns=["label", "map"])
    meta = data.groupby(["label", "map"]).agg(name=("name", "first"), units=("units", "first"),
                                               method=("method", "first")).reset_index()
    cells = cells.merge(meta, on=["label", "map"], how="left")
    keep = fit["ok"]
    if not keep.any():
        raise InputError(f"normative: no tract has the {design_size(design) + 2} controls a model with "
                         f"{design_size(design)} parameters needs; add controls or covariates fewer.")
    tracts = _cells_table(cells, fit, design)[keep].reset_index(drop=True)
    covariance = _covariances(fit["z_loo"][:, keep], cells[keep].reset_index(drop=True))
    engine = ({"Name": "pcntoolkit BLR", "Version": fit["version"], "Predictive": "Gaussian"} if backend == "pcn"
              else {"Name": "closed-form linear model (reference-prior Bayesian regression)", "Predictive": "Student t"})
    info = dict(info or {}, Covariates=design.to_dict(), Subjects=subjects, Backend=engine)
    return NormativeModel(design, tracts, covariance, _with_id(info, tracts))


def flatten_parameters(params: dict, prefix: str = "") -> dict:
    """Nested sidecar ``Parameters`` as ``{"a.b": value}``."""
    flat = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_count(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_is_count(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def shared_settings(parameters: list[dict]) -> dict:
    """The estimator settings the controls share: the flattened ``Parameters`` entries equal in every control.

    Integer entries are left out: they are counts of the data (voxels fitted, skipped ...) as often as
    settings, and a count shared by chance would refuse every new subject.
    """
    flats = [flatten_parameters(p) for p in parameters]
    if not flats:
        return {}
    first = flats[0]
    return {k: v for k, v in first.items()
            if not _is_count(v) and all(k in f and json.dumps(f[k], sort_keys=True) == json.dumps(v, sort_keys=True)
                                        for f in flats[1:])}


def design_size(design: Design) -> int:
    return len(design.columns)


def _cells_table(cells: pd.DataFrame, fit: dict, design: Design) -> pd.DataFrame:
    """The per-cell table: identification, n, df, s, beta_*, ginv_*_* (upper triangle), mean, sd."""
    table = cells[["label", "name", "map", "units", "method"]].copy()
    table["label"] = table["label"].astype(int)
    table["n"] = fit["n"].astype(int)
    table["df"] = fit["df"]
    table["s"] = fit["s"]
    p = design_size(design)
    for j, col in enumerate(design.columns):
        table[f"beta_{col}"] = fit["beta"][:, j]
    for i in range(p):
        for j in range(i, p):
            table[f"ginv_{i}_{j}"] = fit["ginv"][:, i, j]
    table["mean"] = fit["beta"][:, 0]
    table["sd"] = fit["s"]
    return table


def unpack(tracts: pd.DataFrame, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """``beta`` (cells x p) and ``ginv`` (cells x p x p) of a model's cell table."""
    p = design_size(design)
    beta = tracts[[f"beta_{c}" for c in design.columns]].to_numpy(float)
    ginv = np.empty((len(tracts), p, p))
    for i in range(p):
        for j in range(i, p):
            ginv[:, i, j] = ginv[:, j, i] = tracts[f"ginv_{i}_{j}"].to_numpy(float)
    return beta, ginv


def model_from_table(table: pd.DataFrame, info: dict | None = None) -> NormativeModel:
    """An intercept-only model from a normative table (``label, name, map, units, n_subjects, mean, sd``).

    The table's mean and SD of ``n_subjects`` controls are :math:`\\hat\\beta_0` and :math:`s`, with
    :math:`G^{-1} = 1/n` and :math:`n - 1` degrees of freedom; a table carries no covariance between maps
    (its distance assumes independent maps, see :func:`napari_myelin.stats.normative.score_subject`).
    """
    n = table["n_subjects"].to_numpy(float) if "n_subjects" in table else np.full(len(table), np.nan)
    if not np.all(n >= 2):
        raise InputError("normative table: every row needs n_subjects >= 2 (the number of controls behind it).")
    tracts = pd.DataFrame({
        "label": table["label"].astype(int), "name": table.get("name", pd.Series("", index=table.index)),
        "map": table["map"].astype(str).str.lower(), "units": table.get("units", ""), "method": "",
        "n": n.astype(int), "df": n - 1, "s": table["sd"].to_numpy(float),
        "beta_intercept": table["mean"].to_numpy(float), "ginv_0_0": 1.0 / n,
        "mean": table["mean"].to_numpy(float), "sd": table["sd"].to_numpy(float)})
    info = dict(info or {}, Covariates=[], Kind="table")
    return NormativeModel(Design(), tracts.reset_index(drop=True), {}, _with_id(info, tracts))


def _with_id(info: dict, tracts: pd.DataFrame) -> dict:
    digest = hashlib.sha256(table_to_csv_bytes(tracts) + json.dumps(info, sort_keys=True, default=str).encode())
    return {"Format": FORMAT, "FormatVersion": FORMAT_VERSION, **info, "ModelID": digest.hexdigest()[:16]}


def _covariance_table(covariance: dict) -> pd.DataFrame:
    rows = [{"label": label, "row": a, "col": b, "value": float(cov[i, j]), "n": n}
            for label, (maps, cov, n) in covariance.items()
            for i, a in enumerate(maps) for j, b in enumerate(maps)]
    return pd.DataFrame(rows, columns=["label", "row", "col", "value", "n"])


def save_normative_model(model: NormativeModel, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` into ``folder`` (replacing a model there), atomically.

    Everything is written into a temporary folder beside it, then renamed into place, so an interrupted
    write leaves the previous model (or nothing). ``extra`` maps relative file names to a writer
    ``f(path)`` (the voxelwise maps).

    Raises
    ------
    InputError
        The folder exists and is not a normative model, or cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not (folder / "model.json").is_file():
        raise InputError(f"{folder}: exists and is not a normative model; choose a new folder for --out.")
    if not folder.parent.is_dir():
        raise InputError(f"{folder}: the folder {folder.parent} does not exist; create it first.")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise InputError(f"{folder}: cannot be written ({exc.strerror or exc}).") from None
    try:
        (tmp / "model.json").write_text(json.dumps(model.info, indent=2, default=str), encoding="utf-8")
        (tmp / "tracts.csv").write_bytes(table_to_csv_bytes(model.tracts))
        (tmp / "multivariate.csv").write_bytes(table_to_csv_bytes(_covariance_table(model.covariance)))
        for writer in (extra or {}).values():
            writer(tmp)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model.folder = folder
    return folder


def load_normative_model(folder: str | os.PathLike) -> NormativeModel:
    """Read a model written by :func:`save_normative_model`.

    Raises
    ------
    InputError
        Not a model folder, or written by a newer format version.
    """
    folder = Path(folder)
    path = folder / "model.json"
    if not path.is_file():
        raise InputError(f"{folder}: is not a normative model (no model.json); build one with "
                         "'napari-myelin normative build'.")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("Format") != FORMAT or int(info.get("FormatVersion", 0)) > FORMAT_VERSION:
        raise InputError(f"{folder}: model format {info.get('FormatVersion')} is not one this napari-myelin "
                         f"reads (version {FORMAT_VERSION}); update napari-myelin.")
    tracts = pd.read_csv(folder / "tracts.csv", keep_default_na=False, na_values=[""])
    tracts["units"] = tracts["units"].fillna("").astype(str)
    tracts["method"] = tracts["method"].fillna("").astype(str)
    cov_table = pd.read_csv(folder / "multivariate.csv")
    covariance = {}
    for label, part in cov_table.groupby("label"):
        maps = list(dict.fromkeys(part["row"]))
        cov = part.pivot(index="row", columns="col", values="value").loc[maps, maps].to_numpy(float)
        covariance[int(label)] = (maps, cov, int(part["n"].iloc[0]))
    return NormativeModel(Design.from_dict(info.get("Covariates", [])), tracts, covariance, info, folder)
