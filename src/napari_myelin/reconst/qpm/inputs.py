"""Inputs of the QPM estimator: the SPGR protocol (flip angles in deg, TR in s) from arguments or the
BIDS sidecar, loading an SPGR series from files, and the checks of signals, B1 map and masks.
"""

from __future__ import annotations

import os

import numpy as np

from napari_myelin.utils.errors import InputError


def check_protocol(flip_angles_deg, tr, n_volumes: int | None = None, *, source: str = "SPGR series") -> tuple[np.ndarray, float]:
    """Validate flip angles (deg) and TR (s) against the number of volumes of the series.

    Raises
    ------
    InputError
        Fewer than 2 (distinct) flip angles, a count that differs from the number of volumes, an angle
        outside (0, 90] deg, or a missing / non-positive TR.
    """
    if flip_angles_deg is None:
        raise InputError(f"{source}: no flip angles were given; add FlipAngle (deg) to the JSON sidecar or pass --flip-angles.")
    fa = np.atleast_1d(np.asarray(flip_angles_deg, dtype=float)).ravel()
    if fa.size < 2 or np.unique(fa).size < 2:
        raise InputError(
            f"{source}: {np.unique(fa).size} distinct flip angle(s) given; T1 mapping needs at least 2 different "
            "flip angles (e.g. 3 and 20 deg)."
        )
    if n_volumes is not None and fa.size != n_volumes:
        raise InputError(
            f"{source}: has {n_volumes} volumes but {fa.size} flip angles were given; give one flip angle per volume."
        )
    if not np.all(np.isfinite(fa)) or np.any(fa <= 0) or np.any(fa > 90):
        raise InputError(f"{source}: flip angles {fa.tolist()} are not all within (0, 90] deg; give them in degrees.")
    if tr is None:
        raise InputError(f"{source}: the repetition time is missing; add RepetitionTime (s) to the JSON sidecar or pass --tr.")
    tr = float(np.atleast_1d(np.asarray(tr, dtype=float))[0])
    if not np.isfinite(tr) or tr <= 0:
        raise InputError(f"{source}: repetition time {tr} is not positive; give TR in seconds (e.g. 0.015).")
    if tr > 1.0:
        raise InputError(f"{source}: repetition time {tr} s is implausible for SPGR; give TR in seconds, not ms (e.g. 0.015).")
    return fa, tr


def _check_two_pool_angles(fa: np.ndarray) -> None:
    """The two-pool fit needs at least 3 distinct flip angles."""
    if np.unique(fa).size < 3:
        raise InputError(
            f"two-pool myelin map: {np.unique(fa).size} distinct flip angles given; the two-pool fit needs at least 3 "
            "(e.g. 3, 10 and 20 deg); use method 'r1-pd' with 2 angles."
        )


def _check_signals(signals, n_angles: int) -> np.ndarray:
    """The SPGR series as floats, one volume per flip angle on the last axis."""
    sig = np.asarray(signals, dtype=float)
    if sig.ndim < 2:
        raise InputError("SPGR series: expected one volume per flip angle on the last axis.")
    if sig.shape[-1] != n_angles:
        raise InputError(
            f"SPGR series: has {sig.shape[-1]} volumes but {n_angles} flip angles were given; "
            "give one flip angle per volume."
        )
    return sig


def _default_mask(sig: np.ndarray) -> np.ndarray:
    """Voxels with finite, positive signals whose mean is above 10% of the 99th percentile of the mean."""
    finite = np.all(np.isfinite(sig), axis=-1) & np.all(sig > 0, axis=-1)
    mean = np.where(finite, sig.mean(axis=-1), 0.0)
    if not finite.any():
        return finite
    thr = 0.1 * np.percentile(mean[finite], 99)
    return finite & (mean > thr)


def _mask_of(mask, sig: np.ndarray) -> np.ndarray:
    """The given mask restricted to finite signals, or :func:`_default_mask` when ``mask`` is None."""
    if mask is None:
        return _default_mask(sig)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != sig.shape[:-1]:
        raise InputError(f"mask: shape {mask.shape} differs from the image grid {sig.shape[:-1]}; use a mask on the same grid.")
    return mask & np.all(np.isfinite(sig), axis=-1)


def mask_from_map(data) -> np.ndarray:
    """Boolean mask from a mask image: a fractional (probability) map in [0, 1] is thresholded at 0.5,
    anything else (binary masks, label maps) at > 0."""
    arr = np.nan_to_num(np.asarray(data, dtype=float))
    if arr.size and arr.min() >= 0 and arr.max() <= 1 and np.any((arr > 0) & (arr < 1)):
        return arr >= 0.5
    return arr > 0


def spgr_protocol(metadata: dict, n_volumes: int, *, flip_angles_deg=None, tr=None, source: str = "SPGR series"):
    """Flip angles (deg) and TR (s) of an SPGR series: given values override the BIDS sidecar.

    ``FlipAngle`` (a list, one per volume) and ``RepetitionTime`` are read from ``metadata``; the
    result is validated by :func:`check_protocol` (count vs volumes, >= 2 angles, TR present).
    """
    fa = flip_angles_deg if flip_angles_deg is not None and len(np.atleast_1d(flip_angles_deg)) else metadata.get("FlipAngle")
    tr = tr if tr is not None else metadata.get("RepetitionTime")
    return check_protocol(fa, tr, n_volumes, source=source)


def load_spgr(paths, *, flip_angles_deg=None, tr=None):
    """Load an SPGR series: one 4D file, or several 3D files (one per flip angle, sidecars read).

    Returns
    -------
    (Volume, ndarray, float)
        The 4D series, its flip angles (deg) and TR (s).
    """
    from napari_myelin.io.volume import Volume, load_volume

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputError("SPGR series: no file was given; pass the 4D SPGR image (or one file per flip angle).")
    vols = [load_volume(p) for p in paths]
    if len(vols) == 1:
        vol = vols[0]
        if vol.data.ndim != 4:
            raise InputError(f"{vol.path}: is 3D; the SPGR series needs one volume per flip angle (4D, or several files).")
        meta = vol.metadata
    else:
        for v in vols:
            if v.data.ndim != 3 or v.shape != vols[0].shape or not np.allclose(v.affine, vols[0].affine, atol=1e-4):
                raise InputError(f"{v.path}: not a 3D volume on the grid of {vols[0].path}; all flip angles must share one grid.")
        meta = dict(vols[0].metadata)
        if flip_angles_deg is None:
            if any("FlipAngle" not in v.metadata for v in vols):
                missing = next(v.path for v in vols if "FlipAngle" not in v.metadata)
                raise InputError(f"{missing}: its JSON sidecar has no FlipAngle; add it (deg) or pass --flip-angles.")
            meta["FlipAngle"] = [float(np.atleast_1d(v.metadata["FlipAngle"])[0]) for v in vols]
        vol = Volume(np.stack([v.data for v in vols], axis=-1), vols[0].affine, vols[0].header, meta, vols[0].path)
    fa, tr = spgr_protocol(meta, vol.shape[3], flip_angles_deg=flip_angles_deg, tr=tr, source=str(vol.path))
    return vol, fa, tr
