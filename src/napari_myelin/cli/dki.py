"""``napari-myelin dki DWI.nii.gz --out DIR``: diffusion kurtosis maps (FA, MD, AD, RD, MK, AK, RK, KFA, MKT)."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_myelin.reconst.dki import fit_dki
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import check_output_folder, load_volume, read_bval_bvec, save_maps, sidecar_path
from ._common import add_out_argument, terminal_progress

HELP = "fit diffusion kurtosis (DKI) to a multi-shell DWI: FA, MD, AD, RD, MK, AK, RK, KFA, MKT and colour FA"

#: Maps written by the command (``v1`` and ``s0`` stay in memory / the widget).
WRITTEN = ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "mask", "fa_rgb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dwi", help="4D diffusion-weighted NIfTI (b in s/mm^2, FSL .bval/.bvec)")
    parser.add_argument("--bval", help="b-values file (default: the .bval beside the DWI)")
    parser.add_argument("--bvec", help="gradient directions file (default: the .bvec beside the DWI)")
    add_out_argument(parser)
    parser.add_argument("--mask", help="brain mask on the DWI grid (default: automatic, median Otsu on the mean b=0)")
    parser.add_argument("--method", choices=("WLS", "OLS"), default="WLS", type=str.upper,
                        help="weighted (default, as dipy) or ordinary linear least squares")
    parser.add_argument("--denoise", action="store_true", help="MP-PCA denoising (dipy) before the fit")
    parser.add_argument("--degibbs", action="store_true", help="Gibbs unringing (dipy) before the fit")
    parser.add_argument("--max-b", type=float, default=None, metavar="B",
                        help="leave out volumes with b above B s/mm^2 (e.g. 3000)")


def run(args: argparse.Namespace) -> int:
    check_output_folder(args.out)
    vol = load_volume(args.dwi)
    bval = Path(args.bval) if args.bval else sidecar_path(args.dwi, ".bval")
    bvec = Path(args.bvec) if args.bvec else sidecar_path(args.dwi, ".bvec")
    if not args.bval or not args.bvec:
        if not (bval.exists() and bvec.exists()):
            raise InputError(
                f"{args.dwi}: no {bval.name} / {bvec.name} beside it; pass the diffusion table with --bval and --bvec."
            )
    bvals, bvecs = read_bval_bvec(bval, bvec)
    inputs = [args.dwi, bval, bvec]
    mask = None
    if args.mask:
        mask_vol = load_volume(args.mask)
        if mask_vol.shape[:3] != vol.shape[:3]:
            raise InputError(f"{args.mask}: its grid {mask_vol.shape[:3]} differs from the DWI {vol.shape[:3]}; "
                             "give a mask on the DWI grid.")
        mask = mask_vol.data.reshape(vol.shape[:3]) > 0
        inputs.append(args.mask)
    with terminal_progress("dki") as progress:
        maps = fit_dki(
            vol.data, bvals, bvecs, mask=mask, method=args.method, denoise=args.denoise, degibbs=args.degibbs,
            max_bval=args.max_b, affine=vol.affine, progress=progress,
        )
    subset = type(maps)({k: maps[k] for k in WRITTEN}, units=maps.units, descriptions=maps.descriptions,
                        method=maps.method, parameters=maps.parameters)
    written = save_maps(subset, args.out, vol, inputs=inputs)
    print(f"wrote {len(written)} maps to {args.out} (black voxels, MK < 0: "
          f"{100 * maps.parameters['black_voxel_fraction']:.2f}% of {maps.parameters['voxels_fitted']} voxels)")
    return 0
