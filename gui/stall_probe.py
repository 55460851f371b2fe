"""How responsive the event loop is: a 5 ms timer and how late it fires (for tests and benchmarks)."""

from __future__ import annotations

import time

import numpy as np
from PyQt6.QtCore import QTimer

INTERVAL_S = 0.005


class StallProbe:
    """While started, records for every beat how long past its 5 ms the timer fired: the time the event
    loop could not run (ms)."""

    def __init__(self):
        self.gaps_ms: list[float] = []
        self._last: float | None = None
        self._timer = QTimer()
        self._timer.setInterval(int(INTERVAL_S * 1000))
        self._timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps_ms.append(max(0.0, now - self._last - INTERVAL_S) * 1000)
        self._last = now

    def start(self) -> None:
        self.gaps_ms, self._last = [], None
        self._timer.start()

    def stop(self) -> np.ndarray:
        """Stop and return the gaps (ms)."""
        self._timer.stop()
        return np.asarray(self.gaps_ms)
