"""Run a core function in a thread worker or in a separate process, with a progress bar, a Cancel
button and notifications instead of tracebacks; add the result's layers in stages.

Core functions take ``progress(fraction, message)`` and ``cancel`` (see
:mod:`napari_myelin.utils.progress`).

- :meth:`Runner.start` runs the function in a napari thread worker: progress comes through a Qt
  signal, ``cancel`` is a :class:`threading.Event` that the Cancel button sets. Fine for NumPy work,
  which releases the GIL.
- :meth:`Runner.start_process` runs it in a spawned process
  (:class:`napari_myelin.utils.processes.ProcessJob`): for code that holds the GIL (ANTs through
  antspyx, the subject pipeline), which would otherwise freeze the window. A timer polls the job's
  queue (progress, warnings, the pickled result); Cancel ends the process after a short grace period
  and nothing is added.

The result handler ``on_result(result)`` may add everything at once, or be a generator that yields
after each layer it adds: the runner then resumes it once per event-loop turn
(:class:`~napari_myelin.widgets._stage.Stages`), so the window stays responsive while a dozen maps
are added. Bad input (:class:`~napari_myelin.utils.errors.InputError`, raised by the function or by
the handler) becomes a napari error notification with its sentence; a cancel an info notification.

Tests wait on :attr:`Runner.finished` (emitted once, after every stage of the handler ran or an error
was notified) with ``qtbot.waitSignal``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.processes import ProcessJob
from napari_myelin.utils.progress import Cancelled
from ._stage import Stages

#: Milliseconds between two polls of a process job's queue.
POLL_MS = 40


class _Relay(QObject):
    progressed = Signal(float, str)


class Runner(QWidget):
    """Progress bar + status line + Cancel button that runs one job at a time.

    Signals
    -------
    finished : Signal(bool)
        Emitted when a job ended; ``True`` if it produced a result and its layers were added.
    """

    finished = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self._cancel = threading.Event()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._stages: Stages | None = None
        self._ok = False
        self.worker = None
        self.job: ProcessJob | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        """True from the start of a job until :attr:`finished` is emitted."""
        return self.worker is not None or self.job is not None or self._stages is not None

    def _begin(self) -> bool:
        if self.running:
            show_info("A computation is already running; wait for it or press Cancel.")
            return False
        self.error = None
        self._ok = False
        self.bar.setValue(0)
        self.status.setText("starting ...")
        self.cancel_button.setEnabled(True)
        return True

    def start(self, func: Callable[..., Any], on_result: Callable[[Any], Any], /, **kwargs: Any):
        """Run ``func(**kwargs, progress=..., cancel=...)`` in a thread; ``on_result`` gets its return value."""
        if not self._begin():
            return None
        self._cancel = threading.Event()
        kwargs.setdefault("progress", self._relay.progressed.emit)
        kwargs.setdefault("cancel", self._cancel)
        worker = create_worker(func, **kwargs, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._deliver(on_result, result))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        worker.start()
        return worker

    def start_process(self, func: Callable[..., Any], on_result: Callable[[Any], Any], /, **kwargs: Any):
        """Run ``func(**kwargs, progress=..., cancel=...)`` in a separate process (``func`` importable by a fresh
        interpreter, arguments and result picklable); ``on_result`` gets its return value. Returns the
        :class:`~napari_myelin.utils.processes.ProcessJob`."""
        if not self._begin():
            return None
        self.status.setText("starting a worker process ...")
        self._on_result = on_result
        self.job = ProcessJob(func, kwargs)
        self._timer.start()
        return self.job

    def cancel(self) -> None:
        """Stop the running job (a process job is ended if it does not stop by itself)."""
        self._cancel.set()
        if self.job is not None:
            self.job.cancel()
        self.status.setText("cancelling ...")

    def _poll(self) -> None:
        job = self.job
        if job is None:
            self._timer.stop()
            return
        for kind, *rest in job.poll():
            if kind == "progress":
                self._on_progress(*rest)
            elif kind == "warning":
                show_warning(rest[1])
            elif kind == "result":
                self._end_job()
                self._deliver(self._on_result, rest[0])
            elif kind == "error":
                exc, text = rest
                if text and not isinstance(exc, (InputError, Cancelled)):
                    print(text, file=sys.stderr)
                self._end_job()
                self._on_error(exc)
                self._finish()

    def _end_job(self) -> None:
        self._timer.stop()
        self.job = None

    def _on_progress(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(1000 * fraction)))
        self.status.setText(message)

    def _deliver(self, on_result: Callable[[Any], Any], result: Any) -> None:
        """Run the result handler; a generator handler is resumed once per event-loop turn."""
        self.cancel_button.setEnabled(False)
        self.status.setText("adding layers ...")
        self._stages = Stages(on_result, result, self._staged)
        self._stages.start()

    def _staged(self, exc: BaseException | None) -> None:
        self._stages = None
        if exc is None:
            self._ok = True
            self.bar.setValue(1000)
            self.status.setText("done")
        elif isinstance(exc, InputError):
            self._on_error(exc)
        else:
            self._on_error(exc)
            print(f"napari-myelin: {type(exc).__name__} while adding layers: {exc}", file=sys.stderr)
        self._finish()

    def refuse(self, exc: BaseException) -> None:
        """Report an error (e.g. input refused before a job started) as the end of a job would."""
        self._on_error(exc)

    def _on_error(self, exc: BaseException) -> None:
        self.error = exc
        if isinstance(exc, Cancelled):
            self.status.setText("cancelled")
            show_info("Cancelled; no layer was added.")
        elif isinstance(exc, InputError):
            self.status.setText(str(exc))
            show_error(str(exc))
        else:
            self.status.setText(f"internal error: {exc}")
            show_error(f"Internal error ({type(exc).__name__}: {exc}); please report it.")

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._finish()

    def _finish(self) -> None:
        """Emit :attr:`finished` once the worker (or process) and every stage of the handler are done."""
        if self.worker is not None or self.job is not None or self._stages is not None:
            return
        self.cancel_button.setEnabled(False)
        self.finished.emit(self._ok)
