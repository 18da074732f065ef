"""ROI and tract statistics of quantitative maps: tables per label and correlations between maps.

:func:`roi_statistics` summarises any set of maps (MWF, FA, MK, chi, T1 ...) over any integer label
volume (drawn ROIs or atlas tracts): per label and map the number of voxels, the ROI volume in
mm^3, the mean, standard deviation, median, interquartile range, minimum and maximum, with the
map's units, source file and method. It runs in three named steps:

1. :func:`napari_myelin.stats.grid.prepare` brings labels, maps and the optional white-matter
   probability onto one statistics grid (the labels' grid by default; resampling, the refusals
   and the percent scaling of water fractions are described there);
2. :func:`napari_myelin.stats.grouped.grouped_statistics` computes every label's statistics of
   one map at once, vectorised (that module defines each number: mean, SD, percentiles, weighted
   variants);
3. the rows are assembled in the long layout (:data:`napari_myelin.stats.tables.LONG_COLUMNS`);
   :mod:`napari_myelin.stats.tables` also holds the wide layout and the CSV files.

``n_voxels``/``volume_mm3`` describe the ROI itself (voxels carrying the label on the statistics
grid times the voxel volume); ``n_used`` counts the voxels that entered the statistics of that
map (finite, inside the map, passing the WM threshold).

An ROI without usable voxels is not silently NaN: its row has ``status`` saying why (``"empty: no
voxel has this label"``, ``"empty: no finite map value in the ROI"``, ...) and
:attr:`RoiStatistics.messages` lists it.

:func:`correlation_table` correlates maps across labels (per-label statistics) or across voxels;
:func:`roi_values` gives the values of one map per label (box plots).

The CSV functions, the drawn-shape rasteriser and :func:`is_water_fraction` are re-exported here
(:data:`__all__`), where the CLI, the widgets and :mod:`napari_myelin.api` have always found them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sstats

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step
from napari_myelin.io.volume import Volume
from napari_myelin.stats.drawing import polygons_to_labels
from napari_myelin.stats.grid import Prepared, is_water_fraction, prepare
from napari_myelin.stats.grouped import grouped_statistics
from napari_myelin.stats.tables import (
    COLUMN_DOC, LONG_COLUMNS, WIDE_STATS, read_stats_csv, table_to_csv_bytes, wide_table, write_csv,
)

__all__ = [
    "COLUMN_DOC", "LONG_COLUMNS", "WEIGHTINGS", "WIDE_STATS", "RoiStatistics", "correlation_table",
    "grouped_statistics", "is_water_fraction", "polygons_to_labels", "read_stats_csv", "roi_statistics",
    "roi_values", "table_to_csv_bytes", "wide_table", "write_csv",
]

WEIGHTINGS = ("none", "weighted", "threshold")


@dataclass
class RoiStatistics:
    """Result of :func:`roi_statistics`.

    Attributes
    ----------
    table : pandas.DataFrame
        Long layout, columns :data:`LONG_COLUMNS` (one row per label and map).
    messages : list of str
        Sentences about empty ROIs, resampled maps and voxels outside a map.
    """

    table: pd.DataFrame
    messages: list[str] = field(default_factory=list)

    @property
    def empty(self) -> pd.DataFrame:
        """Rows of ROIs that had no usable voxel (``status != "ok"``)."""
        return self.table[self.table["status"] != "ok"]

    def wide(self) -> pd.DataFrame:
        """Wide layout: one row per (subject, label), see :func:`wide_table`."""
        return wide_table(self.table)


# ----------------------------------------------------------------------------------------------
# per-label statistics


@dataclass
class _Groups:
    """The reported labels and where each voxel of the statistics grid belongs."""

    values: np.ndarray   # reported label values (sorted)
    names: list[str]     # their names
    pos: np.ndarray      # row of each voxel's label, clipped to the last row (use with ``member``)
    member: np.ndarray   # the voxel carries a reported label
    counts: np.ndarray   # voxels per reported label


def _check_weighting(weighting: str, weights, threshold: float) -> None:
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting: '{weighting}' is not one of {', '.join(WEIGHTINGS)}.")
    if weighting != "none" and weights is None:
        raise InputError(f"weighting: '{weighting}' needs a WM probability map; give one or use 'none'.")
    if weighting == "threshold" and not (0.0 <= float(threshold) <= 1.0):
        raise InputError(f"threshold: {threshold} is not a probability; give a value in 0..1.")


def _label_names(lut: pd.DataFrame | None, label_values: np.ndarray) -> list[str]:
    names = {}
    if lut is not None and len(lut):
        names = dict(zip(lut["index"].astype(int), lut["name"].astype(str)))
    return [names.get(int(v), f"label {int(v)}") for v in label_values]


def _lut_frame(lut) -> pd.DataFrame | None:
    if lut is None:
        return None
    if isinstance(lut, pd.DataFrame):
        frame = lut
    elif isinstance(lut, Mapping) and "index" in lut:
        frame = pd.DataFrame(dict(lut))
    elif isinstance(lut, Mapping):
        frame = pd.DataFrame({"index": list(lut.keys()), "name": list(lut.values())})
    else:
        raise InputError("lut: give a table with 'index' and 'name' columns or a {label: name} mapping.")
    if not {"index", "name"} <= set(frame.columns):
        raise InputError(f"lut: a lookup table needs 'index' and 'name' columns; found {list(frame.columns)}.")
    return frame


def _reported_labels(flat: np.ndarray, lut_frame: pd.DataFrame | None, label_values) -> np.ndarray:
    """The labels to report: ``label_values``, else the table's labels and those present, else those present."""
    present = np.unique(flat[flat > 0])
    if label_values is not None:
        values = np.unique(np.asarray(list(label_values), dtype=np.int64))
        values = values[values > 0]
        if values.size == 0:
            raise InputError("label_values: no positive label was given; list the labels to report.")
        return values
    if lut_frame is not None:
        lut_idx = lut_frame["index"].astype(np.int64).to_numpy()
        return np.union1d(lut_idx[lut_idx > 0], present)
    return present


