"""Shared test fixtures: small NIfTI files written on the fly (no data downloaded)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest


def oblique_affine(zooms=(1.2, 0.9, 2.5), angle_deg=12.0, lps=True) -> np.ndarray:
    """An oblique, anisotropic affine; with ``lps`` the voxel axes run L, P, S (x and y flipped)."""
    a = np.radians(angle_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    flips = np.diag([-1.0, -1.0, 1.0]) if lps else np.eye(3)
    aff = np.eye(4)
    aff[:3, :3] = rot @ flips @ np.diag(zooms)
    aff[:3, 3] = [40.0, 60.0, -30.0]
    return aff


@pytest.fixture
def write_nifti(tmp_path):
    """Write ``data`` with ``affine`` (and an optional sidecar) to ``tmp_path/name``; returns the path."""

    def _write(name, data, affine=None, sidecar=None):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
        if sidecar is not None:
            stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]
            (tmp_path / f"{stem}.json").write_text(json.dumps(sidecar))
        return path

    return _write
