"""Adding layers in stages: one layer per event-loop turn, so no single turn blocks the window.

A dock's result handler is either a plain function (everything is added at once) or a generator that
``yield``\\ s after each layer it adds. :class:`Stages` (used by
:class:`~napari_myelin.widgets._runner.Runner`) resumes such a generator from a 1 ms
``QTimer.singleShot``, so paint, timer and input events are processed between two layers.
:func:`add_layer_data` adds ``(data, attributes, layer_type)`` tuples (e.g. a reader's output) the
same way, giving every image layer contrast limits computed on a subsample when it has none (napari
would otherwise scan the whole array on the GUI thread).

While stages run, the objects that existed before are kept out of Python's full garbage collections
(:func:`gc.freeze`, undone by :func:`gc.unfreeze` when the last stage ran): a napari session tracks some
500,000 objects, and a full collection triggered by the allocations of one layer took 190–210 ms of CPU on
its own, doubling that turn. Nothing is left uncollected: the frozen objects go back to the oldest
generation afterwards and are collected on Python's usual schedule.
"""

from __future__ import annotations

import gc
import inspect
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from napari.layers import Layer
from qtpy.QtCore import QTimer

from .._styles import MAP_LABELS

#: At most this many voxels are read to estimate contrast limits (a regular subsample).
LIMIT_SAMPLE = 200_000

#: Delay (ms) between two stages.
STAGE_DELAY_MS = 1

_FROZEN = [0]  # handlers running in stages now (gc is frozen while > 0)


def _hold_gc() -> None:
    if _FROZEN[0] == 0:
        gc.freeze()
    _FROZEN[0] += 1


def _release_gc() -> None:
    _FROZEN[0] = max(0, _FROZEN[0] - 1)
    if _FROZEN[0] == 0:
        gc.unfreeze()


class Stages:
    """Call ``handler(value)``; when it returns a generator, resume it once per event-loop turn.

    Parameters
    ----------
    handler : callable
        The result handler.
    value : object
        Its argument.
    done : callable
        Called once with ``None`` when every stage ran, or with the exception that stopped them.
    """

    def __init__(self, handler: Callable[[Any], Any], value: Any, done: Callable[[BaseException | None], None]) -> None:
        self._handler = handler
        self._value = value
        self._done = done
        self._gen: Iterator | None = None

    def start(self) -> None:
        """Run the handler up to its first ``yield`` (or to its end)."""
        _hold_gc()
        try:
            out = self._handler(self._value)
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self._end(exc)
            return
        if not inspect.isgenerator(out):
            self._end(None)
            return
        self._gen = out
        self._resume()

    def _resume(self) -> None:
        try:
            next(self._gen)
        except StopIteration:
            self._end(None)
            return
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self._end(exc)
            return
        # a 1 ms timer, not 0: a zero-delay single shot is a posted event, and Qt may run the next stage in the same
        # batch of posted events, before any timer or input event of the window gets its turn
        QTimer.singleShot(STAGE_DELAY_MS, self._resume)

    def _end(self, exc: BaseException | None) -> None:
        _release_gc()
        self._done(exc)


def robust_limits(data) -> tuple[float, float]:
    """Contrast limits of an image from a regular subsample of at most :data:`LIMIT_SAMPLE` voxels
    (minimum and maximum of the finite values; ``(0, 1)`` when there are none or they are equal)."""
    arr = np.asarray(data)
    step = max(1, int(np.ceil((arr.size / LIMIT_SAMPLE) ** (1.0 / max(arr.ndim, 1)))))
    sample = arr[(slice(None, None, step),) * arr.ndim]
    sample = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample.ravel()
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = float(sample.min()), float(sample.max())
    return (low, high) if high > low else (low, low + 1.0)


def layer_from_data(data, attrs: dict, kind: str) -> Layer:
    """A layer from a ``(data, attributes, layer_type)`` tuple; an image gets :func:`robust_limits` when its
    attributes give none."""
    attrs = dict(attrs)
    if kind == "image" and attrs.get("contrast_limits") is None and not attrs.get("rgb", False):
        attrs["contrast_limits"] = robust_limits(data)
    return Layer.create(data, attrs, kind)


def add_layer_data(viewer, tuples: Iterable[tuple]) -> Iterator[Layer]:
    """Generator adding each ``(data, attributes, layer_type)`` of ``tuples`` to ``viewer``, yielding after each
    (use ``yield from`` in a result handler); an image of a known map (``metadata["map"]`` in
    :data:`~napari_myelin._styles.MAP_LABELS`) gets its colorbar in the next turn."""
    for data, attrs, kind in tuples:
        layer = viewer.add_layer(layer_from_data(data, attrs, kind))
        yield layer
        if kind == "image" and (layer.metadata or {}).get("map") in MAP_LABELS:
            layer.colorbar.visible = True  # a map with a known kind: its colorbar, in a turn of its own
            yield layer
