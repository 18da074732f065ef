"""``napari-myelin run SUBJECT_DIR --out DIR``: one subject end to end (see :mod:`napari_myelin.workflows.pipeline`)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from napari_myelin.workflows.pipeline import STEPS, run_subject
from napari_myelin.workflows.steps import summary_rows
from ._common import add_normative_arguments, add_out_argument, parse_covariates

HELP = "run every estimator whose inputs are present, register, fuse and write tract statistics for one subject"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", metavar="SUBJECT_DIR", help="BIDS-like subject folder (sub-XX with anat/, dwi/, fmap/)")
    add_out_argument(parser)
    parser.add_argument("--force", action="store_true", help="redo steps whose valid outputs exist")
    parser.add_argument("--preset", choices=("fast", "accurate", "affine"), default="fast",
                        help="registration preset (default: fast)")
    parser.add_argument("--seed", type=int, default=0, help="registration seed (default 0)")
    add_normative_arguments(parser)


def print_summary(result) -> None:
    rows = summary_rows(result.steps)
    print(f"\n{'step':<10} {'status':<8} {'seconds':>8} {'outputs':>7}  note")
    for r in rows:
        print(f"{r['step']:<10} {r['status']:<8} {r['seconds']:>8.1f} {r['outputs']:>7}  {r['note']}")
    if result.tracts_csv:
        print(f"\ntract statistics: {result.tracts_csv}")
        scored = result.tracts_csv.with_name("tracts_z.csv")
        if scored.exists():
            print_flags(scored)


def print_flags(path) -> None:
    """The tracts flagged in a ``tracts_z.csv`` (per-map FDR flags and the multivariate distance)."""
    import pandas as pd

    table = pd.read_csv(path)
    flagged = table[table["abnormal"] | table["D_abnormal"]]
    print(f"z-scores against {table['normative_model'].iloc[0]}: {path}")
    print(f"  {flagged['label'].nunique()} of {table['label'].nunique()} tracts flagged "
          f"({int(table['abnormal'].sum())} of {len(table)} tract x map rows at FDR 5 %)")
    for (label, name), rows in flagged.groupby(["label", "name"]):
        maps = ", ".join(f"{r.map} z={r.z:.1f}" for r in rows.itertuples() if r.abnormal)
        print(f"  {label:>4}  {name:<36} D={rows['D'].iloc[0]:.2f}{' (flagged)' if rows['D_abnormal'].iloc[0] else ''}"
              f"  {maps}")


def run_with_progress(subject, out, **kwargs):
    """:func:`run_subject` with one terminal progress bar per step."""
    bars: dict[str, tqdm] = {}

    def on_step(name: str, status: str) -> None:
        if status == "start":
            bars[name] = tqdm(total=100, desc=f"{name:<9}", unit="%", file=sys.stderr,
                              bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
        else:
            bar = bars.pop(name)
            bar.n = 100
            bar.set_postfix_str(status)
            bar.close()

    def progress(fraction: float, message: str) -> None:
        for name, bar in bars.items():
            i = STEPS.index(name)
            local = min(max(fraction * len(STEPS) - i, 0.0), 1.0)
            bar.n = round(100 * local)
            bar.set_postfix_str(message[:40], refresh=False)
            bar.refresh()

    try:
        return run_subject(subject, out, progress=progress, on_step=on_step, **kwargs)
    finally:
        for bar in bars.values():
            bar.close()


def run(args: argparse.Namespace) -> int:
    result = run_with_progress(args.subject, args.out, force=args.force, preset=args.preset, seed=args.seed,
                               normative=args.normative, covariates=parse_covariates(args.covariates))
    print_summary(result)
    write_subject_report(result)
    return 0


def write_subject_report(result) -> list:
    """``OUT/sub-XX/report.pdf`` and ``report.html`` of a finished run (:func:`write_report`), printed."""
    from napari_myelin.workflows.report import write_report

    subject_dir = result.out_dir / f"sub-{result.subject}"
    report = write_report(subject_dir, [subject_dir / "report.pdf", subject_dir / "report.html"])
    print(f"\nreport ({len(report.pages)} pages): {report.written[0]}, {report.written[1]}")
    return report.written
