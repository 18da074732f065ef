"""Dipole inversion (local field in ppm -> susceptibility chi in ppm) and the map's reference.

:func:`tkd` (thresholded k-space division, threshold 0.15, with the truncation-bias correction
:func:`tkd_correction`), :func:`tikhonov` (gradient-Tikhonov, conjugate gradients) and :func:`tv_admm`
(TV-regularised ADMM with closed-form FFT updates); :func:`reference_chi` subtracts the whole-brain
(default) or CSF mean. Gradients are periodic forward differences per voxel.

References
----------
Shmueli K et al. Magnetic susceptibility mapping of brain tissue in vivo using MRI phase data (TKD). MRM 62:1510 (2009).
Schweser F et al. Toward online reconstruction of quantitative susceptibility maps: superfast dipole
inversion. MRM 69:1582-1594 (2013).
Bilgic B et al. Fast quantitative susceptibility mapping with L1-regularization and automatic parameter
selection. MRM 72:1444-1459 (2014).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from napari_myelin.reconst.dipole import dipole_kernel
from napari_myelin.reconst.inverse import _cg, _fast_box, _grad_into, _grad_symbol, _grad_t_into, _Grid, _voxel
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

INVERSION_METHODS = ("tv", "tkd", "tikhonov")


def tkd_correction(threshold: float) -> float:
    """Mean of ``D * D_tkd^-1`` over k directions: the factor by which TKD scales large structures.

    ``D = 1/3 - u^2`` with ``u = cos(theta)`` uniform on [0, 1] for isotropic k directions; the
    truncated inverse is ``1/D`` where ``|D| > t`` and ``sign(D)/t`` elsewhere, so the product is
    ``|D|/t < 1`` in the truncated cone. Dividing the TKD map by this factor is the correction of
    Schweser et al. (2013) (about 0.87 at t = 0.15, i.e. 13% underestimation).
    """
    u = (np.arange(200000) + 0.5) / 200000
    d = np.abs(1.0 / 3.0 - u**2)
    return float(np.mean(np.where(d > threshold, 1.0, d / threshold)))


def tkd(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    b0_dir=(0.0, 0.0, 1.0),
    *,
    threshold: float = 0.15,
    correct: bool = True,
    pad="auto",
) -> np.ndarray:
    """Thresholded k-space division (Shmueli 2009): ``chi = F^-1{ F{f} / D_t }`` within the mask,
    ``1/D_t = 1/D`` where ``|D| > t`` else ``sign(D)/t``; with ``correct`` divided by
    :func:`tkd_correction` (Schweser 2013)."""
    mask = np.asarray(mask, bool)
    sl = _fast_box(mask, 2)
    g = _Grid(mask[sl].shape, pad)
    d = dipole_kernel(g.full, voxel_size_mm, b0_dir, real=True, dtype=np.float32)
    inv = np.where(np.abs(d) > threshold, 1.0 / np.where(d == 0, 1, d), np.sign(d) / threshold).astype(np.float32)
    inv.flat[0] = 0.0
    chi = g.ifft(g.fft(np.where(mask, local_field_ppm, 0)[sl]) * inv)
    if correct:
        chi /= tkd_correction(threshold)
    out = np.zeros(mask.shape, np.float32)
    out[sl] = np.where(mask[sl], chi, 0)
    return out


def tikhonov(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    b0_dir=(0.0, 0.0, 1.0),
    *,
    lam: float = 2e-3,
    max_iter: int = 60,
    tol: float = 1e-3,
    pad="auto",
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Gradient-Tikhonov inversion by conjugate gradients:
    ``min ||M (D chi - f)||^2 + lam ||grad chi||^2`` -> ``(D M D + lam G^T G) chi = D M f``."""
    mask = np.asarray(mask, bool)
    sl = _fast_box(mask, 4)
    g = _Grid(mask[sl].shape, pad)
    d = dipole_kernel(g.full, voxel_size_mm, b0_dir, real=True, dtype=np.float32)
    e2 = _grad_symbol(g.full)
    m_full = np.zeros(g.full, np.float32)
    m_full[g.sl] = mask[sl]
    f_full = np.zeros(g.full, np.float32)
    f_full[g.sl] = np.where(mask, local_field_ppm, 0)[sl]

    def a(x):
        x = x.reshape(g.full)
        xs = sfft.rfftn(x, workers=g.workers)
        dx = sfft.irfftn(xs * d, s=g.full, workers=g.workers)
        y = sfft.rfftn(m_full * dx, workers=g.workers) * d + lam * e2 * xs
        return sfft.irfftn(y, s=g.full, workers=g.workers).ravel()

    b = sfft.irfftn(sfft.rfftn(m_full * f_full, workers=g.workers) * d, s=g.full, workers=g.workers).ravel()
    chi = _cg(a, b, max_iter=max_iter, tol=tol, progress=progress, cancel=cancel, label="Tikhonov")
    out = np.zeros(mask.shape, np.float32)
    out[sl] = np.where(mask[sl], chi.reshape(g.full)[g.sl], 0)
    return out


