"""``napari-myelin qsm MAG PHASE --out DIR``: susceptibility (QSM) from multi-echo GRE."""

from __future__ import annotations

import argparse

from napari_myelin.io.volume import check_output_folder, save_maps
from napari_myelin.reconst.qsm import BFR_METHODS, INVERSION_METHODS, UNWRAP_METHODS, fit_qsm
from ._common import add_out_argument, terminal_progress
from ._gre import add_gre_arguments, load_gre, load_mask

HELP = "QSM from multi-echo GRE magnitude + phase: field (Hz), local field, chi (ppm), R2* (1/s) and mask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gre_arguments(parser)
    add_out_argument(parser)
    parser.add_argument("--unwrap", choices=UNWRAP_METHODS, default="laplacian", help="phase unwrapping")
    parser.add_argument("--bfr", choices=BFR_METHODS, default="pdf",
                        help="background field removal (pdf and lbv keep the brain edge)")
    parser.add_argument("--inversion", choices=INVERSION_METHODS, default="tv", help="dipole inversion")
    parser.add_argument("--reference", choices=("mean", "csf"), default="mean",
                        help="susceptibility reference (csf needs --csf-mask)")
    parser.add_argument("--csf-mask", metavar="FILE", help="CSF mask for --reference csf")
    parser.add_argument("--phase-sign", type=int, choices=(1, -1), default=1,
                        help="-1 if the scanner's phase decreases with a positive field offset")


def run(args: argparse.Namespace) -> int:
    gre = load_gre(args)
    csf = load_mask(args.csf_mask, gre.phase, "CSF mask") if args.csf_mask else None
    check_output_folder(args.out)
    with terminal_progress("qsm") as progress:
        maps = fit_qsm(
            gre.magnitude.data, gre.phase.data, gre.echo_times, field_strength=gre.field_strength,
            affine=gre.phase.affine, mask=gre.mask, unwrap=args.unwrap, bfr=args.bfr, inversion=args.inversion,
            reference=args.reference, reference_mask=csf, phase_sign=args.phase_sign, progress=progress,
        )
    inputs = [args.magnitude, args.phase] + [p for p in (args.mask, args.csf_mask) if p]
    written = save_maps(maps, args.out, gre.phase.with_data(maps["chi"]), inputs=inputs)
    for path in written:
        print(path)
    return 0
