"""The DKI entry point: :func:`fit_dki` from a 4D DWI and its diffusion table to scalar maps.

Protocol checked (:mod:`~napari_myelin.reconst.dki.protocol`), optional preprocessing (MP-PCA
denoising, Gibbs unringing), brain mask (given or automatic), the model fitted to the masked voxels in
chunks on worker threads (:mod:`~napari_myelin.reconst.dki.tensor`,
:mod:`~napari_myelin.reconst.dki.metrics`) with progress and cancellation, and the maps assembled on
the image grid with their units (mm^2/s for diffusivities, dimensionless kurtosis) and provenance.

References
----------
Henriques RN et al., "Diffusional kurtosis imaging in the diffusion imaging in Python project",
Front Hum Neurosci 15:675433 (2021).
Veraart J et al., "Denoising of diffusion MRI using random matrix theory", NeuroImage 142:394
(2016). Kellner E et al., "Gibbs-ringing artifact removal based on local subvoxel-shifts",
Magn Reson Med 76:1574 (2016).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.dki.metrics import MAX_KURTOSIS, MIN_KURTOSIS, fractional_anisotropy, kurtosis_maps
from napari_myelin.reconst.dki.protocol import check_protocol, design_matrix, shell_values
from napari_myelin.reconst.dki.tensor import MIN_SIGNAL, fit_dki_params
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step, subrange

MAP_UNITS = {
    "fa": "fraction", "md": "mm^2/s", "ad": "mm^2/s", "rd": "mm^2/s",
    "mk": "dimensionless", "ak": "dimensionless", "rk": "dimensionless",
    "kfa": "fraction", "mkt": "dimensionless", "s0": "a.u.", "mask": "boolean",
    "fa_rgb": "fraction", "v1": "unit vector",
}
MAP_DESCRIPTIONS = {
    "fa": "fractional anisotropy of the diffusion tensor (DKI fit)",
    "md": "mean diffusivity (DKI fit)",
    "ad": "axial diffusivity, largest eigenvalue of the diffusion tensor",
    "rd": "radial diffusivity, mean of the two smaller eigenvalues",
    "mk": "mean kurtosis, analytical (Tabesh 2011)",
    "ak": "axial kurtosis along the principal diffusion direction, analytical",
    "rk": "radial kurtosis perpendicular to the principal diffusion direction, analytical",
    "kfa": "kurtosis fractional anisotropy (Glenn 2015)",
    "mkt": "mean of the kurtosis tensor, trace(W)/5 (Hansen 2013)",
    "s0": "signal without diffusion weighting estimated by the fit",
    "mask": "voxels that were fitted",
    "fa_rgb": "direction-encoded colour FA: |principal eigenvector| (R, G, B = x, y, z) times FA",
    "v1": "principal eigenvector of the diffusion tensor (x, y, z components)",
}

#: Maps computed per fitted voxel (``mk_unclipped`` only for the black-voxel fraction).
_VOXEL_MAPS = ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "s0", "mk_unclipped")


def automatic_mask(dwi: np.ndarray, bvals: np.ndarray, *, b0_threshold: float = 50.0) -> np.ndarray:
    """Brain mask from dipy's ``median_otsu`` on the mean b=0 volume (lowest-b volumes if no b=0)."""
    from dipy.segment.mask import median_otsu

    b0 = bvals <= b0_threshold
    if not b0.any():
        b0 = bvals <= bvals.min() + 1
    mean_b0 = np.asarray(dwi[..., b0], dtype=float).mean(axis=-1)
    mean_b0 = np.nan_to_num(mean_b0, nan=0.0, posinf=0.0, neginf=0.0)
    _, mask = median_otsu(mean_b0, median_radius=4, numpass=4)
    return mask.astype(bool)


def preprocess(
    dwi: np.ndarray, *, denoise: bool = False, degibbs: bool = False, mask=None, progress=None, cancel=None
) -> np.ndarray:
    """Optional MP-PCA denoising (dipy ``mppca``, patch radius 2) then Gibbs unringing (``gibbs_removal``)."""
    data = np.asarray(dwi, dtype=float)
    if denoise:
        from dipy.denoise.localpca import mppca

        step(progress, cancel, 0.0, "MP-PCA denoising")
        data = mppca(data, patch_radius=2, suppress_warning=True)
    if degibbs:
        from dipy.denoise.gibbs import gibbs_removal

        step(progress, cancel, 0.5, "removing Gibbs ringing")
        data = gibbs_removal(np.array(data, dtype=float), slice_axis=2, inplace=False,
                             num_processes=os.cpu_count() or 1)
    step(progress, cancel, 1.0, "preprocessing done")
    return data


