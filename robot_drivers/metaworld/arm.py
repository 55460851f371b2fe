"""The Meta-World Sawyer behind the Arm interface: absolute targets in, Meta-World's delta actions out.

The hand's orientation is fixed in Meta-World: a target's orientation is ignored and what was sent carries
the fixed one. The gripper command in [0, 1] (1 open) becomes Meta-World's effort (1 - 2 x command); the
measured gripper is Meta-World's finger opening (1 open, ~0.3 closed on nothing).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from core.errors import NotConnectedError
from core.types import Action, Pose, RobotState
from robot_drivers.arm import Arm
from robot_drivers.metaworld.env import HAND_QUAT_XYZW, MetaWorldEnv

#: ``home`` is reached when the hand is this close (m) to its start position.
HOME_TOLERANCE_M = 0.005


class MetaWorldArm(Arm):
    name = "metaworld-sawyer"

    def __init__(self, env: MetaWorldEnv, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], None] = time.sleep):
        """``wait(seconds)`` lets simulated time pass: a sleep in real time, steps of the world in lock-step."""
        self._env = env
        self._clock = clock
        self._wait = wait

    def _require(self) -> None:
        if not self._connected:
            raise NotConnectedError("the Meta-World arm is not connected; call connect() first")

    def get_state(self) -> RobotState:
        self._require()
        env = self._env
        with env.lock:
            hand, opening, joints = env.hand_position(), env.finger_opening(), env.joint_positions()
        return RobotState(host_time=self._clock(), ee_pose=Pose(hand, HAND_QUAT_XYZW), gripper=opening,
                          joint_positions=joints)

    def send_action(self, action: Action) -> Action:
        self._require()
        self._env.command(action.pose.position, float(action.gripper))
        with self._env.lock:
            target, gripper = self._env.target.copy(), self._env.gripper_command
        return Action(Pose(target, HAND_QUAT_XYZW), gripper)

    def home(self, timeout: float = 5.0) -> None:
        """Move the hand to the task's start position and open the gripper."""
        self._require()
        env = self._env
        home = np.asarray(env.env.hand_init_pos, dtype=np.float64)
        env.command(home, 1.0)
        waited = 0.0
        while waited < timeout and np.linalg.norm(env.hand_position() - home) > HOME_TOLERANCE_M:
            self._wait(0.05)
            waited += 0.05

    def stop(self) -> float | None:
        self._require()
        return self._env.hold()
