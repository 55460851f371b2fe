"""The simulated Panda behind the Arm interface (IK to the ee target, joint motors, gripper)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from robot_drivers.arm import Arm
from core.errors import NotConnectedError
from core.transforms import normalize_quat
from core.types import Action, Pose, RobotState
from robot_drivers.sim.world import FINGER_MAX_OPENING, PANDA_GRASP_LINK, PANDA_REST_JOINTS, SimWorld


class SimArm(Arm):
    name = "sim-panda"

    def __init__(self, world: SimWorld, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], None] = time.sleep):
        """``wait(seconds)`` lets simulated time pass: a sleep in real time, physics steps in lock-step."""
        self._world = world
        self._clock = clock
        self._wait = wait

    def _require(self) -> None:
        if not self._connected:
            raise NotConnectedError("sim arm is not connected; call connect() first")

    def get_state(self) -> RobotState:
        self._require()
        with self._world.lock:
            pos, orn = self._world.link_pose_world(PANDA_GRASP_LINK)
            joints = self._world.joint_positions()
        gripper = float(np.clip((joints[7] + joints[8]) / (2 * FINGER_MAX_OPENING), 0.0, 1.0))
        return RobotState(host_time=self._clock(), ee_pose=Pose(self._world.to_base(pos), orn),
                          gripper=gripper, joint_positions=joints)

    def send_action(self, action: Action) -> Action:
        self._require()
        q = self._world.inverse_kinematics(action.pose.position, normalize_quat(action.pose.orientation))
        self._world.command_joints(q, float(np.clip(action.gripper, 0, 1)) * FINGER_MAX_OPENING)
        return action

    def home(self, timeout: float = 5.0) -> None:
        """Drive the joints to the rest configuration and open the gripper."""
        self._require()
        self._world.command_joints(PANDA_REST_JOINTS, FINGER_MAX_OPENING)
        waited = 0.0
        while waited < timeout:
            if np.max(np.abs(self._world.joint_positions()[:7] - PANDA_REST_JOINTS)) < 0.01:
                return
            self._wait(0.05)
            waited += 0.05

    def stop(self) -> float | None:
        self._require()
        return self._world.hold_current()
