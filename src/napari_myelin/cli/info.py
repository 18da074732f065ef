"""``napari-myelin info FILE``: what a NIfTI file holds and which protocol parameters were found."""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.io.volume import load_volume, obliquity_deg, orientation_codes, protocol_parameters

HELP = "show shape, voxel size, orientation, obliquity, data range and protocol parameters of a NIfTI file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .nii or .nii.gz image (its JSON sidecar and .bval/.bvec are read too)")


def describe(path: str) -> list[tuple[str, str]]:
    """The rows ``info`` prints, as (field, value) pairs."""
    vol = load_volume(path)
    finite = vol.data[np.isfinite(vol.data)] if vol.data.dtype.kind == "f" else vol.data
    rows = [
        ("file", str(vol.path)),
        ("shape", " x ".join(map(str, vol.shape))),
        ("voxel size (mm)", " x ".join(f"{z:.4g}" for z in vol.zooms)),
        ("orientation", orientation_codes(vol.affine)),
        ("obliquity (deg)", f"{obliquity_deg(vol.affine):.2f}"),
        ("data type", str(vol.data.dtype)),
        ("data range", f"{finite.min():.6g} .. {finite.max():.6g}" if finite.size else "empty"),
    ]
    params = protocol_parameters(vol)
    rows += [(k, str(v)) for k, v in params.items()] or [("protocol", "no sidecar parameters found")]
    return rows


def run(args: argparse.Namespace) -> int:
    rows = describe(args.file)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