def tv_admm(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    b0_dir=(0.0, 0.0, 1.0),
    *,
    lam: float = 1e-4,
    rho: float = 2e-2,
    max_iter: int = 200,
    tol: float = 3e-3,
    margin: int = 4,
    pad=16,
    scale_lam: bool = True,
    progress=None,
    cancel=None,
) -> np.ndarray:
    """TV-regularised dipole inversion by ADMM with closed-form FFT updates (Bilgic et al. 2014).

    ``min_chi 1/2 ||D chi - f||^2 + lam ||grad chi||_1``, split ``z = grad chi``:

    ``lam`` is given for 1 mm voxels and, with ``scale_lam`` (default), divided by the geometric
    mean voxel size in mm: the voxel sums discretise ``int |grad chi| dV ~ h^2 sum |Delta chi|`` and
    ``int (D chi - f)^2 dV ~ h^3 sum (.)^2``, so the same continuous problem at voxel size ``h`` has
    ``lam / h``. The default 1e-4 at 1 mm (half the challenge-tuned 2e-4 of Bilgic's code, for fields in
    ppm) gives 5e-5 at 2 mm; on the project phantom this is where TV beats TKD both inversion-only and
    through the whole pipeline (docs/estimators/qsm.md). ``rho`` is not rescaled.

    * ``chi = F^-1{ (D F f + rho F grad^T (z - u)) / (D^2 + rho sum|E_i|^2) }``
    * ``z = soft(grad chi + u, lam / rho)``; ``u += grad chi - z``

    (periodic forward differences per voxel, ``E_i`` their symbols). With ``v = grad chi + u`` the
    two last updates are ``u = clip(v, -lam/rho, lam/rho)``, ``z = v - u``, so ``z - u = v - 2u``:
    one stacked gradient buffer and no temporaries per iteration (float32, in place). Stops when the
    relative change of ``chi`` falls below ``tol`` or after ``max_iter`` iterations. Runs on the
    mask's bounding box plus ``margin`` (fast FFT sizes), zero padded by ``pad``.
    """
    mask = np.asarray(mask, bool)
    if scale_lam:
        lam = lam / float(np.prod(_voxel(voxel_size_mm)) ** (1.0 / 3.0))
    box = _fast_box(mask, margin)
    m = mask[box]
    g = _Grid(m.shape, pad)
    d = dipole_kernel(g.full, voxel_size_mm, b0_dir, real=True, dtype=np.float32)
    denom = d * d + np.float32(rho) * _grad_symbol(g.full)
    denom.flat[0] = 1.0
    inv = (1.0 / denom).astype(np.float32)
    del denom
    f_full = np.zeros(g.full, np.float32)
    f_full[g.sl] = np.where(m, np.asarray(local_field_ppm)[box], 0)
    base = sfft.rfftn(f_full, workers=g.workers)  # D F f / denom
    base *= d * inv
    del f_full
    rho_inv = (np.float32(rho) * inv).astype(np.float32)
    u = np.zeros((3,) + g.full, np.float32)
    v = np.zeros_like(u)
    div = np.zeros(g.full, np.float32)
    chi = np.zeros(g.full, np.float32)
    thr = np.float32(lam / rho)
    for it in range(max_iter):
        if it > 0:  # z - u = v - 2u
            v -= u
            v -= u
            _grad_t_into(v, div)
            spec = sfft.rfftn(div, workers=g.workers)
            spec *= rho_inv
            spec += base
        else:
            spec = base
        new = sfft.irfftn(spec, s=g.full, workers=g.workers)
        chi -= new
        change = float(np.linalg.norm(chi)) / max(float(np.linalg.norm(new)), 1e-12)
        chi = new
        _grad_into(chi, v)
        v += u
        np.clip(v, -thr, thr, out=u)
        step(progress, cancel, (it + 1) / max_iter, f"TV-ADMM iteration {it + 1}")
        if it > 5 and change < tol:
            break
    out = np.zeros(mask.shape, np.float32)
    out[box] = np.where(m, chi[g.sl], 0)
    return out


def reference_chi(chi: np.ndarray, mask: np.ndarray, reference="mean", reference_mask=None):
    """Reference the map: subtract the whole-brain mean (default) or the mean of a CSF mask.

    Returns ``(referenced chi, description dict)``.
    """
    mask = np.asarray(mask, bool)
    if reference == "mean":
        region = mask
        label = "whole-brain mean"
    elif reference == "csf":
        if reference_mask is None:
            raise InputError("reference_mask: the CSF reference needs a CSF mask; give one or use reference='mean'.")
        region = np.asarray(reference_mask, bool) & mask
        if not region.any():
            raise InputError("reference_mask: does not overlap the brain mask; give a CSF mask inside the brain.")
        label = "CSF mean"
    else:
        raise InputError(f"reference: {reference!r} is not 'mean' or 'csf'.")
    value = float(chi[region].mean())
    return np.where(mask, chi - value, 0).astype(np.float32), {
        "Reference": label, "ReferenceValueSubtracted_ppm": value, "ReferenceVoxels": int(region.sum())}
