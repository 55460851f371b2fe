"""Control clocks: one loop implementation runs on either.

* :class:`RealTimeClock` sleeps until each tick of a fixed grid on the host
  monotonic clock (hardware, the GUI, realistic timing).
* A lock-step clock (``robot_drivers.sim_clock.LockstepClock``) advances a
  simulation by exactly one tick per call, as fast as the CPU allows (data
  generation, tests, evaluation).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class TickTiming:
    index: int
    scheduled: float  # when the tick should have started (clock seconds)
    actual: float  # when it did start
    late: bool  # started more than a tolerance after its schedule
    skipped: int  # grid ticks skipped to catch up (0 when on time)


class Clock(ABC):
    def __init__(self, rate_hz: float, late_tolerance: float | None = None):
        if not 0 < rate_hz <= 1000:
            raise ValueError(f"control rate {rate_hz} Hz is out of range (0, 1000]")
        self.rate_hz = float(rate_hz)
        self.dt = 1.0 / self.rate_hz
        self.late_tolerance = self.dt * 0.25 if late_tolerance is None else late_tolerance

    @abstractmethod
    def now(self) -> float:
        """Seconds on this clock's monotonic time base."""

    @abstractmethod
    def start(self) -> TickTiming:
        """Begin a new tick grid at the current time; returns tick 0."""

    @abstractmethod
    def wait_next_tick(self) -> TickTiming:
        """Return when the next tick is due (sleeping or simulating as needed)."""

    @property
    def is_realtime(self) -> bool:
        return True


class RealTimeClock(Clock):
    def __init__(self, rate_hz: float, late_tolerance: float | None = None, sleep=time.sleep):
        super().__init__(rate_hz, late_tolerance)
        self._sleep = sleep
        self._t0 = 0.0
        self._index = 0

    def now(self) -> float:
        return time.monotonic()

    def start(self) -> TickTiming:
        self._t0 = self.now()
        self._index = 0
        return TickTiming(0, self._t0, self._t0, False, 0)

    def wait_next_tick(self) -> TickTiming:
        self._index += 1
        scheduled = self._t0 + self._index * self.dt
        delay = scheduled - self.now()
        if delay > 0:
            self._sleep(delay)
        actual = self.now()
        skipped = 0
        if actual - scheduled >= self.dt:
            # More than a whole period behind: skip grid points rather than
            # running a burst of ticks that would each be late.
            skipped = int((actual - scheduled) // self.dt)
            self._index += skipped
            scheduled = self._t0 + self._index * self.dt
        late = actual - scheduled > self.late_tolerance
        return TickTiming(self._index, scheduled, actual, late, skipped)
