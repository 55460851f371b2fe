"""The camera interface, and the latest-frame slot and capture thread backends share.

Stale frames
------------
A reader asks for the newest frame of a camera; if that frame is older than the
camera's *stale limit* it gets :class:`StaleFrameError` (the control loop then
halts with ``camera_lost``). The limit fits the camera (:class:`StaleLimit`):

* a camera with a fixed limit (a rig file's ``stale_limit_s``, the simulator in
  lock-step) uses that number, as given;
* otherwise the limit is derived from the camera's nominal frame period
  ``T = 1/fps`` and the intervals between the frames it actually delivered
  (host receive times; the last :data:`STALE_WINDOW` of them)::

      limit = min(bound, max(floor, 3 T, 3 x q99))      bound = max(cap, 3 T)

  where ``q99`` is the 99th percentile of those intervals. A steady camera gets
  the floor; a jittery one (a loaded host, a busy USB bus) gets three times its
  slowest usual interval, so its ordinary hiccups are not faults. Until the
  camera has delivered :data:`STALE_MIN_INTERVALS` intervals its rhythm is not
  known and the limit is the bound.

**A camera that stops delivering is refused at most ``bound`` seconds after its
last frame**, whatever its history: 1 s for real cameras (floor 0.5 s, cap
1 s; the bound is 3 frame periods for a camera slower than 3 fps), 3 s for the
real-time simulated cameras (floor 2 s: their frames are late only when the
host is busy, which is not a fault; a render process that dies is reported as
a lost camera at once). A camera whose driver fails is reported at once
(:class:`ConnectionLostError`), not after the limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import CameraLostError, StaleFrameError
from core.types import Frame
from robot_drivers.device import Device

log = logging.getLogger(__name__)

#: ``max_age``'s default: the camera's own stale limit (:class:`StaleLimit`).
OWN_LIMIT = object()

#: The derived limit's parameters (see the module docstring).
STALE_FLOOR_S = 0.5
STALE_CAP_S = 1.0
STALE_PERIODS = 3.0
STALE_JITTER_FACTOR = 3.0
STALE_QUANTILE = 0.99
STALE_WINDOW = 256
STALE_MIN_INTERVALS = 16
STALE_ADVICE = "check the cable/USB bandwidth or lower the fps"


@dataclass(frozen=True)
class StaleLimit:
    """How old a camera's newest frame may be before readers refuse it (see the module docstring).

    ``fixed_s``: a fixed limit (seconds) that replaces the derived one (a rig file's ``stale_limit_s``);
    ``floor_s`` and ``cap_s``: the derived limit's lower end and its hard upper bound (seconds)."""

    fps: float | None = None  # nominal frame rate (Hz); None: unknown (the frame-period term is left out)
    floor_s: float = STALE_FLOOR_S
    cap_s: float = STALE_CAP_S
    fixed_s: float | None = None

    def __post_init__(self):
        if self.fixed_s is not None and not 0.0 < self.fixed_s < float("inf"):
            raise ValueError(f"a fixed stale limit must be a positive number of seconds, got {self.fixed_s}")
        if not 0.0 < self.floor_s <= self.cap_s < float("inf"):
            raise ValueError(f"the stale limit needs 0 < floor_s <= cap_s, got floor {self.floor_s} s, "
                             f"cap {self.cap_s} s")
        if self.fps is not None and not 0.0 < self.fps < float("inf"):
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def periods_s(self) -> float:
        """:data:`STALE_PERIODS` nominal frame periods (0 when the rate is unknown)."""
        return STALE_PERIODS / self.fps if self.fps else 0.0

    @property
    def bound_s(self) -> float:
        """The longest a stopped camera goes unnoticed: the fixed limit, or the derived limit's upper bound."""
        if self.fixed_s is not None:
            return self.fixed_s
        return max(self.cap_s, self.periods_s)

    def limit(self, intervals) -> tuple[float, str]:
        """The limit (s) given the recent inter-frame intervals (s, any order), and how it was chosen."""
        if self.fixed_s is not None:
            return self.fixed_s, ""
        if len(intervals) < STALE_MIN_INTERVALS:
            return self.bound_s, f"this camera's bound: fewer than {STALE_MIN_INTERVALS} frames seen"
        ordered = sorted(intervals)
        q = ordered[min(len(ordered) - 1, int(STALE_QUANTILE * len(ordered)))]
        terms = {"floor": self.floor_s, f"{STALE_PERIODS:g} frame periods": self.periods_s,
                 f"{STALE_JITTER_FACTOR:g} x the {STALE_QUANTILE * 100:.0f}th-percentile frame interval "
                 f"{q * 1000:.0f} ms": STALE_JITTER_FACTOR * q}
        why, value = max(terms.items(), key=lambda kv: kv[1])
        if value >= self.bound_s:
            return self.bound_s, "this camera's bound"
        return value, why


class LatestFrameSlot:
    """Holds the newest frames of one camera; written by one producer, read by many.

    Sequence numbers are assigned here, so they increase by exactly one per
    delivered frame whatever the backend does. A short history is kept so a
    reader can pick the frame nearest a given time (aligning several cameras).
    The intervals between frames are kept too: they set the stale limit
    (``stale``, a :class:`StaleLimit`; see the module docstring).
    """

    def __init__(self, camera: str, clock: Callable[[], float] = time.monotonic, history: int = 8,
                 stale: StaleLimit | None = None):
        self._camera = camera
        self._clock = clock
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._history: deque[Frame] = deque(maxlen=history)
        self._next_sequence = 0
        self._error: Exception | None = None
        self.stale = stale or StaleLimit()
        self.advice = STALE_ADVICE  # what a stale-frame error advises (a camera sets its own)
        self._intervals: deque[float] = deque(maxlen=STALE_WINDOW)
        self._limit_cache: tuple[int, StaleLimit, float, str] | None = None

    def publish(self, image: np.ndarray, device_time: float | None) -> Frame:
        frame = Frame(image=image, device_time=device_time, host_time=self._clock(),
                      sequence=self._next_sequence, camera=self._camera)
        with self._cond:
            if self._frame is not None:
                self._intervals.append(frame.host_time - self._frame.host_time)
            self._next_sequence += 1
            self._frame = frame
            self._history.append(frame)
            self._cond.notify_all()
        return frame

    def fail(self, error: Exception) -> None:
        """Record that the producer died; readers get this error instead of stale data."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget everything (a new connection): frames, the error, the frame intervals."""
        with self._cond:
            self._frame = None
            self._history.clear()
            self._error = None
            self._intervals.clear()
            self._limit_cache = None

    def stale_limit(self) -> tuple[float, str]:
        """The current stale limit (s) and how it was chosen ("" for a fixed one)."""
        with self._cond:
            stale, sequence = self.stale, self._next_sequence
            cache = self._limit_cache
            if cache is not None and cache[0] == sequence and cache[1] is stale:
                return cache[2], cache[3]
            intervals = list(self._intervals)
        limit, why = stale.limit(intervals)
        with self._cond:
            self._limit_cache = (sequence, stale, limit, why)
        return limit, why

    def forget_before(self, host_time: float) -> None:
        """Drop the kept frames received before ``host_time`` (they show a scene that is no more); the newest is
        kept whatever its time, so a reader always has one."""
        with self._cond:
            kept = [f for f in self._history if f.host_time >= host_time]
            self._history.clear()
            self._history.extend(kept or ([self._frame] if self._frame is not None else []))

    def latest(self, max_age: float | None | object = OWN_LIMIT) -> Frame:
        """The newest frame; ``max_age`` (s) replaces the stale limit, None accepts any age."""
        with self._cond:
            frame, error = self._frame, self._error
        return self._checked(frame, error, max_age)

    def nearest(self, t: float, max_age: float | None | object = OWN_LIMIT) -> Frame:
        """The kept frame whose host receive time is nearest ``t`` (the newest is age-checked)."""
        with self._cond:
            frames, error = list(self._history), self._error
        self._checked(frames[-1] if frames else None, error, max_age)
        return min(frames, key=lambda f: abs(f.host_time - t))

    def _checked(self, frame: Frame | None, error: Exception | None, max_age: float | None | object) -> Frame:
        if error is not None:
            raise CameraLostError(f"camera '{self._camera}' stopped delivering frames: {error}",
                                  camera=self._camera) from error
        if frame is None:
            raise StaleFrameError(f"camera '{self._camera}' has not delivered a frame yet", camera=self._camera)
        if max_age is None:
            return frame
        limit, why = self.stale_limit() if max_age is OWN_LIMIT else (max_age, "")
        age = self._clock() - frame.host_time
        if age > limit:
            how = f", {why}" if why else ""
            raise StaleFrameError(
                f"camera '{self._camera}': newest frame is {age * 1000:.0f} ms old "
                f"(limit {limit * 1000:.0f} ms{how}); {self.advice}",
                camera=self._camera, age_s=age, limit_s=limit)
        return frame

    def wait_for(self, after_sequence: int, timeout: float) -> Frame:
        """Block until a frame newer than ``after_sequence`` arrives."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._error is None and (self._frame is None or self._frame.sequence <= after_sequence):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StaleFrameError(f"camera '{self._camera}': no new frame within {timeout:.2f} s",
                                          camera=self._camera)
                self._cond.wait(remaining)
        return self.latest(max_age=None)


@dataclass(frozen=True)
class GraspOverlay:
    """Where a camera fixed to the gripper sees the grasp, in image coordinates in [0, 1] (x right, y down).

    ``grasp_point``: the point between the fingertips; ``finger_span``: the fingers' closing line through it
    (fully open); ``axis``: points on the gripper axis beyond the fingertips at ``depths_m``. A hand camera sits
    beside the axis, so a point below the gripper appears on the axis mark of its depth: an object is under the
    fingers when it meets the mark at its own distance, not merely when it looks "between the fingers"."""

    grasp_point: tuple[float, float]
    finger_span: tuple[tuple[float, float], tuple[float, float]]
    axis: tuple[tuple[float, float], ...]
    depths_m: tuple[float, ...]


class Camera(Device):
    """A colour camera delivering RGB frames in the background (the life cycle is :class:`Device`'s)."""

    #: set for a camera fixed to the gripper whose grasp point is known (the window draws it); None otherwise
    grasp_overlay: GraspOverlay | None = None
    #: the thread that delivers the frames of a free-running camera while it is connected
    _thread: CaptureThread | None = None

    #: the derived stale limit's floor and hard upper bound (s) for this kind of camera (module docstring)
    stale_floor_s: float = STALE_FLOOR_S
    stale_cap_s: float = STALE_CAP_S
    #: what a stale-frame error advises
    stale_advice: str = STALE_ADVICE

    def __init__(self, name: str, width: int, height: int, fps: float,
                 clock: Callable[[], float] = time.monotonic, stale_limit_s: float | None = None):
        """``stale_limit_s``: a fixed stale limit (s) instead of the one derived from the frame intervals."""
        self.name = name
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self._slot = LatestFrameSlot(name, clock)
        self.set_stale_limit(stale_limit_s)

    def set_stale_limit(self, fixed_s: float | None) -> None:
        """Refuse frames older than ``fixed_s`` seconds; None: the limit derived from the frame intervals."""
        self._slot.stale = StaleLimit(self.fps, self.stale_floor_s, self.stale_cap_s, fixed_s)
        self._slot.advice = self.stale_advice

    @property
    def stale_limit(self) -> StaleLimit:
        """How this camera's stale limit is set (its ``bound_s``: the longest a stopped camera goes unnoticed)."""
        return self._slot.stale

    def current_stale_limit(self) -> float:
        """The stale limit (s) readers get now."""
        return self._slot.stale_limit()[0]

    @property
    def serial(self) -> str:
        """Hardware serial number, or a stable identifier for virtual cameras."""
        return self.name

    @property
    def resolution(self) -> tuple[int, int]:
        return self.width, self.height

    def read_latest(self, max_age: float | None | object = OWN_LIMIT) -> Frame:
        """The newest frame; raises StaleFrameError if it is older than the camera's stale limit, or than
        ``max_age`` seconds when given (None: any age)."""
        return self._slot.latest(max_age)

    def read_nearest(self, t: float, max_age: float | None | object = OWN_LIMIT) -> Frame:
        """Of the last few frames, the one received nearest host time ``t`` (the newest is age-checked as in
        :meth:`read_latest`)."""
        return self._slot.nearest(t, max_age)

    def wait_for_frame(self, after_sequence: int = -1, timeout: float = 2.0) -> Frame:
        return self._slot.wait_for(after_sequence, timeout)

    def _start_capture(self, grab: Callable[[], tuple[np.ndarray, float | None] | None],
                       period: float | None = None, on_exit: Callable[[], None] | None = None) -> None:
        """Publish what ``grab()`` returns from a capture thread of this camera (:class:`CaptureThread`);
        ``on_exit()`` runs on that thread when it ends (to free what only that thread may free)."""
        self._thread = CaptureThread(self.name, self._slot, grab, period=period, on_exit=on_exit)
        self._thread.start()

    def _stop_capture(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.stop(timeout)
            self._thread = None

    @property
    def _capturing(self) -> bool:
        """The capture thread runs (it ends when ``grab`` raises: the camera is gone)."""
        return self._thread is not None and self._thread.alive

    def forget_frames_before(self, host_time: float) -> None:
        """The scene changed at once (a simulator reset): frames received before ``host_time`` are never served
        again, not even as the nearest to an alignment time."""
        self._slot.forget_before(host_time)


class CaptureThread:
    """Calls ``grab()`` in a loop on a daemon thread and publishes each image.

    ``grab`` returns (image, device_time) or None when no new frame was ready;
    an exception from it ends the thread and is handed to readers.
    """

    def __init__(self, name: str, slot: LatestFrameSlot,
                 grab: Callable[[], tuple[np.ndarray, float | None] | None],
                 period: float | None = None, on_exit: Callable[[], None] | None = None):
        self._slot = slot
        self._grab = grab
        self._on_exit = on_exit
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._on_exit is not None:
                try:
                    self._on_exit()
                except Exception as exc:  # noqa: BLE001 - the thread ends anyway
                    log.warning("capture thread %s: cleanup failed: %s", self._thread.name, exc)

    def _loop(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            try:
                result = self._grab()
            except Exception as exc:  # noqa: BLE001 - the error is handed to readers
                log.error("capture thread %s failed: %s", self._thread.name, exc)
                self._slot.fail(exc)
                return
            if result is not None:
                self._slot.publish(*result)
            if self._period:
                next_time += self._period
                delay = next_time - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_time = time.monotonic()  # fell behind: do not try to catch up with a burst
