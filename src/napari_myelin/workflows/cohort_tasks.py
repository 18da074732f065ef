"""What a cohort runs on its Dask workers: one pipeline step of one subject, and the group step.

Each task calls the pipeline's own step (:func:`napari_myelin.workflows.pipeline.run_step`), so a
cohort writes exactly what ``napari-myelin run`` writes and resumes from the same per-step manifests
(:mod:`napari_myelin.workflows.steps`): a step whose inputs and parameters are unchanged and whose
outputs exist is ``skipped``. Bad input (:class:`~napari_myelin.utils.errors.InputError`) ends the
step as ``failed`` with its sentence (running it again would fail again); the steps that read its
outputs are then ``blocked``. Any other exception propagates, so that Dask retries the task.

Tasks run only functions of this package on file paths and plain values; nothing read from the data
folder is executed (NIfTI, JSON and TSV files are parsed as data).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.steps import StepResult

#: Environment variables that set the thread pools of the numerical libraries (read at their import).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
#: Step statuses that stop the steps reading their outputs.
FAILED = ("failed", "blocked")


def worker_environment(threads: int) -> dict[str, str]:
    """Environment variables giving each numerical library ``threads`` threads."""
    return {name: str(int(threads)) for name in THREAD_VARIABLES}


@dataclass(frozen=True)
class StepOptions:
    """Options every step task receives: the pipeline's (``force``, ``preset``, ``seed``, ``normative``:
    the model the ``stats`` step scores with, a folder path or ``"synthetic-demo"``) and the worker's
    thread budget (``threads``; ``pin``: give each worker its own cores)."""

    force: bool = False
    preset: str = "fast"
    seed: int = 0
    threads: int = 1
    pin: bool = False
    normative: str | None = None


def _worker_cores(threads: int) -> set[int] | None:
    """The cores of this worker: ``threads`` consecutive cores from ``name * threads`` (an embedded
    cluster names its workers 0, 1, ...); ``None`` outside a worker or for other names."""
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:
        return None
    if not isinstance(name, int):
        return None
    n = os.cpu_count() or 1
    return {(name * threads + k) % n for k in range(threads)}


def _limit_loaded_libraries(threads: int) -> None:
    """Thread counts of torch and numba when this process has already imported them."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def thread_budget(threads: int, pin: bool = False) -> Iterator[None]:
    """Run the enclosed work with ``threads`` threads in every numerical library.

    BLAS and OpenMP (threadpoolctl), scipy.fft, torch, numba and ITK (for registrations of this
    process) are limited to ``threads``; the environment variables are set for libraries imported
    later. With ``pin`` the calling thread (and the threads it starts: the estimators' chunk pools)
    runs on the worker's own ``threads`` cores only (Linux).
    """
    import scipy.fft
    from threadpoolctl import threadpool_limits

    from napari_myelin.align.ants_io import set_threads

    os.environ.update(worker_environment(threads))
    set_threads(threads)
    cores = _worker_cores(threads) if pin else None
    previous = os.sched_getaffinity(0) if cores else None
    with threadpool_limits(limits=threads), scipy.fft.set_workers(threads):
        _limit_loaded_libraries(threads)
        if cores:
            os.sched_setaffinity(0, cores)
        try:
            yield
        finally:
            if previous:
                os.sched_setaffinity(0, previous)


def step_task(subject_dir: str, out: str, name: str, options: StepOptions, *upstream: StepResult,
              covariates: dict | None = None) -> StepResult:
    """Run pipeline step ``name`` of one subject (``upstream``: results of the steps it reads).

    ``covariates``: the subject's row of the cohort's participants table, for the ``stats`` step's
    normative model (they update the row of ``participants.tsv`` beside the subject folder).

    Returns
    -------
    StepResult
        ``done``, ``skipped`` or ``missing`` as the pipeline reports it, ``failed`` with the one-sentence
        reason of bad input, or ``blocked`` when a step it reads failed.
    """
    from napari_myelin.workflows.pipeline import run_step

    failed = [r.name for r in upstream if r.status in FAILED]
    if failed:
        return StepResult(name, "blocked", 0.0, [], f"not run: {', '.join(failed)} did not succeed")
    start = time.perf_counter()
    try:
        with thread_budget(options.threads, options.pin):
            scoring = {"normative": options.normative, "covariates": covariates} if name == "stats" else {}
            return run_step(subject_dir, out, name, force=options.force, preset=options.preset, seed=options.seed,
                            **scoring)
    except InputError as exc:
        return StepResult(name, "failed", time.perf_counter() - start, [], str(exc))


def _on_cluster(func, items) -> list:
    """``map`` on the cluster this task runs on: one task per item (this task secedes while they run)."""
    from distributed import worker_client

    with worker_client() as client:
        return client.gather(client.map(func, list(items), pure=False))


def group_task(out: str, subject_roots: Sequence[str], participants, participants_file: str | None,
               options: StepOptions) -> StepResult:
    """The group step: tables and template-space maps of the subjects that succeeded.

    Resumable like a pipeline step: its inputs are the subjects' ``stats`` and ``fusion`` manifests
    (rewritten whenever those steps run again) and ``participants.tsv``. Each map's statistics over the
    subjects are one further task.
    """
    from napari_myelin.workflows.cohort_group import write_group
    from napari_myelin.workflows.steps import StepRunner

    roots = [Path(r) for r in subject_roots]
    manifests = [r / ".napari-myelin" / "steps" / f"{s}.json" for r in roots for s in ("stats", "fusion")]
    inputs = manifests + ([Path(participants_file)] if participants_file else [])
    runner = StepRunner(Path(out) / "group", force=options.force)
    start = time.perf_counter()
    try:
        with thread_budget(options.threads, options.pin):
            return runner.run("group", lambda _p: write_group(Path(out), roots, participants, _on_cluster),
                              inputs=inputs, parameters={"subjects": [r.name for r in roots]})
    except InputError as exc:
        return StepResult("group", "failed", time.perf_counter() - start, [], str(exc))
