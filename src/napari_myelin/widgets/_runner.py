"""Run a core function in a napari thread worker with a progress bar, a Cancel button and
notifications instead of tracebacks.

Core functions take ``progress(fraction, message)`` and ``cancel`` (see
:mod:`napari_myelin.utils.progress`). :class:`Runner` passes a thread-safe progress callback (a Qt
signal emitted from the worker thread) and a :class:`threading.Event` as ``cancel``; the Cancel
button sets the event. Bad input (:class:`~napari_myelin.utils.errors.InputError`) becomes a
napari error notification with its sentence; a cancel becomes an info notification.

Tests wait on :attr:`Runner.finished` (emitted once, after results were delivered or an error was
notified) with ``qtbot.waitSignal``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import Cancelled


class _Relay(QObject):
    progressed = Signal(float, str)


class Runner(QWidget):
    """Progress bar + status line + Cancel button that runs one job at a time.

    Signals
    -------
    finished : Signal(bool)
        Emitted when a job ended; ``True`` if it produced a result.
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
        self.worker = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, func: Callable[..., Any], on_result: Callable[[Any], None], /, **kwargs: Any):
        """Run ``func(**kwargs, progress=..., cancel=...)`` in a thread; ``on_result`` gets its return value."""
        if self.running:
            show_info("A computation is already running; wait for it or press Cancel.")
            return None
        self._cancel = threading.Event()
        self.error = None
        kwargs.setdefault("progress", self._relay.progressed.emit)
        kwargs.setdefault("cancel", self._cancel)
        worker = create_worker(func, **kwargs, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._on_returned(on_result, result))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._ok = False
        self.bar.setValue(0)
        self.status.setText("starting ...")
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        self._cancel.set()
        self.status.setText("cancelling ...")

    def _on_progress(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(1000 * fraction)))
        self.status.setText(message)

    def _on_returned(self, on_result: Callable[[Any], None], result: Any) -> None:
        try:
            on_result(result)
        except InputError as exc:
            self._on_error(exc)
            return
        self._ok = True
        self.bar.setValue(1000)
        self.status.setText("done")

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

    def _on_finished(self) -> None:
        self.worker = None
        self.cancel_button.setEnabled(False)
        self.finished.emit(self._ok)
