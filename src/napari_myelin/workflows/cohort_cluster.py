"""The Dask cluster a cohort runs on: an embedded ``LocalCluster``, an existing scheduler, or a batch queue.

:func:`cohort_client` opens one of three, by :class:`CohortOptions`:

- **embedded** (default): a ``distributed.LocalCluster`` of worker *processes* (``workers``, default
  the CPU count divided by ``threads_per_worker``), each with ``threads_per_worker`` threads and a
  memory limit (``memory_limit``, default ``"auto"``: the machine's memory shared equally; a worker
  above 95 % of it is restarted by its nanny). Scheduler, nannies, workers and dashboard listen on
  ``host`` only (default ``127.0.0.1``: nobody else can connect). A worker that dies while running a
  task is restarted and the task runs again, up to ``retries`` times (the scheduler's
  ``allowed_failures``).
- **attached** (``scheduler`` address or ``scheduler_file``): a client of a running Dask scheduler.
  Its connection uses Dask's security settings (``distributed.comm.tls.*`` in the Dask configuration,
  e.g. ``~/.config/dask/distributed.yaml``), so a ``tls://`` scheduler is reached with the configured
  CA, certificate and key.
- **batch queue** (``jobqueue`` = ``slurm``, ``pbs`` or ``sge``): a dask-jobqueue cluster (optional
  dependency, ``pip install 'napari-myelin[cluster]'``): one job of ``cores`` cores and ``memory``
  holds ``cores // threads_per_worker`` worker processes; ``workers`` processes are requested.

Threads: every worker runs its tasks within :func:`napari_myelin.workflows.cohort_tasks.thread_budget`
(BLAS, OpenMP, torch, numba, ITK and scipy.fft limited to ``threads_per_worker``); the embedded cluster
also starts its workers with those limits in their environment and, when its workers fit on the
machine's cores, gives each worker its own ``threads_per_worker`` cores, so that the estimators' own
thread pools never oversubscribe the cores either.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.cohort_tasks import worker_environment

#: Registration presets a cohort accepts (those of :func:`napari_myelin.workflows.pipeline.run_subject`).
PRESETS = ("fast", "accurate", "affine")
#: Batch systems of ``--jobqueue`` and their dask-jobqueue classes.
JOBQUEUES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
#: Seconds to wait for an existing scheduler to answer.
CONNECT_TIMEOUT_S = 15


@dataclass
class CohortOptions:
    """Options of :func:`napari_myelin.workflows.cohort.run_cohort` (``**options``).

    Attributes
    ----------
    participants : path, optional
        BIDS ``participants.tsv`` (default ``BIDS_ROOT/participants.tsv`` when it exists).
    subjects : sequence of str, optional
        Subjects to run (``sub-01`` or ``01``); default every ``sub-*`` folder.
    workers : int, optional
        Worker processes (default: CPU count // ``threads_per_worker``; one batch job with ``jobqueue``).
    threads_per_worker : int
        Threads of each worker, and of the libraries inside each task (default 1).
    memory_limit : str
        Memory limit of each embedded worker (``"6GB"``, ``"auto"``: memory / workers).
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:8786`` or ``tls://...``).
    scheduler_file : path, optional
        Scheduler file written by ``dask scheduler --scheduler-file``.
    jobqueue : {"slurm", "pbs", "sge"}, optional
        Batch system to start workers on (needs dask-jobqueue).
    cores, memory, walltime, queue
        One batch job: CPU cores, memory (``"32GB"``), wall time (``"02:00:00"``), queue/partition.
    host : str
        Interface the embedded cluster listens on (default ``127.0.0.1``, this machine only).
    preset : {"fast", "accurate", "affine"}
        Registration preset; ``seed`` the registration seed.
    retries : int
        Times a task is run again after its worker died or it raised an internal error (default 2).
    force : bool
        Redo steps whose valid outputs exist.
    normative : path or str, optional
        Normative model (a folder of ``napari-myelin normative build``, or ``"synthetic-demo"``): every
        subject's ``stats`` step then writes ``tracts_z.csv``, with the subject's covariates from
        ``participants``; without one, no z-score and no flag.
    """

    participants: str | os.PathLike | None = None
    subjects: Sequence[str] | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    scheduler: str | None = None
    scheduler_file: str | os.PathLike | None = None
    jobqueue: str | None = None
    cores: int | None = None
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    host: str = "127.0.0.1"
    preset: str = "fast"
    seed: int = 0
    retries: int = 2
    force: bool = False
    normative: str | os.PathLike | None = None

    def check(self) -> None:
        """Refuse inconsistent options with one sentence (:class:`InputError`)."""
        from dask.utils import parse_bytes

        if self.workers is not None and int(self.workers) < 1:
            raise InputError(f"--workers {self.workers}: give at least 1 worker.")
        if int(self.threads_per_worker) < 1:
            raise InputError(f"--threads-per-worker {self.threads_per_worker}: give at least 1 thread.")
        if int(self.retries) < 0:
            raise InputError(f"--retries {self.retries}: give 0 or more retries.")
        if self.preset not in PRESETS:
            raise InputError(f"--preset {self.preset}: choose one of {', '.join(PRESETS)}.")
        if sum(x is not None for x in (self.scheduler, self.scheduler_file, self.jobqueue)) > 1:
            raise InputError("--scheduler, --scheduler-file and --jobqueue: give at most one of them.")
        if self.jobqueue is not None:
            _jobqueue_class(self.jobqueue, self.cores, self.memory)
        if self.memory_limit not in ("auto", None):
            try:
                parse_bytes(self.memory_limit)
            except (ValueError, TypeError):
                raise InputError(f"--memory-limit {self.memory_limit}: not a size; write it like 6GB or 500MB.") from None


def _jobqueue_class(kind: str, cores: int | None, memory: str | None):
    """The dask-jobqueue cluster class of a batch system; one sentence when the system is unknown,
    dask-jobqueue is not installed or a job's cores or memory is missing."""
    if kind not in JOBQUEUES:
        raise InputError(f"--jobqueue {kind}: choose one of {', '.join(JOBQUEUES)}.")
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(f"--jobqueue {kind}: needs dask-jobqueue, which is not installed; install it with "
                         "pip install 'napari-myelin[cluster]'.") from None
    if cores is None or memory is None:
        raise InputError(f"--jobqueue {kind}: give --cores and --memory of one job (e.g. --cores 8 --memory 32GB).")
    return getattr(dask_jobqueue, JOBQUEUES[kind])


def jobqueue_cluster(kind: str, *, cores: int | None, memory: str | None, walltime: str | None = None,
                     queue: str | None = None, threads_per_worker: int = 1, retries: int = 2):
    """A dask-jobqueue cluster (nothing submitted until it is scaled).

    Parameters
    ----------
    kind : {"slurm", "pbs", "sge"}
        Batch system.
    cores, memory
        CPU cores and memory (``"32GB"``) of one job; the job runs ``cores // threads_per_worker``
        worker processes, each with ``memory`` shared among them as its limit.
    walltime, queue : str, optional
        Job wall time (``"HH:MM:SS"``) and queue or partition.
    threads_per_worker : int
        Threads of each worker process (exported to the libraries in the job script).
    retries : int
        Times a task runs again after its worker died.

    Raises
    ------
    InputError
        dask-jobqueue is not installed, or ``cores``/``memory`` is missing.
    """
    cls = _jobqueue_class(kind, cores, memory)
    prologue = [f"export {k}={v}" for k, v in worker_environment(threads_per_worker).items()]
    return cls(cores=int(cores), processes=max(1, int(cores) // int(threads_per_worker)), memory=memory,
               walltime=walltime, queue=queue, job_script_prologue=prologue,
               scheduler_options={"allowed_failures": int(retries)})


def _local_cluster(o: CohortOptions):
    import dask
    from distributed import LocalCluster

    threads = int(o.threads_per_worker)
    n = int(o.workers or max(1, (os.cpu_count() or 1) // threads))
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **worker_environment(threads)}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, memory_limit=o.memory_limit,
                               host=o.host, dashboard_address=f"{o.host}:8787", silence_logs=logging.ERROR,
                               scheduler_kwargs={"allowed_failures": int(o.retries)})
    pin = hasattr(os, "sched_setaffinity") and n * threads <= (os.cpu_count() or 1)
    return cluster, f"LocalCluster of {n} worker processes x {threads} thread(s) on {o.host}", pin


def _attached_client(o: CohortOptions):
    from distributed import Client

    if o.scheduler_file is not None and not Path(o.scheduler_file).is_file():
        raise InputError(f"{o.scheduler_file}: scheduler file not found; start 'dask scheduler --scheduler-file' first.")
    where = str(o.scheduler or o.scheduler_file)
    try:
        if o.scheduler_file is not None:
            client = Client(scheduler_file=str(o.scheduler_file), timeout=CONNECT_TIMEOUT_S)
        else:
            client = Client(o.scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"{where}: no Dask scheduler answered ({type(exc).__name__}); start one with 'dask scheduler' "
                         "or check the address and the TLS settings.") from None
    return client, f"scheduler {client.scheduler.address}"


@contextlib.contextmanager
def cohort_client(options: CohortOptions, client=None) -> Iterator[tuple[object, str, bool]]:
    """The Dask client of a cohort: ``(client, description, pin)``; closes what it opened.

    ``client`` (a ``distributed.Client``) is used as given; otherwise one is opened as the module
    docstring describes. ``pin`` says whether tasks may give each worker its own cores.
    """
    if client is not None:
        yield client, f"scheduler {client.scheduler.address} (given client)", False
        return
    from distributed import Client

    cluster = None
    if options.scheduler is not None or options.scheduler_file is not None:
        client, description = _attached_client(options)
        pin = False
    elif options.jobqueue is not None:
        cluster = jobqueue_cluster(options.jobqueue, cores=options.cores, memory=options.memory,
                                   walltime=options.walltime, queue=options.queue,
                                   threads_per_worker=options.threads_per_worker, retries=options.retries)
        cluster.scale(n=int(options.workers or max(1, int(options.cores) // int(options.threads_per_worker))))
        client, pin = Client(cluster), False
        description = f"{JOBQUEUES[options.jobqueue]} ({options.cores} cores, {options.memory} per job)"
    else:
        cluster, description, pin = _local_cluster(options)
        client = Client(cluster)
    try:
        yield client, description, pin
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
