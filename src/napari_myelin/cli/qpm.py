"""``napari-myelin qpm SPGR.nii.gz --flip-angles 3 10 20 --tr 0.015 --out DIR [--b1 B1.nii.gz]``.

T1 (s), M0, PD, MTV and the QPM myelin map (and, with ``--calibration``, the MWF-calibrated map in %)
from a variable-flip-angle SPGR series (see :mod:`napari_myelin.reconst.qpm`). With ``--t1`` and
``--pd`` instead of an SPGR series, only the ``r1-pd`` myelin map is computed from those maps.
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.reconst import qpm
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import check_output_folder, load_volume, save_maps
from ._common import add_out_argument, terminal_progress

HELP = "T1, PD, MTV and the QPM myelin map (two-pool or R1/PD) from a variable-flip-angle SPGR series (+ B1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spgr", nargs="*", help="4D SPGR series (or one 3D file per flip angle); BIDS sidecars give "
                        "FlipAngle and RepetitionTime")
    parser.add_argument("--flip-angles", nargs="+", type=float, metavar="DEG", help="flip angles in degrees, one per volume "
                        "(override the sidecar)")
    parser.add_argument("--tr", type=float, metavar="S", help="repetition time in seconds (overrides the sidecar)")
    parser.add_argument("--b1", metavar="B1.nii.gz", help="B1 ratio map (1 = nominal; percent is detected); resampled "
                        "to the SPGR grid by world coordinates when on another grid")
    add_out_argument(parser)
    parser.add_argument("--method", choices=("two-pool", "r1-pd"), default="two-pool",
                        help="QPM myelin model (default two-pool, needs >= 3 flip angles)")
    parser.add_argument("--mask", help="brain mask on the SPGR grid (default: automatic intensity threshold)")
    parser.add_argument("--csf-mask", help="CSF mask on the SPGR grid for the PD normalisation (default: voxels with T1 > 3 s off the mask edge)")
    parser.add_argument("--calibration", metavar="CAL.json", help="MWF calibration from 'napari-myelin calibrate': "
                        "also write mwf_qpm (%%)")
    parser.add_argument("--t1", metavar="T1.nii.gz", help="with --pd instead of SPGR: T1 map (s) for the r1-pd model")
    parser.add_argument("--pd", metavar="PD.nii.gz", help="with --t1: PD map normalised to CSF")
    parser.add_argument("--t1-m", type=float, default=qpm.T1_MYELIN, metavar="S", help="myelin-water T1 (s)")
    parser.add_argument("--t1-ie", type=float, default=qpm.T1_IE, metavar="S", help="intra/extra-cellular water T1 (s)")
    parser.add_argument("--tau-m", type=float, default=qpm.TAU_MYELIN, metavar="S",
                        help="myelin-water residence time (s), two-pool only")
    parser.add_argument("--pd-tissue", type=float, default=qpm.PD_TISSUE, metavar="P",
                        help="tissue water content (relative to CSF) above which water counts as free water (default 0.7)")
    parser.add_argument("--no-free-water", action="store_true", help="no free-water pool (plain two-pool / R1 mixing)")


def _mask(path, ref, what):
    vol = load_volume(path)
    if vol.shape[:3] != ref.shape[:3] or not np.allclose(vol.affine, ref.affine, atol=1e-3):
        raise InputError(f"{path}: its grid differs from {ref.path}; give the {what} on that grid.")
    return qpm.mask_from_map(vol.data.reshape(vol.shape[:3]))


def run(args: argparse.Namespace) -> int:
    check_output_folder(args.out)
    calibration = qpm.MwfCalibration.load(args.calibration) if args.calibration else None
    inputs = [p for p in (args.calibration,) if p]
    if not args.spgr:
        if not (args.t1 and args.pd):
            raise InputError("qpm: no SPGR series was given; pass the SPGR image, or --t1 and --pd maps for the r1-pd model.")
        t1 = load_volume(args.t1)
        pd = load_volume(args.pd)
        if t1.shape[:3] != pd.shape[:3] or not np.allclose(t1.affine, pd.affine, atol=1e-3):
            raise InputError(f"{args.pd}: its grid differs from {args.t1}; T1 and PD maps must share one grid.")
        mask = _mask(args.mask, t1, "mask") if args.mask else None
        with terminal_progress("qpm r1-pd") as progress:
            maps = qpm.myelin_map(method="r1-pd", t1=t1.data.reshape(t1.shape[:3]), pd=pd.data.reshape(pd.shape[:3]),
                                   mask=mask, t1_m=args.t1_m, t1_ie=args.t1_ie,
                                   pd_tissue=None if args.no_free_water else args.pd_tissue,
                                   calibration=calibration, progress=progress)
        written = save_maps(maps, args.out, t1, inputs=[args.t1, args.pd, *inputs])
        print(f"wrote {len(written)} maps to {args.out}")
        return 0
    vol, fa, tr = qpm.load_spgr(args.spgr, flip_angles_deg=args.flip_angles, tr=args.tr)
    inputs = [*args.spgr, *inputs]
    b1 = None
    if args.b1:
        b1 = b1_on_grid(load_volume(args.b1), vol)
        inputs.append(args.b1)
    mask = _mask(args.mask, vol, "mask") if args.mask else None
    csf = _mask(args.csf_mask, vol, "CSF mask") if args.csf_mask else None
    inputs += [p for p in (args.mask, args.csf_mask) if p]
    params = {"t1_m": args.t1_m, "t1_ie": args.t1_ie, "pd_tissue": None if args.no_free_water else args.pd_tissue}
    if args.method == "two-pool":
        params["tau_m"] = args.tau_m
    with terminal_progress("qpm") as progress:
        maps = qpm.qpm(vol.data, fa, tr, b1=b1, method=args.method, mask=mask, csf_mask=csf,
                        calibration=calibration, progress=progress, **params)
    written = save_maps(maps, args.out, vol, inputs=inputs)
    p = maps.parameters
    print(f"wrote {len(written)} maps to {args.out} (flip angles {fa.tolist()} deg, TR {tr} s, "
          f"B1 {'corrected' if b1 is not None else 'not corrected'}, PD reference: {p['pd_reference']}, "
          f"{p['n_reference_voxels']} voxels)")
    return 0
