"""``napari-myelin abnormality RESULTS --normative MODEL``: z-maps and the NAWM abnormality map of one subject.

Example::

    napari-myelin abnormality results/sub-01 --normative MODEL --covariate age=41 --covariate sex=F

Writes, beside the subject's other outputs, one predictive z-map per map, the combined abnormality score,
the abnormal-white-matter label map and ``abnormal_tracts.csv`` (see
:mod:`napari_myelin.workflows.abnormality`), and lists the tracts with abnormal volume.
"""

from __future__ import annotations

import argparse
import sys

from napari_myelin.utils.errors import InputError
from ._common import add_normative_arguments, parse_covariates, terminal_progress

HELP = "voxelwise z-maps, abnormality score and abnormal-WM map of one subject against a normative model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="the subject's folder of 'napari-myelin run' (DERIV/sub-XX)")
    add_normative_arguments(parser, required=True)
    parser.add_argument("--participants", metavar="TSV", help="participants.tsv with the subject's covariates")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="false-discovery rate of the abnormal WM voxels (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from napari_myelin.workflows.abnormality import abnormality_map

    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha}: give a false-discovery rate between 0 and 1, e.g. 0.05.")
    covariates = parse_covariates(args.covariates)
    with terminal_progress("abnormality") as progress:
        result = abnormality_map(args.results, args.normative, covariates, alpha=args.alpha,
                                 participants=args.participants, progress=progress)
    for message in result.messages:
        print(f"napari-myelin abnormality: note: {message}", file=sys.stderr)
    flagged = result.tracts[result.tracts["abnormal_voxels"] > 0].sort_values("abnormal_mm3", ascending=False)
    print(f"{result.subject} against {result.model_label}: {int(result.abnormal.sum())} abnormal WM voxels, "
          f"{len(flagged)} tracts with abnormal volume")
    for row in flagged.itertuples(index=False):
        print(f"  {row.label:>4}  {row.name:<40} {row.abnormal_mm3:9.0f} mm3  ({100 * row.fraction:.0f} %)")
    print("\n".join(f"wrote {p}" for p in result.files))
    return 0
