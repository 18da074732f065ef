"""The QSM entry point: :func:`fit_qsm` chains the steps of :mod:`napari_myelin.reconst.qsm`.

Inputs checked and scaled (:mod:`~napari_myelin.reconst.qsm.phase`), brain mask (given or
:func:`~napari_myelin.reconst.masking.brain_mask`) reduced to voxels with measurable phase, every array
cropped once to the mask's bounding box (+ margin, fast FFT sizes); unwrapping and echo fit -> total
field (Hz, then ppm of B0); background field removal -> local field (ppm); dipole inversion -> chi
(ppm); R2* (1/s) from the magnitude decay; the maps pasted back on the full grid and referenced.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.decay import background_sigma, decay_rate
from napari_myelin.reconst.dipole import b0_direction
from napari_myelin.reconst.masking import brain_mask
from napari_myelin.reconst.qsm.background import BFR_METHODS, lbv, pdf, sharp, vsharp
from napari_myelin.reconst.inverse import _fast_box, _paste, _voxel
from napari_myelin.reconst.qsm.inversion import INVERSION_METHODS, reference_chi, tikhonov, tkd, tv_admm
from napari_myelin.reconst.qsm.phase import check_inputs, hz_to_ppm, phase_sign_check, phase_to_radians
from napari_myelin.reconst.qsm.unwrap import (
    UNWRAP_METHODS,
    echo_fit,
    laplacian_unwrap,
    path_unwrap,
    signal_mask,
    unwrap_echoes,
)
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step, subrange


def fit_qsm(
    magnitude: np.ndarray,
    phase: np.ndarray,
    echo_times,
    *,
    field_strength: float | None,
    affine: np.ndarray | None = None,
    voxel_size_mm=None,
    mask: np.ndarray | None = None,
    unwrap: str = "laplacian",
    bfr: str = "pdf",
    inversion: str = "tv",
    reference: str = "mean",
    reference_mask: np.ndarray | None = None,
    phase_sign: int = 1,
    bfr_options: dict | None = None,
    inversion_options: dict | None = None,
    progress=None,
    cancel=None,
) -> Maps:
    """QSM from multi-echo GRE magnitude and phase.

    Parameters
    ----------
    magnitude, phase : ndarray (X, Y, Z, E) or (X, Y, Z)
        Magnitude (any scale) and phase (radians or scanner integers, see :func:`phase_to_radians`).
    echo_times : E floats
        Echo times (s).
    field_strength : float
        B0 (T). Required.
    affine : (4, 4) ndarray, optional
        Voxel-to-world affine: voxel size and the B0 direction (world z) in voxel axes (oblique slabs
        rotate the dipole kernel). Identity if omitted (then ``voxel_size_mm`` may be given).
    mask : ndarray of bool, optional
        Brain mask; computed by :func:`brain_mask` when omitted. Either way voxels without measurable
        signal are dropped (:func:`signal_mask`).
    unwrap : {"laplacian", "path"}
    bfr : {"pdf", "lbv", "vsharp", "sharp"}
    inversion : {"tv", "tkd", "tikhonov"}
    reference : {"mean", "csf"}
        Susceptibility reference (CSF needs ``reference_mask``); recorded in ``parameters``.
    phase_sign : {1, -1}
        ``-1`` when the scanner's phase decreases with a positive field. With two or more echoes the
        result is checked (:func:`~napari_myelin.reconst.qsm.phase.phase_sign_check`: high-R2* voxels
        must be paramagnetic; the counts in ``parameters["PhaseSignCheck"]``, the verdict by
        :func:`~napari_myelin.reconst.qsm.phase.phase_sign_result`) and a
        :class:`~napari_myelin.reconst.qsm.phase.PhaseSignWarning` naming ``--phase-sign`` is issued when
        they come out diamagnetic.
    bfr_options, inversion_options : dict
        Extra keyword arguments for the chosen step functions.

    Returns
    -------
    Maps
        ``field`` (Hz, echo-combined total field), ``local_field`` (ppm of B0), ``chi`` (ppm),
        ``mask`` (uint8: the voxels with a susceptibility value) and, with two or more echoes, ``r2star``
        (1/s, :mod:`napari_myelin.reconst.decay`; its noise floor in ``parameters["NoiseSigma"]``).
    """
    _check_methods(unwrap, bfr, inversion)
    te, b0 = check_inputs(magnitude, phase, echo_times, field_strength)
    voxel, bdir = _geometry(affine, voxel_size_mm)
    mag, ph = _gre_series(magnitude, phase, phase_sign)
    step(progress, cancel, 0.01, "brain mask")
    mask = brain_mask(mag) if mask is None else _given_mask(mask, ph.shape[:3])
    full_shape = mask.shape
    sigma = background_sigma(mag[..., 0], mask)
    box, mag, ph, mask = _crop_to_brain(mag, ph, mask, te)
    r2star = decay_rate(mag, te, mask, noise_sigma=sigma) if te.size > 1 else None
    field_hz = _total_field(ph, mag, te, mask, voxel, unwrap, progress, cancel)
    field_ppm = hz_to_ppm(field_hz, b0).astype(np.float32)
    opts = dict(bfr_options or {})
    local, final_mask = _remove_background(field_ppm, mask, voxel, bdir, bfr, opts, progress, cancel)
    iopts = dict(inversion_options or {})
    chi = _invert(local, final_mask, voxel, bdir, inversion, iopts, progress, cancel)
    sign_check = phase_sign_check(chi, r2star, final_mask, phase_sign=phase_sign)  # warns when inverted
    field_hz = _paste(field_hz, box, full_shape)
    local = _paste(np.where(final_mask, local, 0).astype(np.float32), box, full_shape)
    chi = _paste(chi, box, full_shape)
    final_mask = _paste(final_mask, box, full_shape)
    chi, ref = reference_chi(chi, final_mask, reference, reference_mask)
    extra = {} if r2star is None else {"r2star": _paste(np.where(final_mask[box], r2star, 0), box, full_shape)}
    step(progress, cancel, 1.0, "done")
    params = {
        "EchoTime": te.tolist(),
        "MagneticFieldStrength": b0,
        "B0DirectionVoxelAxes": bdir.tolist(),
        "VoxelSize_mm": voxel.tolist(),
        "Unwrapping": unwrap,
        "BackgroundFieldRemoval": bfr,
        "DipoleInversion": inversion,
        "BackgroundOptions": opts,
        "InversionOptions": iopts,
        "PhaseSign": int(np.sign(phase_sign) or 1),
        "PhaseSignCheck": sign_check,
        "NoiseSigma": sigma,
        **ref,
    }
    return _qsm_maps({"field": field_hz, "local_field": local, "chi": chi, "mask": final_mask.astype(np.uint8),
                      **extra}, unwrap, bfr, inversion, ref, params)


def _check_methods(unwrap: str, bfr: str, inversion: str) -> None:
    """Raise :class:`InputError` for an unknown unwrapping, background removal or inversion method."""
    if unwrap not in UNWRAP_METHODS:
        raise InputError(f"unwrap: {unwrap!r} is not one of {', '.join(UNWRAP_METHODS)}.")
    if bfr not in BFR_METHODS:
        raise InputError(f"bfr: {bfr!r} is not one of {', '.join(BFR_METHODS)}.")
    if inversion not in INVERSION_METHODS:
        raise InputError(f"inversion: {inversion!r} is not one of {', '.join(INVERSION_METHODS)}.")


def _geometry(affine, voxel_size_mm) -> tuple[np.ndarray, np.ndarray]:
    """Voxel size (mm; from the affine unless given) and the B0 direction in voxel axes."""
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    if voxel_size_mm is None:
        voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    else:
        voxel = _voxel(voxel_size_mm)
    return voxel, b0_direction(affine)


def _gre_series(magnitude, phase, phase_sign: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude (float32) and phase (rad, sign applied), both 4D with echoes last."""
    mag = np.asarray(magnitude, dtype=np.float32)
    ph = phase_to_radians(phase) * float(np.sign(phase_sign) or 1)
    if ph.ndim == 3:
        ph, mag = ph[..., None], mag[..., None]
    return mag, ph


