"""The magnetic dipole: k-space kernel, forward field of a susceptibility map, B0 direction.

A susceptibility distribution ``chi`` (ppm, SI volume susceptibility x 1e6) in a main field B0 along
the unit vector ``b`` perturbs the field's component along B0 by (in ppm of B0)

.. math::

    \\delta(\\mathbf r) = \\mathcal F^{-1}\\{ D(\\mathbf k)\\, \\mathcal F\\{\\chi\\}(\\mathbf k) \\},
    \\qquad D(\\mathbf k) = \\frac13 - \\frac{(\\mathbf k \\cdot \\mathbf b)^2}{|\\mathbf k|^2},
    \\qquad D(\\mathbf 0) = 0 .

Convention (Lorentz sphere). The 1/3 term is the Lorentz-sphere correction: the kernel gives the
field felt by a nucleus inside a spherical cavity of the medium, as assumed by every QSM method
(Salomir 2003, Marques & Bowtell 2005). Consequences used by the tests and the closed forms below:

* uniform sphere of susceptibility ``chi`` and radius ``a`` (in a medium of 0):
  inside ``delta = 0``; outside ``delta = chi/3 * (a/r)^3 * (3 cos^2(theta) - 1)``,
  with ``theta`` the angle between ``r`` and B0;
* infinite cylinder whose axis makes an angle ``theta`` with B0:
  inside ``delta = chi/6 * (3 cos^2(theta) - 1)``; outside
  ``delta = chi/2 * sin^2(theta) * (a/rho)^2 * cos(2 phi)``, with ``rho`` the distance to the axis
  and ``phi`` the azimuth around the axis measured from the projection of B0 on the transverse plane.

``D(0) = 0`` sets the mean of the field over the (padded) FFT box to zero, which removes the
ill-defined, shape-dependent k = 0 term; the field of a compact source far from the box edges is
then correct up to a constant of order ``mean(chi) * volume fraction``.

Geometry. Wave numbers are in cycles/mm along the *voxel axes* (anisotropic voxels allowed); ``b`` is
B0 expressed in that orthonormal voxel frame (see :func:`b0_direction`). An oblique slab is handled by
rotating the kernel (``b`` is no longer an axis), never by resampling the data.

References
----------
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field inhomogeneity due
to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson B 19:26-34 (2003).
Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of field
inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn Reson B 25:65-78 (2005).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import scipy.fft as sfft

from napari_myelin.utils.errors import InputError

#: Worker threads used by scipy.fft in this module (all cores by default).
FFT_WORKERS = max(1, os.cpu_count() or 1)


def _as_voxel_size(voxel_size_mm) -> np.ndarray:
    vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_mm: {vs.tolist()} is not a positive voxel size; give the size in mm.")
    return vs


def _as_unit(b0_dir) -> np.ndarray:
    b = np.asarray(b0_dir, dtype=float).reshape(3)
    n = np.linalg.norm(b)
    if not np.isfinite(n) or n == 0:
        raise InputError(f"b0_dir: {b.tolist()} is not a direction; give a non-zero 3-vector.")
    return b / n


def b0_direction(affine: np.ndarray, b0_world: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Unit vector of B0 in the orthonormal frame of the voxel axes.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) affine of the image. B0 is the scanner's z axis, i.e. world z
        (superior) for images in scanner coordinates (the NIfTI convention).
    b0_world : 3-sequence
        B0 direction in world coordinates (default ``(0, 0, 1)``).

    Returns
    -------
    ndarray, shape (3,)
        ``b`` such that ``affine[:3, :3] / zooms @ b`` is ``b0_world``: the direction to give to
        :func:`dipole_kernel`. For a plumb axial acquisition this is ``(0, 0, +-1)``; for an oblique
        slab it is tilted, which rotates the kernel instead of resampling the data.
    """
    m = np.asarray(affine, dtype=float)[:3, :3]
    zooms = np.sqrt((m ** 2).sum(axis=0))
    if np.any(zooms == 0):
        raise InputError("affine: a voxel axis has zero length; the image geometry is broken.")
    rot = m / zooms
    b = np.linalg.solve(rot, _as_unit(b0_world))  # = rot.T @ b0 for a rotation, exact for sheared grids too
    return b / np.linalg.norm(b)


