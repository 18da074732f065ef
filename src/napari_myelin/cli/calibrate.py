"""``napari-myelin calibrate --mwf MWF.nii.gz --qpm QPM.nii.gz --mask WM.nii.gz --out DIR``.

Fits ``MWF[%] = c0 + c1 M + c2 M^2`` between an MWF map and a QPM myelin map over white-matter voxels
(or per-tract means with ``--labels``), prints the coefficients, R^2 and residual SD, writes
``DIR/calibration.json`` and the calibrated map ``DIR/mwf_qpm.nii.gz`` (%). ``--apply CAL.json``
re-applies a saved calibration to ``--qpm`` instead of fitting.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from napari_myelin.reconst import qpm
from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.io.resample import resample_like
from napari_myelin.io.volume import check_output_folder, load_volume, save_maps

HELP = "calibrate a QPM myelin map to MWF (quadratic fit over WM voxels or tract means) or apply a saved calibration"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qpm", required=True, metavar="QPM.nii.gz", help="QPM myelin map (qpm_myelin.nii.gz)")
    parser.add_argument("--mwf", metavar="MWF.nii.gz", help="MWF map (fraction or %%), resampled to the QPM grid by "
                        "world coordinates when on another grid")
    parser.add_argument("--mask", metavar="WM.nii.gz", help="white-matter mask or WM probability map (thresholded at 0.5; default: every voxel with MWF > 0)")
    parser.add_argument("--labels", metavar="LABELS.nii.gz", help="tract labels: fit on tract means instead of voxels")
    parser.add_argument("--mwf-units", choices=("auto", "fraction", "percent"), default="auto")
    parser.add_argument("--apply", metavar="CAL.json", help="apply this saved calibration to --qpm instead of fitting")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")


def _on_qpm_grid(path, ref, *, order, what):
    vol = load_volume(path)
    data = vol.data.reshape(vol.shape[:3]) if vol.data.ndim == 4 and vol.shape[3] == 1 else vol.data
    if data.shape == ref.shape[:3] and np.allclose(vol.affine, ref.affine, atol=1e-3):
        return data
    warnings.warn(f"{path}: the {what} is on another grid than {ref.path}; resampled to it by world coordinates.",
                  stacklevel=2)
    return resample_like(vol, ref, order=order, name=str(path))


def run(args: argparse.Namespace) -> int:
    out = check_output_folder(args.out)
    q = load_volume(args.qpm)
    if q.data.ndim != 3:
        raise InputError(f"{args.qpm}: is 4D; give the 3D QPM myelin map (qpm_myelin.nii.gz).")
    if args.apply:
        cal = qpm.MwfCalibration.load(args.apply)
        maps = Maps({"mwf_qpm": cal.apply(np.nan_to_num(q.data.astype(float)))}, units={"mwf_qpm": "%"},
                    descriptions={"mwf_qpm": "MWF-calibrated QPM myelin map, MWF = c0 + c1 M + c2 M^2 (%)"},
                    method="quadratic MWF calibration", parameters={"calibration": cal.to_dict()})
        save_maps(maps, out, q, inputs=[args.qpm, args.apply])
        print(f"applied {args.apply} to {args.qpm}; wrote {Path(out) / 'mwf_qpm.nii.gz'}")
        return 0
    if not args.mwf:
        raise InputError("calibrate: --mwf is missing; give the MWF map to fit against (or --apply CAL.json).")
    mwf = _on_qpm_grid(args.mwf, q, order=1, what="MWF map")
    mask = qpm.mask_from_map(_on_qpm_grid(args.mask, q, order=0, what="mask")) if args.mask else None
    labels = _on_qpm_grid(args.labels, q, order=0, what="label map").astype(int) if args.labels else None
    res = qpm.fit_mwf_calibration(mwf, q.data, mask, labels=labels, mwf_units=args.mwf_units)
    cal = res.calibration
    inputs = [p for p in (args.qpm, args.mwf, args.mask, args.labels) if p]
    cal.extra["inputs"] = [str(p) for p in inputs]
    save_maps(res, out, q, inputs=inputs)
    cal.save(out / "calibration.json")
    c0, c1, c2 = cal.coefficients
    print(f"MWF[%] = {c0:.4g} + {c1:.4g}*M + {c2:.4g}*M^2   (n = {cal.n} {cal.basis}, R^2 = {cal.r2:.3f}, "
          f"residual SD = {cal.residual_sd:.2f} %)")
    print(f"wrote {out / 'calibration.json'} and {out / 'mwf_qpm.nii.gz'}")
    return 0
