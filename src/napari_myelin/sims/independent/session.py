"""What the acquisitions of one subject share: anatomy, pose, scanner fields, tissue draws and noise.

:class:`Session` builds each acquisition's grid around the head (voxel size, field of view and
orientation from :data:`.constants.SIZES`), its sampler, the truth maps every modality carries
(brain mask, tract labels, WM fraction, lesion mask), and fibre directions in the grid's voxel axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_myelin.io.volume import Volume
from napari_myelin.sims.independent.constants import SIZES, SUPERSAMPLE
from napari_myelin.sims.independent.fields import Fields
from napari_myelin.sims.independent.geometry import Pose, Sampler, grid


def volume(data, affine: np.ndarray, units: str, description: str, **meta) -> Volume:
    """A :class:`Volume` with ``Units`` and ``Description`` (and ``meta``) in its metadata."""
    return Volume(np.asarray(data), np.asarray(affine, float).copy(), None,
                  {"Units": units, "Description": description, **meta}, None)


def voxel_axes(affine: np.ndarray) -> np.ndarray:
    """Orthonormal voxel axes (columns, world frame) of an affine (flips kept)."""
    a = np.asarray(affine, float)[:3, :3]
    return a / np.linalg.norm(a, axis=0)


@dataclass
class Session:
    """One subject in the scanner (see the module docstring)."""

    anatomy: dict
    pose: Pose
    fields: Fields
    tissue: dict
    size: str
    snr: dict
    noise: dict = field(default_factory=dict)

    def grid(self, name: str, supersample: int = SUPERSAMPLE) -> tuple[np.ndarray, tuple[int, ...], Sampler]:
        """Affine, shape and sampler of the acquisition ``name`` (``mese``, ``dwi``, ``gre``, ``spgr``, ``b1``)."""
        voxel, fov, rot, flip = SIZES[self.size][name]
        aff, shp = grid(voxel, fov, rot, self.fields.centre, flip)
        return aff, shp, Sampler(self.anatomy["affine"], self.pose, aff, shp, supersample)

    def common_truth(self, s: Sampler, affine: np.ndarray) -> dict:
        """Brain mask (brain fraction >= 0.5), tract labels, WM fraction, lesion and NAWM masks."""
        brain = s.mean(self.anatomy["brain"])
        mask = brain >= 0.5
        wm = s.mean(self.anatomy["f_nawm"]) + s.mean(self.anatomy["f_les"])
        les = s.mean(self.anatomy["f_les"])
        return {
            "mask": volume(mask, affine, "", "brain mask"),
            "labels": volume(s.nearest(self.anatomy["labels"]).astype(np.int32) * mask, affine, "",
                             "HCP842-derived tract labels (see the LUT)"),
            "wm": volume((wm * mask).astype(np.float32), affine, "fraction", "white-matter fraction"),
            "lesion": volume((les >= 0.5 * np.maximum(wm, 1e-6)) & (les > 0.25) & mask, affine, "",
                             "lesion mask (lesion is the larger part of the WM and over 25 % of the voxel)"),
            "nawm_demyelination": volume((s.mean(self.anatomy["nawm"]) >= 0.05) & (wm >= 0.5) & mask, affine, "",
                                         "white matter with an NAWM myelin deficit of 5 % or more"),
        }

    def directions(self, s: Sampler, affine: np.ndarray, name: str) -> np.ndarray:
        """Unit directions (grid shape + (3,)) of the template map ``name`` in the grid's voxel axes."""
        v = s.nearest(self.anatomy[name]).astype(float)
        return self.pose.direction_to_scanner(v) @ voxel_axes(affine)
