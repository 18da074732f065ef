"""Fusion inputs: grid and unit checks against the model card, and the normalised network input.

Each input channel ``c`` is normalised with the statistics stored in the model card,

.. math:: \\tilde x_c = (x_c - \\mu_c) / \\sigma_c ,

inside the brain mask (``0`` outside). The network also receives the brain mask and, for every optional
channel the card lists (QSM; MTsat and chi_dia in format-3 cards), a *presence flag* channel (1 where the
map was given, 0 where it was not), so a missing map is an explicit, trained-for condition rather than a
silent zero.

Units as the network reads them: ``mwf`` fraction 0-1 (a map in percent is detected and converted, see
:func:`detect_mwf_unit`), ``fa`` fraction 0-1, ``mk`` dimensionless, ``qpm`` the QPM myelin
(macromolecular) fraction 0-1, ``qsm`` ppm, ``mtsat`` p.u. (percent units), ``chi_dia`` ppm as the
positive diamagnetic magnitude of chi-separation (``chi = chi_para - chi_dia``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from napari_myelin.fusion.card import CHANNEL_UNITS, CHANNELS, FusionModel
from napari_myelin.utils.errors import InputError


def detect_mwf_unit(mwf: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Whether an MWF map is a fraction (0-1) or in percent (0-100).

    Myelin water fractions in brain lie below ~0.4 (40 %); a map whose 99th percentile inside the mask
    exceeds 1.5 cannot be a fraction, so it is read as percent.

    Returns
    -------
    str
        ``"fraction"`` or ``"percent"``.
    """
    vals = np.asarray(mwf, dtype=float)
    vals = vals[mask] if mask is not None else vals.ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "fraction"
    return "percent" if np.percentile(vals, 99) > 1.5 else "fraction"


_UNIT_ALIASES = {"%": "percent", "percent": "percent", "pct": "percent", "fraction": "fraction", "1": "fraction",
                 "ratio": "fraction", "a.u.": None, "": None}


def _declared_unit(units: str | None) -> str | None:
    if units is None:
        return None
    return _UNIT_ALIASES.get(str(units).strip().lower())


def check_grids(volumes: Mapping[str, Any]) -> None:
    """Refuse channels that do not share one grid (shape and affine).

    ``volumes`` maps a channel name to a :class:`~napari_myelin.io.volume.Volume` or an array.
    """
    ref_name, ref = None, None
    for name, v in volumes.items():
        if v is None:
            continue
        shape = tuple(np.shape(getattr(v, "data", v)))[:3]
        affine = getattr(v, "affine", None)
        if len(np.shape(getattr(v, "data", v))) != 3:
            raise InputError(f"{name}: the map has shape {np.shape(getattr(v, 'data', v))}; fusion needs one 3D map per channel.")
        if ref is None:
            ref_name, ref = name, (shape, affine)
            continue
        if shape != ref[0]:
            raise InputError(
                f"{name}: its grid {shape} differs from {ref_name} {ref[0]}; register all maps to one grid first "
                "(napari-myelin register)."
            )
        if affine is not None and ref[1] is not None and not np.allclose(affine, ref[1], atol=1e-3):
            raise InputError(
                f"{name}: its affine differs from {ref_name}'s; the maps lie on different grids, register them to "
                "one grid first (napari-myelin register)."
            )



