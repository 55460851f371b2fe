"""Simulated cameras: one on the Panda's hand, one fixed third-person view."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pybullet as pb

from robot_drivers.camera import GraspOverlay
from robot_drivers.simulated_camera import SimulatedCamera
from core.errors import NotConnectedError
from core.transforms import quat_to_matrix
from robot_drivers.sim.render_process import RenderProcess
from robot_drivers.sim.world import FINGER_MAX_OPENING, PANDA_GRASP_LINK, PANDA_HAND_LINK, SimWorld


@dataclass
class SimCameraConfig:
    name: str
    mount: str  # "hand" (moves with the gripper) or "fixed"
    width: int = 128
    height: int = 128
    fps: float = 15.0  # real-time mode only; two 128x128 renders at 15 fps keep most of a core busy while
    # the scene moves (an unchanged scene is not drawn again: :class:`SimCamera`)
    fov_deg: float = 70.0
    # hand mount: eye and look-at point in the hand link's frame (z points along the fingers)
    eye_in_hand: tuple[float, float, float] = (0.075, 0.0, 0.0)
    target_in_hand: tuple[float, float, float] = (0.0, 0.0, 0.22)
    # fixed mount: eye and look-at point in the robot base frame
    eye: tuple[float, float, float] = (1.0, 0.42, 0.55)
    target: tuple[float, float, float] = (0.45, 0.0, 0.1)

    def __post_init__(self):
        if self.mount not in ("hand", "fixed"):
            raise ValueError(f"camera '{self.name}': mount must be 'hand' or 'fixed', not {self.mount!r}")
        if not (16 <= self.width <= 1920 and 16 <= self.height <= 1080):
            raise ValueError(f"camera '{self.name}': image size {self.width}x{self.height} is out of range "
                             "(16..1920 x 16..1080)")


def hand_camera() -> SimCameraConfig:
    return SimCameraConfig(name="hand", mount="hand", fov_deg=75.0)


def third_person_camera() -> SimCameraConfig:
    return SimCameraConfig(name="third", mount="fixed", fov_deg=55.0)


def camera_view(world: SimWorld, c: SimCameraConfig) -> list[float]:
    """The view matrix of camera ``c`` in the world's current state."""
    if c.mount == "fixed":
        return world.view_matrix(world.to_world(c.eye), world.to_world(c.target), (0, 0, 1))
    pos, orn = world.link_pose_world(PANDA_HAND_LINK)
    rot = quat_to_matrix(orn)
    eye = pos + rot @ np.asarray(c.eye_in_hand)
    target = pos + rot @ np.asarray(c.target_in_hand)
    up = rot @ np.array([1.0, 0.0, 0.0])  # image "up" points away from the camera's side of the hand
    return world.view_matrix(eye, target, up)


#: depths beyond the fingertips marked on the hand camera's gripper axis
AXIS_DEPTHS_M = (0.0, 0.05, 0.10, 0.15)


def project_in_hand(c: SimCameraConfig, points_in_hand: np.ndarray) -> np.ndarray:
    """Image coordinates in [0, 1] (x right, y down) of points given in the hand link's frame, through the
    hand camera's own view and projection matrices (the camera moves with the hand: this never changes)."""
    view = np.asarray(pb.computeViewMatrix(list(c.eye_in_hand), list(c.target_in_hand), [1.0, 0.0, 0.0]))
    view = view.reshape(4, 4).T  # PyBullet's matrices are column-major
    projection = np.asarray(SimWorld.projection_matrix(c.fov_deg, c.width / c.height)).reshape(4, 4).T
    points = np.c_[np.asarray(points_in_hand, dtype=np.float64), np.ones(len(points_in_hand))]
    clip = (projection @ view @ points.T).T
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) / 2, (1 - ndc[:, 1]) / 2]


def hand_grasp_overlay(world: SimWorld, c: SimCameraConfig) -> GraspOverlay:
    """The hand camera's grasp overlay, from the Panda model (grasp target link, finger travel) and the camera."""
    hand_pos, hand_orn = world.link_pose_world(PANDA_HAND_LINK)
    grasp_pos, _ = world.link_pose_world(PANDA_GRASP_LINK)
    grasp = quat_to_matrix(hand_orn).T @ (grasp_pos - hand_pos)  # in the hand frame: along its z axis
    axis = np.array([0.0, 0.0, 1.0])
    points = [grasp, grasp + [0.0, FINGER_MAX_OPENING, 0.0], grasp - [0.0, FINGER_MAX_OPENING, 0.0]]
    points += [grasp + d * axis for d in AXIS_DEPTHS_M]
    uv = [tuple(float(v) for v in p) for p in project_in_hand(c, np.asarray(points))]
    return GraspOverlay(uv[0], (uv[1], uv[2]), tuple(uv[3:]), AXIS_DEPTHS_M)


