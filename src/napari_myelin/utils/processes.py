"""Run one function in a fresh Python process, with progress, warnings and a Cancel that ends it.

Code that holds the GIL for seconds (ANTs registration through antspyx, the subject pipeline) starves
any thread of the same process, a GUI's event loop included. :class:`ProcessJob` runs such a function
in a process started with the ``spawn`` method (no state inherited from the caller, no Qt):

- the function is called as ``func(**kwargs, progress=..., cancel=...)`` (the protocol of
  :mod:`napari_myelin.utils.progress`); ``progress`` sends ``("progress", fraction, message)`` through
  a queue and ``cancel`` is a process-shared event;
- warnings raised in the child come back as ``("warning", category_name, message)``;
- the result, or the exception, is pickled back as ``("result", value)`` or
  ``("error", exception, traceback_text)``; an exception that cannot be pickled is replaced by a
  :class:`RuntimeError` with its type and message;
- :meth:`ProcessJob.cancel` sets the event (a function that checks it stops by itself) and, when the
  process is still alive after ``grace`` seconds (e.g. inside an ANTs call, which checks nothing), ends
  it: the caller then receives ``("error", Cancelled(...), "")``; nothing of the run is returned;
- temporary files of the child live in a folder of their own (``tempfile.tempdir`` of the child); the
  folder is removed when the job fails or is cancelled, and when the calling process exits otherwise
  (a result may refer to files in it, such as the transforms of a registration without an output
  folder).

The function must be importable by the child (a module-level function of a module that does not import
a user interface); its arguments and result must be picklable. :meth:`ProcessJob.poll` never blocks:
a user interface calls it from a timer.
"""

from __future__ import annotations

import atexit
import collections
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from typing import Any, Callable

from napari_myelin.utils.progress import Cancelled

#: Seconds between a cancel request and the end of a process that did not stop by itself.
GRACE_SECONDS = 0.3

_LIVE: set["ProcessJob"] = set()


