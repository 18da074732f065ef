"""Cohorts: every subject of a BIDS root through the pipeline, as a Dask distributed graph.

:func:`run_cohort` finds the subjects of a BIDS root (:mod:`napari_myelin.workflows.cohort_group`),
opens a Dask cluster (:mod:`napari_myelin.workflows.cohort_cluster`: an embedded ``LocalCluster`` by
default, an existing scheduler or a batch queue) and submits one task per subject and pipeline step
(:mod:`napari_myelin.workflows.cohort_tasks`). A subject's tasks follow the steps' data dependencies
(:data:`napari_myelin.workflows.pipeline.DEPENDS`): the estimators and the registration read only
the raw images, so they are independent tasks, run on different workers at once; the tracts,
calibration, fusion and statistics follow as their inputs become ready. When every subject has ended,
the group step writes the group tables and template-space group maps of the subjects that succeeded.

Robustness: every step is resumable (per-step manifests with the SHA-256 of its inputs and its
parameters), so a cohort stopped at any moment and started again recomputes no finished step and
recomputes a subject whose inputs or parameters changed; a task whose worker died runs again
(``retries``); a subject with bad input ends ``failed`` with its sentence while the others finish.
Outputs are written atomically, and a lock (``DERIV/.napari-myelin/cohort.lock``, released by the
system when its process ends, even when killed) refuses a second cohort on the same output folder.

Outputs (BIDS derivatives, ``DERIV/``)::

    dataset_description.json     GeneratedBy: napari-myelin and dask.distributed, with versions
    sub-XX/...                   as ``napari-myelin run`` writes them
    sub-XX/tracts_z.csv          only with ``normative=MODEL``: z-scores and flags (covariates: the
                                 subject's row of the participants table)
    group/tracts_long.csv, group/tracts_wide.csv, group/space-MNI152NLin2009aSym/  (cohort_group)
    cohort_status.tsv            subject, step, status, seconds, message (one row per subject and step)
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from napari_myelin.io.volume import atomic_write_bytes, check_output_folder
from napari_myelin.io.bids import find_subject
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step
from napari_myelin.workflows.cohort_cluster import CohortOptions, cohort_client
from napari_myelin.workflows.cohort_group import find_subject_folders, read_participants
from napari_myelin.workflows.cohort_tasks import FAILED, StepOptions, group_task, step_task
from napari_myelin.workflows.pipeline import DEPENDS, STEPS, write_dataset_description
from napari_myelin.workflows.steps import StepResult

#: Columns of ``cohort_status.tsv``.
STATUS_COLUMNS = ("subject", "step", "status", "seconds", "message")
#: Statuses of steps that did not end (the cohort stopped, or its scheduler was lost).
UNFINISHED = ("pending", "lost")
#: Exit status of ``napari-myelin cohort`` when some subject (or the group step) failed.
EXIT_SOME_FAILED = 3

StatusFn = Callable[[str, str, StepResult], None]


@dataclass
class SubjectStatus:
    """One subject of a cohort: ``status`` is ``succeeded`` (every step done, skipped or missing) or
    ``failed``; ``message`` is the sentence of its first failure."""

    subject: str
    folder: Path
    status: str
    steps: list[StepResult] = field(default_factory=list)
    message: str = ""

    @property
    def seconds(self) -> float:
        """Seconds its steps ran, summed (s)."""
        return float(sum(s.seconds for s in self.steps))

    @property
    def outputs(self) -> list[str]:
        """Files its steps wrote or found valid."""
        return [o for s in self.steps for o in s.outputs]


@dataclass
class CohortResult:
    """What :func:`run_cohort` did: per-subject status, timings and outputs, and the group step."""

    out_dir: Path
    subjects: dict[str, SubjectStatus]
    status_tsv: Path
    group: StepResult | None
    seconds: float
    cluster: str
    dashboard: str | None = None

    @property
    def failed(self) -> list[str]:
        """Subjects that failed."""
        return [s for s, st in self.subjects.items() if st.status == "failed"]

    @property
    def steps_done(self) -> int:
        """Steps computed by this run (``done``); 0 for a run that found everything finished."""
        n = sum(r.status == "done" for st in self.subjects.values() for r in st.steps)
        return n + int(self.group is not None and self.group.status == "done")

    @property
    def exit_status(self) -> int:
        """0 when every subject and the group step succeeded, else :data:`EXIT_SOME_FAILED`."""
        group_failed = self.group is not None and self.group.status == "failed"
        return EXIT_SOME_FAILED if self.failed or group_failed else 0


@contextlib.contextmanager
def cohort_lock(out: Path) -> Iterator[Path]:
    """Hold ``out/.napari-myelin/cohort.lock`` (an OS file lock, freed when the process ends).

    Raises
    ------
    InputError
        Another cohort holds the lock.
    """
    path = out / ".napari-myelin" / "cohort.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise InputError(f"{out}: another cohort ({holder}) is writing to this output folder; wait for it to "
                             "finish or choose another --out.")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on ``fd`` (POSIX ``flock``; ``msvcrt`` on Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _failure_sentence(exc: BaseException, retries: int) -> str:
    """One sentence for a task that raised (after its retries) or whose workers kept dying."""
    if type(exc).__name__ == "KilledWorker":
        return (f"the worker running it died {retries + 1} times (KilledWorker); raise --memory-limit or check "
                "the workers' logs.")
    text = " ".join(str(exc).split())
    return f"internal error ({type(exc).__name__}: {text}) after {retries} retries; please report it."


class _Graph:
    """The submitted tasks of a cohort and the results collected so far."""

    def __init__(self, client, folders: list[Path], out: Path, options: CohortOptions, pin: bool,
                 covariates: dict[str, dict] | None = None) -> None:
        self.options = options
        self.futures: dict[tuple[str, str], object] = {}
        self.results: dict[tuple[str, str], StepResult] = {}
        self.unreadable: dict[str, str] = {}
        self.folders = folders
        token = uuid.uuid4().hex[:8]
        task_options = StepOptions(options.force, options.preset, int(options.seed),
                                   int(options.threads_per_worker), pin, _model_argument(options.normative))
        for folder in folders:
            try:
                find_subject(folder)
            except InputError as exc:
                self.unreadable[folder.name] = str(exc)
                continue
            for name in STEPS:
                deps = [self.futures[(folder.name, d)] for d in DEPENDS[name]]
                extra = {"covariates": (covariates or {}).get(folder.name)} if name == "stats" else {}
                self.futures[(folder.name, name)] = client.submit(
                    step_task, str(folder), str(out), name, task_options, *deps,
                    key=f"{name}-{folder.name}-{token}", retries=int(options.retries), **extra)
        self.task_options = task_options

    def outcome(self, subject: str, name: str) -> StepResult:
        """The result of a finished task, or its failed/blocked result when it raised."""
        future = self.futures[(subject, name)]
        if future.status == "finished":
            return future.result()
        if future.status == "cancelled":  # this client cancels nothing before the end: the scheduler was lost
            return StepResult(name, "lost", 0.0, [], "the Dask scheduler was lost before this step ended; run the "
                                                     "cohort again to resume.")
        upstream = [d for d in DEPENDS[name] if self.futures[(subject, d)].status == "error"
                    or self.results.get((subject, d), StepResult(d, "")).status in FAILED]
        if upstream:
            return StepResult(name, "blocked", 0.0, [], f"not run: {', '.join(upstream)} did not succeed")
        return StepResult(name, "failed", 0.0, [], _failure_sentence(future.exception(), int(self.options.retries)))

    def collect(self, progress: ProgressFn | None, cancel, on_status: StatusFn | None) -> None:
        """Wait for every task, recording results as they come (polls ``cancel`` every 0.2 s).

        ``on_status`` hears of each step as it ends, and of each subject without readable inputs as
        step ``inputs``.
        """
        from distributed import as_completed

        keys = {id(f): k for k, f in self.futures.items()}
        total = len(self.folders) * len(STEPS)
        done = len(self.unreadable) * len(STEPS)
        if on_status:
            for subject, sentence in self.unreadable.items():
                on_status(subject, "inputs", StepResult("inputs", "failed", 0.0, [], sentence))
        pending = as_completed(list(self.futures.values()))
        while not pending.is_empty():
            step(progress, cancel, done / max(total, 1), f"{done}/{total} steps")
            batch = pending.next_batch(block=False)
            if not batch:
                time.sleep(0.2)
                continue
            for future in sorted(batch, key=lambda f: STEPS.index(keys[id(f)][1])):
                subject, name = keys[id(future)]
                self.results[(subject, name)] = result = self.outcome(subject, name)
                done += 1
                if on_status:
                    on_status(subject, name, result)
        step(progress, cancel, 1.0, f"{total}/{total} steps")

    def subjects(self, out: Path) -> dict[str, SubjectStatus]:
        """Per-subject status from the results collected (steps without a result are ``pending``)."""
        statuses = {}
        for folder in self.folders:
            sub = folder.name
            if sub in self.unreadable:
                sentence = self.unreadable[sub]
                statuses[sub] = SubjectStatus(sub, out / sub, "failed", [StepResult("inputs", "failed", 0.0, [], sentence)],
                                              sentence)
                continue
            stopped = StepResult("", "pending", 0.0, [], "the cohort stopped before it ended")
            steps = [self.results.get((sub, n), replace(stopped, name=n)) for n in STEPS]
            bad = [r for r in steps if r.status in (*FAILED, *UNFINISHED)]
            first = next((r for r in bad if r.status == "failed"), bad[0] if bad else None)
            statuses[sub] = SubjectStatus(sub, out / sub, "failed" if bad else "succeeded", steps,
                                          first.message if first else "")
        return statuses


def write_status(path: Path, subjects: dict[str, SubjectStatus], group: StepResult | None) -> Path:
    """``cohort_status.tsv``: one row per subject and step (and the group step), written atomically."""
    rows = [(sub, r.name, r.status, round(r.seconds, 2), r.message)
            for sub, st in subjects.items() for r in st.steps]
    if group is not None:
        rows.append(("group", group.name, group.status, round(group.seconds, 2), group.message))
    table = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    atomic_write_bytes(path, table.to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8"))
    return path


def _run_group(client, graph: _Graph, out: Path, subjects: dict[str, SubjectStatus], participants,
               participants_file: str | None) -> StepResult | None:
    """Submit the group step over the subjects that succeeded and wait for it (none when the scheduler was lost)."""
    roots = [str(st.folder) for st in subjects.values() if st.status == "succeeded"]
    if not roots or any(r.status == "lost" for r in graph.results.values()):
        return None
    future = client.submit(group_task, str(out), roots, participants, participants_file, graph.task_options,
                           key=f"group-{uuid.uuid4().hex[:8]}", retries=int(graph.options.retries))
    try:
        return future.result()
    except Exception as exc:  # a task error after its retries, reported like a failed step
        return StepResult("group", "failed", 0.0, [], _failure_sentence(exc, int(graph.options.retries)))


def _model_argument(normative) -> str | None:
    """The model as the workers receive it: an absolute folder path, or the demo model's name."""
    if normative is None:
        return None
    from napari_myelin.workflows.normative import DEMO_MODEL

    return DEMO_MODEL if str(normative) == DEMO_MODEL else str(Path(normative).resolve())


