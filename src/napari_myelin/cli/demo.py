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
from napari_myelin.utils.errors import InputError
from .run import print_summary, run_with_progress

HELP = ("simulate the phantom subject, run the whole pipeline on it and write the subject report (report.pdf, "
        "report.html), report.png, tracts.png, tracts.csv; "
        "with --controls N, a SYNTHETIC normative model of small phantom controls then scores a patient")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    parser.add_argument("--size", choices=("small", "full"), default="full", help="phantom size (default: full, 2 mm)")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (default 1)")
    parser.add_argument("--snr", type=float, default=200.0, help="phantom SNR (default 200)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshot (no display)")
    parser.add_argument("--controls", type=int, default=0,
                        help="small healthy phantoms of a SYNTHETIC normative model that then scores a patient and a "
                        "healthy phantom (default 0: skipped; experimental, see the docs)")


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


#: Seeds of the normative demo: controls from 101, a patient with lesions, a healthy subject.
DEMO_CONTROL_SEED, DEMO_PATIENT_SEED, DEMO_HEALTHY_SEED = 101, 201, 202


def normative_demo(out: Path, controls: int, snr: float) -> list[Path]:
    """Small phantom controls -> a SYNTHETIC model; a patient with lesions and a healthy subject scored
    against it (tracts_z.csv, abnormality map), their flags printed."""
    from napari_myelin.workflows.abnormality import abnormality_map
    from napari_myelin.workflows.normative import build_normative_model
    from .run import print_flags

    if controls < 3:
        raise InputError(f"--controls {controls}: a model needs at least 3 controls (0 skips it).")
    check_output_folder(out)
    seeds = [DEMO_CONTROL_SEED + i for i in range(controls)]
    for seed in seeds + [DEMO_PATIENT_SEED, DEMO_HEALTHY_SEED]:
        if not (out / "bids" / f"sub-{seed:02d}").exists():
            write_phantom(out / "bids", seed=seed, size="small", snr=snr, lesions=seed == DEMO_PATIENT_SEED)
    for seed in seeds:
        run_with_progress(out / "bids" / f"sub-{seed:02d}", out / "controls", preset="affine")
    build_normative_model(out / "controls", out / "model", covariates=[], name="demo phantom controls")
    written = []
    for seed, what in ((DEMO_PATIENT_SEED, "patient with lesions"), (DEMO_HEALTHY_SEED, "healthy subject")):
        result = run_with_progress(out / "bids" / f"sub-{seed:02d}", out / "results", preset="affine",
                                   normative=out / "model")
        print(f"\n{what} (sub-{seed}):")
        print_flags(result.tracts_csv.with_name("tracts_z.csv"))
        written += [result.tracts_csv.with_name("tracts_z.csv"),
                    *abnormality_map(out / "results" / f"sub-{seed}", out / "model").files[-2:]]
    return written


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
    from napari_myelin.workflows.report import tract_chart, write_report

    written = write_report(subject_dir, [out / "report.pdf", out / "report.html"]).written  # the demo's first page
    truth = truth_tract_means(out / "phantom" / "derivatives" / "truth" / sub / "mese" / "mwf.nii.gz",
                              subject_dir / "anat" / f"{sub}_space-mese_tracts.nii.gz")
    tract_chart(out / "tracts.csv", out / "tracts.png", truth=truth)
    written += [out / "tracts.csv", out / "tracts.png"]
    if not args.no_screenshot:
        from napari_myelin._screenshot import render_report

        start = time.perf_counter()
        written.append(render_report(subject_dir / "anat" / f"{sub}_space-MNI152NLin2009aSym_mwf.nii.gz",
                                     out / "report.png"))
        timings["report"] = time.perf_counter() - start
    if args.controls:
        written += normative_demo(out / "normative", args.controls, args.snr)
    print("\n" + "\n".join(f"wrote {Path(p)}" for p in written))
    print("phantom: {:.1f} s".format(timings["phantom"]) + (", report: {:.1f} s".format(timings["report"])
                                                            if "report" in timings else ""))
    return 0
