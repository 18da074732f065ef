"""Background field removal: total field -> local (tissue) field inside the brain mask.

Fields in any unit (returned in the same unit), voxel sizes in mm, sphere radii in mm.
:func:`pdf` (projection onto dipole fields, no erosion: the default of :func:`fit_qsm`), :func:`lbv`
(Laplacian boundary value; the one boundary voxel layer is lost), :func:`vsharp` (variable-radius
SHARP, 12 mm -> 1 mm) and :func:`sharp`.

References
----------
Liu T et al. A novel background field removal method for MRI using projection onto dipole fields (PDF).
NMR Biomed 24:1129-1136 (2011).
Zhou D et al. Background field removal by solving the Laplacian boundary value problem. NMR Biomed 27:312 (2014).
Schweser F et al. Quantitative imaging of intrinsic magnetic tissue properties using MRI signal phase (SHARP).
NeuroImage 54:2789 (2011); Li W et al. (V-SHARP) NeuroImage 55:1645 (2011); Wu B et al. MRM 67:137 (2012).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from napari_myelin.reconst.dipole import dipole_kernel
from napari_myelin.reconst.inverse import _bbox, _cg, _fast_box, _Grid, _voxel
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

BFR_METHODS = ("pdf", "lbv", "vsharp", "sharp")


def pdf(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    b0_dir=(0.0, 0.0, 1.0),
    *,
    weight: np.ndarray | None = None,
    max_iter: int = 30,
    tol: float = 1e-3,
    margin: int = 8,
    pad=0,
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Projection onto dipole fields (Liu et al. 2011): no erosion of the mask.

    The background field is modelled as the field of sources outside the mask,
    ``f_b = D (1 - M) chi_b``; ``chi_b`` solves the weighted normal equations
    ``(1-M) D M W^2 M D (1-M) chi_b = (1-M) D M W^2 f`` by conjugate gradients, stopped when the
    residual falls below ``tol`` of the right-hand side or after ``max_iter`` iterations.
    Returns ``M (f - f_b)`` -- every mask voxel keeps a value.

    The problem is solved on the mask's bounding box plus ``margin`` voxels (fast FFT sizes), zero
    padded by ``pad`` voxels per axis (``"auto"``: half the box): the background sources live in
    that shell; any harmonic field inside the mask is the field of sources on a surface around it,
    so a thin shell suffices (measured on the phantom, see docs/estimators/qsm.md), and the CG runs on a
    grid a fraction of the field of view.
    """
    mask = np.asarray(mask, bool)
    box = _fast_box(mask, margin)
    m = mask[box]
    f = np.where(m, np.asarray(field)[box], 0).astype(np.float32)
    w2 = m.astype(np.float32) if weight is None else (m * np.asarray(weight, np.float32)[box]) ** 2
    g = _Grid(m.shape, pad)
    d = dipole_kernel(g.full, voxel_size_mm, b0_dir, real=True, dtype=np.float32)
    out_full = np.ones(g.full, np.float32)
    out_full[g.sl] = ~m

    def dop(x_full):
        spec = sfft.rfftn(x_full, workers=g.workers)
        spec *= d
        return sfft.irfftn(spec, s=g.full, workers=g.workers)

    w2_full = np.zeros(g.full, np.float32)
    w2_full[g.sl] = w2
    f_full = np.zeros(g.full, np.float32)
    f_full[g.sl] = f

    def a(x):
        y = dop(out_full * x.reshape(g.full))
        y *= w2_full
        y = dop(y)
        y *= out_full
        return y.ravel()

    b = (out_full * dop(w2_full * f_full)).ravel()
    chi_b = _cg(a, b, max_iter=max_iter, tol=tol, progress=progress, cancel=cancel, label="PDF")
    fb = dop(out_full * chi_b.reshape(g.full))[g.sl]
    out = np.zeros(mask.shape, np.float32)
    out[box] = np.where(m, f - fb, 0)
    return out


def _lap_matrix(interior: np.ndarray, voxel):
    """Sparse 7-point (negative) Laplacian on the interior voxels + the coupling to the others."""
    import scipy.sparse as sp

    v = _voxel(voxel)
    n = interior.shape
    index = -np.ones(n, dtype=np.int64)
    idx = np.nonzero(interior)
    index[idx] = np.arange(idx[0].size)
    m = idx[0].size
    rows, cols, vals = [np.arange(m)], [np.arange(m)], [np.full(m, float((2.0 / v**2).sum()))]
    b_rows, b_flat, b_vals = [], [], []
    for axis in range(3):
        for sgn in (-1, 1):
            nb = [a.copy() for a in idx]
            nb[axis] = nb[axis] + sgn
            ok = (nb[axis] >= 0) & (nb[axis] < n[axis])
            r = np.arange(m)[ok]
            nbi = tuple(a[ok] for a in nb)
            j = index[nbi]
            inside = j >= 0
            rows.append(r[inside])
            cols.append(j[inside])
            vals.append(np.full(inside.sum(), -1.0 / v[axis] ** 2))
            b_rows.append(r[~inside])
            b_flat.append(np.ravel_multi_index(tuple(a[~inside] for a in nbi), n))
            b_vals.append(np.full((~inside).sum(), 1.0 / v[axis] ** 2))
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    return a, idx, np.concatenate(b_rows), np.concatenate(b_flat), np.concatenate(b_vals)


