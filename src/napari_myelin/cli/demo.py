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
        "report.html), report.png, tracts.png, tracts.csv; then a SYNTHETIC normative model of --controls small "
        "subjects of the independent simulator scores a patient with lesions and a healthy subject")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    parser.add_argument("--size", choices=("small", "full"), default="full", help="phantom size (default: full, 2 mm)")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (default 1)")
    parser.add_argument("--snr", type=float, default=200.0, help="phantom SNR (default 200)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshot (no display)")
    parser.add_argument("--controls", type=int, default=DEMO_CONTROLS,
                        help=f"healthy subjects of the independent simulator in a SYNTHETIC normative model that then "
                        f"scores a patient with lesions and a healthy subject (default {DEMO_CONTROLS}; 0 skips it)")


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


#: Seeds of the normative demo (independent simulator, none of them a frozen test seed): the controls are the
#: first seeds from 4000 whose drawn anatomy has no pathology, the patient the first from 4100 with lesions and
#: NAWM deficits, the healthy subject the first from 4200 without pathology.
DEMO_CONTROL_SEED, DEMO_PATIENT_SEED, DEMO_HEALTHY_SEED = 4000, 4100, 4200
#: Controls of the demo's SYNTHETIC model by default.
DEMO_CONTROLS = 8


def independent_seeds(start: int, n: int, lesions: bool) -> list[int]:
    """The first ``n`` seeds from ``start`` whose subject of the independent simulator has (``lesions``) or
    has not pathology; reads only the seed's anatomy stream (``SeedSequence([seed, 16])``'s first child, see
    :mod:`napari_myelin.sims.independent.subject`), not its acquisitions."""
    from napari_myelin.sims.independent.anatomy import draw_anatomy

    seeds, seed = [], start
    while len(seeds) < n:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 16]).spawn(1)[0])
        if draw_anatomy(rng)["parameters"]["has_lesions"] == lesions:
            seeds.append(seed)
        seed += 1
    return seeds


def _simulate(bids: Path, seeds: dict[int, str]) -> None:
    """Write the subjects of the independent simulator (those not written yet; MESE, DWI, GRE, VFA and B1, no MT
    series, to keep the demo short) and participants.tsv."""
    from napari_myelin.sims.independent import write_independent_subject

    for seed in seeds:
        if not (bids / f"sub-{seed:02d}").exists():
            with terminal_progress(f"sub-{seed:02d}") as progress:
                write_independent_subject(bids, seed=seed, size="small", mt=False, progress=progress)
    rows = "".join(f"sub-{seed:02d}\t{group}\n" for seed, group in seeds.items())
    (bids / "participants.tsv").write_text("participant_id\tgroup\n" + rows, encoding="utf-8")


def _check(result) -> None:
    """Stop the demo with the first failed subject's sentence."""
    if result.failed:
        sub = result.failed[0]
        raise InputError(f"demo: {sub} failed ({result.subjects[sub].message}); see {result.status_tsv}.")


def normative_demo(out: Path, controls: int) -> list[Path]:
    """Controls of the independent simulator (tract MWF from a population distribution, atrophy, head size and
    pose: real between-subject variation) through ``cohort`` -> a SYNTHETIC model; a patient with lesions and a
    healthy subject scored against it by ``cohort --normative`` (tracts_z.csv, report, abnormality map)."""
    from napari_myelin.workflows.abnormality import abnormality_map
    from napari_myelin.workflows.cohort import run_cohort
    from napari_myelin.workflows.normative import build_normative_model
    from napari_myelin.workflows.report import write_report
    from .run import print_flags

    if controls < 3:
        raise InputError(f"--controls {controls}: a model needs at least 3 controls (0 skips it).")
    check_output_folder(out)
    patient = independent_seeds(DEMO_PATIENT_SEED, 1, True)[0]
    healthy = independent_seeds(DEMO_HEALTHY_SEED, 1, False)[0]
    seeds = {s: "control" for s in independent_seeds(DEMO_CONTROL_SEED, controls, False)}
    _simulate(out / "bids", {**seeds, patient: "patient", healthy: "healthy"})
    names = [f"sub-{s:02d}" for s in seeds]
    print(f"\ncontrols {', '.join(names)} (independent simulator) through 'cohort'", flush=True)
    _check(run_cohort(out / "bids", out / "controls", subjects=names, report=print))
    build_normative_model(out / "controls", out / "model", controls="group == 'control'", covariates=[],
                          participants=out / "bids" / "participants.tsv", name="demo controls")
    scored = [f"sub-{patient:02d}", f"sub-{healthy:02d}"]
    _check(run_cohort(out / "bids", out / "results", subjects=scored, normative=out / "model", report=print))
    written = []
    for sub, what in zip(scored, ("patient with lesions", "healthy subject")):
        root = out / "results" / sub
        print(f"\n{what} ({sub}):")
        print_flags(root / "tracts_z.csv")
        written += [root / "tracts_z.csv", *write_report(root, [root / "report.pdf", root / "report.html"]).written,
                    *abnormality_map(root, out / "model").files[-2:]]
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
        written += normative_demo(out / "normative", args.controls)
    print("\n" + "\n".join(f"wrote {Path(p)}" for p in written))
    print("phantom: {:.1f} s".format(timings["phantom"]) + (", report: {:.1f} s".format(timings["report"])
                                                            if "report" in timings else ""))
    return 0