def _groups(flat: np.ndarray, values: np.ndarray, names: list[str]) -> _Groups:
    """Position of each voxel's label in ``values`` (``n_groups`` for background and labels not reported)."""
    n_groups = values.size
    top = int(max(values.max() if n_groups else 0, flat.max()))
    if top < 50_000_000:  # direct lookup table label -> row (n_groups for labels not reported)
        lookup = np.full(top + 1, n_groups, dtype=np.int64)
        lookup[values] = np.arange(n_groups)
        pos = lookup[np.maximum(flat, 0)]
    else:
        pos = np.searchsorted(values, flat)
        pos[(pos < n_groups) & (values[np.minimum(pos, max(n_groups - 1, 0))] != flat)] = n_groups
    member = (flat > 0) & (pos < n_groups)
    pos_c = np.minimum(pos, max(n_groups - 1, 0))
    return _Groups(values, names, pos_c, member, np.bincount(pos_c[member], minlength=n_groups))


def _weighting_note(weighting: str, threshold: float) -> str:
    return {
        "none": "unweighted",
        "weighted": "weighted by WM probability (reliability weights)",
        "threshold": f"voxels with WM probability >= {float(threshold):g}",
    }[weighting]


def _used_voxels(vals: np.ndarray, groups: _Groups, w_flat: np.ndarray | None, weighting: str,
                 threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Voxels entering a map's statistics (finite, labelled, passing the WM criterion) and their weights."""
    use = groups.member & np.isfinite(vals)
    w = None
    if w_flat is not None:
        wf = np.nan_to_num(w_flat, nan=0.0)
        if weighting == "threshold":
            use &= wf >= float(threshold)
        else:
            use &= wf > 0
            w = wf[use]
    return use, w


def _status(i: int, groups: _Groups, n_used: int, weighted: bool, vals: np.ndarray) -> str:
    if groups.counts[i] == 0:
        return "empty: no voxel has this label"
    if n_used == 0:
        return ("empty: no voxel passes the WM criterion" if weighted and
                np.isfinite(vals[groups.member & (groups.pos == i)]).any() else
                "empty: no finite map value in the ROI")
    return "ok"


def _map_rows(key: str, prep: Prepared, groups: _Groups, weighting: str, threshold: float, subject: str,
              note: str) -> tuple[list[dict], list[str]]:
    """The long-layout rows of one map (one per reported label) and a message on ROIs without values."""
    vals = prep.maps[key].ravel()
    w_flat = None if prep.weights is None else prep.weights.ravel()
    use, w = _used_voxels(vals, groups, w_flat, weighting, threshold)
    n_groups = groups.values.size
    st = grouped_statistics(groups.pos[use], vals[use], n_groups, w)
    info = prep.info[key]
    rows = []
    for i in range(n_groups):
        rows.append({
            "subject": subject, "label": int(groups.values[i]), "name": groups.names[i], "map": key,
            "units": info["units"], "n_voxels": int(groups.counts[i]),
            "volume_mm3": float(groups.counts[i]) * prep.voxel_volume, "n_used": int(st["n"][i]),
            "mean": st["mean"][i], "sd": st["sd"][i], "median": st["median"][i], "q1": st["q1"][i],
            "q3": st["q3"][i], "iqr": st["iqr"][i], "min": st["min"][i], "max": st["max"][i],
            "weight_sum": st["weight_sum"][i], "status": _status(i, groups, st["n"][i], w_flat is not None, vals),
            "source": info["source"], "method": info["method"], "statistics": note,
        })
    no_values = [groups.names[i] for i in range(n_groups) if groups.counts[i] > 0 and st["n"][i] == 0]
    messages = [f"map '{key}': no usable voxel in {', '.join(no_values[:10])}."] if no_values else []
    return rows, messages


def _empty_rois_message(groups: _Groups) -> list[str]:
    empty_rois = [groups.names[i] for i in np.flatnonzero(groups.counts == 0)]
    if not empty_rois:
        return []
    return [f"{len(empty_rois)} ROI(s) have no voxel: {', '.join(empty_rois[:10])}"
            + (" ..." if len(empty_rois) > 10 else "") + "."]


def roi_statistics(
    labels: Volume | np.ndarray,
    maps: Mapping[str, Volume | np.ndarray] | Maps,
    *,
    lut: pd.DataFrame | Mapping | None = None,
    label_values: Iterable[int] | None = None,
    weights: Volume | np.ndarray | None = None,
    weighting: str = "none",
    threshold: float = 0.5,
    grid: str = "labels",
    voxel_size: Sequence[float] | None = None,
    units: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    methods: Mapping[str, str] | None = None,
    subject: str = "",
    percent: bool = True,
    progress=None,
    cancel=None,
) -> RoiStatistics:
    """Statistics of every map over every label (:mod:`napari_myelin.stats.grouped` defines each number).

    Parameters
    ----------
    labels : Volume or ndarray (3D, integer)
        Label volume (drawn ROIs or atlas tracts); 0 (and negative values) is background.
        Non-integer data is refused.
    maps : mapping name -> Volume or ndarray, or Maps
        Maps to summarise; names are reported lower case. Volumes on another grid are resampled
        onto the labels' grid (trilinear, world coordinates); arrays must share the labels' shape.
    lut : DataFrame (``index``, ``name``) or {label: name}, optional
        Region names. Every label of the table is reported, also when it has no voxel (as an
        empty ROI row), plus any label found in the volume.
    label_values : iterable of int, optional
        Report exactly these labels (overrides the table's list).
    weights : Volume or ndarray, optional
        White-matter probability (0-1) for partial-volume weighting.
    weighting : {"none", "weighted", "threshold"}
        How ``weights`` is used (ignored for ``"none"``).
    threshold : float
        Minimum WM probability for ``weighting="threshold"``.
    grid : {"labels", "maps"}
        Statistics grid (see :mod:`napari_myelin.stats.grid`).
    voxel_size : 3 floats (mm), optional
        Voxel size of plain-array inputs (for ``volume_mm3``).
    units, sources, methods : mapping name -> str, optional
        Override the units/source/method found in the volumes' sidecars.
    subject : str
        Subject identifier written in every row.
    percent : bool
        Report water fractions (MWF-like maps whose units are ``"fraction"``) in percent.

    Returns
    -------
    RoiStatistics
        ``.table`` in the long layout (:data:`LONG_COLUMNS`), ``.messages``.

    Raises
    ------
    InputError
        Non-integer or empty labels, 4D maps, a map that does not overlap the labels, plain arrays of
        another shape, WM probabilities outside 0..1, unknown ``weighting``.
    """
    _check_weighting(weighting, weights, threshold)
    prep = prepare(labels, maps, weights=weights if weighting != "none" else None, grid=grid,
                   voxel_size=voxel_size, units=units, sources=sources, methods=methods, percent=percent,
                   progress=progress, cancel=cancel)
    lut_frame = _lut_frame(lut)
    flat = prep.labels.ravel()
    values = _reported_labels(flat, lut_frame, label_values)
    groups = _groups(flat, values, _label_names(lut_frame, values))
    note = f"{_weighting_note(weighting, threshold)}; {prep.grid_note}"
    rows: list[dict] = []
    messages = list(prep.messages) + _empty_rois_message(groups)
    for k, key in enumerate(prep.maps):
        step(progress, cancel, 0.5 + 0.5 * k / len(prep.maps), f"statistics of {key}")
        map_rows, map_messages = _map_rows(key, prep, groups, weighting, threshold, subject, note)
        rows += map_rows
        messages += map_messages
    step(progress, cancel, 1.0, "statistics done")
    return RoiStatistics(pd.DataFrame(rows, columns=list(LONG_COLUMNS)), messages)


def roi_values(labels: Volume | np.ndarray, map_: Volume | np.ndarray, *, label_values=None) -> dict[int, np.ndarray]:
    """Finite values of one map per label (sorted by label, one sort), e.g. for box plots."""
    prep = prepare(labels, {"map": map_}, percent=False)
    flat = prep.labels.ravel()
    vals = prep.maps["map"].ravel()
    keep = (flat > 0) & np.isfinite(vals)
    if label_values is not None:
        keep &= np.isin(flat, np.asarray(list(label_values)))
    lab, v = flat[keep], vals[keep]
    order = np.argsort(lab, kind="stable")
    lab, v = lab[order], v[order]
    uniq, starts = np.unique(lab, return_index=True)
    return {int(u): part for u, part in zip(uniq, np.split(v, starts[1:]))}


# ----------------------------------------------------------------------------------------------
# correlations


def correlation_table(
    labels: Volume | np.ndarray | None = None,
    maps: Mapping[str, Volume | np.ndarray] | None = None,
    *,
    across: str = "labels",
    stats: pd.DataFrame | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    statistic: str = "mean",
    voxel_size=None,
) -> pd.DataFrame:
    """Pearson and Spearman correlation between maps, across labels or across voxels.

    Parameters
    ----------
    labels, maps
        As for :func:`roi_statistics` (not needed with ``across="labels"`` and ``stats``).
    across : {"labels", "voxels"}
        ``"labels"`` correlates the per-label ``statistic`` (e.g. tract means of FA against MK);
        ``"voxels"`` correlates the voxel values inside all labelled voxels (finite in both maps).
    stats : DataFrame, optional
        A long statistics table to use for ``across="labels"``.
    pairs : sequence of (map_x, map_y), optional
        Pairs to correlate (default: every pair).

    Returns
    -------
    DataFrame
        ``map_x, map_y, across, n, pearson_r, pearson_p, spearman_rho, spearman_p``; ``n`` is the
        number of labels or voxels. Pearson ``r`` is ``cov(x, y) / (sd_x sd_y)``; Spearman's rho is
        Pearson's r of the ranks (ties get their average rank); p-values are two-sided
        (``scipy.stats.pearsonr`` / ``spearmanr``).
    """
    if across not in ("labels", "voxels"):
        raise InputError(f"across: '{across}' is not one of 'labels', 'voxels'.")
    if across == "labels":
        if stats is None:
            if labels is None or maps is None:
                raise InputError("correlation: give labels and maps, or a statistics table.")
            stats = roi_statistics(labels, maps, voxel_size=voxel_size).table
        ok = stats[stats["status"] == "ok"] if "status" in stats else stats
        subj = ok["subject"].fillna("") if "subject" in ok else ""
        wide = ok.assign(_s=subj).pivot_table(index=["_s", "label"], columns="map", values=statistic, aggfunc="first")
        columns = {k: wide[k].to_numpy(dtype=float) for k in wide.columns}
    else:
        if labels is None or maps is None:
            raise InputError("correlation across voxels: give the labels and the maps.")
        prep = prepare(labels, maps, voxel_size=voxel_size)
        inside = prep.labels.ravel() > 0
        columns = {k: v.ravel()[inside] for k, v in prep.maps.items()}
    names = list(columns)
    if pairs is None:
        pairs = list(itertools.combinations(names, 2))
    rows = []
    for a, b in pairs:
        a, b = a.lower(), b.lower()
        for m in (a, b):
            if m not in columns:
                raise InputError(f"correlation: map '{m}' is not among {', '.join(names)}.")
        x, y = columns[a], columns[b]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        n = int(x.size)
        if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            r = p = rho = sp = np.nan
        else:
            r, p = sstats.pearsonr(x, y)
            rho, sp = sstats.spearmanr(x, y)
        rows.append({"map_x": a, "map_y": b, "across": across, "n": n, "pearson_r": float(r),
                     "pearson_p": float(p), "spearman_rho": float(rho), "spearman_p": float(sp)})
    return pd.DataFrame(rows, columns=["map_x", "map_y", "across", "n", "pearson_r", "pearson_p",
                                       "spearman_rho", "spearman_p"])