def _kgrid(shape, voxel_size_mm, real: bool):
    vs = _as_voxel_size(voxel_size_mm)
    freqs = [sfft.fftfreq(int(n), d=d) for n, d in zip(shape[:2], vs[:2])]
    freqs.append(sfft.rfftfreq(int(shape[2]), d=vs[2]) if real else sfft.fftfreq(int(shape[2]), d=vs[2]))
    return np.meshgrid(*freqs, indexing="ij", sparse=True)


def dipole_kernel(
    shape: Sequence[int],
    voxel_size_mm: Sequence[float] | float,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    *,
    real: bool = False,
    dtype=np.float64,
) -> np.ndarray:
    """The unit dipole kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` on an FFT grid (``D(0) = 0``).

    Parameters
    ----------
    shape : 3 ints
        Grid (voxels) the kernel is sampled on, i.e. the (padded) FFT size.
    voxel_size_mm : float or 3 floats
        Voxel size along the three voxel axes (mm).
    b0_dir : 3 floats
        B0 direction in the orthonormal voxel-axis frame (normalised here), see :func:`b0_direction`.
    real : bool
        Return only the half spectrum of ``scipy.fft.rfftn`` (last axis ``n // 2 + 1``).
    dtype
        Floating type of the result.

    Returns
    -------
    ndarray
        ``D`` in FFT order (unshifted), dimensionless.
    """
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise InputError(f"shape: {tuple(shape)} is not a 3D grid; the dipole kernel needs three sizes.")
    b = _as_unit(b0_dir)
    kx, ky, kz = _kgrid(shape, voxel_size_mm, real)
    k2 = kx * kx + ky * ky + kz * kz
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 / 3.0 - kb * kb / k2
    d[0, 0, 0] = 0.0
    return d.astype(dtype, copy=False)


