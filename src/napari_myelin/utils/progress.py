"""Progress reporting and cancellation shared by every long-running core function.

Core functions accept ``progress(fraction: float, message: str)`` and a ``cancel`` object with an
``is_set()`` method (e.g. :class:`threading.Event`). They call :func:`step` between chunks: it
reports progress and raises :class:`Cancelled` when cancellation was requested, so that no partial
result is ever returned or written.
"""

from __future__ import annotations

from typing import Callable, Protocol

ProgressFn = Callable[[float, str], None]


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """Raised inside a core function when the user cancelled it."""


def step(
    progress: ProgressFn | None,
    cancel: CancelFlag | None,
    fraction: float,
    message: str,
) -> None:
    """Report ``fraction`` (0-1) with ``message`` and stop if cancellation was requested.

    Raises
    ------
    Cancelled
        If ``cancel`` is set.
    """
    if cancel is not None and cancel.is_set():
        raise Cancelled(message)
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def subrange(progress: ProgressFn | None, start: float, stop: float) -> ProgressFn | None:
    """A progress callback that maps 0-1 onto ``[start, stop]`` of ``progress`` (for sub-steps)."""
    if progress is None:
        return None

    def _sub(fraction: float, message: str) -> None:
        progress(start + (stop - start) * fraction, message)

    return _sub
