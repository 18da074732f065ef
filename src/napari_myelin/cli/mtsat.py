"""``napari-myelin mtsat MTW PDW T1W --out DIR [--flip-angles MT PD T1] [--tr MT PD T1] [--b1 B1] [--mask M]``.

MTsat (p.u.), MTR (%), T1 (s) and the apparent amplitude from MT-, PD- and T1-weighted SPGR volumes
(see :mod:`napari_myelin.reconst.mtsat`). A BIDS trio (``*_flip-1_mt-on_MTS``, ``*_flip-1_mt-off_MTS``,
``*_flip-2_mt-off_MTS``) is put in role order by its names; flip angles and repetition times come from the
sidecars (``FlipAngle``, ``RepetitionTimeExcitation`` or ``RepetitionTime``) unless given. Writes
``mtsat``, ``mtr``, ``t1`` and ``a`` (``.nii.gz`` + ``.json`` with units) into ``--out``.
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.io.volume import load_volume, save_maps
from napari_myelin.reconst import mtsat
from napari_myelin.reconst.qpm import mask_from_map
from napari_myelin.utils.errors import InputError
from ._common import add_out_argument, terminal_progress

HELP = "MTsat (p.u.), MTR (percent), T1 and amplitude from MT-, PD- and T1-weighted SPGR volumes (Helms 2008, + B1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("volumes", nargs="*", metavar="MTW PDW T1W", help="the MT-, PD- and T1-weighted volumes, in "
                        "this order (a BIDS *_flip-N_mt-on|off_MTS trio in any order)")
    add_out_argument(parser)
    parser.add_argument("--flip-angles", nargs=3, type=float, metavar=("MT", "PD", "T1"),
                        help="flip angles in degrees (override the sidecars' FlipAngle)")
    parser.add_argument("--tr", nargs=3, type=float, metavar=("MT", "PD", "T1"),
                        help="repetition times in seconds (override the sidecars' RepetitionTimeExcitation / "
                        "RepetitionTime)")
    parser.add_argument("--b1", metavar="B1.nii.gz", help="B1 ratio map (1 = nominal; percent is detected); resampled "
                        "to the MTS grid by world coordinates when on another grid")
    parser.add_argument("--b1-correction", type=float, default=mtsat.B1_CORRECTION, metavar="F",
                        help="empirical MTsat B1 correction factor, MTsat (1-F)/(1-F B1) (default 0.4, Weiskopf 2013; "
                        "0: none, the MTw angle is B1-scaled instead)")
    parser.add_argument("--mask", help="mask on the MTS grid (default: every voxel with signal in all three volumes)")
    parser.add_argument("--exact", action="store_true", help="exact SPGR equations instead of Helms' small-angle ones")


def run(args: argparse.Namespace) -> int:
    vols, fa, tr = mtsat.load_mts(args.volumes, flip_angles=args.flip_angles, repetition_times=args.tr)
    ref = vols[0]
    inputs = [str(v.path) for v in vols]
    b1 = None
    if args.b1:
        b1 = b1_on_grid(load_volume(args.b1), ref)
        inputs.append(args.b1)
    mask = None
    if args.mask:
        m = load_volume(args.mask)
        if m.shape[:3] != ref.shape or not np.allclose(m.affine, ref.affine, atol=1e-3):
            raise InputError(f"{args.mask}: its grid differs from {ref.path}; give the mask on the MTS grid.")
        mask = mask_from_map(m.data.reshape(ref.shape))
        inputs.append(args.mask)
    with terminal_progress("mtsat") as progress:
        maps = mtsat.fit_mtsat(*(v.data for v in vols), flip_angles=fa, repetition_times=tr, b1=b1,
                               b1_correction=args.b1_correction, mask=mask, exact=args.exact, progress=progress)
    written = save_maps(maps, args.out, ref, inputs=inputs)
    p = maps.parameters
    print(f"wrote {len(written)} maps to {args.out} (flip angles {fa} deg, TR {tr} s, {p['equations']} equations, "
          f"B1 {'corrected' if b1 is not None else 'not corrected'}, {p['n_voxels']} voxels, "
          f"{p['n_invalid']} without a positive T1)")
    return 0
