"""``napari-myelin cohort BIDS_ROOT --out DERIV``: every subject of a BIDS root on Dask distributed.

See :mod:`napari_myelin.workflows.cohort`. Exit status: 0 when every subject succeeded, 3 when some
failed (their rows in ``DERIV/cohort_status.tsv`` give the step and the reason), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from napari_myelin.workflows.cohort import run_cohort
from napari_myelin.workflows.cohort_cluster import JOBQUEUES, PRESETS
from napari_myelin.workflows.cohort_group import find_subject_folders
from napari_myelin.workflows.pipeline import STEPS
from ._common import add_out_argument

HELP = ("run every subject of a BIDS root through the pipeline on Dask distributed (embedded cluster, "
        "an existing scheduler or a batch queue); group tables and maps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("exit status: 0 every subject succeeded; 3 some subject failed (see DERIV/cohort_status.tsv); "
                     "2 bad arguments; 130 interrupted (finished steps are kept: run again to resume)")
    parser.add_argument("bids_root", metavar="BIDS_ROOT", help="BIDS dataset whose sub-XX folders are the subjects")
    add_out_argument(parser)
    parser.add_argument("--participants", metavar="TSV",
                        help="participants.tsv with covariates (default: BIDS_ROOT/participants.tsv when present)")
    parser.add_argument("--subjects", nargs="+", metavar="SUB", help="only these subjects (sub-01 or 01)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes (default: CPU count / threads per worker)")
    parser.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                        help="threads of each worker and of the libraries inside each task (default 1)")
    parser.add_argument("--memory-limit", default="auto", metavar="SIZE",
                        help="memory limit of each embedded worker, e.g. 6GB (default auto: memory / workers)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the embedded cluster and its dashboard listen on (default 127.0.0.1: "
                             "this machine only)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="attach to a running scheduler (tcp://HOST:8786, tls://...)")
    where.add_argument("--scheduler-file", metavar="FILE", help="attach to the scheduler described in this file")
    where.add_argument("--jobqueue", choices=tuple(JOBQUEUES), help="start workers as batch jobs (needs dask-jobqueue)")
    parser.add_argument("--cores", type=int, metavar="C", help="--jobqueue: CPU cores of one job")
    parser.add_argument("--memory", metavar="M", help="--jobqueue: memory of one job, e.g. 32GB")
    parser.add_argument("--walltime", metavar="W", help="--jobqueue: wall time of one job, e.g. 02:00:00")
    parser.add_argument("--queue", metavar="Q", help="--jobqueue: queue or partition")
    parser.add_argument("--preset", choices=PRESETS, default="fast", help="registration preset (default: fast)")
    parser.add_argument("--seed", type=int, default=0, help="registration seed (default 0)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a task runs again after its worker died or it raised an internal error (default 2)")
    parser.add_argument("--force", action="store_true", help="redo steps whose valid outputs exist")
    parser.add_argument("--normative", metavar="MODEL",
                        help="normative model folder ('napari-myelin normative build'), or synthetic-demo: each "
                             "subject's tracts_z.csv with z-scores and flags, covariates from the participants "
                             "table; without a model no z-score and no flag")


def print_summary(result) -> None:
    """One line per subject (status, seconds, first failure), then the status table and group files."""
    print(f"\n{'subject':<12} {'status':<10} {'seconds':>8}  message")
    for sub, st in result.subjects.items():
        print(f"{sub:<12} {st.status:<10} {st.seconds:>8.1f}  {st.message}")
    if result.group is not None:
        print(f"{'group':<12} {result.group.status:<10} {result.group.seconds:>8.1f}  {result.group.message}")
    print(f"\n{len(result.subjects) - len(result.failed)} of {len(result.subjects)} subjects succeeded, "
          f"{result.steps_done} steps computed in {result.seconds:.1f} s")
    print(f"status: {result.status_tsv}")
    if (result.out_dir / "group" / "tracts_long.csv").exists():
        print(f"group tables: {result.out_dir / 'group'}")


def run(args: argparse.Namespace) -> int:
    options = {k: getattr(args, k) for k in (
        "participants", "subjects", "workers", "threads_per_worker", "memory_limit", "host", "scheduler",
        "scheduler_file", "jobqueue", "cores", "memory", "walltime", "queue", "preset", "seed", "retries", "force",
        "normative")}
    total = len(find_subject_folders(args.bids_root, args.subjects)) * len(STEPS)
    bars: list[tqdm] = []  # drawn once the cluster is up (bad arguments print their sentence alone)

    def report(line: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="cohort", unit="step", file=sys.stderr))
        tqdm.write(line, file=sys.stderr)

    def on_status(subject: str, name: str, result) -> None:
        bars[0].update(len(STEPS) if name == "inputs" else 1)
        bars[0].set_postfix_str(f"{subject} {name} {result.status}")
        if result.status == "failed":
            tqdm.write(f"{subject} {name} failed: {result.message}", file=sys.stderr)

    try:
        result = run_cohort(args.bids_root, args.out, on_status=on_status, report=report, **options)
    finally:
        for bar in bars:
            bar.close()
    print_summary(result)
    return result.exit_status
