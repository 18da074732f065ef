"""``napari-myelin demo [--out DIR]``: phantom subject, the whole pipeline, and a report."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_myelin.io.lut import read_lut
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.io.volume import check_output_folder, load_volume
from ._common import terminal_progress
from .run import print_summary, run_with_progress

HELP = "simulate the phantom subject, run the whole pipeline on it and write report.png, tracts.png, tracts.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    parser.add_argument("--size", choices=("small", "full"), default="full", help="phantom size (default: full, 2 mm)")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (default 1)")
    parser.add_argument("--snr", type=float, default=200.0, help="phantom SNR (default 200)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshot (no display)")


def truth_tract_means(truth_mwf, tracts) -> pd.Series:
    """Mean true MWF (%) over each native tract label, indexed by tract name (for the chart)."""
    truth = load_volume(truth_mwf).data
    labels = load_volume(tracts)
    lut = read_lut(str(tracts).replace(".nii.gz", ".tsv")).set_index("index")["name"]
    values = labels.data.astype(int).ravel()
    sums = np.bincount(values, weights=100.0 * truth.ravel(), minlength=lut.index.max() + 1)
    counts = np.bincount(values, minlength=lut.index.max() + 1)
    present = [i for i in lut.index if i < counts.size and counts[i] > 0]
    return pd.Series({lut[i]: sums[i] / counts[i] for i in present})


def run(args: argparse.Namespace) -> int:
    out = check_output_folder(args.out)
    timings = {}
    start = time.perf_counter()
    sub = f"sub-{args.seed:02d}"
    if not (out / "phantom" / sub).exists():
        with terminal_progress("phantom") as progress:
            write_phantom(out / "phantom", seed=args.seed, size=args.size, snr=args.snr, progress=progress)
    timings["phantom"] = time.perf_counter() - start
    result = run_with_progress(out / "phantom" / sub, out / "results")
    print_summary(result)
    subject_dir = out / "results" / sub
    shutil.copyfile(subject_dir / "tracts.csv", out / "tracts.csv")
    from napari_myelin.workflows.report import tract_chart

    truth = truth_tract_means(out / "phantom" / "derivatives" / "truth" / sub / "mese" / "mwf.nii.gz",
                              subject_dir / "anat" / f"{sub}_space-mese_tracts.nii.gz")
    tract_chart(out / "tracts.csv", out / "tracts.png", truth=truth)
    written = [out / "tracts.csv", out / "tracts.png"]
    if not args.no_screenshot:
        from napari_myelin._screenshot import render_report

        start = time.perf_counter()
        written.append(render_report(subject_dir / "anat" / f"{sub}_space-MNI152NLin2009aSym_mwf.nii.gz",
                                     out / "report.png"))
        timings["report"] = time.perf_counter() - start
    print("\n" + "\n".join(f"wrote {Path(p)}" for p in written))
    print("phantom: {:.1f} s".format(timings["phantom"]) + (", report: {:.1f} s".format(timings["report"])
                                                            if "report" in timings else ""))
    return 0
