"""The arm interface every backend (sim, xArm, UR, fake) implements."""

from __future__ import annotations

from abc import abstractmethod

from core.types import Action, RobotState
from robot_drivers.device import Device


class Arm(Device):
    """An arm with a gripper, commanded by absolute end-effector targets.

    Backends only translate to their controller; limits are enforced by
    :class:`robot_drivers.safety.SafeArm`, which wraps every arm the program
    moves. The life cycle (connect, disconnect, ``with``) is :class:`Device`'s.
    """

    name: str = "arm"

    @abstractmethod
    def get_state(self) -> RobotState: ...

    @abstractmethod
    def send_action(self, action: Action) -> Action:
        """Command an absolute target for this tick; returns what was actually sent."""

    @abstractmethod
    def home(self) -> None:
        """Move to the configured home pose and open the gripper (blocking)."""

    @abstractmethod
    def stop(self) -> None:
        """Halt motion now: hold the current joint positions."""