def fit_dki(
    dwi: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    method: str = "WLS",
    min_kurtosis: float | None = MIN_KURTOSIS,
    max_kurtosis: float | None = MAX_KURTOSIS,
    denoise: bool = False,
    degibbs: bool = False,
    max_bval: float | None = None,
    b0_threshold: float = 50.0,
    affine: np.ndarray | None = None,
    chunk_size: int = 20000,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Maps:
    """Fit diffusion kurtosis imaging to a 4D DWI and return its scalar maps.

    Parameters
    ----------
    dwi : ndarray (X, Y, Z, N)
        Diffusion-weighted volumes, in the stored voxel order of the file (the b-vectors refer to
        its voxel axes, FSL convention).
    bvals : ndarray (N,)
        b-values in s/mm^2.
    bvecs : ndarray (N, 3) or (3, N)
        Unit gradient directions.
    mask : ndarray (X, Y, Z) of bool, optional
        Voxels to fit; by default an automatic brain mask (dipy ``median_otsu`` on the mean b=0).
    method : {"WLS", "OLS"}
        Weighted (weights from an OLS prediction, dipy's default) or ordinary linear least squares.
    min_kurtosis, max_kurtosis : float or None
        Limits of MK, AK, RK and MKT, by default dipy's ``-3/7`` and ``10``. Use e.g. ``0`` and
        ``3`` to clip for display; ``None`` disables a limit.
    denoise, degibbs : bool
        MP-PCA denoising (Veraart 2016) and Gibbs unringing (Kellner 2016) with dipy, before the fit.
    max_bval : float, optional
        Volumes with b above this (s/mm^2) are left out (DKI is usually fitted on b <= 2500-3000).
    b0_threshold : float
        b-values at or below this count as b=0 (s/mm^2).
    affine : ndarray (4, 4), optional
        Voxel-to-world matrix; when given, the colour FA is coded in world (RAS) axes
        (red = left-right, green = anterior-posterior, blue = inferior-superior), else in voxel axes.
    chunk_size : int
        Voxels per batch; each of the (up to ``os.cpu_count()``) worker threads holds about
        ``chunk_size * (4 * N + 700) * 8`` bytes.
    progress, cancel
        See :mod:`napari_myelin.utils.progress`.

    Returns
    -------
    Maps
        ``fa``, ``md``, ``ad``, ``rd`` (mm^2/s), ``mk``, ``ak``, ``rk``, ``kfa``, ``mkt``, ``s0``,
        ``mask``, ``v1`` (X, Y, Z, 3) principal eigenvector in voxel axes, and ``fa_rgb`` (X, Y, Z, 3)
        direction-encoded colour FA. ``parameters["black_voxel_fraction"]`` is the fraction of fitted
        voxels whose (unclipped) MK is negative -- implausible kurtosis ("black voxels"), typically
        from noise, Gibbs ringing or motion.

    Raises
    ------
    InputError
        Not 4D, diffusion table problems (see :func:`check_protocol`), mask of another shape, or an
        empty mask.
    """
    dwi = np.asarray(dwi)
    method = _check_call(dwi, method)
    bvals, bvecs, keep = _volumes(bvals, bvecs, dwi.shape[-1], max_bval, b0_threshold)
    mask = _given_mask(mask, dwi.shape[:3])
    step(progress, cancel, 0.0, "checking the protocol")
    data, pre_share = _preprocessed(dwi, keep, denoise, degibbs, progress, cancel)
    mask, mask_source, n_nonfinite = _fit_mask(data, mask, bvals, b0_threshold)
    design = design_matrix(bvals, bvecs)
    rot = _colour_axes(affine)
    fitted = _fit_voxels(data, mask, design, method=method, min_kurtosis=min_kurtosis, max_kurtosis=max_kurtosis,
                         chunk_size=chunk_size, share=(pre_share, 1.0 - pre_share), progress=progress, cancel=cancel)
    step(progress, cancel, 1.0, "assembling maps")
    parameters = _parameters(method, bvals, fitted, rot, min_kurtosis=min_kurtosis, max_kurtosis=max_kurtosis,
                             b0_threshold=b0_threshold, max_bval=max_bval, denoise=denoise, degibbs=degibbs,
                             mask_source=mask_source, voxels_fitted=int(mask.sum()), n_nonfinite=n_nonfinite)
    return _dki_maps(fitted, mask, rot, method, parameters)


def _check_call(dwi: np.ndarray, method: str) -> str:
    """Check that the DWI is 4D and the fit method known; the method in upper case."""
    if dwi.ndim != 4:
        raise InputError(f"DWI: has {dwi.ndim} dimensions; DKI needs a 4D series (x, y, z, volumes).")
    if str(method).upper() not in ("WLS", "OLS"):
        raise InputError(f"method: '{method}' is not a DKI fit method; use 'WLS' or 'OLS'.")
    return str(method).upper()


def _volumes(bvals, bvecs, n_volumes: int, max_bval, b0_threshold: float):
    """The checked diffusion table of the volumes used (b <= ``max_bval``) and the mask of those volumes."""
    bvals, bvecs = check_protocol(bvals, bvecs, n_volumes, b0_threshold=b0_threshold)
    keep = np.ones(bvals.size, dtype=bool)
    if max_bval is not None:
        keep = bvals <= max_bval
        bvals, bvecs = check_protocol(bvals[keep], bvecs[keep], None, b0_threshold=b0_threshold,
                                      source=f"bval/bvec with b <= {max_bval:g}")
    return bvals, bvecs, keep


def _given_mask(mask, grid_shape):
    """A user's mask as bool, checked against the DWI grid (``None`` passes through)."""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != grid_shape:
            raise InputError(f"mask: its shape {mask.shape} differs from the DWI grid {grid_shape}; use a mask on the DWI grid.")
        mask = mask.astype(bool)
    return mask


def _preprocessed(dwi, keep, denoise: bool, degibbs: bool, progress, cancel):
    """The volumes used, denoised and unringed on request, and the share of progress that took."""
    data = dwi[..., keep] if not keep.all() else dwi
    pre_share = 0.3 if denoise else (0.1 if degibbs else 0.0)
    if denoise or degibbs:
        data = preprocess(data, denoise=denoise, degibbs=degibbs, progress=subrange(progress, 0.0, pre_share), cancel=cancel)
    return data, pre_share


def _fit_mask(data: np.ndarray, mask, bvals: np.ndarray, b0_threshold: float):
    """The voxels to fit: the given or automatic mask without non-finite signal.

    Returns the mask, how it was made, and the number of mask voxels skipped for non-finite signal.
    """
    mask_source = "given"
    if mask is None:
        mask = automatic_mask(data, bvals, b0_threshold=b0_threshold)
        mask_source = "automatic (dipy median_otsu on the mean b=0, radius 4, 4 passes)"
    finite = np.isfinite(data).all(axis=-1) if data.dtype.kind == "f" else np.ones(mask.shape, bool)
    n_nonfinite = int((mask & ~finite).sum())
    mask = mask & finite
    if not mask.any():
        raise InputError("mask: no voxel to fit (the mask is empty); draw or pass a mask that covers the brain.")
    return mask, mask_source, n_nonfinite


def _colour_axes(affine):
    """Unit-column rotation from voxel to world axes for the colour FA (``None`` without an affine)."""
    if affine is None:
        return None
    rzs = np.asarray(affine, dtype=float)[:3, :3]
    return rzs / np.linalg.norm(rzs, axis=0)


def _fit_voxels(data, mask, design, *, method, min_kurtosis, max_kurtosis, chunk_size, share, progress, cancel):
    """Fit every mask voxel, in chunks of ``chunk_size`` on worker threads.

    Returns the per-voxel maps of :data:`_VOXEL_MAPS` and ``v1`` (n, 3), the principal eigenvectors.
    ``share`` is the (start, width) of the progress range the fit reports in.
    """
    design_pinv = np.linalg.pinv(design)
    voxels = np.asarray(data[mask], dtype=float)
    n_vox = voxels.shape[0]
    out = {k: np.zeros(n_vox) for k in _VOXEL_MAPS}
    out["v1"] = np.zeros((n_vox, 3))

    def fit_chunk(start: int, stop: int) -> None:
        p = fit_dki_params(voxels[start:stop], design, method=method, design_pinv=design_pinv)
        ev = p["evals"]
        out["fa"][start:stop] = fractional_anisotropy(ev)
        out["md"][start:stop] = ev.mean(axis=1)
        out["ad"][start:stop] = ev[:, 0]
        out["rd"][start:stop] = ev[:, 1:].mean(axis=1)
        out["s0"][start:stop] = p["s0"]
        kmaps = kurtosis_maps(ev, p["evecs"], p["kt"], min_kurtosis=min_kurtosis, max_kurtosis=max_kurtosis)
        for key, val in kmaps.items():
            out[key][start:stop] = val
        out["v1"][start:stop] = p["evecs"][:, :, 0]

    _run_chunks(fit_chunk, n_vox, chunk_size, share, progress, cancel)
    return out


def _run_chunks(fit_chunk, n_vox: int, chunk_size: int, share, progress, cancel) -> None:
    """Call ``fit_chunk(start, stop)`` over ``n_vox`` voxels on up to 8 threads, reporting progress.

    numpy's linalg and ufunc loops release the GIL: chunks run on all cores, results land in place.
    At most one chunk per worker is pending; on cancellation the pending chunks are cancelled.
    """
    pre_share, fit_share = share
    bounds = [(s, min(s + chunk_size, n_vox)) for s in range(0, n_vox, chunk_size)]
    n_workers = max(1, min(os.cpu_count() or 1, len(bounds), 8))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        pending = []
        for i, (start, stop) in enumerate(bounds):
            pending.append(pool.submit(fit_chunk, start, stop))
            if len(pending) >= n_workers:
                pending.pop(0).result()
                done = bounds[i - n_workers + 1][1]
                try:
                    step(progress, cancel, pre_share + fit_share * done / n_vox, f"fitted {done} of {n_vox} voxels")
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
        for f in pending:
            f.result()


def _map_volumes(fitted: dict, mask: np.ndarray, rot) -> dict[str, np.ndarray]:
    """The per-voxel maps on the image grid, with ``mask``, ``v1`` and the colour FA ``fa_rgb``."""
    arrays: dict[str, np.ndarray] = {}
    for key in ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "s0"):
        vol = np.zeros(mask.shape)
        vol[mask] = fitted[key]
        arrays[key] = vol
    arrays["mask"] = mask.copy()
    v1 = fitted["v1"]
    v1_vol = np.zeros(mask.shape + (3,))
    v1_vol[mask] = v1
    direction = v1 if rot is None else v1 @ rot.T
    rgb = np.zeros(mask.shape + (3,))
    rgb[mask] = np.abs(direction) * np.clip(fitted["fa"], 0, 1)[:, None]
    arrays["fa_rgb"] = rgb
    arrays["v1"] = v1_vol
    return arrays


