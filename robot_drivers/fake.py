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

    def stop(self) -> None:
        with self._lock:
            self.stop_calls += 1
            self._target = None

    def place(self, pose: Pose) -> None:
        """Put the end-effector somewhere directly (an external push, for tests)."""
        with self._lock:
            self._pose, self._target = pose, None


class SyntheticCamera(Camera):
    """Produces patterned frames at ``fps`` on a capture thread.

    Each image encodes its sequence number, so a consumer can verify it got
    the frame it thinks it got. ``unplug()`` makes the next grab fail the way a
    disconnected USB camera does.
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
        self._t0 = 0.0

    def _connect(self) -> None:
        self._slot.reset()
        self._unplugged.clear()
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

    def _grab(self):
        if self._unplugged.is_set():
            raise ConnectionLostError(f"camera '{self.name}' was unplugged")
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
