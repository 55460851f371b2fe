"""Lightweight virtual devices: a kinematic arm and a synthetic camera.

They implement the real interfaces without physics or rendering, for
benchmarks of the recording pipeline and for tests of the layers above the
drivers (safety, control loop, recorder).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import cv2
import numpy as np

from core.clock import Clock, TickTiming
from robot_drivers.arm import Arm
from robot_drivers.camera import Camera
from core.errors import ConnectionLostError, NotConnectedError
from core.transforms import euler_to_quat, quat_slerp
from core.types import Action, Pose, RobotState, TeleopCommand
from robot_drivers.teleop import Teleop

HOME_POSE = Pose(np.array([0.45, 0.0, 0.35]), euler_to_quat(np.pi, 0.0, 0.0))


class KinematicArm(Arm):
    """Moves a fraction ``tracking`` of the way to its target whenever its state is read."""

    name = "kinematic"

    def __init__(self, home: Pose = HOME_POSE, tracking: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._home = home
        self._tracking = tracking
        self._clock = clock
        self._lock = threading.Lock()
        self._connected = False
        self._pose = home
        self._gripper = 1.0
        self._target: Action | None = None
        self.sent: list[Action] = []
        self.stop_calls = 0
        self.fail_next: Exception | None = None  # raised by the next call, then cleared

    def _check(self) -> None:
        if not self._connected:
            raise NotConnectedError("kinematic arm is not connected")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def get_state(self) -> RobotState:
        self._check()
        with self._lock:
            if self._target is not None:
                t = self._target
                pos = self._pose.position + self._tracking * (t.pose.position - self._pose.position)
                self._pose = Pose(pos, quat_slerp(self._pose.orientation, t.pose.orientation, self._tracking))
                self._gripper += self._tracking * (t.gripper - self._gripper)
            return RobotState(self._clock(), self._pose, float(self._gripper), np.zeros(7))

    def send_action(self, action: Action) -> Action:
        self._check()
        with self._lock:
            self._target = action
            self.sent.append(action)
        return action

    def home(self) -> None:
        self._check()
        with self._lock:
            self._pose, self._gripper, self._target = self._home, 1.0, None

    def stop(self) -> float | None:
        """Halt: the pose and the opening stay where they are; the opening, if the gripper was still moving."""
        with self._lock:
            self.stop_calls += 1
            moving = self._target is not None and abs(self._target.gripper - self._gripper) > 1e-9
            self._target = None
            return float(self._gripper) if moving else None

    def place(self, pose: Pose) -> None:
        """Put the end-effector somewhere directly (an external push, for tests)."""
        with self._lock:
            self._pose, self._target = pose, None


class SyntheticCamera(Camera):
    """Produces patterned frames at ``fps`` on a capture thread.

    Each image encodes its sequence number, so a consumer can verify it got
    the frame it thinks it got. ``unplug()`` makes the next grab fail the way a
    disconnected USB camera does; ``freeze()`` makes it stop delivering without
    an error (a stream that stalls: only the stale limit notices).
    """

    def __init__(self, name: str, width: int = 640, height: int = 480, fps: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, seed: int = 0, phase: float = 0.0):
        """``phase`` delays the first frame (s): free-running cameras are never in step."""
        super().__init__(name, width, height, fps, clock)
        rng = np.random.default_rng(seed)
        # A smooth scene with mild sensor noise: it compresses like a real camera image, not like white noise.
        coarse = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        noise = rng.normal(0, 2.0, size=(height, width, 3)).astype(np.int16)
        self._base = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        self._phase = phase
        self._count = 0
        self._unplugged = threading.Event()
        self._frozen = threading.Event()
        self._t0 = 0.0

    def _connect(self) -> None:
        self._slot.reset()
        self._unplugged.clear()
        self._frozen.clear()
        self._count = 0
        if self._phase > 0:
            time.sleep(self._phase)
        self._t0 = time.monotonic()
        self._start_capture(self._grab, period=1.0 / self.fps)

    def _disconnect(self) -> None:
        self._stop_capture()

    @property
    def is_connected(self) -> bool:
        return self._capturing

    def unplug(self) -> None:
        self._unplugged.set()

    def freeze(self) -> None:
        """Stop delivering frames, with no error: the capture thread runs on and finds no frame ready."""
        self._frozen.set()

    def _grab(self):
        if self._unplugged.is_set():
            raise ConnectionLostError(f"camera '{self.name}' was unplugged")
        if self._frozen.is_set():
            return None
        image = np.roll(self._base, self._count, axis=1)
        image[0, :8] = np.frombuffer(np.int64(self._count).tobytes(), dtype=np.uint8)[:, None]
        self._count += 1
        return image, time.monotonic() - self._t0


class CircleTeleop(Teleop):
    """A virtual operator drawing horizontal circles (``radius`` m, one turn every ``period`` s); with
    ``gripper`` the gripper opens and closes once a turn."""

    def __init__(self, radius: float = 0.05, period: float = 4.0, gripper: bool = False):
        self.radius, self.period, self.gripper, self.t = radius, period, gripper, 0.0

    def get_command(self, state, dt):
        self.t += dt
        w = 2 * np.pi / self.period
        v = self.radius * w * np.array([-np.sin(w * self.t), np.cos(w * self.t), 0.0])
        return TeleopCommand(linear_velocity=v, gripper=0.5 + 0.5 * np.sin(w * self.t) if self.gripper else None)


class ManualClock(Clock):
    """A host clock that moves only when told, for deterministic tests of timing (it reports real time).

    Each tick advances it by one control period; on the way every :class:`ManualCamera` made on it delivers
    the frames that fall due, each stamped with its own due time."""

    def __init__(self, rate_hz: float, start: float = 100.0):
        super().__init__(rate_hz)
        self.t = float(start)
        self._index = 0
        self.cameras: list[ManualCamera] = []

    def now(self) -> float:
        return self.t

    def start(self) -> TickTiming:
        self._index = 0
        return TickTiming(0, self.t, self.t, False, 0)

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while True:
            due = [c for c in self.cameras if c.next_frame_time is not None and c.next_frame_time <= end]
            if not due:
                break
            camera = min(due, key=lambda c: c.next_frame_time)
            self.t = max(self.t, camera.next_frame_time)
            camera.deliver()
        self.t = end

    def wait_next_tick(self) -> TickTiming:
        self.advance(self.dt)
        self._index += 1
        return TickTiming(self._index, self.t, self.t, False, 0)


class ManualCamera(Camera):
    """A camera on a :class:`ManualClock`: it delivers a frame at connect, then one after each interval of
    ``intervals`` in turn (seconds; default one frame period: a steady camera), until ``stop_delivering()``
    (a stream that stalls without an error)."""

    def __init__(self, name: str, clock: ManualClock, fps: float = 15.0, intervals=None,
                 stale_limit_s: float | None = None):
        super().__init__(name, 8, 8, fps, clock.now, stale_limit_s=stale_limit_s)
        self._manual_clock = clock
        self._intervals = [float(i) for i in (intervals or [1.0 / fps])]
        self._count = 0
        self.next_frame_time: float | None = None
        self.last_frame_time: float | None = None
        clock.cameras.append(self)

    def _connect(self) -> None:
        self._slot.reset()
        self._count = 0
        self.next_frame_time = self._manual_clock.now()
        self.deliver()

    def _disconnect(self) -> None:
        self.next_frame_time = None

    def deliver(self) -> None:
        """Publish the frame due now and schedule the next one."""
        image = np.full((self.height, self.width, 3), self._count % 256, np.uint8)
        self.last_frame_time = self._manual_clock.now()
        self._slot.publish(image, self.last_frame_time)
        self.next_frame_time = self.last_frame_time + self._intervals[self._count % len(self._intervals)]
        self._count += 1

    def stop_delivering(self) -> None:
        self.next_frame_time = None
