"""3Dconnexion SpaceMouse teleoperation through pyspacemouse (HID via hidapi).

The six axes (each in [-1, 1]) pass a dead zone, are rescaled so motion
starts smoothly at its edge, and become velocities in the robot base frame:
``max_linear_speed`` m/s and ``max_angular_speed`` rad/s at full deflection.
The device is read in pyspacemouse's ROS convention (push away = +x, push
left = +y, pull up = +z, rotations about those axes, right-handed), which is
the robot base frame for an operator standing behind the robot facing its +x;
``operator_yaw_deg`` turns it for an operator who faces another way.
A poller thread reads the device at ``poll_hz`` (the device reports far
faster than the control loop runs, and pyspacemouse's non-blocking read
returns one report per call), so each tick sees the newest state.

Buttons: by default the left button toggles the gripper and the right one
starts/stops an episode; the mapping is configurable. Button events fire on
the press, once.

:func:`dead_zone` and :class:`AxisScaling` are shared with the gamepad.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.errors import DeviceError, DeviceNotFoundError
from robot_drivers.teleop import Button, Teleop
from core.types import RobotState, TeleopCommand

log = logging.getLogger(__name__)

GRIPPER_TOGGLE = "gripper"
BUTTON_ACTIONS = (GRIPPER_TOGGLE, "start_stop", *(b.value for b in Button))


def dead_zone(values, zone: float) -> np.ndarray:
    """Zero inside ``zone``; outside, rescaled so the output grows from 0 at the edge to 1 at full scale."""
    v = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
    if zone <= 0:
        return v
    mag = np.abs(v)
    return np.where(mag <= zone, 0.0, np.sign(v) * (mag - zone) / (1.0 - zone))


@dataclass
class AxisScaling:
    """Dead zone and scaling from six normalised axes to base-frame velocities."""

    dead_zone: float = 0.1
    max_linear_speed: float = 0.10  # m/s at full deflection
    max_angular_speed: float = 0.6  # rad/s at full deflection
    signs: tuple[float, ...] = (1, 1, 1, 1, 1, 1)  # flip single axes (a device that reports one inverted)
    # The direction the operator faces, as a yaw in the robot base frame: 0 behind the robot facing its +x,
    # 90 facing its +y (standing on its -y side), 180 facing the robot from the front.
    operator_yaw_deg: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.dead_zone < 1.0:
            raise ValueError(f"dead_zone must be in [0, 1), got {self.dead_zone}")
        if not 0.0 < self.max_linear_speed <= 0.5:
            raise ValueError(f"max_linear_speed must be in (0, 0.5] m/s, got {self.max_linear_speed}")
        if not 0.0 < self.max_angular_speed <= 3.0:
            raise ValueError(f"max_angular_speed must be in (0, 3] rad/s, got {self.max_angular_speed}")
        if len(self.signs) != 6 or any(s not in (1, -1) for s in self.signs):
            raise ValueError(f"signs must be six values of 1 or -1, got {list(self.signs)}")
        if not -180.0 <= self.operator_yaw_deg <= 180.0:
            raise ValueError(f"operator_yaw_deg must be in [-180, 180], got {self.operator_yaw_deg}")

    def velocities(self, axes) -> tuple[np.ndarray, np.ndarray]:
        """(linear m/s, angular rad/s) in the robot base frame from axes in the operator's frame."""
        v = dead_zone(axes, self.dead_zone) * np.asarray(self.signs, dtype=np.float64)
        yaw = np.radians(self.operator_yaw_deg)
        c, s = np.cos(yaw), np.sin(yaw)
        turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # operator frame -> base frame
        return turn @ v[:3] * self.max_linear_speed, turn @ v[3:] * self.max_angular_speed


