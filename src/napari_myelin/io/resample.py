"""Resampling a volume onto another grid through world (scanner) coordinates.

Used wherever two images of a subject must share a grid without registration (they were acquired
in one session, so their affines already place them in one world frame): B1 maps onto SPGR,
maps onto a labels grid for statistics, template probability maps onto another resolution.
Registration-based resampling lives in :mod:`napari_myelin.align.registration`.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import ndimage

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step
from napari_myelin.io.volume import Volume


def resample_to_grid(
    vol: Volume,
    target_affine: np.ndarray,
    target_shape: Sequence[int],
    *,
    order: int = 1,
    cval: float | None = np.nan,
    progress=None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a 3D volume onto another grid through world coordinates.

    Each target voxel centre ``ijk`` is mapped to the source voxel coordinates
    ``A_src^-1 A_target ijk`` and interpolated there (``order=1`` trilinear for maps, ``order=0``
    nearest neighbour for labels). Processed in slabs of target slices (bounded memory).

    Returns
    -------
    data : ndarray
        Resampled data (float64 for ``order >= 1``; the source dtype for ``order=0``); ``cval``
        outside the source field of view (``None``: the nearest edge value).
    inside : ndarray of bool
        Target voxels whose centre lies inside the source grid.
    """
    src = np.asarray(vol.data)
    target_shape = tuple(int(s) for s in target_shape[:3])
    m = np.linalg.inv(vol.affine) @ np.asarray(target_affine, dtype=float)
    if order == 0:
        out = np.empty(target_shape, dtype=src.dtype)
        src_in = src
    else:
        out = np.empty(target_shape, dtype=np.float64)
        src_in = src.astype(np.float64, copy=False)
    inside = np.empty(target_shape, dtype=bool)
    nx, ny, nz = target_shape
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    slab = max(1, int(2_000_000 // max(nx * ny, 1)))
    for k0 in range(0, nz, slab):
        step(progress, cancel, k0 / nz, "resampling")
        ks = np.arange(k0, min(nz, k0 + slab))
        ijk = np.stack(
            [np.broadcast_to(ii[..., None], (nx, ny, ks.size)),
             np.broadcast_to(jj[..., None], (nx, ny, ks.size)),
             np.broadcast_to(ks[None, None, :], (nx, ny, ks.size))]
        ).reshape(3, -1).astype(np.float64)
        coords = m[:3, :3] @ ijk + m[:3, 3:4]
        tol = 1e-6
        ok = np.all((coords >= -tol) & (coords <= np.asarray(src.shape[:3])[:, None] - 1 + tol), axis=0)
        if order == 0:
            coords = np.round(coords)
        vals = ndimage.map_coordinates(src_in, coords, order=order, mode="nearest", prefilter=False)
        if cval is not None:
            vals = np.where(ok, vals, cval) if order else np.where(ok, vals, np.asarray(cval).astype(src.dtype))
        out[:, :, ks] = vals.reshape(nx, ny, ks.size)
        inside[:, :, ks] = ok.reshape(nx, ny, ks.size)
    return out, inside


def resample_like(moving: Volume, reference: Volume, *, order: int = 1, name: str = "map") -> np.ndarray:
    """``moving`` (3D) as an array on the grid of ``reference``, by world coordinates.

    Linear interpolation (``order=1``) or nearest neighbour (``order=0``); target voxels outside the
    moving volume take the nearest edge value. Returns ``moving.data`` unchanged when the grids
    already match.

    Raises
    ------
    InputError
        ``moving`` is not 3D, or the two fields of view do not overlap.
    """
    data = np.asarray(moving.data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{name}: has {data.ndim} dimensions; a 3D map is needed.")
    shape = tuple(reference.shape[:3])
    if data.shape == shape and np.allclose(moving.affine, reference.affine, atol=1e-4):
        return data
    out, inside = resample_to_grid(Volume(data, moving.affine), reference.affine, shape, order=order, cval=None)
    if not inside.any():
        raise InputError(f"{name}: its field of view does not overlap the reference image; check that it belongs "
                         "to this session.")
    return out


def b1_on_grid(b1, spgr) -> np.ndarray:
    """The B1 map (:class:`Volume`) as an array on the SPGR grid.

    A B1 map on another grid (typical: a low-resolution AFI / Bloch-Siegert / DREAM map) is
    resampled to the SPGR grid by world coordinates with linear interpolation, with a warning;
    maps whose field of view does not overlap raise :class:`InputError`.
    """
    src = str(b1.path) if b1.path else "B1 map"
    data = np.asarray(b1.data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    same = data.shape == tuple(spgr.shape[:3]) and np.allclose(b1.affine, spgr.affine, atol=1e-4)
    if same:
        return data.astype(float)
    warnings.warn(
        f"{src}: its grid {data.shape} differs from the SPGR grid {tuple(spgr.shape[:3])}; resampled to the SPGR grid "
        "by world coordinates (linear interpolation).",
        stacklevel=2,
    )
    return resample_like(b1, spgr, order=1, name=src)
