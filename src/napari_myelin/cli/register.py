"""``napari-myelin register MOVING --out DIR``: register a subject to the MNI template with ANTs.

Writes ``DIR/warped.nii.gz`` (the moving image on the template grid), the transforms
(``DIR/to_template_0GenericAffine.mat``, ``..._1Warp.nii.gz``, ``..._1InverseWarp.nii.gz`` and
``to_template.json``, reused by a later run on the same image), each ``--apply`` map on the
template grid under its own name, and with ``--atlas-to-native`` the tract labels on the moving
image's grid (``DIR/tracts.nii.gz`` + ``DIR/tracts.tsv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_myelin.utils.errors import InputError
from napari_myelin.io.lut import write_lut
from napari_myelin.align.ants_io import set_threads
from napari_myelin.align.registration import INTERPOLATIONS, PRESETS, default_interpolation, register_subject
from napari_myelin.io.volume import check_output_folder, load_volume, provenance, save_volume, strip_nifti_suffix
from ._common import add_out_argument, terminal_progress

HELP = "register an image to the MNI ICBM152 template (ANTs), warp maps to it and bring the tract atlas to native space"

RESERVED = ("warped", "tracts")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("moving", metavar="MOVING.nii.gz",
                        help="subject reference image (brain-extracted works best; 4D: first volume, DWI: first b0)")
    add_out_argument(parser)
    parser.add_argument("--preset", choices=list(PRESETS), default="fast",
                        help="fast = plain ANTsPy SyN (default), accurate = SyN with more iterations, affine = Affine")
    parser.add_argument("--apply", nargs="+", default=[], metavar="MAP",
                        help="maps/labels/masks in the moving image's space to warp to the template "
                             "(written as DIR/<name>.nii.gz)")
    parser.add_argument("--interpolation", choices=list(INTERPOLATIONS), default=None,
                        help="interpolation for --apply (default: linear for maps, genericLabel for integer "
                             "images, mask for 0/1 images)")
    parser.add_argument("--atlas-to-native", action="store_true",
                        help="write the tract atlas on the moving image's grid (DIR/tracts.nii.gz + tracts.tsv)")
    parser.add_argument("--atlas", default="hcp842", metavar="hcp842|jhu|LABELS.nii.gz",
                        help="atlas for --atlas-to-native: the shipped HCP842 tracts (default), FSL's JHU labels "
                             "(needs $FSLDIR) or a label image in MNI space")
    parser.add_argument("--lut", default=None, metavar="LUT", help="lookup table (.tsv or .txt) of a user atlas")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the registration (default 0)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="ITK threads (default: all CPU cores); 1 repeats a run bit for bit")
    parser.add_argument("--no-check", action="store_true",
                        help="keep the result even when the similarity check says the registration failed")


def _interp(vol, override: str | None) -> str:
    return override or default_interpolation(vol)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        set_threads(args.threads)
    out = check_output_folder(args.out)
    moving = load_volume(args.moving)
    carry, interps, paths = {}, {}, {}
    for p in args.apply:
        vol = load_volume(p)
        name = strip_nifti_suffix(Path(p).name)
        if name in RESERVED or name.startswith("to_template"):
            raise InputError(f"{p}: its name '{name}' clashes with an output of register; rename the file.")
        if name in carry:
            raise InputError(f"{p}: two --apply files are named '{name}'; rename one of them.")
        carry[name], interps[name], paths[name] = vol, _interp(vol, args.interpolation), p
    with terminal_progress("register") as progress:
        result = register_subject(
            moving, carry=carry, interpolations=interps,
            atlas=args.atlas if args.atlas_to_native else None, lut=args.lut,
            preset=args.preset, out_dir=out, seed=args.seed, check=not args.no_check, progress=progress,
        )
    reg = result.registration
    params = {"preset": args.preset, "seed": args.seed, "transforms": reg.transforms,
              "similarity_nmi": reg.similarity, "reused_transforms": reg.reused}
    space = {"Space": "MNI152NLin2009aSym"}
    save_volume(result.warped["warped"].data, out / "warped.nii.gz", reg.fixed.affine,
                sidecar=provenance(units="a.u.", description="moving image on the MNI ICBM152 template grid",
                                   method="ANTs registration", parameters=params, inputs=[args.moving],
                                   extra=space),
                inputs=[args.moving, *args.apply])
    for name, vol in carry.items():
        src = vol.metadata
        save_volume(result.warped[name].data, out / f"{name}.nii.gz", reg.fixed.affine,
                    sidecar=provenance(units=str(src.get("Units", "")),
                                       description=f"{src.get('Description', name)} (on the MNI template grid)",
                                       method="ANTs registration",
                                       parameters=dict(params, interpolation=interps[name]),
                                       inputs=[paths[name], args.moving], extra=space),
                    inputs=[args.moving, *args.apply])
    if result.tracts is not None:
        save_volume(result.tracts.data, out / "tracts.nii.gz", moving.affine,
                    sidecar=provenance(units="label", description=f"atlas '{args.atlas}' labels on the grid of the "
                                       "moving image", method="ANTs inverse transform, genericLabel",
                                       parameters=params, inputs=[args.moving]),
                    inputs=[args.moving, *args.apply])
        write_lut(result.lut, out / "tracts.tsv")
    status = "reused the transforms in" if reg.reused else "wrote"
    print(f"{status} {out} (normalised mutual information with the template {reg.similarity:.3f}, "
          f"template brain covered {100 * reg.overlap:.0f}%)")
    return 0
