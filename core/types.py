"""Plain data shared by the drivers, the recorder and the policy.

Units are SI (metres, radians, seconds). A pose is a position xyz plus a unit
quaternion [x, y, z, w] in the robot base frame. The gripper is a scalar in
[0, 1]: 0 closed, 1 open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.transforms import normalize_quat

#: Layout of a flat action / ee-state vector: x y z qx qy qz qw gripper.
ACTION_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
ACTION_DIM = len(ACTION_NAMES)


@dataclass(frozen=True)
class Pose:
    position: np.ndarray  # (3,) metres
    orientation: np.ndarray  # (4,) unit quaternion xyzw

    def __post_init__(self):
        pos = np.asarray(self.position, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"pose position {pos!r} is not finite")
        object.__setattr__(self, "position", pos)
        object.__setattr__(self, "orientation", normalize_quat(self.orientation))

    def as_array(self) -> np.ndarray:
        return np.concatenate([self.position, self.orientation])


@dataclass(frozen=True)
class Action:
    """An absolute target for one control tick."""

    pose: Pose
    gripper: float

    def __post_init__(self):
        if not np.isfinite(self.gripper):
            raise ValueError(f"gripper command {self.gripper!r} is not finite")

    def as_array(self) -> np.ndarray:
        return np.concatenate([self.pose.as_array(), [self.gripper]]).astype(np.float32)

    @classmethod
    def from_array(cls, a) -> "Action":
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        if a.shape[0] != ACTION_DIM:
            raise ValueError(f"an action vector has {ACTION_DIM} values {ACTION_NAMES}, got {a.shape[0]}")
        return cls(Pose(a[:3], a[3:7]), float(a[7]))


@dataclass(frozen=True)
class RobotState:
    host_time: float  # host monotonic clock (s) when the state was read
    ee_pose: Pose
    gripper: float  # measured opening in [0, 1]
    joint_positions: np.ndarray  # (n,) radians (prismatic joints in metres)

    def ee_array(self) -> np.ndarray:
        """The state in the action layout: x y z qx qy qz qw gripper."""
        return np.concatenate([self.ee_pose.as_array(), [self.gripper]]).astype(np.float32)


@dataclass(frozen=True)
class Frame:
    """One camera image with its timing."""

    image: np.ndarray  # HxWx3 uint8 RGB
    device_time: float | None  # the camera's own clock (s), None when it has none
    host_time: float  # host monotonic clock (s) at receive
    sequence: int  # increases by one per frame the camera delivered
    camera: str = ""


@dataclass(frozen=True)
class TeleopCommand:
    """An incremental command from an operator device.

    Velocities are in the robot base frame; the control loop integrates them
    over its tick into an absolute target. ``gripper`` is an absolute target in
    [0, 1] or None for "leave as is". ``buttons`` holds the events of this poll
    (see :class:`robot_drivers.teleop.Button`).
    """

    linear_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # m/s
    angular_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rad/s, rotation vector rate
    gripper: float | None = None
    buttons: frozenset = frozenset()
