"""``napari-myelin stats``: a table per ROI/tract and map, optionally scored against a normative table.

Example::

    napari-myelin stats --labels tracts.nii.gz --lut tracts.tsv \\
        --map MWF=mwf.nii.gz --map FA=fa.nii.gz --csv out.csv --normative table.csv

Maps on another grid than the labels are resampled onto the labels' grid (trilinear, through
world coordinates); maps that do not overlap the labels are refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from napari_myelin.align.atlas import load_labels
from napari_myelin.utils.errors import InputError
from napari_myelin.stats.normative import score_subject
from napari_myelin.stats.roi import WEIGHTINGS, correlation_table, roi_statistics, write_csv
from napari_myelin.io.volume import load_volume
from ._common import parse_covariates, terminal_progress

HELP = "statistics of maps per ROI/tract (mean, SD, median, IQR ...) to CSV, with normative z-scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, metavar="L.nii.gz",
                        help="integer label image (drawn ROIs or atlas tracts; 0 = background)")
    parser.add_argument("--lut", metavar="L.tsv",
                        help="lookup table (.tsv with index/name, or FSL .txt); "
                        "default: NAME.tsv/.txt beside the labels")
    parser.add_argument("--map", dest="maps", action="append", required=True, metavar="NAME=FILE",
                        help="a map to summarise, e.g. MWF=mwf.nii.gz (repeat for several maps)")
    parser.add_argument("--csv", required=True, metavar="OUT.csv", help="output table (its folder must exist)")
    parser.add_argument("--layout", choices=("long", "wide"), default="long",
                        help="long: one row per (subject, label, map) [default]; wide: one row per label")
    parser.add_argument("--subject", default="", help="subject identifier written in every row")
    parser.add_argument("--normative", metavar="MODEL",
                        help="normative model folder ('napari-myelin normative build'), synthetic-demo, or a normative "
                        "table CSV (label, map, n_subjects, mean, sd): adds predictive z, FDR flags and D columns")
    parser.add_argument("--covariate", dest="covariates", action="append", default=[], metavar="NAME=VALUE",
                        help="the subject's covariate for the model, e.g. --covariate age=41 (repeat)")
    parser.add_argument("--wm", metavar="WM.nii.gz", help="white-matter probability map (0-1) for partial volume")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                        help="use of --wm: weighted mean/SD, or a threshold (default: weighted when --wm is given)")
    parser.add_argument("--threshold", type=float, default=0.5, help="WM probability threshold (default 0.5)")
    parser.add_argument("--grid", choices=("labels", "maps"), default="labels",
                        help="statistics grid: the labels' (maps resampled linearly) or the first map's "
                        "(labels resampled nearest-neighbour)")
    parser.add_argument("--correlation", metavar="CORR.csv",
                        help="also write Pearson/Spearman correlations between maps")
    parser.add_argument("--across", choices=("labels", "voxels"), default="labels",
                        help="correlate per-label means (labels) or voxel values (voxels)")


def parse_map_args(items: list[str]) -> dict[str, Path]:
    """``["MWF=mwf.nii.gz", ...]`` -> ``{"mwf": Path("mwf.nii.gz")}``."""
    maps: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--map {item}: expected NAME=FILE, e.g. --map MWF=mwf.nii.gz.")
        key = name.strip().lower()
        if key in maps:
            raise InputError(f"--map {item}: the map name '{key}' is given twice; give each map once.")
        maps[key] = Path(path.strip())
    return maps


def _normative(path: str):
    """A model folder, ``synthetic-demo`` or a normative table CSV (scored as an intercept-only model)."""
    from napari_myelin.stats.normative import read_normative
    from napari_myelin.stats.normative_model import model_from_table
    from napari_myelin.workflows.normative import open_model

    if str(path).lower().endswith(".csv"):
        table = read_normative(path)
        source = table["source"].astype(str) if "source" in table else pd.Series([], dtype=str)
        return model_from_table(table, {"Name": f"normative table {Path(path).name}",
                                        "Synthetic": bool(len(source)) and source.str.startswith("SYNTHETIC").all()})
    return open_model(path)


def run(args: argparse.Namespace) -> int:
    csv = Path(args.csv)
    # check every output before the (possibly long) computation
    for out in filter(None, (args.csv, args.correlation)):
        out = Path(out)
        if not out.parent.is_dir():
            raise InputError(f"{out}: the folder {out.parent} does not exist; create it or choose another path.")
    map_paths = parse_map_args(args.maps)
    labels, lut = load_labels(args.labels, args.lut)
    maps = {name: load_volume(p) for name, p in map_paths.items()}
    weighting = args.weighting or ("weighted" if args.wm else "none")
    wm = load_volume(args.wm) if args.wm else None
    normative = _normative(args.normative) if args.normative else None
    with terminal_progress("stats") as progress:
        result = roi_statistics(labels, maps, lut=lut, weights=wm, weighting=weighting, threshold=args.threshold,
                                grid=args.grid, subject=args.subject, progress=progress)
    table = result.table
    for message in result.messages:
        print(f"napari-myelin stats: note: {message}", file=sys.stderr)
    distance = None
    if normative is not None:
        scores = score_subject(table, normative, parse_covariates(args.covariates))
        table, distance = scores.rows, scores.tracts
        for message in scores.messages:
            print(f"napari-myelin stats: note: {message}", file=sys.stderr)
    write_csv(table, csv, layout=args.layout)
    if args.correlation:
        corr = correlation_table(labels, maps, across=args.across, stats=table if args.across == "labels" else None)
        write_csv(corr, args.correlation, layout="as-is")
    ok = table[table["status"] == "ok"]
    print(f"{csv}: {table['label'].nunique()} labels x {table['map'].nunique()} maps, "
          f"{len(table)} rows ({len(table) - len(ok)} empty)")
    if distance is not None:
        flagged = distance[distance["D_abnormal"] | (distance["abnormal_maps"] != "")]
        print(f"normative ({normative.label}): {len(flagged)} of {len(distance)} labels flagged "
              f"(a map at FDR 5 % over the labels, or the multivariate D)")
        for row in flagged.itertuples(index=False):
            print(f"  {row.label:>4}  {row.name:<40} D = {row.D:.2f}  abnormal: {row.abnormal_maps or '-'}")
    return 0
