"""napari_myelin.utils.processes.ProcessJob: a function in a spawned process, its progress, warnings, result,
errors, a crash, and a Cancel that ends a process that does not stop by itself."""

from __future__ import annotations

import os
import time

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.processes import ProcessJob
from napari_myelin.utils.progress import Cancelled

from . import _process_jobs as jobs


def _collect(job: ProcessJob, timeout: float = 120.0) -> list[tuple]:
    messages, end = [], time.monotonic() + timeout
    while not job.done and time.monotonic() < end:
        messages += job.poll()
        time.sleep(0.02)
    assert job.done, "the job did not end"
    return messages


def test_result_progress_and_warnings_come_back():
    job = ProcessJob(jobs.double, {"values": np.arange(4)})
    messages = _collect(job)
    kinds = [m[0] for m in messages]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert ("progress", 0.25, "a quarter") in messages and ("progress", 0.75, "three quarters") in messages
    assert ("warning", "UserWarning", "a warning from the worker") in messages
    result = messages[-1][1]
    np.testing.assert_array_equal(result["doubled"], [0, 2, 4, 6])
    assert result["pid"] != os.getpid() and not job.process.is_alive()


def test_input_error_keeps_its_sentence():
    messages = _collect(ProcessJob(jobs.refuse))
    kind, exc, _ = messages[-1]
    assert kind == "error" and isinstance(exc, InputError)
    assert str(exc) == "refuse: this input is wrong; give another one."


def test_cancel_ends_a_process_that_ignores_it():
    job = ProcessJob(jobs.sleep_unaware, {"seconds": 60.0})
    end = time.monotonic() + 60
    while not any(m[0] == "progress" for m in job.poll()) and time.monotonic() < end:
        time.sleep(0.02)
    tmp = job.tmp
    t0 = time.monotonic()
    job.cancel()
    messages = _collect(job, timeout=10)
    assert time.monotonic() - t0 < 2.0
    kind, exc, _ = messages[-1]
    assert kind == "error" and isinstance(exc, Cancelled)
    assert not job.process.is_alive() and not os.path.exists(tmp)


def test_a_crash_is_reported():
    messages = _collect(ProcessJob(jobs.crash))
    kind, exc, _ = messages[-1]
    assert kind == "error" and "exit code 3" in str(exc)