def subject_covariates_table(participants: pd.DataFrame | None) -> dict[str, dict]:
    """Per subject, its row of the participants table (missing values left out), for the ``stats`` step."""
    if participants is None:
        return {}
    rows = participants.set_index("subject").to_dict(orient="index")
    return {sub: {k: v for k, v in row.items() if not pd.isna(v)} for sub, row in rows.items()}


def _participants(bids_root: Path, given) -> tuple[pd.DataFrame | None, str | None]:
    path = Path(given) if given is not None else bids_root / "participants.tsv"
    if given is None and not path.is_file():
        return None, None
    return read_participants(path), str(path)


def run_cohort(bids_root: str | os.PathLike, out: str | os.PathLike, client=None, *,
               progress: ProgressFn | None = None, cancel=None, on_status: StatusFn | None = None,
               report: Callable[[str], None] | None = None, **options) -> CohortResult:
    """Run every subject of a BIDS root through the pipeline on a Dask cluster.

    Parameters
    ----------
    bids_root : path
        BIDS dataset whose ``sub-*`` folders are the subjects.
    out : path
        Derivatives folder (created if needed); ``out/sub-XX`` as ``napari-myelin run`` writes them.
    client : distributed.Client, optional
        Run on this client's cluster; default a cluster opened from ``options``.
    progress, cancel
        Progress (0-1 over subjects x steps) and cancellation (stops the cohort; finished steps stay).
    on_status : callable(subject, step, StepResult), optional
        Called as each step ends.
    report : callable(str), optional
        Receives one line per piece of news (the cluster, the dashboard address).
    **options
        The fields of :class:`~napari_myelin.workflows.cohort_cluster.CohortOptions` (``workers``,
        ``threads_per_worker``, ``memory_limit``, ``scheduler``, ``preset``, ``retries``, ``force`` ...).

    Returns
    -------
    CohortResult
        ``exit_status`` is 0 when every subject succeeded, 3 when some failed.

    Raises
    ------
    InputError
        Bad arguments: no BIDS root, unknown subjects, unreadable participants.tsv, inconsistent
        options, no scheduler at the address, or another cohort on ``out``.
    """
    opts = CohortOptions(**options)
    opts.check()
    root = Path(bids_root)
    folders = find_subject_folders(root, opts.subjects)
    participants, participants_file = _participants(root, opts.participants)
    if opts.normative is not None:  # a model that cannot be opened is a bad argument, before any work
        from napari_myelin.workflows.normative import open_model

        open_model(_model_argument(opts.normative))
    out = check_output_folder(out)
    say = report or (lambda line: None)
    start = time.perf_counter()
    with cohort_lock(out):
        import distributed

        subjects: dict[str, SubjectStatus] = {}
        group = None
        graph = None
        with cohort_client(opts, client) as (dask_client, description, pin):
            write_dataset_description(out, generated_by=[{"Name": "dask.distributed", "Version": distributed.__version__,
                                                          "Description": "cohort task scheduler"}])
            dashboard = getattr(dask_client, "dashboard_link", None)
            say(f"cluster: {description}")
            say(f"dashboard: {dashboard}" if dashboard else "dashboard: not available")
            try:
                graph = _Graph(dask_client, folders, out, opts, pin, subject_covariates_table(participants))
                graph.collect(progress, cancel, on_status)
                subjects = graph.subjects(out)
                group = _run_group(dask_client, graph, out, subjects, participants, participants_file)
            finally:
                if graph is not None:
                    dask_client.cancel([f for f in graph.futures.values() if f.status == "pending"])
                    subjects = subjects or graph.subjects(out)
                status_tsv = write_status(out / "cohort_status.tsv", subjects, group)
    return CohortResult(out, subjects, status_tsv, group, time.perf_counter() - start, description, dashboard)
