"""The arm's recent states, so an observation can pair its frames with the state *at their capture time*.

On a real-time rig the frames of an observation were captured a little
before the arm state could be read (a frame period of alignment plus the
transport). Storing the state read after the frames would pair each image
with where the arm was tens of milliseconds later; at 0.1 m/s that is
several millimetres of label error. Diffusion Policy's practice is to sample
the robot far faster than the control loop and look its state up at the
images' time: :class:`StatePoller` samples, :class:`StateHistory` keeps the
samples and interpolates between the two around a given time.
"""

from __future__ import annotations

import bisect
import logging
import threading
from typing import Callable

import numpy as np

from core.transforms import quat_slerp
from core.types import Pose, RobotState

log = logging.getLogger(__name__)


def interpolate_states(a: RobotState, b: RobotState, t: float) -> RobotState:
    """The state at ``t`` between samples ``a`` and ``b`` (a.host_time <= t <= b.host_time).

    Position, gripper and joints linearly; orientation by slerp along the shorter arc, its sign kept on
    ``a``'s side so that consecutive states never flip hemisphere.
    """
    span = b.host_time - a.host_time
    w = 0.0 if span <= 0.0 else min(max((t - a.host_time) / span, 0.0), 1.0)
    position = a.ee_pose.position + w * (b.ee_pose.position - a.ee_pose.position)
    orientation = quat_slerp(a.ee_pose.orientation, b.ee_pose.orientation, w)
    if float(np.dot(orientation, a.ee_pose.orientation)) < 0.0:
        orientation = -orientation
    if a.joint_positions.shape == b.joint_positions.shape:
        joints = a.joint_positions + w * (b.joint_positions - a.joint_positions)
    else:  # a driver that changed its joint count mid-stream: do not invent values
        joints = (a if w < 0.5 else b).joint_positions
    gripper = float(a.gripper + w * (b.gripper - a.gripper))
    return RobotState(host_time=float(t), ee_pose=Pose(position, orientation), gripper=gripper,
                      joint_positions=joints)


class StateHistory:
    """The last ``size`` arm states, ordered by read time; safe to add to from several threads."""

    def __init__(self, size: int = 512):
        if size < 2:
            raise ValueError(f"a state history needs room for at least 2 samples, got {size}")
        self._size = size
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._states: list[RobotState] = []
        self._since = -np.inf

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def add(self, state: RobotState) -> None:
        t = state.host_time
        with self._lock:
            if t < self._since:
                return  # read before the last clear(): it belongs to the world before the jump
            i = bisect.bisect_right(self._times, t)  # samples from two threads may arrive out of order
            self._times.insert(i, t)
            self._states.insert(i, state)
            if len(self._states) > self._size:
                del self._times[0], self._states[0]

    def clear(self, since: float) -> None:
        """Forget every sample, and refuse ones read before ``since`` (the arm jumped, e.g. a simulator reset)."""
        with self._lock:
            self._times.clear()
            self._states.clear()
            self._since = since

    def at(self, t: float) -> tuple[RobotState, float]:
        """(the state at time ``t``, its skew).

        Inside the history the state is interpolated between the samples around ``t`` and the skew is 0.
        Outside it the nearest sample is returned as it is, and the skew is its read time minus ``t``
        (positive: read after ``t``).
        """
        with self._lock:
            if not self._states:
                raise LookupError("the state history is empty; add a state first")
            i = bisect.bisect_left(self._times, t)
            if i < len(self._times) and self._times[i] == t:
                return self._states[i], 0.0
            if i == 0 or i == len(self._times):
                nearest = self._states[0] if i == 0 else self._states[-1]
                return nearest, nearest.host_time - t
            before, after = self._states[i - 1], self._states[i]
        return interpolate_states(before, after, t), 0.0


class StatePoller:
    """Reads the arm state at ``rate_hz`` on a daemon thread into a :class:`StateHistory`.

    A background thread must not swallow an arm error (a protective stop, a dropped and re-established
    connection): the first one ends the thread and is kept for :meth:`take_error`, which the rig's next
    observation raises.
    """

    def __init__(self, read: Callable[[], RobotState], history: StateHistory, rate_hz: float, name: str = "arm"):
        if not 0.0 < rate_hz <= 1000.0:
            raise ValueError(f"state sampling rate {rate_hz} Hz is out of range (0, 1000]")
        self._read = read
        self._history = history
        self._period = 1.0 / rate_hz
        self._name = name
        self._lock = threading.Lock()
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()  # a fresh event: an old thread still winding down keeps its own
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=f"state-{self._name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def take_error(self) -> Exception | None:
        """The error that ended the thread (once), or None."""
        with self._lock:
            error, self._error = self._error, None
        return error

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._history.add(self._read())
            except Exception as exc:  # noqa: BLE001 - handed to the next observation
                if not stop.is_set():
                    log.warning("state sampling of '%s' stopped: %s", self._name, exc)
                    with self._lock:
                        self._error = exc
                return
            stop.wait(self._period)