def render_camera(world: SimWorld, c: SimCameraConfig) -> np.ndarray:
    projection = world.projection_matrix(c.fov_deg, c.width / c.height)
    with world.lock:
        return world.render(camera_view(world, c), projection, c.width, c.height)


#: Real time: a snapshot whose fingers and body positions (m) and orientations (quaternion components) moved
#: by no more than this since the last render is not drawn again (0.1 mm: a twentieth of a pixel or less
#: in the simulated views at 128 px) ...
REDRAW_TOLERANCE = 1e-4
#: ... nor one whose arm joints turned by no more than this many radians times 1 / the image width in pixels
#: (0.8 mrad at 128 px: the hand camera turns by a tenth of a pixel, the links move by well under a pixel in
#: the third-person view). The arm's slow null-space settling while it holds its pose (~0.1 mrad/s) then
#: costs a render every few seconds, not 15 a second.
REDRAW_ARM_TOLERANCE_PX = 0.1


class SimCamera(SimulatedCamera):
    """Renders the world with PyBullet's CPU renderer.

    In lock-step mode the rig's clock calls :meth:`capture` once per tick and
    every call renders. In real-time mode a capture thread snapshots the world
    at ``fps`` and a render process of its own draws it (PyBullet holds the GIL
    for the whole render, which would starve the control loop and the GUI of
    this process), but only when the picture would change: when nothing moved
    by more than a small fraction of a pixel since the last render
    (:data:`REDRAW_TOLERANCE`, :data:`REDRAW_ARM_TOLERANCE_PX`: the arm halted
    or idle, the mug at rest) and no scene reset came in between, the last
    image is delivered again as a new frame (it is still a true picture of the
    scene), so an idle rig costs next to nothing. While covered (:meth:`cover`)
    nothing is rendered. ``renders`` counts the images drawn. The device
    timestamp is the simulation time of the snapshot.

    Stale limit: in lock-step a fixed 0.5 s (of simulated time; every tick
    renders, so it never trips); in real time derived as for every camera
    (:mod:`robot_drivers.camera`) with a floor of 2 s and a bound of 3 s: a
    late simulated frame means a busy host (a training at full priority on 2
    cores delayed one by 1.0 s), not a fault, and a render process that dies is
    reported as a lost camera at once.
    """

    def __init__(self, world: SimWorld, config: SimCameraConfig, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = False):
        super().__init__(config.name, config.width, config.height, config.fps, clock, threaded)
        self.config = config
        self._world = world
        self._renderer: RenderProcess | None = None
        self._drawn = None  # (snapshot, image) of the last render (real time)
        self._arm_tolerance = REDRAW_ARM_TOLERANCE_PX / max(config.width, config.height)
        if config.mount == "hand":
            self.grasp_overlay = hand_grasp_overlay(world, config)

    @property
    def serial(self) -> str:
        return f"sim-{self.name}"

    def _connect(self) -> None:
        self._slot.reset()
        self._drawn = None
        if self._threaded:
            self._renderer = RenderProcess(self._world.config, self.config)
            self._start_capture(self._grab_remote, period=1.0 / self.fps)
            try:
                self._slot.wait_for(-1, timeout=5.0)  # warm-up: connected means frames are flowing
            except Exception:
                self.disconnect()
                raise

    def _disconnect(self) -> None:
        self._stop_capture()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _grab(self) -> tuple[np.ndarray, float]:
        with self._world.lock:
            self.renders += 1
            return self._covered(render_camera(self._world, self.config)), self._world.time

    def _grab_remote(self) -> tuple[np.ndarray, float]:
        snap = self._world.snapshot()
        self._renderer.check_alive()  # a renderer that died is a lost camera, drawn, covered or not
        cover = self._cover
        if cover is not None:
            return cover.copy(), snap.time
        drawn = self._drawn
        if drawn is not None and snap.shows_same_as(drawn[0], self._arm_tolerance, REDRAW_TOLERANCE):
            return drawn[1], snap.time  # read-only, shared by the frames that show the same picture
        image = self._renderer.render(snap)
        self.renders += 1
        self._drawn = (snap, image)
        return image, snap.time

    def capture(self) -> None:
        """Render one frame now (lock-step mode)."""
        if not self._connected:
            raise NotConnectedError(f"camera '{self.name}' is not connected")
        self._slot.publish(*self._grab())
