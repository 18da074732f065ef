"""Module-level functions run by tests/test_processes.py in worker processes (a child imports them by name)."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


def double(values, *, progress=None, cancel=None):
    """Twice ``values``, reporting progress twice and warning once."""
    step(progress, cancel, 0.25, "a quarter")
    warnings.warn("a warning from the worker", UserWarning, stacklevel=1)
    step(progress, cancel, 0.75, "three quarters")
    return {"doubled": np.asarray(values) * 2, "pid": os.getpid()}


def refuse(*, progress=None, cancel=None):
    """Bad input, as a core function reports it."""
    raise InputError("refuse: this input is wrong; give another one.")


def sleep_unaware(seconds: float, *, progress=None, cancel=None):
    """Sleep without looking at ``cancel`` (like an ANTs call)."""
    step(progress, cancel, 0.1, "sleeping")
    time.sleep(seconds)
    return "woke up"


def crash(*, progress=None, cancel=None):
    """End the process without a word."""
    os._exit(3)
