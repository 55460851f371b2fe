"""Teleoperation devices and the integrator that turns their commands into absolute targets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum

import numpy as np

from core.transforms import normalize_quat, quat_multiply, rotvec_to_quat
from core.types import Action, Pose, RobotState, TeleopCommand


class Button(str, Enum):
    """Operator events a teleop device can raise (pedals, SpaceMouse buttons, keys)."""

    START = "start"  # start recording an episode
    STOP = "stop"  # end the episode (keep it)
    DISCARD = "discard"  # end the episode and throw it away
    RERECORD = "rerecord"  # discard and start the same episode again
    ESTOP = "estop"  # stop the arm now


class Teleop(ABC):
    """A source of incremental operator commands, polled once per control tick."""

    name: str = "teleop"

    def connect(self) -> None:
        """Open the device (no-op for devices that need no connection)."""

    def disconnect(self) -> None:
        """Release the device."""

    @abstractmethod
    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        """The operator's command for the next tick of length ``dt`` seconds.

        ``state`` is the measured arm state; human-driven devices ignore it,
        scripted operators use it the way a person uses their eyes.
        """

    def reset(self) -> None:
        """Called between episodes."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
        return False


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

    def connect(self) -> None:
        for device in self.devices:
            device.connect()

    def disconnect(self) -> None:
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
