"""The statistics grid: labels, maps and WM weights of :func:`~napari_myelin.stats.roi.roi_statistics`
brought onto one voxel grid.

Statistics are computed on the labels' grid (``grid="labels"``, the default): a map on another
grid is resampled onto it through world (scanner, mm) coordinates with trilinear interpolation
(``scipy.ndimage.map_coordinates``, order 1); label voxels whose centre falls outside the map's
field of view get no value and are left out (``n_used``). With ``grid="maps"`` the statistics are
computed on the first map's grid instead and the *labels* are resampled with nearest-neighbour
interpolation (labels are never interpolated linearly). Maps that do not overlap the labelled
voxels at all are refused with an :class:`~napari_myelin.utils.errors.InputError`. Plain arrays
(without an affine) must share the labels' shape.

Water fractions given as fractions (units ``"fraction"`` and a name such as ``mwf``, ``iewf``,
``imwf``, ``mwf_qpm``) are scaled to percent here (:func:`is_water_fraction`), as everywhere in
the plugin's tables; FA and other ratios keep their units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step, subrange
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.io.volume import Volume


@dataclass
class Prepared:
    """Labels, maps and weights on the statistics grid (the output of :func:`prepare`)."""

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


def _map_info(name: str, vol: Volume, units: Mapping[str, str], sources: Mapping[str, str],
              methods: Mapping[str, str], percent: bool) -> dict:
    unit = units.get(name) or vol.metadata.get("Units") or vol.metadata.get("units") or ""
    scale = 1.0
    if percent and unit == "fraction" and is_water_fraction(name):
        unit, scale = "%", 100.0
    source = sources.get(name) or (str(vol.path) if vol.path else "")
    method = methods.get(name) or vol.metadata.get("Method") or ""
    return {"units": unit, "source": source, "method": method, "scale": scale}


def _orig_key(maps: Mapping, key: str):
    for k in maps:
        if str(k).strip().lower() == key:
            return k
    return key


def _descriptions(maps, units, sources, methods) -> tuple[dict, dict, dict, dict]:
    """Lower-case units/sources/methods overrides (completed from a :class:`Maps`) and the 3D maps."""
    units = {k.lower(): v for k, v in dict(units or {}).items()}
    sources = {k.lower(): v for k, v in dict(sources or {}).items()}
    methods = {k.lower(): v for k, v in dict(methods or {}).items()}
    if isinstance(maps, Maps):
        for k in maps:
            units.setdefault(k.lower(), maps.units.get(k, ""))
            methods.setdefault(k.lower(), maps.method)
        maps = {k: v for k, v in maps.items() if np.ndim(v) >= 3}
    return maps, units, sources, methods


def _label_volume(labels, voxel_size) -> tuple[Volume, str]:
    """The labels as an int64 :class:`Volume` (non-integer data refused) and their name for messages."""
    lab_vol = _as_volume(labels, "labels", voxel_size)
    lab_name = str(lab_vol.path) if lab_vol.path else "labels"
    lab_data = _check_integer_labels(np.asarray(lab_vol.data), lab_name)
    return Volume(lab_data, lab_vol.affine, None, lab_vol.metadata, lab_vol.path), lab_name


def _map_volumes(maps: Mapping, labels, lab_vol: Volume, voxel_size) -> dict[str, Volume]:
    """Each map as a 3D numeric :class:`Volume` keyed by its lower-case name (plain arrays given with
    labels as a Volume take the labels' affine)."""
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
    return map_vols


# ----------------------------------------------------------------------------------------------
# onto the statistics grid


def _statistics_grid(grid: str, labels, maps: Mapping, lab_vol: Volume, lab_name: str,
                     map_vols: dict[str, Volume], messages: list[str]) -> tuple[Volume, np.ndarray, str]:
    """The grid the statistics are computed on, the labels on it and a note saying which grid."""
    lab_data = lab_vol.data
    if grid == "labels":
        return lab_vol, lab_data, "labels grid"
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
    return target, target_labels, f"grid of map '{next(iter(map_vols))}', labels nearest-neighbour"


def _map_on_grid(key: str, vol: Volume, given_as_volume: bool, labels, target: Volume, target_shape,
                 labelled: np.ndarray, grid_note: str, messages: list[str], progress, cancel) -> np.ndarray:
    """One map as float64 on the statistics grid (resampled trilinearly when it is on another grid)."""
    if _same_grid(vol, target):
        return np.asarray(vol.data, dtype=np.float64)
    if vol.data.shape == target_shape and not (given_as_volume and isinstance(labels, Volume)):
        return np.asarray(vol.data, dtype=np.float64)
    if not given_as_volume or not isinstance(labels, Volume):
        raise InputError(
            f"map '{key}': shape {vol.shape} differs from the labels' shape {target_shape}; "
            "load both as NIfTI (with their affines) so the map can be resampled, or use maps on the "
            "labels' grid."
        )
    arr, inside = resample_to_grid(vol, target.affine, target_shape, order=1, progress=progress, cancel=cancel)
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
    return arr


def _weights_on_grid(w_vol: Volume, weights, labels, target: Volume, target_shape, cancel) -> np.ndarray:
    """The WM probability on the statistics grid, refused outside 0..1."""
    if w_vol.data.ndim != 3:
        raise InputError(f"{w_vol.path or 'weights'}: the WM probability map must be 3D.")
    if _same_grid(w_vol, target) or (w_vol.data.shape == target_shape and not isinstance(weights, Volume)):
        w_arr = np.asarray(w_vol.data, dtype=np.float64)
    elif isinstance(weights, Volume) and isinstance(labels, Volume):
        w_arr, _ = resample_to_grid(w_vol, target.affine, target_shape, order=1, cancel=cancel)
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
    return w_arr


def prepare(labels, maps, *, weights=None, grid="labels", voxel_size=None, units=None, sources=None,
            methods=None, percent=True, progress=None, cancel=None) -> Prepared:
    """Check labels, maps and weights and bring them onto the statistics grid (module docstring).

    Parameters are those of :func:`napari_myelin.stats.roi.roi_statistics`; progress covers 0-0.5.

    Returns
    -------
    Prepared
        Labels (int64), maps (float64, water fractions in percent when ``percent``) and weights on
        the statistics grid, each map's units/source/method, the voxel volume (mm^3), a note on the
        grid and messages about resampling.
    """
    maps, units, sources, methods = _descriptions(maps, units, sources, methods)
    if not maps:
        raise InputError("maps: no map was given; choose at least one map to summarise.")
    if grid not in ("labels", "maps"):
        raise InputError(f"grid: '{grid}' is not one of 'labels', 'maps'.")
    lab_vol, lab_name = _label_volume(labels, voxel_size)
    map_vols = _map_volumes(maps, labels, lab_vol, voxel_size)
    w_vol = None if weights is None else _as_volume(weights, "weights", voxel_size)
    if w_vol is not None and not isinstance(weights, Volume) and isinstance(labels, Volume):
        w_vol = Volume(np.asarray(weights), lab_vol.affine, None, {}, None)

    messages: list[str] = []
    target, target_labels, grid_note = _statistics_grid(grid, labels, maps, lab_vol, lab_name, map_vols, messages)
    target_shape = target_labels.shape
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
        arr = _map_on_grid(key, vol, given_as_volume, labels, target, target_shape, labelled, grid_note,
                           messages, sub, cancel)
        info[key] = _map_info(key, vol, units, sources, methods, percent)
        if info[key]["scale"] != 1.0:
            arr = arr * info[key]["scale"]
        out_maps[key] = arr
    w_arr = None if w_vol is None else _weights_on_grid(w_vol, weights, labels, target, target_shape, cancel)
    voxel_volume = float(abs(np.linalg.det(np.asarray(target.affine)[:3, :3])))
    return Prepared(target_labels, out_maps, info, w_arr, voxel_volume, grid_note, messages)
