"""``napari-myelin normative``: build a normative table from healthy subjects' statistics CSVs.

Example::

    napari-myelin normative sub-01_stats.csv sub-02_stats.csv sub-03_stats.csv --csv normative.csv

Each input is a long-layout table written by ``napari-myelin stats`` (subjects are told apart by
the ``subject`` column, else by the file name). The output has one row per (label, map) with the
mean and sample SD across subjects of the ROI means.
"""

from __future__ import annotations

import argparse

from napari_myelin.utils.errors import InputError
from napari_myelin.stats.normative import build_normative, load_stats_tables
from napari_myelin.stats.roi import write_csv

HELP = "build a normative table (mean, SD per label and map) from healthy subjects' stats CSVs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tables", nargs="+", metavar="STATS.csv", help="long-layout tables from 'napari-myelin stats'")
    parser.add_argument("--csv", required=True, metavar="OUT.csv", help="normative table to write (folder must exist)")
    parser.add_argument("--statistic", default="mean", choices=("mean", "median"),
                        help="per-subject ROI statistic that is pooled (default: mean)")
    parser.add_argument("--source", default="", help="free text stored in the table's source column")
    parser.add_argument("--min-subjects", type=int, default=2, help="drop rows with fewer subjects (default 2)")


def run(args: argparse.Namespace) -> int:
    if args.min_subjects < 2:
        raise InputError(f"--min-subjects {args.min_subjects}: an SD needs at least 2 subjects.")
    tables = load_stats_tables(args.tables)
    table = build_normative(tables, statistic=args.statistic, source=args.source, min_subjects=args.min_subjects)
    write_csv(table, args.csv, layout="as-is")
    print(f"{args.csv}: {table['label'].nunique()} labels x {table['map'].nunique()} maps from "
          f"{int(table['n_subjects'].max()) if len(table) else 0} subjects")
    return 0
