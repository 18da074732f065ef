"""Cohort on Dask distributed against the sequential ``napari-myelin run`` loop, on one machine.

The script writes small phantom subjects (``napari-myelin phantom --size small``, seeds 1..N) into one
BIDS root and processes them three ways, each into a fresh output folder, each in a fresh process:

1. the sequential loop users script today: ``napari-myelin run sub-XX --out D`` once per subject;
2. ``run_cohort`` on an embedded LocalCluster of **1** worker process (1 thread);
3. ``run_cohort`` on an embedded LocalCluster of **2** worker processes (1 thread each).

It prints the wall time of each (process start to end, imports and cluster start-up included) with the
1-minute load average of the machine when it ended (other jobs on a shared machine slow every way), the
speed-up of the cohorts over the loop, the peak resident memory of each ``run`` process and of each
Dask worker process (sampled every 0.1 s), and, from the 1-worker cohort's per-step seconds, the
per-subject cost and the critical path of a subject's graph, with the scaling they imply.

Usage::

    python benchmarks/bench_cohort.py [--subjects 8] [--preset affine] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _sample_workers(peaks: dict[int, int], stop: threading.Event) -> None:
    """Peak RSS (bytes) of every Dask worker process of this process, sampled until ``stop``."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        for proc in me.children(recursive=True):
            try:
                if any("spawn_main" in part for part in proc.cmdline()):
                    peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.memory_info().rss)
            except psutil.Error:
                continue
        stop.wait(0.1)


def cohort_child(bids: str, out: str, workers: int, preset: str) -> None:
    """Run the cohort in this process and print a JSON line of what it measured."""
    from napari_myelin.workflows.cohort import run_cohort

    peaks: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_workers, args=(peaks, stop), daemon=True)
    sampler.start()
    result = run_cohort(bids, out, workers=workers, threads_per_worker=1, preset=preset)
    stop.set()
    sampler.join()
    steps = {sub: {r.name: (r.status, r.seconds) for r in st.steps} for sub, st in result.subjects.items()}
    print(json.dumps({"exit": result.exit_status, "worker_peaks": sorted(peaks.values()), "steps": steps,
                      "group_s": result.group.seconds if result.group else 0.0,
                      "main_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return time.perf_counter() - start, run.stdout


def critical_path(seconds: dict[str, float]) -> tuple[float, list[str]]:
    """Longest path (s) through the pipeline's step graph with the given step durations."""
    from napari_myelin.workflows.pipeline import DEPENDS, STEPS

    best: dict[str, tuple[float, list[str]]] = {}
    for name in STEPS:  # STEPS is in dependency order
        before = max((best[d] for d in DEPENDS[name]), default=(0.0, []), key=lambda b: b[0])
        best[name] = (before[0] + seconds.get(name, 0.0), [*before[1], name])
    return max(best.values(), key=lambda b: b[0])


def _report(n: int, loop: float, loop_peak: int, cohorts: dict[int, tuple[float, dict]]) -> None:
    gib = 1024 ** 3
    print(f"\n{'how':<34} {'wall s':>8} {'speed-up':>9}  peak memory per process")
    print(f"{'sequential napari-myelin run loop':<34} {loop:8.1f} {1.0:9.2f}  {loop_peak / gib:.2f} GiB (largest run)")
    for workers, (wall, info) in cohorts.items():
        peaks = ", ".join(f"{p / gib:.2f}" for p in info["worker_peaks"])
        print(f"{f'cohort, {workers} worker(s) x 1 thread':<34} {wall:8.1f} {loop / wall:9.2f}  workers {peaks} GiB; "
              f"client+scheduler {info['main_peak'] / gib:.2f} GiB")
    print(f"2 workers over 1 worker: {cohorts[1][0] / cohorts[2][0]:.2f}x")
    steps = cohorts[1][1]["steps"]
    names = {name for sub in steps.values() for name in sub}
    mean = {name: sum(sub[name][1] for sub in steps.values() if name in sub) / n for name in names}
    work = sum(mean.values())
    path, chain = critical_path(mean)
    print(f"\nper-subject work (1-worker cohort, sum of step seconds, mean of {n}): {work:.1f} s")
    print("mean step seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(mean.items(), key=lambda kv: -kv[1])))
    print(f"critical path of one subject: {path:.1f} s ({' -> '.join(chain)})")
    print(f"group step (tables + maps of {n} subjects): {cohorts[1][1]['group_s']:.1f} s")
    print("expected wall for S subjects on P worker processes: max(S x work / P, critical path) + start-up")
    for subjects, p in ((1000, 32), (1000, 128), (1000, 512), (10, 128)):
        print(f"  {subjects} subjects on {p} workers: {max(subjects * work / p, path) / 60:.1f} min")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8, help="phantom subjects (default 8)")
    parser.add_argument("--preset", default="affine", choices=("fast", "accurate", "affine"))
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--cohort-child", nargs=4, metavar=("BIDS", "OUT", "WORKERS", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cohort_child:
        bids, out, workers, preset = args.cohort_child
        cohort_child(bids, out, int(workers), preset)
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_cohort_"))
    from napari_myelin.sims.phantom import write_phantom

    cli = str(Path(sys.executable).with_name("napari-myelin"))
    bids = work / "bids"
    t0 = time.perf_counter()
    for seed in range(1, args.subjects + 1):  # in this process: the children's peak memory is the runs' alone
        write_phantom(bids, seed=seed, size="small")
    print(f"{args.subjects} small phantom subjects in {time.perf_counter() - t0:.0f} s ({bids})", flush=True)
    loop = 0.0
    for seed in range(1, args.subjects + 1):
        wall, _ = _timed([cli, "run", str(bids / f"sub-{seed:02d}"), "--out", str(work / "loop"),
                          "--preset", args.preset])
        loop += wall
        print(f"run sub-{seed:02d}: {wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    loop_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    cohorts = {}
    for workers in (1, 2):
        wall, out = _timed([sys.executable, __file__, "--cohort-child", str(bids), str(work / f"cohort{workers}"),
                            str(workers), args.preset])
        cohorts[workers] = (wall, json.loads(out.strip().splitlines()[-1]))
        assert cohorts[workers][1]["exit"] == 0, cohorts[workers][1]
        print(f"cohort with {workers} worker(s): {wall:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    _report(args.subjects, loop, loop_peak, cohorts)
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
