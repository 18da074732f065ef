"""Building blocks of the FFT-based inverse problems (QSM, chi-separation): crops, padded grids,
periodic gradients and conjugate gradients.

Every FFT step works on the brain mask's bounding box plus a margin, widened to
``scipy.fft.next_fast_len`` sizes (:func:`_fast_box`), zero padded on a :class:`_Grid` (real
transforms, single precision, all cores); results go back on the full grid with :func:`_paste`.
Gradients are periodic forward differences per voxel (:func:`_grad_into`, its adjoint
:func:`_grad_t_into` and the k-space symbol of ``grad^T grad``, :func:`_grad_symbol`), as in the
closed-form ADMM updates of Bilgic et al. (2014). Voxel sizes are in mm; Laplacian symbols in 1/mm^2.
Shared by :mod:`napari_myelin.reconst.qsm` and :mod:`napari_myelin.reconst.chisep` (an estimator never
imports another).

References
----------
Bilgic B et al. Fast quantitative susceptibility mapping with L1-regularization and automatic parameter
selection. MRM 72:1444-1459 (2014).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from napari_myelin.reconst.dipole import FFT_WORKERS, padded_shape
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


def _voxel(voxel_size_mm) -> np.ndarray:
    return np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,)).copy()


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        raise InputError("mask: is empty; give a brain mask with at least one voxel.")
    return tuple(
        slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1)) for i, n in zip(idx, mask.shape)
    )


def _fast_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The mask's bounding box plus ``margin`` voxels, widened (within the volume) to fast FFT sizes.

    Every FFT step works on this crop (plus its own zero padding): on a head acquisition the brain's
    box is a fraction of the field of view, and ``scipy.fft.next_fast_len`` sizes avoid slow primes.
    """
    out = []
    for sl, n in zip(_bbox(mask, margin), np.shape(mask)):
        lo, hi = sl.start, sl.stop
        want = sfft.next_fast_len(hi - lo, real=True)
        if want <= n:
            lo = max(0, lo - (want - (hi - lo)) // 2)
            hi = lo + want
            if hi > n:
                lo, hi = n - want, n
        out.append(slice(lo, hi))
    return tuple(out)


def _paste(crop: np.ndarray, box, shape) -> np.ndarray:
    """Put a cropped (3D or 4D) array back on the full grid (zeros elsewhere)."""
    out = np.zeros(tuple(shape[:3]) + crop.shape[3:], crop.dtype)
    out[box] = crop
    return out


class _Grid:
    """A padded real-FFT grid for arrays of ``shape`` (crop back with :meth:`crop`)."""

    def __init__(self, shape, pad, workers=None):
        self.shape = tuple(int(n) for n in shape)
        self.full = padded_shape(self.shape, pad)
        self.workers = FFT_WORKERS if workers is None else workers
        self.sl = tuple(slice(0, n) for n in self.shape)

    def fft(self, x):
        return sfft.rfftn(np.asarray(x, dtype=np.float32), s=self.full, workers=self.workers)

    def ifft(self, spec, crop=True):
        out = sfft.irfftn(spec, s=self.full, workers=self.workers)
        return np.ascontiguousarray(out[self.sl]) if crop else out

    def kernel_fft(self, kernel_img):
        """Spectrum of a small centred kernel image (odd sizes), circularly shifted to the origin."""
        big = np.zeros(self.full, dtype=np.float32)
        c = [s // 2 for s in kernel_img.shape]
        idx = np.nonzero(kernel_img)
        big[tuple((i - ci) % n for i, ci, n in zip(idx, c, self.full))] = kernel_img[idx]
        return sfft.rfftn(big, workers=self.workers)

    def lap_symbol(self, voxel):
        """k-space symbol of the 7-point discrete Laplacian (1/mm^2, <= 0)."""
        v = _voxel(voxel)
        ks = [sfft.fftfreq(n) for n in self.full[:2]] + [sfft.rfftfreq(self.full[2])]
        terms = [(2 * np.cos(2 * np.pi * k) - 2) / d**2 for k, d in zip(ks, v)]
        kx, ky, kz = np.meshgrid(*terms, indexing="ij", sparse=True)
        return (kx + ky + kz).astype(np.float32)


def _cg(apply_a, b, x0=None, *, max_iter=100, tol=1e-3, progress=None, cancel=None, label=""):
    """Conjugate gradients for a symmetric positive (semi)definite operator (flat float arrays)."""
    x = np.zeros_like(b) if x0 is None else x0.copy()
    r = b - apply_a(x) if x0 is not None else b.copy()
    p = r.copy()
    rs = float(np.vdot(r, r))
    b_norm = np.sqrt(float(np.vdot(b, b))) or 1.0
    for it in range(max_iter):
        if np.sqrt(rs) <= tol * b_norm:
            break
        ap = apply_a(p)
        alpha = rs / float(np.vdot(p, ap))
        x += alpha * p
        r -= alpha * ap
        rs_new = float(np.vdot(r, r))
        p *= rs_new / rs
        p += r
        rs = rs_new
        step(progress, cancel, (it + 1) / max_iter, f"{label} iteration {it + 1}")
    return x


def _grad_symbol(full):
    """k-space symbol ``sum_i |E_i|^2 = sum_i (2 - 2 cos 2 pi k_i)`` of ``grad^T grad`` (periodic forward
    differences per voxel, dimensionless) on the real-FFT grid ``full``."""
    ks = [sfft.fftfreq(n) for n in full[:2]] + [sfft.rfftfreq(full[2])]
    terms = [(2 - 2 * np.cos(2 * np.pi * k)).astype(np.float32) for k in ks]
    kx, ky, kz = np.meshgrid(*terms, indexing="ij", sparse=True)
    return kx + ky + kz


def _grad_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Periodic forward differences of ``x`` written into ``out`` (shape ``(3,) + x.shape``)."""
    n0 = x.shape[0]
    np.subtract(x[1:], x[:-1], out=out[0, :-1])
    np.subtract(x[:1], x[-1:], out=out[0, n0 - 1:])
    np.subtract(x[:, 1:], x[:, :-1], out=out[1, :, :-1])
    np.subtract(x[:, :1], x[:, -1:], out=out[1, :, -1:])
    np.subtract(x[:, :, 1:], x[:, :, :-1], out=out[2, :, :, :-1])
    np.subtract(x[:, :, :1], x[:, :, -1:], out=out[2, :, :, -1:])
    return out


def _grad_t_into(g: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`_grad_into` (minus the backward-difference divergence) into ``out``."""
    np.negative(g[0], out=out)
    out[1:] += g[0, :-1]
    out[:1] += g[0, -1:]
    out -= g[1]
    out[:, 1:] += g[1, :, :-1]
    out[:, :1] += g[1, :, -1:]
    out -= g[2]
    out[:, :, 1:] += g[2, :, :, :-1]
    out[:, :, :1] += g[2, :, :, -1:]
    return out