def lbv(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    *,
    tol: float = 1e-5,
    max_iter: int = 2000,
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Laplacian boundary value background removal (Zhou et al. 2014).

    The background field is harmonic inside the brain: solve ``Laplace(f_b) = 0`` on the mask's
    interior with ``f_b = f`` on the mask's one-voxel boundary layer (Dirichlet), by sparse conjugate
    gradients from a coarse-grid initial guess. Returns ``f - f_b`` on the interior; the boundary
    layer (one voxel) is 0 -- it carries no local-field information in this method.
    """
    from scipy.sparse.linalg import cg

    mask = np.asarray(mask, bool)
    sl = _bbox(mask, 1)
    m = mask[sl]
    f = np.asarray(field, np.float64)[sl]
    interior = ndimage.binary_erosion(m) & m
    if not interior.any():
        raise InputError("mask: too thin for LBV (no interior voxel); use bfr='pdf'.")
    a, idx, b_rows, b_flat, b_vals = _lap_matrix(interior, voxel_size_mm)
    rhs = np.zeros(idx[0].size)
    np.add.at(rhs, b_rows, b_vals * f.ravel()[b_flat])
    # initial guess: the field itself smoothed (it is close to the background near the boundary)
    x0 = ndimage.gaussian_filter(np.where(m, f, 0), 2)[idx] / np.maximum(ndimage.gaussian_filter(m * 1.0, 2)[idx], 1e-3)
    count = [0]

    def cb(_):
        count[0] += 1
        if count[0] % 20 == 0:
            step(progress, cancel, min(count[0] / max_iter, 0.99), f"LBV iteration {count[0]}")

    fb, _info = cg(a, rhs, x0=x0, rtol=tol, maxiter=max_iter, callback=cb)
    local = np.zeros_like(f)
    local[idx] = f[idx] - fb
    out = np.zeros(np.shape(mask), np.float32)
    out[sl] = local
    return out


def _ball(radius_mm: float, voxel) -> np.ndarray:
    """The voxels within ``radius_mm`` of the centre voxel (odd sizes), float32 0/1."""
    v = _voxel(voxel)
    half = np.floor(radius_mm / v + 1e-9).astype(int)
    ax = [np.arange(-h, h + 1) * d for h, d in zip(half, v)]
    x, y, z = np.meshgrid(*ax, indexing="ij", sparse=True)
    return (x**2 + y**2 + z**2 <= radius_mm**2 + 1e-9).astype(np.float32)


def sharp_kernels(grid: _Grid, radii_mm, voxel):
    """Spectra of the normalised spheres ``rho_r`` for each radius with more than one voxel."""
    out = []
    for r in radii_mm:
        ball = _ball(float(r), voxel)
        if ball.sum() <= 1:
            continue
        out.append((float(r), ball.sum(), grid.kernel_fft(ball / ball.sum())))
    return out


def vsharp(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    *,
    radii_mm=tuple(range(12, 0, -1)),
    threshold: float = 0.05,
    pad="auto",
    progress=None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray]:
    """V-SHARP (Li et al. 2011; Wu et al. 2012): spherical mean value filtering, radii large -> small.

    Each voxel takes the high-passed field ``(delta - rho_r) * f`` of the largest sphere that fits
    in the mask; the result is deconvolved by the largest kernel (truncated below ``threshold``) and
    masked by the mask eroded by the smallest radius used. The sphere spectra are computed once and
    reused for both the mask erosions and the filtering. Radii below one voxel are skipped.

    Returns
    -------
    local : ndarray
    eroded_mask : ndarray of bool
    """
    mask = np.asarray(mask, bool)
    g = _Grid(mask.shape, pad)
    kernels = sharp_kernels(g, sorted(radii_mm, reverse=True), voxel_size_mm)
    if not kernels:
        raise InputError(f"radii_mm: {list(radii_mm)} are all smaller than a voxel; use larger radii.")
    f_spec = g.fft(np.where(mask, field, 0))
    m_spec = g.fft(mask)
    local = np.zeros(mask.shape, np.float32)
    done = np.zeros(mask.shape, bool)
    final = None
    for i, (r, count, rho) in enumerate(kernels):
        eroded = (g.ifft(m_spec * rho) > 1 - 0.5 / count) & mask
        hp = g.ifft(f_spec * (1 - rho))
        new = eroded & ~done
        local[new] = hp[new]
        done |= eroded
        final = eroded
        step(progress, cancel, (i + 1) / (len(kernels) + 1), f"V-SHARP radius {r:g} mm")
    rho_max = kernels[0][2]
    del_k = 1 - rho_max
    inv = np.where(np.abs(del_k) > threshold, 1.0 / np.where(del_k == 0, 1, del_k), 0).astype(np.complex64)
    out = g.ifft(g.fft(np.where(final, local, 0)) * inv)
    return np.where(final, out, 0).astype(np.float32), final


def sharp(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    *,
    radius_mm: float = 5.0,
    threshold: float = 0.05,
    pad="auto",
) -> tuple[np.ndarray, np.ndarray]:
    """SHARP (Schweser et al. 2011) with one sphere radius; returns (local, eroded mask)."""
    return vsharp(field, mask, voxel_size_mm, radii_mm=(radius_mm,), threshold=threshold, pad=pad)