def _given_mask(mask, grid_shape) -> np.ndarray:
    """A user's brain mask as bool, checked against the GRE grid and for emptiness."""
    mask = np.asarray(mask)
    if mask.shape != grid_shape:
        raise InputError(f"mask: shape {mask.shape} differs from the GRE grid {grid_shape}; give a mask on that grid.")
    mask = mask > 0
    if not mask.any():
        raise InputError("mask: is empty; give a brain mask with at least one voxel.")
    return mask


def _crop_to_brain(mag, ph, mask, te):
    """Crop to the mask's bounding box (+ 8 voxels, fast FFT sizes) and keep the voxels with signal.

    Returns the box (slices on the full grid), the cropped magnitude and phase, and the cropped mask
    reduced by :func:`signal_mask`; every later step runs on this crop and its maps are pasted back.
    """
    box = _fast_box(mask, 8)
    ph, mag, mask = ph[box], mag[box], mask[box]
    mask = signal_mask(mag, te, mask)
    if not mask.any():
        raise InputError("magnitude: there is no signal in the brain mask; check the magnitude and the mask.")
    return box, mag, ph, mask


def _total_field(ph, mag, te, mask, voxel, unwrap: str, progress, cancel) -> np.ndarray:
    """Unwrapping and the echo fit: the total field (Hz, float32, 0 outside ``mask``)."""
    step(progress, cancel, 0.05, f"{unwrap} unwrapping")
    if te.size > 1:  # spatial unwrapping of the first echo difference guides unwrapping along TE
        uw = unwrap_echoes(ph, te, mask, voxel, unwrap)
    elif unwrap == "laplacian":
        uw = laplacian_unwrap(ph, voxel)
    else:
        uw = path_unwrap(ph, mask)
    step(progress, cancel, 0.15, "echo combination")
    field_hz, _ = echo_fit(uw, te, mag)
    del uw
    return np.where(mask, field_hz, 0).astype(np.float32)


