"""ROI and tract statistics of quantitative maps: tables per label, correlations, CSV export.

:func:`roi_statistics` summarises any set of maps (MWF, FA, MK, chi, T1 ...) over any integer label
volume (drawn ROIs or atlas tracts): per label and map the number of voxels, the ROI volume in
mm^3, the mean, standard deviation, median, interquartile range, minimum and maximum, with the
map's units, source file and method. Everything is vectorised: voxels are grouped by one
sort (label, then value) and the moments come from ``np.bincount``, so the cost is one
sort of the labelled voxels whatever the number of labels.

Grids
-----
Statistics are computed on the labels' grid (``grid="labels"``, the default): a map on another
grid is resampled onto it through world (scanner, mm) coordinates with trilinear interpolation
(``scipy.ndimage.map_coordinates``, order 1); label voxels whose centre falls outside the map's
field of view get no value and are left out (``n_used``). With ``grid="maps"`` the statistics are
computed on the first map's grid instead and the *labels* are resampled with nearest-neighbour
interpolation (labels are never interpolated linearly). Maps that do not overlap the labelled
voxels at all are refused with an :class:`~napari_myelin.utils.errors.InputError`. Plain arrays
(without an affine) must share the labels' shape.

Statistics
----------
For the ``n`` voxels of label ``l`` with values ``x_i`` (finite values only):

* ``mean = sum(x_i) / n``; ``sd = sqrt(sum((x_i - mean)^2) / (n - 1))`` (sample SD, NaN for n < 2);
* ``median``, ``q1``, ``q3`` are the 50th, 25th, 75th percentiles with linear interpolation between
  order statistics (``numpy.percentile``'s default), ``iqr = q3 - q1``;
* with a white-matter probability ``w`` and ``weighting="weighted"`` (partial-volume weighting),
  voxels with ``w > 0`` enter with weight ``w_i``: ``mean = sum(w_i x_i) / V1`` and
  ``sd^2 = sum(w_i (x_i - mean)^2) / (V1 - V2 / V1)`` with ``V1 = sum(w_i)``, ``V2 = sum(w_i^2)``
  (unbiased estimator for reliability weights); median/IQR/min/max are those of the voxels with
  ``w > 0``; ``weight_sum = V1`` is the effective number of WM voxels;
* with ``weighting="threshold"`` only voxels with ``w >= threshold`` enter (unweighted).

Water fractions given as fractions (units ``"fraction"`` and a name such as ``mwf``, ``iewf``,
``imwf``, ``mwf_qpm``) are reported in percent, as everywhere in the plugin's tables; FA and
other ratios keep their units. ``n_voxels``/``volume_mm3`` describe the ROI itself (voxels carrying the label on
the statistics grid times the voxel volume); ``n_used`` counts the voxels that entered the
statistics of that map (finite, inside the map, passing the WM threshold).

An ROI without usable voxels is not silently NaN: its row has ``status`` saying why (``"empty: no
voxel has this label"``, ``"empty: no finite map value in the ROI"``, ...) and
:attr:`RoiStatistics.messages` lists it.

References
----------
Cochran, "Sampling Techniques", 3rd ed., Wiley (1977) -- weighted variance with reliability weights.
Hyndman & Fan, "Sample quantiles in statistical packages", Am Stat 50:361 (1996) -- definition 7.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sstats

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step, subrange
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.io.volume import Volume, atomic_write_bytes

#: Columns of the long layout (one row per subject, label and map), in order.
LONG_COLUMNS = (
    "subject", "label", "name", "map", "units", "n_voxels", "volume_mm3", "n_used",
    "mean", "sd", "median", "q1", "q3", "iqr", "min", "max", "weight_sum",
    "status", "source", "method", "statistics",
)
#: Per-map statistics repeated for every map in the wide layout (``<map>_<stat>``).
WIDE_STATS = ("mean", "sd", "median", "iqr", "min", "max", "n_used")
#: Documentation of each column of the CSV (written into `the README (ROI statistics section)` too).
COLUMN_DOC = {
    "subject": "subject/session identifier given by the user (empty when none)",
    "label": "integer label value of the ROI or tract",
    "name": "region name from the lookup table ('label N' when the table has none)",
    "map": "map name, lower case (mwf, fa, md, mk, chi, t1, ...)",
    "units": "units of mean/sd/median/q1/q3/iqr/min/max (MWF in %)",
    "n_voxels": "voxels carrying the label on the statistics grid",
    "volume_mm3": "ROI volume in mm^3 = n_voxels x voxel volume of the statistics grid",
    "n_used": "voxels that entered this map's statistics (finite, inside the map, passing the WM criterion)",
    "mean": "mean (weighted by the WM probability when weighting='weighted')",
    "sd": "sample standard deviation (n-1; reliability-weighted when weighted); NaN when n_used < 2",
    "median": "median (50th percentile, linear interpolation)",
    "q1": "25th percentile", "q3": "75th percentile", "iqr": "interquartile range q3 - q1",
    "min": "minimum", "max": "maximum",
    "weight_sum": "sum of WM weights (effective voxel count) when weighted, else n_used",
    "status": "'ok', or 'empty: <why>' for an ROI without usable voxels",
    "source": "file the map was read from (or the napari layer name)",
    "method": "method that produced the map (from its JSON sidecar)",
    "statistics": "how the statistics were computed (grid, resampling, weighting)",
}

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
# inputs


def _as_volume(obj: Any, what: str, voxel_size: Sequence[float] | None = None) -> Volume:
    if isinstance(obj, Volume):
        return obj
    arr = np.asarray(obj)
    affine = np.eye(4)
    if voxel_size is not None:
        affine[:3, :3] = np.diag(np.asarray(voxel_size, dtype=float))
    return Volume(arr, affine, None, {}, None)


def _check_integer_labels(data: np.ndarray, what: str) -> np.ndarray:
    if data.ndim != 3:
        raise InputError(f"{what}: has {data.ndim} dimensions; a label volume must be 3D.")
    if data.dtype == bool:
        return data.astype(np.int64)
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.int64, copy=False)
    if data.dtype.kind != "f":
        raise InputError(f"{what}: data type {data.dtype} is not a label type; give an integer label map.")
    finite = np.isfinite(data)
    rounded = np.round(np.where(finite, data, 0))
    bad = finite & (np.abs(data - rounded) > 1e-6)
    if bad.any() or not finite.all():
        example = data[bad][0] if bad.any() else data[~finite][0]
        raise InputError(
            f"{what}: holds non-integer values (e.g. {example:g}); give an integer label map, "
            "not a probability or intensity image."
        )
    return rounded.astype(np.int64)


def _same_grid(a: Volume, b: Volume) -> bool:
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-3)


@dataclass
class _Prepared:
    labels: np.ndarray                 # int64 on the statistics grid
    maps: dict[str, np.ndarray]        # float64 on the statistics grid (NaN outside)
    info: dict[str, dict]              # units, source, method, scale
    weights: np.ndarray | None
    voxel_volume: float
    grid_note: str
    messages: list[str]


def is_water_fraction(name: str) -> bool:
    """Maps reported in percent when given as a fraction: MWF-like water fractions (``mwf``,
    ``iewf``, ``imwf``, ``mwf_qpm`` ...), not FA or other unitless ratios."""
    name = name.lower()
    return "mwf" in name or name in ("iewf", "csfwf")


def _map_info(name: str, vol: Volume, units: Mapping[str, str], sources: Mapping[str, str],
              methods: Mapping[str, str], percent: bool) -> dict:
    unit = units.get(name) or vol.metadata.get("Units") or vol.metadata.get("units") or ""
    scale = 1.0
    if percent and unit == "fraction" and is_water_fraction(name):
        unit, scale = "%", 100.0
    source = sources.get(name) or (str(vol.path) if vol.path else "")
    method = methods.get(name) or vol.metadata.get("Method") or ""
    return {"units": unit, "source": source, "method": method, "scale": scale}


def _prepare(labels, maps, *, weights=None, grid="labels", voxel_size=None, units=None, sources=None,
             methods=None, percent=True, progress=None, cancel=None) -> _Prepared:
    units = {k.lower(): v for k, v in dict(units or {}).items()}
    sources = {k.lower(): v for k, v in dict(sources or {}).items()}
    methods = {k.lower(): v for k, v in dict(methods or {}).items()}
    if isinstance(maps, Maps):
        for k in maps:
            units.setdefault(k.lower(), maps.units.get(k, ""))
            methods.setdefault(k.lower(), maps.method)
        maps = {k: v for k, v in maps.items() if np.ndim(v) >= 3}
    if not maps:
        raise InputError("maps: no map was given; choose at least one map to summarise.")
    if grid not in ("labels", "maps"):
        raise InputError(f"grid: '{grid}' is not one of 'labels', 'maps'.")
    lab_vol = _as_volume(labels, "labels", voxel_size)
    lab_name = str(lab_vol.path) if lab_vol.path else "labels"
    lab_data = _check_integer_labels(np.asarray(lab_vol.data), lab_name)
    lab_vol = Volume(lab_data, lab_vol.affine, None, lab_vol.metadata, lab_vol.path)
    map_vols: dict[str, Volume] = {}
    for name, m in maps.items():
        key = str(name).strip().lower()
        if not key:
            raise InputError("maps: a map has an empty name; name every map (e.g. MWF=mwf.nii.gz).")
        vol = _as_volume(m, key, voxel_size if not isinstance(m, Volume) else None)
        if not isinstance(m, Volume) and isinstance(labels, Volume):
            vol = Volume(np.asarray(m), lab_vol.affine, None, {}, None)
        if vol.data.ndim != 3:
            raise InputError(
                f"{vol.path or key}: map '{key}' has {vol.data.ndim} dimensions; statistics need a 3D map "
                "(pick one volume of a series)."
            )
        if vol.data.dtype.kind not in "biuf":
            raise InputError(f"{vol.path or key}: map '{key}' has data type {vol.data.dtype}; a numeric map is needed.")
        map_vols[key] = vol
    w_vol = None if weights is None else _as_volume(weights, "weights", voxel_size)
    if w_vol is not None and not isinstance(weights, Volume) and isinstance(labels, Volume):
        w_vol = Volume(np.asarray(weights), lab_vol.affine, None, {}, None)

    # the statistics grid
    messages: list[str] = []
    if grid == "labels":
        target = lab_vol
        target_labels = lab_data
        grid_note = "labels grid"
    else:
        target = next(iter(map_vols.values()))
        if _same_grid(lab_vol, target):
            target_labels = lab_data
        else:
            if not (isinstance(labels, Volume) and all(isinstance(m, Volume) for m in maps.values())):
                raise InputError(
                    f"{lab_name}: labels shape {lab_vol.shape} differs from map shape {target.shape} and "
                    "plain arrays carry no affine; load both as NIfTI so they can be resampled."
                )
            target_labels, inside = resample_to_grid(lab_vol, target.affine, target.shape, order=0, cval=0)
            if not (target_labels > 0).any():
                raise InputError(
                    f"{lab_name}: the labels do not overlap the map's field of view; check that both images "
                    "belong to the same subject and space (register them first)."
                )
            messages.append(f"labels resampled onto the grid of map '{next(iter(map_vols))}' (nearest neighbour).")
        grid_note = f"grid of map '{next(iter(map_vols))}', labels nearest-neighbour"
    target_affine, target_shape = target.affine, target_labels.shape
    labelled = target_labels > 0
    if not labelled.any():
        raise InputError(f"{lab_name}: no voxel is labelled (all zero); draw or load a ROI first.")

    out_maps: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    n = len(map_vols) + (w_vol is not None)
    for i, (key, vol) in enumerate(map_vols.items()):
        sub = subrange(progress, 0.5 * i / n, 0.5 * (i + 1) / n)
        step(progress, cancel, 0.5 * i / n, f"preparing {key}")
        given_as_volume = isinstance(maps[_orig_key(maps, key)], Volume)
        if _same_grid(vol, target):
            arr = np.asarray(vol.data, dtype=np.float64)
        elif vol.data.shape == target_shape and not (given_as_volume and isinstance(labels, Volume)):
            arr = np.asarray(vol.data, dtype=np.float64)
        else:
            if not given_as_volume or not isinstance(labels, Volume):
                raise InputError(
                    f"map '{key}': shape {vol.shape} differs from the labels' shape {target_shape}; "
                    "load both as NIfTI (with their affines) so the map can be resampled, or use maps on the "
                    "labels' grid."
                )
            arr, inside = resample_to_grid(vol, target_affine, target_shape, order=1, progress=sub, cancel=cancel)
            if not (inside & labelled).any():
                raise InputError(
                    f"{vol.path or key}: map '{key}' does not overlap the labelled voxels; check that map and "
                    "labels belong to the same subject and space (register them first)."
                )
            outside = int((labelled & ~inside).sum())
            messages.append(
                f"map '{key}' resampled onto the {grid_note} (trilinear)"
                + (f"; {outside} labelled voxels lie outside it and were left out." if outside else ".")
            )
        info[key] = _map_info(key, vol, units, sources, methods, percent)
        if info[key]["scale"] != 1.0:
            arr = arr * info[key]["scale"]
        out_maps[key] = arr
    w_arr = None
    if w_vol is not None:
        if w_vol.data.ndim != 3:
            raise InputError(f"{w_vol.path or 'weights'}: the WM probability map must be 3D.")
        if _same_grid(w_vol, target) or (w_vol.data.shape == target_shape and not isinstance(weights, Volume)):
            w_arr = np.asarray(w_vol.data, dtype=np.float64)
        elif isinstance(weights, Volume) and isinstance(labels, Volume):
            w_arr, _ = resample_to_grid(w_vol, target_affine, target_shape, order=1, cancel=cancel)
        else:
            raise InputError(
                f"weights: shape {w_vol.shape} differs from the labels' shape {target_shape}; "
                "give the WM probability on the labels' grid or as NIfTI."
            )
        finite = w_arr[np.isfinite(w_arr)]
        if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
            raise InputError(
                f"{w_vol.path or 'weights'}: WM probabilities range {finite.min():g}..{finite.max():g}; "
                "they must lie in 0..1."
            )
    voxel_volume = float(abs(np.linalg.det(np.asarray(target_affine)[:3, :3])))
    return _Prepared(target_labels, out_maps, info, w_arr, voxel_volume, grid_note, messages)


def _orig_key(maps: Mapping, key: str):
    for k in maps:
        if str(k).strip().lower() == key:
            return k
    return key


# ----------------------------------------------------------------------------------------------
# grouped statistics


def grouped_statistics(
    group: np.ndarray, values: np.ndarray, n_groups: int, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Statistics of ``values`` grouped by ``group`` (integers ``0..n_groups-1``), vectorised.

    One sort orders the values by group then value (for the percentiles); means and
    variances come from ``np.bincount``. See the module docstring for the definitions.

    Returns
    -------
    dict of ndarray (length ``n_groups``)
        ``n``, ``weight_sum``, ``mean``, ``sd``, ``median``, ``q1``, ``q3``, ``iqr``, ``min``,
        ``max``; NaN for empty groups (``sd`` NaN when fewer than two voxels).
    """
    group = np.asarray(group, dtype=np.int64).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    counts = np.bincount(group, minlength=n_groups).astype(np.int64)
    nz = counts > 0
    out: dict[str, np.ndarray] = {"n": counts}
    with np.errstate(invalid="ignore", divide="ignore"):
        if weights is None:
            wsum = counts.astype(np.float64)
            mean = np.bincount(group, weights=values, minlength=n_groups) / wsum
            dev = values - mean[group]
            ss = np.bincount(group, weights=dev * dev, minlength=n_groups)
            var = np.where(counts > 1, ss / (counts - 1), np.nan)
        else:
            w = np.asarray(weights, dtype=np.float64).ravel()
            wsum = np.bincount(group, weights=w, minlength=n_groups)
            mean = np.bincount(group, weights=w * values, minlength=n_groups) / wsum
            dev = values - mean[group]
            ss = np.bincount(group, weights=w * dev * dev, minlength=n_groups)
            v2 = np.bincount(group, weights=w * w, minlength=n_groups)
            denom = wsum - v2 / wsum
            var = np.where((counts > 1) & (denom > 0), ss / denom, np.nan)
    mean[~nz] = np.nan
    out["weight_sum"] = np.where(nz, wsum, 0.0)
    out["mean"] = mean
    out["sd"] = np.sqrt(var)
    # sort by value, then stably by group: values sorted within each group (a radix sort for
    # the small integer group keys; ~5x faster than np.lexsort on millions of voxels)
    by_value = np.argsort(values)
    gdtype = np.int16 if n_groups < 2**15 else np.int32 if n_groups < 2**31 else np.int64
    v = values[by_value[np.argsort(group.astype(gdtype)[by_value], kind="stable")]]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    s, c = starts[nz], counts[nz]

    def _percentile(p: float) -> np.ndarray:
        res = np.full(n_groups, np.nan)
        pos = s + p * (c - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, s + c - 1)
        frac = pos - lo
        res[nz] = v[lo] + (v[hi] - v[lo]) * frac
        return res

    out["median"] = _percentile(0.5)
    out["q1"] = _percentile(0.25)
    out["q3"] = _percentile(0.75)
    out["iqr"] = out["q3"] - out["q1"]
    mn = np.full(n_groups, np.nan)
    mx = np.full(n_groups, np.nan)
    mn[nz] = v[s]
    mx[nz] = v[s + c - 1]
    out["min"], out["max"] = mn, mx
    return out


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
    """Statistics of every map over every label (the module docstring defines each number).

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
        Statistics grid (see module docstring).
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
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting: '{weighting}' is not one of {', '.join(WEIGHTINGS)}.")
    if weighting != "none" and weights is None:
        raise InputError(f"weighting: '{weighting}' needs a WM probability map; give one or use 'none'.")
    if weighting == "threshold" and not (0.0 <= float(threshold) <= 1.0):
        raise InputError(f"threshold: {threshold} is not a probability; give a value in 0..1.")
    prep = _prepare(labels, maps, weights=weights if weighting != "none" else None, grid=grid,
                    voxel_size=voxel_size, units=units, sources=sources, methods=methods, percent=percent,
                    progress=progress, cancel=cancel)
    lut_frame = _lut_frame(lut)
    flat = prep.labels.ravel()
    present = np.unique(flat[flat > 0])
    if label_values is not None:
        values = np.unique(np.asarray(list(label_values), dtype=np.int64))
        values = values[values > 0]
        if values.size == 0:
            raise InputError("label_values: no positive label was given; list the labels to report.")
    elif lut_frame is not None:
        lut_idx = lut_frame["index"].astype(np.int64).to_numpy()
        values = np.union1d(lut_idx[lut_idx > 0], present)
    else:
        values = present
    names = _label_names(lut_frame, values)
    n_groups = values.size
    # position of each voxel's label in `values` (n_groups for labels not reported / background)
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
    roi_counts = np.bincount(pos_c[member], minlength=n_groups)
    w_flat = None if prep.weights is None else prep.weights.ravel()
    stats_note = {
        "none": "unweighted",
        "weighted": "weighted by WM probability (reliability weights)",
        "threshold": f"voxels with WM probability >= {float(threshold):g}",
    }[weighting]
    rows = []
    messages = list(prep.messages)
    empty_rois = [names[i] for i in np.flatnonzero(roi_counts == 0)]
    if empty_rois:
        messages.append(f"{len(empty_rois)} ROI(s) have no voxel: {', '.join(empty_rois[:10])}"
                        + (" ..." if len(empty_rois) > 10 else "") + ".")
    for k, (key, arr) in enumerate(prep.maps.items()):
        step(progress, cancel, 0.5 + 0.5 * k / len(prep.maps), f"statistics of {key}")
        vals = arr.ravel()
        use = member & np.isfinite(vals)
        w = None
        if w_flat is not None:
            wf = np.nan_to_num(w_flat, nan=0.0)
            if weighting == "threshold":
                use &= wf >= float(threshold)
            else:
                use &= wf > 0
                w = wf[use]
        st = grouped_statistics(pos_c[use], vals[use], n_groups, w)
        info = prep.info[key]
        note = f"{stats_note}; {prep.grid_note}"
        for i in range(n_groups):
            if roi_counts[i] == 0:
                status = "empty: no voxel has this label"
            elif st["n"][i] == 0:
                status = ("empty: no voxel passes the WM criterion" if w_flat is not None and
                          np.isfinite(vals[member & (pos_c == i)]).any() else
                          "empty: no finite map value in the ROI")
            else:
                status = "ok"
            rows.append({
                "subject": subject, "label": int(values[i]), "name": names[i], "map": key,
                "units": info["units"], "n_voxels": int(roi_counts[i]),
                "volume_mm3": float(roi_counts[i]) * prep.voxel_volume, "n_used": int(st["n"][i]),
                "mean": st["mean"][i], "sd": st["sd"][i], "median": st["median"][i], "q1": st["q1"][i],
                "q3": st["q3"][i], "iqr": st["iqr"][i], "min": st["min"][i], "max": st["max"][i],
                "weight_sum": st["weight_sum"][i], "status": status, "source": info["source"],
                "method": info["method"], "statistics": note,
            })
        no_values = [names[i] for i in range(n_groups) if roi_counts[i] > 0 and st["n"][i] == 0]
        if no_values:
            messages.append(f"map '{key}': no usable voxel in {', '.join(no_values[:10])}.")
    step(progress, cancel, 1.0, "statistics done")
    table = pd.DataFrame(rows, columns=list(LONG_COLUMNS))
    return RoiStatistics(table, messages)


def roi_values(labels: Volume | np.ndarray, map_: Volume | np.ndarray, *, label_values=None) -> dict[int, np.ndarray]:
    """Finite values of one map per label (sorted by label, one sort), e.g. for box plots."""
    prep = _prepare(labels, {"map": map_}, percent=False)
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
        prep = _prepare(labels, maps, voxel_size=voxel_size)
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


# ----------------------------------------------------------------------------------------------
# tables and CSV


def wide_table(long: pd.DataFrame, stats: Sequence[str] = WIDE_STATS) -> pd.DataFrame:
    """One row per (subject, label): ``subject, label, name, n_voxels, volume_mm3`` then, per map,
    ``<map>_units`` and ``<map>_<stat>`` for ``stats`` (plus ``<map>_z`` when z-scores are present and
    ``D`` for the multi-parameter distance)."""
    long = long.copy()
    long["subject"] = long["subject"].fillna("").astype(str)
    stats = list(stats) + [c for c in ("z", "abnormal") if c in long.columns]
    keys = ["subject", "label"]
    base = (long.groupby(keys, sort=True)
            .agg(name=("name", "first"), n_voxels=("n_voxels", "first"), volume_mm3=("volume_mm3", "first"))
            .reset_index())
    for extra in ("D", "D_abnormal"):
        if extra in long.columns:
            base = base.merge(long.groupby(keys)[extra].first().reset_index(), on=keys, how="left")
    for m in dict.fromkeys(long["map"]):
        part = long[long["map"] == m].set_index(keys)
        cols = {f"{m}_units": part["units"]}
        cols.update({f"{m}_{s}": part[s] for s in stats})
        base = base.merge(pd.DataFrame(cols).reset_index(), on=keys, how="left")
    return base


def table_to_csv_bytes(table: pd.DataFrame) -> bytes:
    """UTF-8 CSV (comma separated, header row, full float precision, no index)."""
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_csv(table: pd.DataFrame, path: str | os.PathLike, *, layout: str = "long") -> Path:
    """Write a statistics table as UTF-8 CSV, atomically (temporary file, then rename).

    Parameters
    ----------
    table : DataFrame
        Long-layout table (or any table with ``layout="as-is"``).
    path : path-like
        CSV file; its folder must exist and be writable (it is not created, so that a typo in the
        folder name does not silently create a new tree).
    layout : {"long", "wide", "as-is"}
        ``"wide"`` writes :func:`wide_table`.

    Raises
    ------
    InputError
        Missing or unwritable folder, or ``path`` is a folder; nothing is written then.
    """
    path = Path(path)
    if layout not in ("long", "wide", "as-is"):
        raise InputError(f"layout: '{layout}' is not one of 'long', 'wide'.")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist; create it or choose another CSV path.")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ending in .csv.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{path}: the folder {path.parent} is not writable; choose another CSV path.")
    data = wide_table(table) if layout == "wide" else table
    payload = table_to_csv_bytes(data)
    try:
        atomic_write_bytes(path, payload)
    except OSError as exc:
        raise InputError(f"{path}: cannot be written ({exc.strerror or exc}); choose another CSV path.") from None
    return path


def read_stats_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a long-layout statistics CSV written by :func:`write_csv` (checks the key columns)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: statistics table not found.")
    try:
        table = pd.read_csv(path, encoding="utf-8", keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc}).") from None
    need = {"label", "map", "mean"}
    if not need <= set(table.columns):
        raise InputError(
            f"{path}: a statistics table needs columns {sorted(need)}; found {list(table.columns)[:8]} "
            "(write it with 'napari-myelin stats' in the long layout)."
        )
    if "subject" not in table.columns:
        table.insert(0, "subject", "")
    table["subject"] = table["subject"].fillna("").astype(str)
    if "units" in table.columns:
        table["units"] = table["units"].fillna("").astype(str)
    if "status" not in table.columns:
        table["status"] = "ok"
    table["map"] = table["map"].astype(str).str.lower()
    table["label"] = table["label"].astype(int)
    return table


# ----------------------------------------------------------------------------------------------
# drawn shapes -> labels


def polygons_to_labels(
    polygons: Sequence[np.ndarray],
    shape: Sequence[int],
    values: Sequence[int],
    *,
    kinds: Sequence[str] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rasterise planar shapes (drawn on one slice of a 3D volume) into a label array.

    Parameters
    ----------
    polygons : sequence of (N, 3) arrays
        Vertices in voxel coordinates of the label array (napari data order). Each shape must lie
        in one plane of constant coordinate along one axis (the slice it was drawn on).
    shape : 3 ints
        Shape of the label array.
    values : sequence of int
        Label painted for each shape (later shapes paint over earlier ones).
    kinds : sequence of str, optional
        napari shape types; ``"ellipse"`` (4 bounding-box corners) is filled as an ellipse,
        ``"polygon"``/``"rectangle"`` as polygons (voxels whose centre is inside, as
        ``skimage.draw.polygon``); ``"line"``/``"path"`` enclose no area and are refused.
    out : ndarray, optional
        Label array to paint into (modified and returned).

    Raises
    ------
    InputError
        A shape that is not planar along one voxel axis, lies outside the volume, or has no area.
    """
    from skimage import draw

    shape = tuple(int(s) for s in shape)
    labels = np.zeros(shape, dtype=np.int32) if out is None else out
    kinds = list(kinds) if kinds is not None else ["polygon"] * len(polygons)
    for verts, value, kind in zip(polygons, values, kinds):
        # snap round-off of world <-> voxel conversions (napari keeps shapes in float32: a vertex
        # at 1.9999994 is the voxel centre 2)
        verts = np.round(np.asarray(verts, dtype=float), 4)
        if kind in ("line", "path"):
            raise InputError(f"Shapes -> ROI: a {kind} encloses no area; draw polygons, rectangles or ellipses.")
        if verts.ndim != 2 or verts.shape[1] != 3:
            raise InputError("Shapes -> ROI: shapes must be drawn on a slice of the 3D volume.")
        flat_axes = np.flatnonzero(np.ptp(verts, axis=0) < 0.5)
        if flat_axes.size == 0:
            raise InputError("Shapes -> ROI: a shape is not drawn on one slice; draw it in a 2D view of one slice.")
        axis = int(flat_axes[0])
        index = int(np.round(verts[:, axis].mean()))
        if not 0 <= index < shape[axis]:
            raise InputError(
                f"Shapes -> ROI: a shape lies on slice {index}, outside the volume (0..{shape[axis] - 1})."
            )
        plane_axes = [a for a in range(3) if a != axis]
        plane_shape = (shape[plane_axes[0]], shape[plane_axes[1]])
        r, c = verts[:, plane_axes[0]], verts[:, plane_axes[1]]
        if kind == "ellipse":
            rr, cc = draw.ellipse((r.min() + r.max()) / 2, (c.min() + c.max()) / 2, np.ptp(r) / 2, np.ptp(c) / 2,
                                  shape=plane_shape)
        else:
            rr, cc = draw.polygon(r, c, shape=plane_shape)
        if rr.size == 0:
            raise InputError("Shapes -> ROI: a shape covers no voxel centre (too small or outside the volume).")
        sl = [slice(None)] * 3
        sl[axis] = index
        plane = labels[tuple(sl)]
        plane[rr, cc] = int(value)
    return labels