def _picklable_exception(exc: BaseException) -> BaseException:
    """``exc`` when it survives a pickle round trip, else a :class:`RuntimeError` naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle means: send a plain copy
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _exit_with_parent(parent: int) -> None:
    """Thread of the child: end the process when its parent is gone (a crashed or killed window)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _child(inbox, outbox, cancel, tmp: str) -> None:
    """Body of the child process: receive ``(func, kwargs)``, run it, send its messages, exit without running
    finalizers."""
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    func, kwargs = pickle.loads(inbox.get())
    tempfile.tempdir = tmp
    os.environ["TMPDIR"] = tmp

    def progress(fraction: float, message: str) -> None:
        outbox.put(("progress", float(fraction), str(message)))

    def relay_warning(message, category, filename, lineno, file=None, line=None) -> None:
        outbox.put(("warning", getattr(category, "__name__", "Warning"), str(message)))

    warnings.showwarning = relay_warning
    try:
        result = func(**kwargs, progress=progress, cancel=cancel)
        try:
            payload = pickle.dumps(("result", result), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as an internal error
            payload = pickle.dumps(("error", RuntimeError(f"the result cannot be sent back ({exc})"), ""))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        payload = pickle.dumps(("error", _picklable_exception(exc), traceback.format_exc()))
    outbox.put(("pickled", payload))
    outbox.close()
    outbox.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter shutdown: finalizers must not remove files that the result refers to
    os._exit(0)


def _cleanup_at_exit() -> None:
    for job in list(_LIVE):
        job.terminate()


atexit.register(_cleanup_at_exit)


class ProcessJob:
    """``func(**kwargs, progress=..., cancel=...)`` running in a spawned process (see the module docstring).

    Parameters
    ----------
    func : callable
        Module-level function (importable by the child).
    kwargs : dict
        Its keyword arguments (picklable).
    grace : float
        Seconds a cancelled process gets to stop by itself before it is ended.
    """

    def __init__(self, func: Callable[..., Any], kwargs: dict | None = None, *, grace: float = GRACE_SECONDS) -> None:
        ctx = mp.get_context("spawn")
        self.tmp = tempfile.mkdtemp(prefix="napari-myelin-job-")
        self._queue = ctx.Queue()
        self._inbox = ctx.Queue()
        self._cancel = ctx.Event()
        self._grace = float(grace)
        self._cancel_at: float | None = None
        self._dead_at: float | None = None
        self._ended = False
        self._stop = threading.Event()
        self._received: collections.deque = collections.deque()
        self.process = ctx.Process(target=_child, args=(self._inbox, self._queue, self._cancel, self.tmp),
                                   name=f"napari-myelin {getattr(func, '__name__', 'job')}")
        # a spawned child imports the caller's main module again (as __mp_main__): a script that opens napari
        # without an ``if __name__ == "__main__":`` guard would run a second time; the function is imported from
        # its own module, so the child is given an empty main module instead
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self.process.start()
        finally:
            sys.modules["__main__"] = main
        _LIVE.add(self)
        # the caller's thread only starts things: arguments are pickled and sent, messages received and results
        # unpickled by a helper thread (a large result would otherwise block the caller while it is read)
        self._reader = threading.Thread(target=self._read, args=(func, dict(kwargs or {})), daemon=True,
                                        name="napari-myelin job reader")
        self._reader.start()

    def _read(self, func: Callable[..., Any], kwargs: dict) -> None:
        """Helper thread: send ``(func, kwargs)``, then queue the child's messages for :meth:`poll`."""
        try:
            self._inbox.put(pickle.dumps((func, kwargs), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:  # noqa: BLE001 - an argument that cannot be sent is the caller's bug
            self._received.append(("final", ("error", RuntimeError(f"the arguments cannot be sent ({exc})"), "")))
            return
        while not self._stop.is_set():
            try:
                kind, *rest = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError, ValueError):  # closed
                return
            if kind != "pickled":
                self._received.append((kind, *rest))
                continue
            try:
                message = pickle.loads(rest[0])
            except Exception as exc:  # noqa: BLE001 - reported to the caller as an internal error
                message = ("error", RuntimeError(f"the result cannot be read back ({exc})"), "")
            self.process.join(5.0)
            self._received.append(("final", message))
            return

    @property
    def done(self) -> bool:
        """True once the final message (result or error) was delivered by :meth:`poll`."""
        return self._ended

    def cancel(self) -> None:
        """Ask the function to stop; the process is ended after ``grace`` seconds if it does not."""
        self._cancel.set()
        if self._cancel_at is None:
            self._cancel_at = time.monotonic()

    def terminate(self) -> None:
        """End the process now (no message follows) and remove its temporary folder."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(1.0)
        self._finish(keep_tmp=False)

    def _finish(self, keep_tmp: bool) -> None:
        self._ended = True
        self._stop.set()
        _LIVE.discard(self)
        if keep_tmp:
            atexit.register(shutil.rmtree, self.tmp, True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def poll(self) -> list[tuple]:
        """Messages received since the last call (never blocks); the last one of a job is a result or an error."""
        messages = []
        while self._received and not self._ended:
            kind, *rest = self._received.popleft()
            if kind != "final":
                messages.append((kind, *rest))
                continue
            message = rest[0]
            cancelled = self._cancel_at is not None
            self._finish(keep_tmp=message[0] == "result" and not cancelled)
            messages.append(("error", Cancelled("cancelled"), "") if cancelled else message)
        if self._ended:
            return messages
        if self._cancel_at is not None and time.monotonic() - self._cancel_at >= self._grace:
            self.terminate()
            return messages + [("error", Cancelled("cancelled"), "")]
        if not self.process.is_alive():
            # a final message may still be on its way: give the reader a second before calling it a crash
            self._dead_at = self._dead_at or time.monotonic()
            if time.monotonic() - self._dead_at > 1.0:
                code = self.process.exitcode
                self._finish(keep_tmp=False)
                messages.append(("error", RuntimeError(f"the computation process ended unexpectedly "
                                                       f"(exit code {code})"), ""))
        return messages
