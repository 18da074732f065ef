"""``napari-myelin database --out DIR SUBJ_DIR ...``: standard-brain mean/SD maps from several subjects.

Each ``SUBJ_DIR`` holds one subject's maps on the template grid (e.g. the ``--out`` folder of
``napari-myelin register --apply``); the subject's name is the folder's name. Writes
``mean_<map>``, ``sd_<map>``, ``n_<map>`` per parameter, ``wm_mwf_atlas.nii.gz`` when the subjects
have ``mwf_qpm`` maps, ``subjects.tsv`` and ``database.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_myelin.align.database import build_database, load_subject_maps
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import check_output_folder, load_volume
from ._common import add_out_argument, terminal_progress

HELP = "build the standard-brain database: voxel-wise mean and SD maps per parameter from subjects in template space"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subjects", nargs="+", metavar="SUBJ_DIR",
                        help="one folder of template-space maps (<name>.nii.gz) per subject")
    add_out_argument(parser)
    parser.add_argument("--fwhm", type=float, default=0.0, metavar="MM",
                        help="Gaussian smoothing FWHM in mm applied to each map before averaging (default 0: none)")
    parser.add_argument("--mask", default=None, metavar="MASK.nii.gz",
                        help="use only the voxels of this mask (on the template grid)")


def run(args: argparse.Namespace) -> int:
    if args.fwhm < 0:
        raise InputError(f"--fwhm {args.fwhm}: must be 0 (no smoothing) or a positive width in mm.")
    out = check_output_folder(args.out)
    subjects = {}
    for folder in args.subjects:
        name = Path(folder).resolve().name
        if name in subjects:
            raise InputError(f"{folder}: two subject folders are named '{name}'; subject names must be unique.")
        subjects[name] = load_subject_maps(folder)
    mask = load_volume(args.mask) if args.mask else None
    with terminal_progress("database") as progress:
        db = build_database(subjects, fwhm_mm=args.fwhm, mask=mask, progress=progress)
    inputs = [v.path for maps in subjects.values() for v in maps.values() if v.path is not None]
    db.save(out, inputs=inputs)
    print(f"wrote {out}: {len(db.subjects)} subjects, parameters {', '.join(db.parameters)}"
          + (", WM MWF atlas" if db.wm_mwf_atlas is not None else ""))
    return 0