def prepare_inputs(
    maps: Mapping[str, np.ndarray | None],
    model: FusionModel,
    *,
    mask: np.ndarray | None = None,
    units: Mapping[str, str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Check units against the model card and build the normalised network input.

    Parameters
    ----------
    maps : mapping
        ``mwf`` (fraction or percent, detected), ``fa``, ``mk``, ``qpm`` and the optional ``qsm`` (ppm),
        ``mtsat`` (p.u.) and ``chi_dia`` (ppm, >= 0) that the card lists, 3D arrays on one grid.
    model : FusionModel
    mask : ndarray of bool, optional
        Brain mask; default: voxels where every given map is finite and FA or MWF is non-zero.
    units : mapping, optional
        Declared units per channel (e.g. from sidecars or layer metadata); a declared MWF unit that
        contradicts the values raises.

    Returns
    -------
    x : ndarray, shape (C, X, Y, Z), float32
        Normalised channels, brain mask, presence flags.
    mwf_fraction : ndarray, float32
        The MWF input as a fraction (zero outside the mask).
    mask : ndarray of bool
    info : dict
        ``mwf_input_unit`` and the channels present.
    """
    units = dict(units or {})
    _check_channels(maps, model)
    arrays = {c: np.asarray(maps[c], dtype=np.float32) for c in model.channels if maps.get(c) is not None}
    mask = _brain_mask(arrays, mask)
    detected = _mwf_unit(arrays["mwf"], mask, units.get("mwf"))
    mwf = arrays["mwf"] / 100.0 if detected == "percent" else arrays["mwf"]
    arrays["mwf"] = mwf
    _check_ranges(arrays, mask, model)
    x = _network_input(arrays, mask, model)
    mwf_frac = np.where(mask, mwf, 0.0).astype(np.float32)
    info = {"mwf_input_unit": detected, "channels_present": sorted(arrays)}
    return x, mwf_frac, mask, info


def _check_channels(maps: Mapping[str, np.ndarray | None], model: FusionModel) -> None:
    """Refuse missing required channels, channels the card does not know, and maps on different grids."""
    channels = model.channels
    missing = [c for c in channels if c not in model.optional and maps.get(c) is None]
    if missing:
        raise InputError(f"{', '.join(missing)}: required by these fusion weights but not given; add --{missing[0]}.")
    surplus = [c for c in CHANNELS if maps.get(c) is not None and c not in channels]
    if surplus:
        raise InputError(
            f"{surplus[0]}: given, but the model card of these weights has no {surplus[0]} channel (inputs "
            f"{list(channels)}); drop it or use weights trained with it."
        )
    check_grids({c: maps.get(c) for c in channels})


def _brain_mask(arrays: Mapping[str, np.ndarray], mask: np.ndarray | None) -> np.ndarray:
    """The given mask (or finite voxels with FA > 0, or MWF != 0 without FA) restricted to finite voxels."""
    shape = arrays["mwf"].shape
    finite = np.ones(shape, bool)
    for a in arrays.values():
        finite &= np.isfinite(a)
    if mask is None:
        mask = finite & ((arrays["fa"] > 0) if "fa" in arrays else (arrays["mwf"] != 0))
    else:
        mask = np.asarray(mask, bool)
        if mask.shape != shape:
            raise InputError(f"mask: its grid {mask.shape} differs from the maps' {shape}; give a mask on the same grid.")
        mask = mask & finite
    if mask.sum() < 10:
        raise InputError("mask: fewer than 10 brain voxels hold finite values in every map; check the inputs.")
    return mask


def _mwf_unit(mwf: np.ndarray, mask: np.ndarray, declared_units: str | None) -> str:
    """The MWF unit detected from the values (:func:`detect_mwf_unit`); a contradicting declared unit raises."""
    detected = detect_mwf_unit(mwf, mask)
    declared = _declared_unit(declared_units)
    if declared is not None and declared != detected:
        p99 = float(np.percentile(mwf[mask], 99))
        raise InputError(
            f"mwf: declared in {declared} but its values (99th percentile {p99:.3g}) look like a {detected}; "
            "fix the Units of the map or give the other one."
        )
    return detected


def _check_ranges(arrays: Mapping[str, np.ndarray], mask: np.ndarray, model: FusionModel) -> None:
    """Refuse a channel other than MWF whose brain values do not fit its unit or the card's statistics
    (a chi_dia map that is mostly negative: the signed diamagnetic susceptibility instead of its magnitude)."""
    for c, a in arrays.items():
        if c == "mwf":
            continue
        lo, hi = np.percentile(a[mask], [1, 99])
        if c == "chi_dia" and np.median(a[mask]) < 0 and abs(lo) > abs(hi):
            raise InputError(
                f"chi_dia: values are mostly negative (1st-99th percentile {lo:.3g} to {hi:.3g} ppm); the network "
                "reads the diamagnetic magnitude >= 0 (chi = chi_para - chi_dia), so give -chi_dia."
            )
        plo, phi = model.plausible(c)
        st = model.card["normalisation"][c]
        if lo < plo - 0.5 * abs(plo) - 1e-6 or hi > phi * 1.5 or abs(np.median(a[mask]) - st["mean"]) > 8 * st["std"]:
            raise InputError(
                f"{c}: values (1st-99th percentile {lo:.3g} to {hi:.3g}) do not match the model card, which expects "
                f"{CHANNEL_UNITS[c]} with mean {st['mean']:.3g}; check the map's units and the weights."
            )


def _network_input(arrays: Mapping[str, np.ndarray], mask: np.ndarray, model: FusionModel) -> np.ndarray:
    """Normalised channels, the brain mask and the presence flags, shape ``(C, X, Y, Z)`` float32."""
    channels, card = model.channels, model.card
    n = len(channels) + 1 + len(model.optional)
    x = np.zeros((n,) + mask.shape, np.float32)
    for i, c in enumerate(channels):
        if c in arrays:
            st = card["normalisation"][c]
            x[i] = np.where(mask, (arrays[c] - st["mean"]) / st["std"], 0.0)
    x[len(channels)] = mask
    for j, c in enumerate(model.optional):
        # presence flag inside the brain (everything is 0 outside, so zero padding = background)
        x[len(channels) + 1 + j] = mask if c in arrays else 0.0
    return x
