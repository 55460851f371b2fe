"""A scripted operator for the simulated rig.

It drives the same :class:`Teleop` interface a SpaceMouse does (velocities,
gripper, buttons) and, like a person, looks at the scene (the mug pose) and at
the arm (the measured state). Human-like variation per episode: reaction
delay, overall pace, a curved approach through a random via point, a slightly
off-centre grasp, hand tremor and a variable pause before lifting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from robot_drivers.teleop import Button, Teleop
from core.transforms import euler_to_quat, normalize_quat, quat_conjugate, quat_multiply
from core.types import RobotState, TeleopCommand
from robot_drivers.sim.world import SimWorld


class Phase(str, Enum):
    WAIT = "wait"
    APPROACH = "approach"
    ABOVE = "above"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"
    HOLD = "hold"
    DONE = "done"


@dataclass
class ExpertConfig:
    max_speed: float = 0.25  # m/s at full pace
    max_angular_speed: float = 1.2  # rad/s
    pace: tuple[float, float] = (0.65, 1.0)  # per-episode fraction of max speed
    reaction_ticks: tuple[int, int] = (0, 5)
    approach_clearance: float = 0.10  # height of the pre-grasp pose above the grasp pose (m)
    grasp_height: float = 0.05  # grasp point above the table (m); the hand's palm then clears the mug rim
    grasp_offset_sd: float = 0.002  # operator's aim error (m)
    lift_height: float = 0.15
    close_ticks: tuple[int, int] = (4, 8)
    hold_ticks: tuple[int, int] = (3, 6)
    tremor_sd: float = 0.004  # m/s
    tolerance: float = 0.006  # m, waypoint reached
    gain: float = 0.6  # fraction of the remaining error commanded per tick


def grasp_yaw(mug_yaw: float) -> float:
    """Gripper yaw whose fingers close across the mug body, perpendicular to the handle.

    The gripper is symmetric under a half turn, so the equivalent yaw nearest
    zero is chosen to keep the wrist away from its limits.
    """
    # At gripper yaw 0 the fingers close along the base y axis, which is the
    # handle's axis at mug yaw 0: a quarter turn puts them across it.
    yaw = mug_yaw + np.pi / 2
    return float((yaw + np.pi / 2) % np.pi - np.pi / 2)


class ScriptedExpert(Teleop):
    name = "scripted"

    def __init__(self, world: SimWorld, seed: int = 0, config: ExpertConfig | None = None):
        self._world = world
        self.config = config or ExpertConfig()
        self._rng = np.random.default_rng(seed)
        self.phase = Phase.DONE

    def reset(self, seed: int | None = None) -> None:
        """Plan a new episode from the mug's current pose."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        c, rng = self.config, self._rng
        mug = self._world.mug_pose()
        mug_yaw = float(np.arctan2(2 * (mug.orientation[3] * mug.orientation[2] + mug.orientation[0] * mug.orientation[1]),
                                   1 - 2 * (mug.orientation[1] ** 2 + mug.orientation[2] ** 2)))
        grasp = np.array([mug.position[0], mug.position[1], c.grasp_height])
        grasp[:2] += rng.normal(0, c.grasp_offset_sd, 2)
        above = grasp + np.array([0, 0, c.approach_clearance + rng.uniform(-0.01, 0.02)])
        self._yaw = grasp_yaw(mug_yaw)
        self._orientation = euler_to_quat(np.pi, 0.0, self._yaw)
        self._speed = c.max_speed * rng.uniform(*c.pace)
        self._waypoints = {
            Phase.APPROACH: None,  # set from the start pose on the first command
            Phase.ABOVE: above,
            Phase.DESCEND: grasp,
            Phase.LIFT: grasp + np.array([0, 0, c.lift_height]),
        }
        self._via_offset = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.06, 0.06), rng.uniform(0.0, 0.05)])
        self._counter = int(rng.integers(c.reaction_ticks[0], c.reaction_ticks[1] + 1))
        self.phase = Phase.WAIT

    def _toward(self, position: np.ndarray, target: np.ndarray, dt: float, speed: float) -> np.ndarray:
        error = target - position
        v = error * self.config.gain / dt
        n = np.linalg.norm(v)
        if n > speed:
            v *= speed / n
        return v + self._rng.normal(0, self.config.tremor_sd, 3)

    def _orient(self, state: RobotState, dt: float) -> np.ndarray:
        q = normalize_quat(quat_multiply(self._orientation, quat_conjugate(state.ee_pose.orientation)))
        angle = 2 * np.arccos(np.clip(q[3], -1, 1))
        if angle < 1e-6:
            return np.zeros(3)
        axis = q[:3] / np.linalg.norm(q[:3])
        w = axis * angle * self.config.gain / dt
        n = np.linalg.norm(w)
        return w * (self.config.max_angular_speed / n) if n > self.config.max_angular_speed else w

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        c = self.config
        pos = state.ee_pose.position
        if self.phase == Phase.DONE:
            return TeleopCommand()
        if self.phase == Phase.WAIT:
            self._counter -= 1
            if self._counter < 0:
                start, above = pos.copy(), self._waypoints[Phase.ABOVE]
                self._waypoints[Phase.APPROACH] = (start + above) / 2 + self._via_offset
                self.phase = Phase.APPROACH
            return TeleopCommand()
        if self.phase in (Phase.APPROACH, Phase.ABOVE, Phase.DESCEND, Phase.LIFT):
            target = self._waypoints[self.phase]
            speed = self._speed * (0.5 if self.phase == Phase.DESCEND else 1.0)
            reached = np.linalg.norm(target - pos) < (c.tolerance * (4 if self.phase == Phase.APPROACH else 1))
            gripper = 0.0 if self.phase == Phase.LIFT else 1.0
            if reached:
                nxt = {Phase.APPROACH: Phase.ABOVE, Phase.ABOVE: Phase.DESCEND,
                       Phase.DESCEND: Phase.CLOSE, Phase.LIFT: Phase.HOLD}[self.phase]
                if nxt == Phase.CLOSE:
                    self._counter = int(self._rng.integers(c.close_ticks[0], c.close_ticks[1] + 1))
                elif nxt == Phase.HOLD:
                    self._counter = int(self._rng.integers(c.hold_ticks[0], c.hold_ticks[1] + 1))
                self.phase = nxt
            return TeleopCommand(self._toward(pos, target, dt, speed), self._orient(state, dt), gripper)
        if self.phase == Phase.CLOSE:
            self._counter -= 1
            if self._counter < 0:
                self.phase = Phase.LIFT
            return TeleopCommand(np.zeros(3), self._orient(state, dt), 0.0)
        # HOLD: keep still with the mug up, then tell the recorder the episode is over.
        self._counter -= 1
        if self._counter < 0:
            self.phase = Phase.DONE
            return TeleopCommand(gripper=0.0, buttons=frozenset({Button.STOP}))
        return TeleopCommand(gripper=0.0)

    @property
    def done(self) -> bool:
        return self.phase == Phase.DONE
