"""The PyBullet world of the simulated rig: table, Panda, mug, props, lights.

PyBullet is not thread-safe, so every call into it goes through ``world.lock``.
All positions handed out by this module are in the robot base frame unless a
name says ``world``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pybullet_data

from robot_drivers.sim._quiet import quiet_import_pybullet

pb = quiet_import_pybullet()

from core.transforms import normalize_quat
from robot_drivers.sim.scene import Lighting

TABLE_TOP_Z = 0.626  # world height of the table surface (table/table.urdf at the origin)
PANDA_ARM_JOINTS = tuple(range(7))
PANDA_FINGER_JOINTS = (9, 10)
PANDA_HAND_LINK = 8
PANDA_GRASP_LINK = 11  # panda_grasptarget: between the fingertips
PANDA_FINGER_LINKS = (9, 10)
FINGER_MAX_OPENING = 0.04  # metres per finger
#: A finger slower than this is at rest (closed on something, closed, or open): a stop keeps its target. A close
#: starts near 1 m/s and slows as the fingers near their target (below this speed they are within 1 mm of it);
#: fingers settled on the mug move at under 0.002 m/s.
FINGERS_AT_REST_M_S = 0.02
#: Fingers told a new opening this recently count as moving whatever their speed (they have not picked it up yet).
FINGER_REACTION_S = 0.02
#: A comfortable elbow-up configuration with the gripper pointing down.
PANDA_REST_JOINTS = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785)

@dataclass
class WorldConfig:
    robot_base_world: tuple[float, float, float] = (-0.55, 0.0, TABLE_TOP_Z)
    physics_hz: int = 240
    mug_scale: float = 0.72  # the stock mug (8.8 cm) is wider than the Panda's 8 cm opening; leaves ~1 cm a side
    mug_mass: float = 0.2
    mug_friction: float = 1.0
    finger_friction: float = 1.0
    finger_force: float = 40.0
    solver_iterations: int = 100


@dataclass(frozen=True)
class WorldSnapshot:
    time: float
    joints: tuple[float, ...]
    bodies: tuple  # (position, orientation) in world frame: the mug, then each distractor
    distractor_models: tuple[tuple[str, float], ...]
    lighting: Lighting
    scene: int = 0  # the world's scene count (:attr:`SimWorld.scene_count`): a new scene is drawn anew

    def shows_same_as(self, other: "WorldSnapshot", arm_tolerance: float, tolerance: float) -> bool:
        """True when a render of ``other`` is a true picture of this snapshot: the same scene (no reset in
        between), props and lights, no arm joint turned by more than ``arm_tolerance`` (rad), and no finger
        (m), body position (m) or orientation component moved by more than ``tolerance``. The time is not
        compared: nothing in an image shows it."""
        if (self.scene, self.distractor_models, self.lighting) != (other.scene, other.distractor_models,
                                                                    other.lighting):
            return False
        if len(self.joints) != len(other.joints) or len(self.bodies) != len(other.bodies):
            return False
        arm = len(PANDA_ARM_JOINTS)
        if any(abs(a - b) > (arm_tolerance if j < arm else tolerance)
               for j, (a, b) in enumerate(zip(self.joints, other.joints))):
            return False
        return all(abs(a - b) <= tolerance
                   for (pa, oa), (pb_, ob) in zip(self.bodies, other.bodies)
                   for a, b in zip((*pa, *oa), (*pb_, *ob)))


@dataclass
class ObjectPose:
    position: np.ndarray  # base frame
    orientation: np.ndarray  # xyzw


class SimWorld:
    """Owns the PyBullet client and everything in it."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.lock = threading.RLock()
        self.base_world = np.asarray(self.config.robot_base_world, dtype=np.float64)
        self.lighting = Lighting()
        self.time = 0.0  # simulated seconds since the world was created (never goes back)
        self._finger_target, self._finger_target_since = FINGER_MAX_OPENING, -1.0  # the fingers' target, and since
        self.scene_count = 0  # scenes set up so far (each reset adds one)
        self._physics_dt = 1.0 / self.config.physics_hz
        self._client = pb.connect(pb.DIRECT)
        self._distractors: list[int] = []
        self._distractor_models: tuple[tuple[str, float], ...] = ()
        self._load_scene()

    # -- scene ------------------------------------------------------------
    def _call(self, fn, *args, **kwargs):
        return fn(*args, physicsClientId=self._client, **kwargs)

    def _load_scene(self) -> None:
        c = self.config
        with self.lock:
            self._call(pb.resetSimulation)
            self._call(pb.setAdditionalSearchPath, pybullet_data.getDataPath())
            self._call(pb.setGravity, 0, 0, -9.81)
            self._call(pb.setPhysicsEngineParameter, fixedTimeStep=self._physics_dt,
                       numSolverIterations=c.solver_iterations, deterministicOverlappingPairs=1)
            self.plane = self._call(pb.loadURDF, "plane.urdf")
            self.table = self._call(pb.loadURDF, "table/table.urdf", [0, 0, 0], useFixedBase=True)
            self.robot = self._call(pb.loadURDF, "franka_panda/panda.urdf", self.base_world.tolist(),
                                    useFixedBase=True, flags=pb.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT)
            self.mug = self._call(pb.loadURDF, "objects/mug.urdf", [0.5, 0, TABLE_TOP_Z + 0.01],
                                  globalScaling=c.mug_scale)
            r = 0.044 * c.mug_scale
            self._call(pb.changeDynamics, self.mug, -1, mass=c.mug_mass, lateralFriction=c.mug_friction,
                       spinningFriction=0.002, rollingFriction=0.0001,
                       localInertiaDiagonal=[c.mug_mass * r * r / 2] * 2 + [c.mug_mass * r * r])
            for link in PANDA_FINGER_LINKS:
                self._call(pb.changeDynamics, self.robot, link, lateralFriction=c.finger_friction,
                           spinningFriction=0.1)
            # The real Panda's fingers are geared together; without this a grasped
            # mug slides between two independently saturated finger motors.
            gear = self._call(pb.createConstraint, self.robot, PANDA_FINGER_LINKS[0], self.robot,
                              PANDA_FINGER_LINKS[1], pb.JOINT_GEAR, [1, 0, 0], [0, 0, 0], [0, 0, 0])
            self._call(pb.changeConstraint, gear, gearRatio=-1, erp=0.1, maxForce=50)
            self._call(pb.changeDynamics, self.table, -1, lateralFriction=0.8)
            for j, q in zip(PANDA_ARM_JOINTS, PANDA_REST_JOINTS):
                self._call(pb.resetJointState, self.robot, j, q)
            for j in PANDA_FINGER_JOINTS:
                self._call(pb.resetJointState, self.robot, j, FINGER_MAX_OPENING)
        info = [self._call(pb.getJointInfo, self.robot, j) for j in PANDA_ARM_JOINTS]
        self.joint_lower = np.array([i[8] for i in info])
        self.joint_upper = np.array([i[9] for i in info])
        self.joint_max_force = np.array([i[10] for i in info])

    def reset(self, mug_xy_yaw: tuple[float, float, float], distractors=(), lighting: Lighting | None = None,
              arm_joints=PANDA_REST_JOINTS) -> None:
        """Put the arm at rest, the mug at (x, y, yaw) in the base frame, and the props given."""
        x, y, yaw = mug_xy_yaw
        with self.lock:
            for body in self._distractors:
                self._call(pb.removeBody, body)
            self._distractors = []
            self._distractor_models = tuple((model, scale) for model, scale, _ in distractors)
            for j, q in zip(PANDA_ARM_JOINTS, arm_joints):
                self._call(pb.resetJointState, self.robot, j, q)
                self._call(pb.setJointMotorControl2, self.robot, j, pb.POSITION_CONTROL, targetPosition=q,
                           force=float(self.joint_max_force[j]))
            for j in PANDA_FINGER_JOINTS:
                self._call(pb.resetJointState, self.robot, j, FINGER_MAX_OPENING)
                self._call(pb.setJointMotorControl2, self.robot, j, pb.POSITION_CONTROL,
                           targetPosition=FINGER_MAX_OPENING, force=self.config.finger_force)
            self._finger_target, self._finger_target_since = FINGER_MAX_OPENING, -1.0
            self._place(self.mug, x, y, yaw, z=0.0)
            for model, scale, (dx, dy, dyaw) in distractors:
                body = self._call(pb.loadURDF, model, globalScaling=scale)
                self._distractors.append(body)
                self._place(body, dx, dy, dyaw, z=None)
            self.lighting = lighting or Lighting()
            self.scene_count += 1
            # Let the objects settle onto the table before the first tick.
            self.step(int(0.25 * self.config.physics_hz))

    def _place(self, body: int, x: float, y: float, yaw: float, z: float | None) -> None:
        orientation = self._call(pb.getQuaternionFromEuler, [0, 0, yaw])
        self._call(pb.resetBasePositionAndOrientation, body, [0, 0, 5.0], orientation)
        lo, _ = self._call(pb.getAABB, body)
        pos, _ = self._call(pb.getBasePositionAndOrientation, body)
        # Drop the body so that its lowest point rests on the table top.
        lift = (pos[2] - lo[2]) + 0.001
        world = self.base_world + np.array([x, y, 0.0])
        self._call(pb.resetBasePositionAndOrientation, body, [world[0], world[1], TABLE_TOP_Z + lift],
                   orientation)
        self._call(pb.resetBaseVelocity, body, [0, 0, 0], [0, 0, 0])

    # -- physics ----------------------------------------------------------
    @property
    def physics_dt(self) -> float:
        return self._physics_dt

    def step(self, n: int = 1) -> None:
        with self.lock:
            for _ in range(n):
                self._call(pb.stepSimulation)
            self.time += n * self._physics_dt

    # -- queries ----------------------------------------------------------
    def to_base(self, world_position) -> np.ndarray:
        return np.asarray(world_position, dtype=np.float64) - self.base_world

    def to_world(self, base_position) -> np.ndarray:
        return np.asarray(base_position, dtype=np.float64) + self.base_world

    def body_pose(self, body: int) -> ObjectPose:
        with self.lock:
            pos, orn = self._call(pb.getBasePositionAndOrientation, body)
        return ObjectPose(self.to_base(pos), normalize_quat(orn))

    def mug_pose(self) -> ObjectPose:
        return self.body_pose(self.mug)

    def mug_height_above_table(self) -> float:
        """Height of the mug's lowest point above the table surface (m)."""
        with self.lock:
            lo, _ = self._call(pb.getAABB, self.mug)
        return float(lo[2] - TABLE_TOP_Z)

    def fingers_touching(self, body: int) -> tuple[bool, bool]:
        with self.lock:
            return tuple(bool(self._call(pb.getContactPoints, self.robot, body, link))  # type: ignore[return-value]
                         for link in PANDA_FINGER_LINKS)

    def link_pose_world(self, link: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            s = self._call(pb.getLinkState, self.robot, link, computeForwardKinematics=True)
        return np.asarray(s[4]), np.asarray(s[5])

    def joint_positions(self) -> np.ndarray:
        with self.lock:
            states = self._call(pb.getJointStates, self.robot, list(PANDA_ARM_JOINTS) + list(PANDA_FINGER_JOINTS))
        return np.array([s[0] for s in states])

    # -- control ----------------------------------------------------------
    def inverse_kinematics(self, base_position, orientation) -> np.ndarray:
        world = self.to_world(base_position)
        lower, upper = self.joint_lower, self.joint_upper
        with self.lock:
            q = self._call(
                pb.calculateInverseKinematics, self.robot, PANDA_GRASP_LINK, world.tolist(),
                list(orientation), lowerLimits=lower.tolist() + [0, 0], upperLimits=upper.tolist() + [0.04, 0.04],
                jointRanges=(upper - lower).tolist() + [0.04, 0.04],
                restPoses=list(PANDA_REST_JOINTS) + [0.04, 0.04], maxNumIterations=100, residualThreshold=1e-5)
        return np.clip(np.asarray(q[:7]), lower, upper)

    def command_joints(self, arm_targets, finger_opening: float) -> None:
        with self.lock:
            self._call(pb.setJointMotorControlArray, self.robot, list(PANDA_ARM_JOINTS), pb.POSITION_CONTROL,
                       targetPositions=list(arm_targets), forces=self.joint_max_force.tolist(),
                       positionGains=[0.1] * 7, velocityGains=[1.0] * 7)
            self._call(pb.setJointMotorControlArray, self.robot, list(PANDA_FINGER_JOINTS), pb.POSITION_CONTROL,
                       targetPositions=[finger_opening] * 2, forces=[self.config.finger_force] * 2)
            if finger_opening != self._finger_target:
                self._finger_target, self._finger_target_since = finger_opening, self.time

    def hold_current(self) -> float | None:
        """Hold the arm where it is now (the sim's stop), and the fingers where they are if they are moving.

        Fingers at rest, or with something between both, keep their target (a grip closed on the mug keeps
        squeezing it, even one the close has only just made); fingers closing or opening, or told to within
        FINGER_REACTION_S (not moving yet), get their present position as the target and are braked, so the
        motion under way, or about to begin, ends here. Returns that opening in [0, 1] when the fingers were
        frozen, else None."""
        with self.lock:  # read and command under one hold: a reset in between would be undone
            q = self.joint_positions()
            self._call(pb.setJointMotorControlArray, self.robot, list(PANDA_ARM_JOINTS), pb.POSITION_CONTROL,
                       targetPositions=q[:7].tolist(), forces=self.joint_max_force.tolist())
            for j in PANDA_ARM_JOINTS:
                self._call(pb.resetJointState, self.robot, j, float(q[j]), 0.0)
            fingers = self._call(pb.getJointStates, self.robot, list(PANDA_FINGER_JOINTS))
            just_told = self.time - self._finger_target_since < FINGER_REACTION_S  # a motion about to begin
            gripping = any(all(self.fingers_touching(body)) for body in [self.mug, *self._distractors])
            if (max(abs(f[1]) for f in fingers) <= FINGERS_AT_REST_M_S and not just_told) or gripping:
                return None
            held = [float(f[0]) for f in fingers]
            self._call(pb.setJointMotorControlArray, self.robot, list(PANDA_FINGER_JOINTS), pb.POSITION_CONTROL,
                       targetPositions=held, forces=[self.config.finger_force] * 2)
            for j, position in zip(PANDA_FINGER_JOINTS, held):  # braked, as the arm's joints are
                self._call(pb.resetJointState, self.robot, j, position, 0.0)
            self._finger_target, self._finger_target_since = float(np.mean(held)), -1.0
            return float(np.clip(np.mean(held) / FINGER_MAX_OPENING, 0.0, 1.0))

    # -- snapshots (rendering in another process) ----------------------------
    def snapshot(self) -> "WorldSnapshot":
        """What a render needs: every joint angle, every loose body's pose, the lights. Cheap."""
        with self.lock:
            n = self._call(pb.getNumJoints, self.robot)
            joints = tuple(s[0] for s in self._call(pb.getJointStates, self.robot, list(range(n))))
            bodies = tuple(self._call(pb.getBasePositionAndOrientation, b) for b in [self.mug, *self._distractors])
            return WorldSnapshot(self.time, joints, bodies, self._distractor_models, self.lighting, self.scene_count)

    def apply_snapshot(self, snap: "WorldSnapshot") -> None:
        """Pose this (never stepped) world exactly as the snapshot's."""
        with self.lock:
            if snap.distractor_models != self._distractor_models:
                for body in self._distractors:
                    self._call(pb.removeBody, body)
                self._distractors = [self._call(pb.loadURDF, model, globalScaling=scale)
                                     for model, scale in snap.distractor_models]
                self._distractor_models = snap.distractor_models
            for j, q in enumerate(snap.joints):
                self._call(pb.resetJointState, self.robot, j, q)
            for body, (pos, orn) in zip([self.mug, *self._distractors], snap.bodies):
                self._call(pb.resetBasePositionAndOrientation, body, pos, orn)
            self.lighting = snap.lighting
            self.time = snap.time

    # -- rendering --------------------------------------------------------
    def view_matrix(self, eye_world, target_world, up) -> list[float]:
        return list(pb.computeViewMatrix(list(eye_world), list(target_world), list(up)))

    @staticmethod
    def projection_matrix(fov_deg: float, aspect: float, near: float = 0.01, far: float = 3.0) -> list[float]:
        return list(pb.computeProjectionMatrixFOV(fov_deg, aspect, near, far))

    def render(self, view: list[float], projection: list[float], width: int, height: int) -> np.ndarray:
        light = self.lighting
        with self.lock:
            _, _, rgba, _, _ = self._call(
                pb.getCameraImage, width, height, viewMatrix=view,
                projectionMatrix=projection, renderer=pb.ER_TINY_RENDERER,
                lightDirection=list(light.direction), lightColor=list(light.color),
                lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse,
                lightSpecularCoeff=light.specular, shadow=int(light.shadow))
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def close(self) -> None:
        with self.lock:
            if self._client is not None and pb.isConnected(self._client):
                pb.disconnect(self._client)
            self._client = None
