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

from napari_myelin.align.atlas import load_labels
from napari_myelin.utils.errors import InputError
from napari_myelin.stats.normative import compare_to_normative, read_normative
from napari_myelin.stats.roi import WEIGHTINGS, correlation_table, roi_statistics, write_csv
from napari_myelin.io.volume import load_volume
from ._common import terminal_progress

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
    parser.add_argument("--normative", metavar="TABLE.csv",
                        help="normative table (label, map, mean, sd): adds z, abnormal (|z|>1.96) and D columns")
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
    normative = read_normative(args.normative) if args.normative else None
    with terminal_progress("stats") as progress:
        result = roi_statistics(labels, maps, lut=lut, weights=wm, weighting=weighting, threshold=args.threshold,
                                grid=args.grid, subject=args.subject, progress=progress)
    table = result.table
    for message in result.messages:
        print(f"napari-myelin stats: note: {message}", file=sys.stderr)
    distance = None
    if normative is not None:
        table, distance = compare_to_normative(table, normative)
    write_csv(table, csv, layout=args.layout)
    if args.correlation:
        corr = correlation_table(labels, maps, across=args.across, stats=table if args.across == "labels" else None)
        write_csv(corr, args.correlation, layout="as-is")
    ok = table[table["status"] == "ok"]
    print(f"{csv}: {table['label'].nunique()} labels x {table['map'].nunique()} maps, "
          f"{len(table)} rows ({len(table) - len(ok)} empty)")
    if distance is not None:
        flagged = distance[distance["D_abnormal"] | (distance["abnormal_maps"] != "")]
        print(f"normative: {len(flagged)} of {len(distance)} labels outside the normal range "
              f"(|z| > 1.96 or D beyond the 95th percentile)")
        for row in flagged.itertuples(index=False):
            print(f"  {row.label:>4}  {row.name:<40} D = {row.D:.2f}  abnormal: {row.abnormal_maps or '-'}")
    return 0
