"""Where the subject is: head pose and warp (template -> scanner), acquisition grids, and sampling.

A scanner point ``p_s`` (world mm) comes from the template point
``p_t = u(q) + q,  q = R^T (p_s - t) / s`` with a per-axis head scale ``s`` (head size), a rotation
``R`` (pitch up to 12 deg, roll and yaw up to 5 deg), a translation ``t`` and a smooth displacement
``u(q) = sum_k a_k exp(-|q - c_k|^2 / (2 w_k^2))`` (Gaussian bumps: local shape differences that no
affine captures). Acquired voxels are box-averaged over ``n^3`` sub-voxel points (partial volume of
the property maps) by following each sub-point back into the template (linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_myelin.sims.independent.constants import (HEAD_SCALE_CLIP, HEAD_SCALE_SD, PITCH_DEG, ROLL_YAW_DEG,
                                                      SHIFT_MM, WARP_AMPLITUDE_MM, WARP_BUMPS, WARP_WIDTH_MM)


def rotation_matrix(deg) -> np.ndarray:
    """``Rz Ry Rx`` of the angles ``deg`` (about x, y, z; degrees)."""
    x, y, z = np.deg2rad(np.asarray(deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def voxel_centres(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape (3, N)."""
    idx = np.indices(tuple(int(n) for n in shape[:3]), dtype=np.float64).reshape(3, -1)
    return affine[:3, :3] @ idx + affine[:3, 3:4]


def grid(voxel_mm, fov_mm, rotation_deg, centre, flip_x: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """Affine and shape of a grid of ``voxel_mm`` covering ``fov_mm``, rotated, centred on ``centre`` (mm).

    ``flip_x`` stores the first axis right-to-left (LAS, as dcm2niix writes many DWIs).
    """
    voxel = np.asarray(voxel_mm, float)
    shape = tuple(int(round(f / v)) for f, v in zip(fov_mm, voxel))
    axes = rotation_matrix(rotation_deg) @ np.diag(voxel * np.array([-1.0 if flip_x else 1.0, 1.0, 1.0]))
    aff = np.eye(4)
    aff[:3, :3] = axes
    aff[:3, 3] = np.asarray(centre, float) - axes @ ((np.array(shape) - 1) / 2.0)
    return aff, shape


def refined(affine: np.ndarray, shape, factor: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The grid ``factor`` times finer whose ``factor^3`` blocks tile the voxels of ``(affine, shape)``."""
    sub = np.diag([1.0 / factor] * 3 + [1.0])
    sub[:3, 3] = -(factor - 1) / (2.0 * factor)
    return affine @ sub, tuple(int(n) * factor for n in shape[:3])


def block_average(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor^3`` blocks of the first three axes (inverse of :func:`refined`)."""
    x, y, z = (n // factor for n in a.shape[:3])
    return a.reshape(x, factor, y, factor, z, factor, *a.shape[3:]).mean(axis=(1, 3, 5))


@dataclass
class Pose:
    """Template -> scanner placement of one head (see the module docstring)."""

    scale: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    bump_centres: np.ndarray  # (K, 3) template mm
    bump_shifts: np.ndarray  # (K, 3) mm
    bump_widths: np.ndarray  # (K,) mm

    def to_template(self, p_s: np.ndarray) -> np.ndarray:
        """Template points (3, N) of scanner points ``p_s`` (3, N)."""
        q = self.rotation.T @ (p_s - self.translation[:, None]) / self.scale[:, None]
        out = q.copy()
        for c, a, w in zip(self.bump_centres, self.bump_shifts, self.bump_widths):  # a few bumps
            out += a[:, None] * np.exp(-0.5 * ((q - c[:, None]) ** 2).sum(axis=0) / w ** 2)
        return out

    def to_scanner(self, p_t) -> np.ndarray:
        """Scanner points (3, N) of template points (affine part only; for far-away landmarks)."""
        p_t = np.asarray(p_t, float).reshape(3, -1)
        return self.rotation @ (self.scale[:, None] * p_t) + self.translation[:, None]

    def direction_to_scanner(self, v: np.ndarray) -> np.ndarray:
        """Unit directions (..., 3) in the template mapped to the scanner (scale and rotation)."""
        out = (v * self.scale) @ self.rotation.T
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def draw_pose(rng: np.random.Generator) -> Pose:
    """A head pose from the ranges of :mod:`.constants` (draws in a fixed order)."""
    scale = np.clip(1.0 + HEAD_SCALE_SD * rng.standard_normal() + 0.5 * HEAD_SCALE_SD * rng.standard_normal(3),
                    *HEAD_SCALE_CLIP)
    angles = np.array([rng.uniform(-PITCH_DEG, PITCH_DEG), *rng.uniform(-ROLL_YAW_DEG, ROLL_YAW_DEG, 2)])
    return Pose(
        scale=scale, rotation=rotation_matrix(angles), translation=rng.uniform(-SHIFT_MM, SHIFT_MM, 3),
        bump_centres=rng.uniform([-60, -90, -40], [60, 60, 60], (WARP_BUMPS, 3)),
        bump_shifts=rng.normal(0.0, WARP_AMPLITUDE_MM, (WARP_BUMPS, 3)),
        bump_widths=rng.uniform(*WARP_WIDTH_MM, WARP_BUMPS),
    )


class Sampler:
    """Sample template-grid maps on an acquisition grid through a pose (box average over sub-voxels).

    Parameters
    ----------
    template_affine : ndarray (4, 4)
        Grid of the maps (template mm).
    pose : Pose
    affine, shape
        The acquisition grid (scanner mm).
    supersample : int
        Sub-voxel points per axis (1: voxel centres).
    """

    def __init__(self, template_affine: np.ndarray, pose: Pose, affine: np.ndarray, shape, supersample: int = 2):
        self.shape = tuple(int(n) for n in shape[:3])
        self.world = voxel_centres(affine, self.shape)
        inv = np.linalg.inv(template_affine)
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), 0).reshape(3, -1)  # voxel units
        pts = (self.world[:, :, None] + (affine[:3, :3] @ sub)[:, None, :]).reshape(3, -1)
        p_t = pose.to_template(pts)
        self.coords = (inv[:3, :3] @ p_t + inv[:3, 3:4]).astype(np.float32)
        self.n_sub = sub.shape[1]
        centre_t = pose.to_template(self.world)
        self.centre_coords = (inv[:3, :3] @ centre_t + inv[:3, 3:4]).astype(np.float32)

    def mean(self, arr: np.ndarray, cval: float = 0.0) -> np.ndarray:
        """Box average over each voxel of the linear interpolation of ``arr`` (3D or 4D, last axis kept)."""
        arr = np.asarray(arr, np.float32)
        if arr.ndim == 4:
            return np.stack([self.mean(arr[..., i], cval) for i in range(arr.shape[3])], axis=-1)
        vals = ndi.map_coordinates(arr, self.coords, order=1, mode="constant", cval=cval)
        return vals.reshape(-1, self.n_sub).mean(axis=1).reshape(self.shape)

    def nearest(self, arr: np.ndarray) -> np.ndarray:
        """Nearest-neighbour value at each voxel centre (labels, directions); 0 outside the map."""
        idx = np.rint(self.centre_coords).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.array(arr.shape[:3])[:, None]), axis=0)
        idx[:, ~inside] = 0
        out = np.asarray(arr)[idx[0], idx[1], idx[2]]
        out[~inside] = 0
        return out.reshape(self.shape + arr.shape[3:])
