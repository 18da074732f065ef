"""``napari-myelin report RESULTS_DIR --out report.pdf [report.html]``: the subject report of a run.

See :mod:`napari_myelin.workflows.report` for what the report shows.
"""

from __future__ import annotations

import argparse

from napari_myelin.workflows.report import write_report

HELP = ("write the subject report of a 'run' results folder as PDF and/or HTML: maps with units, tract table "
        "(z-scores when scored), quality control and provenance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS_DIR",
                        help="the --out folder of 'napari-myelin run' or a sub-XX in it")
    parser.add_argument("--out", required=True, nargs="+", metavar="FILE",
                        help="report.pdf and/or report.html (one of each at most)")


def run(args: argparse.Namespace) -> int:
    result = write_report(args.results, args.out)
    for path in result.written:
        print(f"wrote {path}" + (f" ({len(result.pages)} pages)" if path.suffix.lower() == ".pdf" else ""))
    return 0