class ButtonEdges:
    """Turns held buttons into press events mapped to gripper toggles and :class:`Button` events."""

    def __init__(self, mapping: dict[int, str]):
        for index, action in mapping.items():
            if action not in BUTTON_ACTIONS:
                raise ValueError(f"button {index}: {action!r} is not one of {', '.join(BUTTON_ACTIONS)}")
        self.mapping = dict(mapping)
        self._held: set[int] = set()
        self._recording = False

    def update(self, pressed: set[int]) -> tuple[bool, frozenset]:
        """(gripper toggled, button events) for the buttons pressed since the last update."""
        new = pressed - self._held
        self._held = set(pressed)
        toggle, events = False, set()
        for index in sorted(new):
            action = self.mapping.get(index)
            if action == GRIPPER_TOGGLE:
                toggle = not toggle
            elif action == "start_stop":
                events.add(Button.STOP if self._recording else Button.START)
                self._recording = not self._recording
            elif action is not None:
                events.add(Button(action))
                if action in (Button.STOP.value, Button.DISCARD.value):
                    self._recording = False
                elif action in (Button.START.value, Button.RERECORD.value):
                    self._recording = True
        return toggle, frozenset(events)

    def reset(self) -> None:
        self._recording = False


@dataclass
class SpaceMouseConfig:
    device: str | None = None  # a model name from pyspacemouse's device list; None: the first found
    device_index: int = 0
    scaling: AxisScaling = field(default_factory=AxisScaling)
    buttons: dict[int, str] = field(default_factory=lambda: {0: GRIPPER_TOGGLE, 1: "start_stop"})
    poll_hz: float = 200.0  # 0: read once per get_command (tests)


def _open_spacemouse(config: SpaceMouseConfig):
    try:
        import pyspacemouse
        from pyspacemouse import AxisConvention
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise DeviceError("pyspacemouse is not installed: pip install -e '.[spacemouse]' "
                          "(and the Debian package libhidapi-hidraw0)") from exc
    try:
        found = pyspacemouse.get_connected_devices()
    except RuntimeError as exc:
        raise DeviceError(f"cannot list HID devices: {exc}; install libhidapi-hidraw0") from exc
    if not found:
        raise DeviceNotFoundError("no SpaceMouse connected; plug it in and check the udev rule that gives your user "
                                  "access to /dev/hidraw* (docs/bringup.md)")
    try:
        return pyspacemouse.open(device=config.device, device_index=config.device_index, nonblocking=True,
                                 axis_convention=AxisConvention.ROS)
    except Exception as exc:
        raise DeviceNotFoundError(f"cannot open the SpaceMouse ({', '.join(found)}): {exc}; another program "
                                  "(3DxWare, spacenavd) may hold it, or /dev/hidraw* is not readable") from exc


class SpaceMouseTeleop(Teleop):
    name = "spacemouse"

    def __init__(self, config: SpaceMouseConfig | None = None, opener: Callable | None = None):
        self.config = config or SpaceMouseConfig()
        self._opener = opener or _open_spacemouse
        self._device = None
        self._edges = ButtonEdges(self.config.buttons)
        self._lock = threading.Lock()
        self._axes = np.zeros(6)
        self._pressed: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None

    def connect(self) -> None:
        self._device = self._opener(self.config)
        self._stop.clear()
        if self.config.poll_hz > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="spacemouse", daemon=True)
            self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        if self._device is not None:
            self._device.close()
            self._device = None

    def poll(self) -> None:
        """Read one report and keep the resulting state."""
        state = self._device.read()
        axes = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=np.float64)
        pressed = {i for i, b in enumerate(state.buttons) if b}
        with self._lock:
            self._axes, self._pressed = axes, pressed

    def _poll_loop(self) -> None:
        period = 1.0 / self.config.poll_hz
        while not self._stop.wait(period):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - reported on the next get_command
                log.error("SpaceMouse read failed: %s", exc)
                self.error = exc
                return

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        if self._device is None:
            self.connect()  # opened on first use: the recorder polls teleop devices without connecting them
        if self.error is not None:
            raise DeviceError(f"the SpaceMouse stopped answering: {self.error}; replug it")
        if self._thread is None:
            self.poll()
        with self._lock:
            axes, pressed = self._axes.copy(), set(self._pressed)
        linear, angular = self.config.scaling.velocities(axes)
        toggle, events = self._edges.update(pressed)
        gripper = (0.0 if state.gripper > 0.5 else 1.0) if toggle else None  # toggles what the arm reports
        return TeleopCommand(linear, angular, gripper, events)

    def reset(self) -> None:
        self._edges.reset()
