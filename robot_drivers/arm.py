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
    def stop(self) -> float | None:
        """Halt motion now: hold the current joint positions, and the fingers where they are.

        A gripper motion under way (a close or an open) stops where the stop finds it; fingers at rest keep
        their command, so a grip already closed on something keeps its grip. Returns the gripper command the
        driver now holds when the stop changed it (a motion under way frozen), else None: what the gripper
        was last told then still holds.
        """
