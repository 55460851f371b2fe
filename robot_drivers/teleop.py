"""Teleoperation devices and the integrator that turns their commands into absolute targets."""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from enum import Enum

import numpy as np

from core.transforms import normalize_quat, quat_multiply, rotvec_to_quat
from core.types import Action, Pose, RobotState, TeleopCommand
from robot_drivers.device import Device
from robot_drivers.registry import one_of


class Button(str, Enum):
    """Operator events a teleop device can raise (pedals, SpaceMouse buttons, keys)."""

    START = "start"  # start recording an episode
    STOP = "stop"  # end the episode (keep it)
    DISCARD = "discard"  # end the episode and throw it away
    RERECORD = "rerecord"  # discard and start the same episode again
    ESTOP = "estop"  # stop the arm now


# -- the axes and buttons of hand-held devices (SpaceMouse, gamepad) ---------------------------------------
GRIPPER_TOGGLE = "gripper"
BUTTON_ACTIONS = (GRIPPER_TOGGLE, "start_stop", *(b.value for b in Button))
MAX_BUTTON = 63
_BUTTON = re.compile(r"0|[1-9][0-9]?")


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


def hand_controller_from_rig_table(t, dead_zone: float) -> dict:
    """The axis scaling and button map of a hand-held device from its rig file's ``[teleop]`` table ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`), as its config's keyword arguments (``buttons`` only when the
    file maps them). ``dead_zone`` is the device's default. The keys:

        signs               six values of 1 or -1
        dead_zone           [0, 0.95]
        max_linear_speed    (0, 0.5] m/s (default 0.10)
        max_angular_speed   (0, 3] rad/s (default 0.6)
        operator_yaw_deg    [-180, 180] (default 0)
        buttons             button numbers 0..63 mapped to a known action, e.g. { 0 = "gripper" }
    """
    signs = t.vec("signs", 6, (1, 1, 1, 1, 1, 1))
    if any(v not in (1.0, -1.0) for v in signs):
        raise t.fail("signs", f"must be six values of 1 or -1, got {list(signs)}")
    scaling = t.checked(lambda: AxisScaling(
        dead_zone=t.num("dead_zone", dead_zone, 0.0, 0.95),
        max_linear_speed=t.num("max_linear_speed", 0.10, 0.0, 0.5, low_open=True, unit="m/s"),
        max_angular_speed=t.num("max_angular_speed", 0.6, 0.0, 3.0, low_open=True, unit="rad/s"),
        signs=signs,
        operator_yaw_deg=t.num("operator_yaw_deg", 0.0, -180.0, 180.0, unit="degrees")))
    raw_buttons = t.get("buttons", None)
    if raw_buttons is None:
        return {"scaling": scaling}
    if not isinstance(raw_buttons, dict):
        raise t.fail("buttons", "must be a table such as { 0 = \"gripper\", 1 = \"start_stop\" }")
    buttons = {}
    for key, action in raw_buttons.items():
        if not _BUTTON.fullmatch(key) or int(key) > MAX_BUTTON:
            raise t.fail(f"buttons.{key}", f"must be a button number in 0..{MAX_BUTTON}")
        if not isinstance(action, str) or action not in BUTTON_ACTIONS:
            raise t.fail(f"buttons.{key}", f"must be {one_of(BUTTON_ACTIONS)}, got {action!r}")
        buttons[int(key)] = action
    return {"scaling": scaling, "buttons": buttons}


class Teleop(Device):
    """A source of incremental operator commands, polled once per control tick (the life cycle is
    :class:`Device`'s: devices that need no connection leave its hooks alone)."""

    name: str = "teleop"
    #: how far (m) the integrated target may lead the measured pose (:class:`TargetIntegrator`); None: its default
    leash_m: float | None = None

    @abstractmethod
    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        """The operator's command for the next tick of length ``dt`` seconds.

        ``state`` is the measured arm state; human-driven devices ignore it,
        scripted operators use it the way a person uses their eyes.
        """

    def reset(self) -> None:
        """Called between episodes."""


class TargetIntegrator:
    """Integrates velocity commands into an absolute end-effector target.

    The target is re-anchored to what the safety layer actually sent, so a
    clipped command never winds up into a target far ahead of the arm.
    """

    def __init__(self, start: Action, leash: float = 0.03):
        self._target = start
        self.leash = leash

    def anchor(self, measured: Pose) -> None:
        """Keep the target within ``leash`` metres of the measured pose.

        When the arm is blocked (a collision, a joint limit) the target would
        otherwise run away from it and the arm would lunge once freed.
        """
        offset = self._target.pose.position - measured.position
        dist = float(np.linalg.norm(offset))
        if dist > self.leash:
            position = measured.position + offset * (self.leash / dist)
            self._target = Action(Pose(position, self._target.pose.orientation), self._target.gripper)

    @property
    def target(self) -> Action:
        return self._target

    def step(self, command: TeleopCommand, dt: float) -> Action:
        pose = self._target.pose
        position = pose.position + np.asarray(command.linear_velocity, dtype=np.float64) * dt
        delta = rotvec_to_quat(np.asarray(command.angular_velocity, dtype=np.float64) * dt)
        orientation = normalize_quat(quat_multiply(delta, pose.orientation))  # base-frame rotation
        gripper = self._target.gripper if command.gripper is None else float(command.gripper)
        self._target = Action(Pose(position, orientation), gripper)
        return self._target

    def sync(self, sent: Action) -> None:
        self._target = sent


class CombinedTeleop(Teleop):
    """Several devices at once (the keyboard is always there, plus a SpaceMouse, say).

    Velocities add up; buttons are merged; the gripper follows whichever device
    changed its gripper command most recently.
    """

    name = "combined"

    def __init__(self, devices: list[Teleop]):
        self.devices = list(devices)
        self._last_gripper: list[float | None] = [None] * len(self.devices)
        self._gripper: float | None = None

    def _connect(self) -> None:
        for device in self.devices:
            device.connect()

    def _disconnect(self) -> None:
        for device in self.devices:
            device.disconnect()

    def reset(self) -> None:
        for device in self.devices:
            device.reset()
        self._last_gripper = [None] * len(self.devices)
        self._gripper = None

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        linear, angular, buttons = np.zeros(3), np.zeros(3), frozenset()
        for i, device in enumerate(self.devices):
            cmd = device.get_command(state, dt)
            linear = linear + np.asarray(cmd.linear_velocity, dtype=np.float64)
            angular = angular + np.asarray(cmd.angular_velocity, dtype=np.float64)
            buttons = buttons | cmd.buttons
            if cmd.gripper is not None and cmd.gripper != self._last_gripper[i]:
                self._gripper = cmd.gripper
            self._last_gripper[i] = cmd.gripper
        return TeleopCommand(linear, angular, self._gripper, buttons)
