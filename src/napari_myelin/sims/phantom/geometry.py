"""Where things are: acquisition grids, the subject pose (template -> scanner) and resampling through it.

All coordinates are world mm. The subject pose maps a template point ``p_t`` to the scanner point
``p_s = s R p_t + t``, plus a smooth sinusoidal deformation; :class:`_Sampler` resamples model-grid
maps (template space) onto an acquisition grid (scanner space) by following each acquired voxel back
into the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


def _rotation(deg) -> np.ndarray:
    """Rotation matrix ``Rz Ry Rx`` of angles ``deg`` (x, y, z; degrees)."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def acquisition_grid(voxel_mm, fov_mm, *, rotation_deg=(0, 0, 0), center=(0, 0, 0), flip_x=False):
    """Affine and shape of a grid of ``voxel_mm`` covering ``fov_mm`` centred on ``center`` (world mm)."""
    voxel = np.asarray(voxel_mm, float)
    shape = tuple(int(round(f / v)) for f, v in zip(fov_mm, voxel))
    axes = _rotation(rotation_deg) @ np.diag(voxel * ([-1, 1, 1] if flip_x else [1, 1, 1]))
    aff = np.eye(4)
    aff[:3, :3] = axes
    aff[:3, 3] = np.asarray(center, float) - axes @ ((np.array(shape) - 1) / 2.0)
    return aff, shape


def fine_grid(affine: np.ndarray, shape, factor: int = 2) -> tuple[np.ndarray, tuple[int, ...]]:
    """A grid ``factor`` times finer whose ``factor^3`` blocks tile the voxels of ``(affine, shape)``."""
    sub = np.eye(4)
    sub[:3, :3] /= factor
    sub[:3, 3] = -(factor - 1) / (2.0 * factor)
    return affine @ sub, tuple(int(n) * factor for n in shape[:3])


def block_mean(a: np.ndarray, factor: int = 2) -> np.ndarray:
    """Mean over ``factor^3`` blocks (inverse of :func:`fine_grid`)."""
    x, y, z = (n // factor for n in a.shape[:3])
    return a.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))


def _world_coords(affine: np.ndarray, shape) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shape (3, N), float64."""
    out = np.empty((3,) + tuple(int(n) for n in shape[:3]))
    axes = [np.arange(n, dtype=np.float64) for n in shape[:3]]
    for r in range(3):
        out[r] = (affine[r, 3] + affine[r, 0] * axes[0][:, None, None] + affine[r, 1] * axes[1][None, :, None]
                  + affine[r, 2] * axes[2][None, None, :])
    return out.reshape(3, -1)


@dataclass
class Pose:
    """Subject placement: template point ``p_t`` -> scanner point ``p_s = s R p_t + t`` (+ deformation)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    amp: np.ndarray  # (K, 3) displacement amplitudes (mm)
    wave: np.ndarray  # (K, 3) wave vectors (rad/mm)
    phase: np.ndarray  # (K,)

    def to_template(self, p_s: np.ndarray) -> np.ndarray:
        """Template coordinates (mm) of scanner points ``p_s`` (3, N)."""
        p_t = self.rotation.T @ (p_s - self.translation[:, None]) / self.scale
        return p_t + self.displacement(p_s)

    def displacement(self, p_s: np.ndarray) -> np.ndarray:
        """Smooth deformation (mm, (3, N) float32): a sum of K sinusoids of the scanner position."""
        arg = (self.wave @ p_s + self.phase[:, None]).astype(np.float32)  # (K, N)
        return self.amp.T.astype(np.float32) @ np.sin(arg, out=arg)

    def to_scanner(self, p_t: np.ndarray) -> np.ndarray:
        """Approximate inverse (no deformation), used for far-away field sources."""
        return self.scale * self.rotation @ np.asarray(p_t, float).reshape(3, -1) + self.translation[:, None]


def _pose(rng: np.random.Generator) -> Pose:
    """Draw a subject pose: scale 0.95-1.05, rotation up to 6 deg per axis, shift up to 5 mm, 4 waves."""
    k = 4
    return Pose(
        scale=float(rng.uniform(0.95, 1.05)),
        rotation=_rotation(rng.uniform(-6, 6, 3)),
        translation=rng.uniform(-5, 5, 3) + np.array([0.0, 10.0, -5.0]),
        amp=rng.normal(0, 1.0, (k, 3)),
        wave=rng.normal(0, 1.0, (k, 3)) * (2 * np.pi / 160.0),
        phase=rng.uniform(0, 2 * np.pi, k),
    )


class _Sampler:
    """Resample model-grid maps onto an acquisition grid through the subject pose."""

    def __init__(self, model: dict, pose: Pose, affine: np.ndarray, shape):
        self.model, self.shape = model, tuple(shape[:3])
        self.world = _world_coords(affine, shape)
        p_t = pose.to_template(self.world)
        inv = np.linalg.inv(model["affine"])
        self.coords = (inv[:3, :3] @ p_t + inv[:3, 3:4]).astype(np.float32)

    def linear(self, name_or_array) -> np.ndarray:
        """Trilinear resampling (a map name is sampled once and cached; do not modify the result)."""
        if isinstance(name_or_array, str):
            cache = self.__dict__.setdefault("_cache", {})
            if name_or_array not in cache:
                cache[name_or_array] = self.linear(self.model[name_or_array])
            return cache[name_or_array]
        out = ndi.map_coordinates(np.asarray(name_or_array, np.float32), self.coords, order=1, mode="constant",
                                  cval=0.0)
        return out.reshape(self.shape)

    def nearest(self, name_or_array) -> np.ndarray:
        """Nearest-neighbour resampling (labels, directions); 0 outside the model grid."""
        arr = self.model[name_or_array] if isinstance(name_or_array, str) else name_or_array
        idx = np.rint(self.coords).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(arr.shape[:3])[:, None]), axis=0)
        idx = np.where(ok, idx, 0)
        vals = arr[idx[0], idx[1], idx[2]]
        vals[~ok] = 0
        return vals.reshape(self.shape + arr.shape[3:])