def padded_shape(shape: Sequence[int], pad) -> tuple[int, ...]:
    """FFT size after zero padding: ``shape + pad`` per axis, raised to a fast FFT length.

    ``pad`` is the number of zero voxels added to each axis in total (int or 3 ints), or ``"auto"``
    (half the axis, at least 8 voxels: enough for the field of sources inside the box to decay).
    """
    shape = tuple(int(n) for n in shape[:3])
    if isinstance(pad, str):
        if pad != "auto":
            raise InputError(f"pad: {pad!r} is not understood; give 'auto' or a number of voxels.")
        extra = [max(8, n // 2) for n in shape]
    else:
        extra = np.broadcast_to(np.asarray(pad, dtype=int), (3,)).tolist()
        if any(e < 0 for e in extra):
            raise InputError(f"pad: {pad!r} is negative; give a number of voxels >= 0.")
    return tuple(sfft.next_fast_len(n + e, real=True) if e > 0 else n for n, e in zip(shape, extra))


def forward_field(
    chi: np.ndarray,
    voxel_size_mm: Sequence[float] | float,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    pad="auto",
    *,
    workers: int | None = None,
) -> np.ndarray:
    """Field perturbation (ppm of B0) of a susceptibility map (ppm): ``F^-1{ D F{chi} }``.

    Parameters
    ----------
    chi : ndarray, shape (X, Y, Z) or (X, Y, Z, N)
        Susceptibility in ppm (a batch of maps on the last axis is allowed).
    voxel_size_mm : float or 3 floats
        Voxel size (mm).
    b0_dir : 3 floats
        B0 in the voxel-axis frame (:func:`b0_direction`).
    pad : "auto", int or 3 ints
        Zero padding added per axis before the FFT (see :func:`padded_shape`); ``0`` for a periodic
        computation (e.g. an infinite cylinder along a grid axis).
    workers : int, optional
        scipy.fft threads (default :data:`FFT_WORKERS`).

    Returns
    -------
    ndarray
        Field in ppm of B0 on the grid of ``chi`` (multiply by ``gamma/2pi * B0`` for Hz).
    """
    chi = np.asarray(chi)
    if chi.ndim not in (3, 4):
        raise InputError(f"chi: has {chi.ndim} dimensions; the forward field needs a 3D map (or 4D batch).")
    dtype = np.float32 if chi.dtype == np.float32 else np.float64
    workers = FFT_WORKERS if workers is None else workers
    full = padded_shape(chi.shape[:3], pad)
    kernel = dipole_kernel(full, voxel_size_mm, b0_dir, real=True, dtype=dtype)
    if chi.ndim == 4:
        kernel = kernel[..., None]
    spec = sfft.rfftn(chi.astype(dtype, copy=False), s=full, axes=(0, 1, 2), workers=workers)
    spec *= kernel
    field = sfft.irfftn(spec, s=full, axes=(0, 1, 2), workers=workers)
    sl = tuple(slice(0, n) for n in chi.shape[:3])
    return np.ascontiguousarray(field[sl]).astype(dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# Closed forms (Lorentz-sphere convention, see module docstring)
# --------------------------------------------------------------------------------------------------


def sphere_field(coords_mm: np.ndarray, radius_mm: float, chi: float, b0_dir=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Analytic field (ppm) of a uniform sphere centred at the origin.

    Parameters
    ----------
    coords_mm : ndarray, shape (..., 3)
        Positions (mm) in the same orthonormal frame as ``b0_dir``.
    radius_mm, chi
        Sphere radius (mm) and susceptibility difference to the surroundings (ppm).

    Returns
    -------
    ndarray
        ``0`` inside, ``chi/3 (a/r)^3 (3 cos^2 theta - 1)`` outside.
    """
    coords = np.asarray(coords_mm, dtype=float)
    b = _as_unit(b0_dir)
    r = np.linalg.norm(coords, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (coords @ b) / r
        out = chi / 3.0 * (radius_mm / r) ** 3 * (3.0 * cos ** 2 - 1.0)
    return np.where(r > radius_mm, out, 0.0)


def cylinder_field(
    coords_mm: np.ndarray, radius_mm: float, chi: float, axis=(0.0, 0.0, 1.0), b0_dir=(0.0, 0.0, 1.0)
) -> np.ndarray:
    """Analytic field (ppm) of an infinite uniform cylinder through the origin.

    Inside ``chi/6 (3 cos^2 theta - 1)``; outside ``chi/2 sin^2 theta (a/rho)^2 cos 2 phi``, with
    ``theta`` the angle between the cylinder ``axis`` and B0, ``rho`` the distance to the axis and
    ``phi`` the azimuth from the projection of B0 on the plane normal to the axis.
    """
    coords = np.asarray(coords_mm, dtype=float)
    n = _as_unit(axis)
    b = _as_unit(b0_dir)
    cos_t = float(n @ b)
    sin2_t = 1.0 - cos_t ** 2
    perp = coords - (coords @ n)[..., None] * n
    rho = np.linalg.norm(perp, axis=-1)
    b_perp = b - cos_t * n
    if np.linalg.norm(b_perp) < 1e-12:  # B0 along the axis: no field outside
        outside = np.zeros_like(rho)
    else:
        u = b_perp / np.linalg.norm(b_perp)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_phi = (perp @ u) / rho
            outside = chi / 2.0 * sin2_t * (radius_mm / rho) ** 2 * (2.0 * cos_phi ** 2 - 1.0)
    inside = chi / 6.0 * (3.0 * cos_t ** 2 - 1.0)
    return np.where(rho > radius_mm, outside, inside)