def _parameters(method, bvals, fitted, rot, *, min_kurtosis, max_kurtosis, b0_threshold, max_bval, denoise, degibbs,
                mask_source, voxels_fitted, n_nonfinite) -> dict[str, Any]:
    """Provenance of the fit (written in the sidecars), with the black-voxel fraction of ``fitted``."""
    return {
        "method": method,
        "reference": "dipy 1.12.1 DiffusionKurtosisModel(fit_method=%r), analytical mk/ak/rk" % method,
        "min_kurtosis": min_kurtosis,
        "max_kurtosis": max_kurtosis,
        "min_signal": MIN_SIGNAL,
        "b0_threshold_s_per_mm2": b0_threshold,
        "shells_s_per_mm2": shell_values(bvals, b0_threshold=b0_threshold),
        "volumes_used": int(bvals.size),
        "max_bval": max_bval,
        "preprocessing": {
            "mppca_denoising": bool(denoise),
            "gibbs_unringing": bool(degibbs),
            "software": "dipy.denoise.localpca.mppca (patch_radius=2), dipy.denoise.gibbs.gibbs_removal (slice_axis=2)",
        },
        "mask": mask_source,
        "voxels_fitted": voxels_fitted,
        "voxels_with_nonfinite_signal_skipped": n_nonfinite,
        "black_voxel_fraction": float((fitted["mk_unclipped"] < 0).mean()),
        "black_voxel_definition": "fraction of fitted voxels with negative mean kurtosis before clipping",
        "colour_axes": "world RAS (from the affine)" if rot is not None else "voxel axes",
    }


def _dki_maps(fitted: dict, mask: np.ndarray, rot, method: str, parameters: dict) -> Maps:
    """The output maps on the image grid with their units, descriptions, method and parameters."""
    units = dict(MAP_UNITS)
    if rot is None:
        units["v1"] = "unit vector (voxel axes)"
    return Maps(_map_volumes(fitted, mask, rot), units=units, descriptions=dict(MAP_DESCRIPTIONS),
                method="DKI " + method, parameters=parameters)