def _remove_background(field_ppm, mask, voxel, bdir, bfr: str, opts: dict, progress, cancel):
    """Background field removal by ``bfr``: the local field (ppm) and the mask of voxels that keep a value."""
    step(progress, cancel, 0.2, f"background removal ({bfr})")
    sub = subrange(progress, 0.2, 0.5)
    if bfr == "pdf":
        local = pdf(field_ppm, mask, voxel, bdir, progress=sub, cancel=cancel, **opts)
        final_mask = mask
    elif bfr == "lbv":
        local = lbv(field_ppm, mask, voxel, progress=sub, cancel=cancel, **opts)
        final_mask = mask & ndimage.binary_erosion(mask)
    elif bfr == "vsharp":
        local, final_mask = vsharp(field_ppm, mask, voxel, progress=sub, cancel=cancel, **opts)
    else:
        local, final_mask = sharp(field_ppm, mask, voxel, **opts)
    if not final_mask.any():
        raise InputError(f"mask: nothing is left after {bfr} background removal; use bfr='pdf' or a larger mask.")
    return local, final_mask


def _invert(local, final_mask, voxel, bdir, inversion: str, iopts: dict, progress, cancel) -> np.ndarray:
    """Dipole inversion by ``inversion``: the unreferenced susceptibility (ppm) on the crop."""
    step(progress, cancel, 0.5, f"dipole inversion ({inversion})")
    sub = subrange(progress, 0.5, 0.98)
    if inversion == "tv":
        return tv_admm(local, final_mask, voxel, bdir, progress=sub, cancel=cancel, **iopts)
    if inversion == "tikhonov":
        return tikhonov(local, final_mask, voxel, bdir, progress=sub, cancel=cancel, **iopts)
    return tkd(local, final_mask, voxel, bdir, **iopts)


def _qsm_maps(arrays: dict, unwrap, bfr, inversion, ref: dict, params: dict) -> Maps:
    """The output maps with their units, descriptions, method line and parameters."""
    units = {"field": "Hz", "local_field": "ppm", "chi": "ppm", "mask": "1", "r2star": "1/s"}
    descriptions = {
        "field": "total field offset from the echo fit of unwrapped phase (Hz)",
        "local_field": f"local (tissue) field after {bfr} background removal, ppm of B0",
        "chi": f"magnetic susceptibility ({inversion}), ppm, referenced to the {ref['Reference']}",
        "mask": "voxels with a susceptibility value (brain mask with signal, after background removal)",
        "r2star": "R2* (1/s): weighted log-linear fit of the magnitude over TE, noise-floor guarded",
    }
    return Maps(
        arrays,
        units={k: units[k] for k in arrays},
        descriptions={k: descriptions[k] for k in arrays},
        method=f"QSM: {unwrap} unwrapping, {bfr} background removal, {inversion} inversion",
        parameters=params,
    )
