"""The camera interface, and the latest-frame slot and capture thread backends share."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import ConnectionLostError, StaleFrameError
from core.types import Frame
from robot_drivers.device import Device

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 0.5


class LatestFrameSlot:
    """Holds the newest frames of one camera; written by one producer, read by many.

    Sequence numbers are assigned here, so they increase by exactly one per
    delivered frame whatever the backend does. A short history is kept so a
    reader can pick the frame nearest a given time (aligning several cameras).
    """

    def __init__(self, camera: str, clock: Callable[[], float] = time.monotonic, history: int = 8):
        self._camera = camera
        self._clock = clock
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._history: deque[Frame] = deque(maxlen=history)
        self._next_sequence = 0
        self._error: Exception | None = None

    def publish(self, image: np.ndarray, device_time: float | None) -> Frame:
        frame = Frame(image=image, device_time=device_time, host_time=self._clock(),
                      sequence=self._next_sequence, camera=self._camera)
        with self._cond:
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
        with self._cond:
            self._frame = None
            self._history.clear()
            self._error = None

    def forget_before(self, host_time: float) -> None:
        """Drop the kept frames received before ``host_time`` (they show a scene that is no more); the newest is
        kept whatever its time, so a reader always has one."""
        with self._cond:
            kept = [f for f in self._history if f.host_time >= host_time]
            self._history.clear()
            self._history.extend(kept or ([self._frame] if self._frame is not None else []))

    def latest(self, max_age: float | None = DEFAULT_MAX_AGE_S) -> Frame:
        with self._cond:
            frame, error = self._frame, self._error
        return self._checked(frame, error, max_age)

    def nearest(self, t: float, max_age: float | None = DEFAULT_MAX_AGE_S) -> Frame:
        """The kept frame whose host receive time is nearest ``t`` (the newest is age-checked)."""
        with self._cond:
            frames, error = list(self._history), self._error
        self._checked(frames[-1] if frames else None, error, max_age)
        return min(frames, key=lambda f: abs(f.host_time - t))

    def _checked(self, frame: Frame | None, error: Exception | None, max_age: float | None) -> Frame:
        if error is not None:
            raise ConnectionLostError(f"camera '{self._camera}' stopped delivering frames: {error}") from error
        if frame is None:
            raise StaleFrameError(f"camera '{self._camera}' has not delivered a frame yet")
        if max_age is not None:
            age = self._clock() - frame.host_time
            if age > max_age:
                raise StaleFrameError(
                    f"camera '{self._camera}': newest frame is {age * 1000:.0f} ms old "
                    f"(limit {max_age * 1000:.0f} ms); check the cable/USB bandwidth or lower the fps")
        return frame

    def wait_for(self, after_sequence: int, timeout: float) -> Frame:
        """Block until a frame newer than ``after_sequence`` arrives."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._error is None and (self._frame is None or self._frame.sequence <= after_sequence):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StaleFrameError(f"camera '{self._camera}': no new frame within {timeout:.2f} s")
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

    def __init__(self, name: str, width: int, height: int, fps: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self._slot = LatestFrameSlot(name, clock)

    @property
    def serial(self) -> str:
        """Hardware serial number, or a stable identifier for virtual cameras."""
        return self.name

    @property
    def resolution(self) -> tuple[int, int]:
        return self.width, self.height

    def read_latest(self, max_age: float | None = DEFAULT_MAX_AGE_S) -> Frame:
        """The newest frame; raises StaleFrameError if it is older than ``max_age`` seconds."""
        return self._slot.latest(max_age)

    def read_nearest(self, t: float, max_age: float | None = DEFAULT_MAX_AGE_S) -> Frame:
        """Of the last few frames, the one received nearest host time ``t``."""
        return self._slot.nearest(t, max_age)

    def wait_for_frame(self, after_sequence: int = -1, timeout: float = 2.0) -> Frame:
        return self._slot.wait_for(after_sequence, timeout)

    def _start_capture(self, grab: Callable[[], tuple[np.ndarray, float | None] | None],
                       period: float | None = None) -> None:
        """Publish what ``grab()`` returns from a capture thread of this camera (:class:`CaptureThread`)."""
        self._thread = CaptureThread(self.name, self._slot, grab, period=period)
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
                 period: float | None = None):
        self._slot = slot
        self._grab = grab
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
