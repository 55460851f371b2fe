"""Keyboard teleoperation: held keys become velocities, one key toggles the gripper.

The device knows nothing of any GUI toolkit: a window forwards key presses and
releases by name (``press("w")``), from its own thread; the control loop polls
``get_command`` from the control thread.
"""

from __future__ import annotations

import threading

import numpy as np

from robot_drivers.teleop import Teleop
from core.types import RobotState, TeleopCommand

#: key -> (axis, sign). Axes 0-2: x, y, z translation in the base frame; 5: rotation about z (yaw).
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, +1.0), "s": (0, -1.0),  # away from / towards the robot base
    "a": (1, +1.0), "d": (1, -1.0),  # left / right, seen from behind the robot
    "r": (2, +1.0), "f": (2, -1.0),  # up / down
    "q": (5, +1.0), "e": (5, -1.0),  # turn the gripper left / right
}
GRIPPER_KEY = "g"
FINE_KEY = "shift"

#: What the GUI shows next to the previews.
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("W / S", "forward / back"), ("A / D", "left / right"), ("R / F", "up / down"),
    ("Q / E", "turn gripper"), ("G", "open / close gripper"), ("Shift", "hold for fine motion"),
)


class KeyboardTeleop(Teleop):
    name = "keyboard"

    def __init__(self, linear_speed: float = 0.08, angular_speed: float = 0.6, fine_factor: float = 0.25):
        self.linear_speed = linear_speed  # m/s
        self.angular_speed = angular_speed  # rad/s
        self.fine_factor = fine_factor
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._toggle_pending = False
        self._gripper_target: float | None = None

    def press(self, key: str) -> bool:
        """A key went down; returns whether it is one of ours."""
        key = key.lower()
        with self._lock:
            if key == GRIPPER_KEY:
                self._toggle_pending = True
                return True
            if key in MOTION_KEYS or key == FINE_KEY:
                self._held.add(key)
                return True
        return False

    def release(self, key: str) -> bool:
        key = key.lower()
        with self._lock:
            if key in self._held:
                self._held.discard(key)
                return True
        return key in MOTION_KEYS or key in (FINE_KEY, GRIPPER_KEY)

    def release_all(self) -> None:
        """Forget held keys (the window lost focus: a key released elsewhere must not keep the arm moving)."""
        with self._lock:
            self._held.clear()

    def toggle_gripper(self) -> None:
        with self._lock:
            self._toggle_pending = True

    @property
    def held(self) -> frozenset:
        with self._lock:
            return frozenset(self._held)

    def reset(self) -> None:
        with self._lock:
            self._held.clear()
            self._toggle_pending = False
            self._gripper_target = None

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        with self._lock:
            held = set(self._held)
            if self._toggle_pending:
                current = self._gripper_target if self._gripper_target is not None else state.gripper
                self._gripper_target = 0.0 if current > 0.5 else 1.0
                self._toggle_pending = False
            gripper = self._gripper_target
        twist = np.zeros(6)
        for key in held & MOTION_KEYS.keys():
            axis, sign = MOTION_KEYS[key]
            twist[axis] += sign
        scale = self.fine_factor if FINE_KEY in held else 1.0
        return TeleopCommand(linear_velocity=twist[:3] * self.linear_speed * scale,
                             angular_velocity=twist[3:] * self.angular_speed * scale, gripper=gripper)
