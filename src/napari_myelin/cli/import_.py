"""``napari-myelin import DICOM_DIR --out BIDS_ROOT [--subject 01]``: a DICOM export as a BIDS subject.

See :mod:`napari_myelin.io.dicom` for the series recognised and the names they get.
"""

from __future__ import annotations

import argparse

from napari_myelin.io.dicom import import_dicom

HELP = ("convert a DICOM folder with dcm2niix and name its MESE, DWI, MEGRE, VFA, MTS and B1 series as a BIDS "
        "subject (other series are listed, not guessed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom", metavar="DICOM_DIR", help="folder of the scanner's DICOM export (any depth)")
    parser.add_argument("--out", required=True, metavar="BIDS_ROOT",
                        help="BIDS dataset folder; the subject goes to BIDS_ROOT/sub-<subject>")
    parser.add_argument("--subject", default="01", help="BIDS subject label, letters and digits (default 01)")


def run(args: argparse.Namespace) -> int:
    result = import_dicom(args.dicom, args.out, subject=args.subject)
    for path in result.written:
        print(path)
    if result.left_out:
        print(f"\nnot imported ({len(result.left_out)} series):")
        for line in result.left_out_lines():
            print(f"  {line}")
    print(f"\nnext: napari-myelin run {result.subject_dir} --out RESULTS")
    return 0
