"""``napari-myelin chisep MAG PHASE --r2 R2.nii.gz --out DIR``: chi-separation (iron and myelin susceptibility).

The GRE inputs are those of ``napari-myelin qsm`` (one 4D file or one file per echo, TEs and B0 from the
sidecars unless given). ``--r2`` is an R2 map (1/s), a T2 map (sidecar ``Units`` "s" or "ms", e.g. the
``gmt2`` of ``napari-myelin mwf``) or the multi-echo spin-echo series itself (mono-exponential fit); on
another grid it is resampled to the GRE grid by world coordinates (one session; register it first if the
subject moved). Writes ``chi_para``, ``chi_dia`` (ppm, >= 0; the diamagnetic susceptibility is
``-chi_dia``), ``r2prime``, ``r2star`` (1/s), ``chi`` (ppm) and ``mask`` with their sidecars.
"""

from __future__ import annotations

import argparse

from napari_myelin.io.volume import check_output_folder, save_maps
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.chisep import chi_separation, r2_on_gre, spin_echo_r2
from ._common import add_out_argument, terminal_progress
from ._gre import add_gre_arguments, load_gre, load_series

HELP = "chi-separation from multi-echo GRE + spin-echo R2: chi_para, chi_dia (ppm), r2prime, r2star (1/s), chi"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gre_arguments(parser)
    parser.add_argument("--r2", required=True, metavar="FILE",
                        help="R2 map (1/s), T2 map (sidecar Units s or ms, e.g. the MWF gmt2) or the multi-echo "
                             "spin-echo series (fitted mono-exponentially)")
    add_out_argument(parser)
    parser.add_argument("--dr", type=float, nargs="+", metavar="HZ_PER_PPM",
                        help="relaxometric constant: one value, or paramagnetic and diamagnetic "
                             "(default 137 Hz/ppm x B0 / 3 T, Shin et al. 2021)")


def run(args: argparse.Namespace) -> int:
    if args.dr is not None and len(args.dr) > 2:
        raise InputError(f"--dr: {len(args.dr)} values were given; give one (both sources) or two (para, dia) Hz/ppm.")
    gre = load_gre(args, min_echoes=2)
    r2 = r2_on_gre(spin_echo_r2(load_series(args.r2), name=args.r2), gre.phase)
    dr = None if args.dr is None else (args.dr[0] if len(args.dr) == 1 else args.dr)
    check_output_folder(args.out)
    with terminal_progress("chisep") as progress:
        maps = chi_separation(gre.magnitude.data, gre.phase.data, gre.echo_times, r2,
                              field_strength=gre.field_strength, affine=gre.phase.affine, mask=gre.mask,
                              relaxometric_constant=dr, progress=progress)
    inputs = [args.magnitude, args.phase, args.r2] + ([args.mask] if args.mask else [])
    for path in save_maps(maps, args.out, gre.phase.with_data(maps["chi"]), inputs=inputs):
        print(path)
    return 0
