"""``napari-myelin fuse``: the integrated myelin map (MWF, %) from MWF, FA, MK, QPM (and QSM, MTsat, chi_dia) by
the fusion CNN."""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.fusion.card import CHANNELS
from napari_myelin.fusion.inference import fuse, fuse_native
from napari_myelin.fusion.inputs import check_grids
from napari_myelin.io.volume import load_volume, save_maps
from ._common import add_out_argument, terminal_progress

HELP = ("integrated myelin map (MWF in percent) and its uncertainty from MWF, FA, MK, QPM (and QSM, MTsat, chi_dia) "
        "maps (CNN fusion)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mwf", required=True, help="myelin water fraction map (fraction or %%: detected)")
    parser.add_argument("--fa", required=True, help="fractional anisotropy map (0-1)")
    parser.add_argument("--mk", required=True, help="mean kurtosis map")
    parser.add_argument("--qpm", required=True, help="QPM myelin map (qpm_myelin, fraction)")
    parser.add_argument("--qsm", help="susceptibility map (ppm), optional")
    parser.add_argument("--mtsat", help="MT saturation map (p.u., napari-myelin mtsat), optional")
    parser.add_argument("--chi-dia", dest="chi_dia",
                        help="diamagnetic susceptibility magnitude (ppm, >= 0, napari-myelin chisep), optional")
    add_out_argument(parser)
    parser.add_argument("--weights", help="fusion weights (.safetensors with its .json model card); "
                        "default: the shipped phantom-trained weights")
    parser.add_argument("--mask", help="brain mask on the maps' grid (default: voxels with FA > 0)")
    parser.add_argument("--samples", type=int, default=None, help="MC-dropout samples for the uncertainty (default 8)")
    parser.add_argument("--native-reference", metavar="IMG",
                        help="for maps in a subject's native space: an anatomical image on their grid (e.g. the first "
                        "spin echo); it is registered to the MNI template, the maps are fused there and the result is "
                        "warped back (transforms are saved in --out and reused)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available")


def run(args: argparse.Namespace) -> int:
    paths = {c: getattr(args, c) for c in CHANNELS if getattr(args, c, None)}
    vols = {c: load_volume(p) for c, p in paths.items()}
    for c, v in vols.items():
        if v.data.ndim != 3:
            raise InputError(f"{paths[c]}: has shape {v.shape}; --{c} needs one 3D map.")
    check_grids({paths[c]: v for c, v in vols.items()})
    units = {c: v.metadata.get("Units") for c, v in vols.items()}
    mask = None
    if args.mask:
        mvol = load_volume(args.mask)
        if mvol.shape[:3] != vols["mwf"].shape or not np.allclose(mvol.affine, vols["mwf"].affine, atol=1e-3):
            raise InputError(f"{args.mask}: its grid differs from {paths['mwf']}; give a mask on the maps' grid.")
        mask = np.asarray(mvol.data) > 0.5
    with terminal_progress("fuse") as progress:
        if args.native_reference:
            from napari_myelin.align.registration import register_to_template

            ref = load_volume(args.native_reference)
            if ref.data.ndim == 4:
                ref = ref.with_data(ref.data[..., 0])
            reg = register_to_template(ref, out_dir=args.out, name="fusion_to_template")
            result = fuse_native(vols, reg, weights=args.weights, mask=mask, units=units, n_samples=args.samples,
                                 device=args.device, progress=progress)
        else:
            result = fuse(**{c: (vols[c].data if c in vols else None) for c in CHANNELS}, weights=args.weights,
                          mask=mask, voxel_size_mm=vols["mwf"].zooms, units=units, n_samples=args.samples,
                          device=args.device, progress=progress)
    written = save_maps(result, args.out, vols["mwf"], inputs=list(paths.values()))
    print(f"MWF input read as {result.parameters['mwf_input_unit']}; wrote " + ", ".join(str(p) for p in written))
    return 0
