"""The event-loop probe of the GUI tests: a 20 ms timer recording the longest gap between its ticks.

Between two ticks the meter records the wall-clock gap and the CPU time this process used
(``time.process_time``: the GUI thread's work plus any thread of the process that kept the GIL; a worker
*process* does not count). ``NAPARI_MYELIN_GAP_TRACE=1`` prints what the GUI thread was doing in long gaps.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from qtpy.QtCore import QTimer

#: The longest the event loop may be kept busy during an action (ms of CPU time between two ticks).
MAX_GAP_MS = 200.0
#: Tick of the probe timer (ms).
TICK_MS = 20


class GapMeter:
    """A 20 ms timer recording the longest interval between two of its ticks, in wall-clock time (``longest``)
    and in CPU time of this process (``longest_cpu``), both in ms."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.longest = 0.0
        self.longest_cpu = 0.0
        self.ticks = 0
        self._last = None
        self._last_cpu = None

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self._last is not None:
            self.longest = max(self.longest, 1000.0 * (now - self._last))
            self.longest_cpu = max(self.longest_cpu, 1000.0 * (cpu - self._last_cpu))
        self._last, self._last_cpu = now, cpu
        self.ticks += 1

    def __enter__(self) -> "GapMeter":
        self._last, self._last_cpu = time.perf_counter(), time.process_time()
        self.timer.start()
        if os.environ.get("NAPARI_MYELIN_GAP_TRACE"):  # debugging: print what the GUI thread does in a long gap
            self._watch = threading.Thread(target=self._watchdog, args=(threading.get_ident(),), daemon=True)
            self._watching = True
            self._watch.start()
        return self

    def __exit__(self, *exc) -> None:
        self._tick()
        self.timer.stop()
        self._watching = False

    def _watchdog(self, gui_thread: int) -> None:
        reported = None
        while self._watching:
            time.sleep(0.05)
            last = self._last
            if last is not None and time.perf_counter() - last > 0.15 and reported != last:
                reported = last
                frame = sys._current_frames().get(gui_thread)
                print("---- GUI thread blocked > 150 ms:\n" + "".join(traceback.format_stack(frame)[-25:]))
