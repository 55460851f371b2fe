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

:func:`dead_zone`, :class:`AxisScaling` and :class:`ButtonEdges` (in :mod:`robot_drivers.teleop`) are shared
with the gamepad.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.errors import DeviceError, DeviceNotFoundError
from robot_drivers.teleop import (GRIPPER_TOGGLE, AxisScaling, ButtonEdges, Teleop, dead_zone,  # noqa: F401
                                  hand_controller_from_rig_table)
from core.types import RobotState, TeleopCommand
from robot_drivers.registry import register_teleop

log = logging.getLogger(__name__)


@dataclass
class SpaceMouseConfig:
    device: str | None = None  # a model name from pyspacemouse's device list; None: the first found
    device_index: int = 0
    scaling: AxisScaling = field(default_factory=AxisScaling)
    buttons: dict[int, str] = field(default_factory=lambda: {0: GRIPPER_TOGGLE, 1: "start_stop"})
    poll_hz: float = 200.0  # 0: read once per get_command (tests)


def spacemouse_from_rig_table(t) -> SpaceMouseConfig:
    """A SpaceMouse's config from its rig file's ``[teleop]`` table ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`): the axes and buttons of
    :func:`robot_drivers.teleop.hand_controller_from_rig_table` (dead_zone 0.1 by default), and

        device   a model name from pyspacemouse's device list (default: the first found)
    """
    hand = hand_controller_from_rig_table(t, dead_zone=0.1)
    device = t.str("device", None)
    if device is not None and not device.strip():
        raise t.fail("device", "is empty; give a model name (see pyspacemouse's device list) or leave it out")
    return SpaceMouseConfig(device=device, **hand)


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


@register_teleop("spacemouse", SpaceMouseConfig, parse=spacemouse_from_rig_table)
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

    def _connect(self) -> None:
        self._device = self._opener(self.config)
        self._stop.clear()
        if self.config.poll_hz > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="spacemouse", daemon=True)
            self._thread.start()

    def _disconnect(self) -> None:
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
