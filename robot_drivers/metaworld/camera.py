"""The Meta-World rig's cameras: ``hand`` (Meta-World's wrist camera) and ``third`` (one fixed view of the
table, the same for every task, upright), drawn with MuJoCo's offscreen renderer at cheap settings.

A MuJoCo renderer's OpenGL context belongs to the thread that made it, so each thread that renders has a
renderer of its own: the control loop's thread in lock-step (the clock captures every camera once a tick),
the camera's capture thread in real time (freed on that thread when it ends). In real time a frame whose
scene has not moved since the last drawing (an idle or halted arm, objects at rest) is the last image again
with a new timestamp, so an idle rig draws nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import NotConnectedError
from robot_drivers.simulated_camera import SimulatedCamera
from robot_drivers.metaworld.env import MetaWorldEnv

#: Meta-World's own camera on the wrist, looking down past the fingers.
HAND_CAMERA = "gripperPOV"
#: The fixed third-person view: MuJoCo free-camera parameters (look-at point in Meta-World's world frame, m;
#: azimuth and elevation, degrees; distance, m). It frames the table where every task's objects lie.
THIRD_VIEW = {"lookat": (0.0, 0.72, 0.1), "azimuth": 135.0, "elevation": -35.0, "distance": 0.95}
#: Real time: a scene whose bodies moved by less than this (m) since the last drawing, and whose cameras
#: turned by less than this x 10 rad (0.1 m lever), is not drawn again: well under a pixel at 128 px. (Joint
#: angles are no measure: the arm's redundant joint drifts while the hand holds still.)
REDRAW_TOLERANCE = 1e-4


@dataclass
class MetaWorldCameraConfig:
    name: str  # "hand" or "third"
    mount: str  # "hand" (Meta-World's wrist camera) or "fixed" (THIRD_VIEW)
    width: int = 128
    height: int = 128
    fps: float = 15.0  # real time only

    def __post_init__(self):
        if self.mount not in ("hand", "fixed"):
            raise ValueError(f"camera '{self.name}': mount must be 'hand' or 'fixed', not {self.mount!r}")
        if not (16 <= self.width <= 1024 and 16 <= self.height <= 1024):
            raise ValueError(f"camera '{self.name}': image size {self.width}x{self.height} is out of range "
                             "(16..1024 x 16..1024)")


def make_renderer(env: MetaWorldEnv, width: int, height: int):
    """A MuJoCo renderer at cheap settings: no multisampling, shadows or reflections (4-7 ms a 128 px image
    on a CPU instead of 90-135 ms)."""
    import mujoco

    env.model.vis.quality.offsamples = 0
    renderer = mujoco.Renderer(env.model, height, width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    return renderer


def third_camera():
    import mujoco

    camera = mujoco.MjvCamera()
    camera.lookat[:] = THIRD_VIEW["lookat"]
    camera.azimuth = THIRD_VIEW["azimuth"]
    camera.elevation = THIRD_VIEW["elevation"]
    camera.distance = THIRD_VIEW["distance"]
    return camera


class MetaWorldCamera(SimulatedCamera):
    """One camera of the Meta-World rig (see the module docstring). Stale limit: a fixed 0.5 s of simulated
    time in lock-step (every tick draws); in real time derived from the frame intervals with a floor of 2 s
    and a bound of 3 s, as for the other simulated rig: a late frame means a busy host, not a fault."""

    def __init__(self, env: MetaWorldEnv, config: MetaWorldCameraConfig, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = False):
        super().__init__(config.name, config.width, config.height, config.fps, clock, threaded)
        self.config = config
        self._env = env
        self._renderers: dict[int, object] = {}  # thread ident -> renderer made on that thread
        self._renderers_lock = threading.Lock()
        self._view = None if config.mount == "hand" else third_camera()
        self._drawn: tuple[np.ndarray, np.ndarray, int] | None = None  # (coordinates, image, scene version)

    @property
    def serial(self) -> str:
        return f"metaworld-{self.name}"

    def _connect(self) -> None:
        self._slot.reset()
        self._drawn = None
        if self._threaded:
            self._start_capture(self._grab_threaded, period=1.0 / self.fps, on_exit=self._free_own_renderer)
            try:
                self._slot.wait_for(-1, timeout=5.0)  # connected means frames are flowing
            except Exception:
                self.disconnect()
                raise

    def _disconnect(self) -> None:
        self._stop_capture()
        self.free_renderers()

    def free_renderers(self) -> None:
        """Free every renderer this camera made (those of ended threads too)."""
        with self._renderers_lock:
            renderers, self._renderers = list(self._renderers.values()), {}
        for renderer in renderers:
            renderer.close()

    def _free_own_renderer(self) -> None:
        with self._renderers_lock:
            renderer = self._renderers.pop(threading.get_ident(), None)
        if renderer is not None:
            renderer.close()

    def _renderer(self):
        ident = threading.get_ident()
        with self._renderers_lock:
            renderer = self._renderers.get(ident)
        if renderer is None:
            renderer = make_renderer(self._env, self.width, self.height)
            with self._renderers_lock:
                self._renderers[ident] = renderer
        return renderer

    def _draw(self) -> tuple[np.ndarray, float]:
        renderer = self._renderer()
        env = self._env
        with env.lock:
            renderer.update_scene(env.data, camera=HAND_CAMERA if self._view is None else self._view)
            sim_time = env.time
        image = renderer.render()  # the scene was copied out under the lock; drawing it needs no lock
        self.renders += 1
        return np.ascontiguousarray(image), sim_time

    def _grab_threaded(self) -> tuple[np.ndarray, float]:
        env = self._env
        with env.lock:
            data = env.data
            coordinates = np.r_[data.xpos.ravel(), data.cam_xpos.ravel(), 0.1 * data.cam_xmat.ravel()]
            sim_time = env.time
            version = env.scene_version
        cover = self._cover
        if cover is not None:
            return cover.copy(), sim_time
        drawn = self._drawn
        if drawn is not None and drawn[2] == version and coordinates.shape == drawn[0].shape \
                and np.max(np.abs(coordinates - drawn[0])) < REDRAW_TOLERANCE:
            return drawn[1], sim_time
        image, sim_time = self._draw()
        image.flags.writeable = False  # shared by the frames that show the same picture
        self._drawn = (coordinates, image, version)
        return image, sim_time

    def capture(self) -> None:
        """Draw one frame now (lock-step)."""
        if not self._connected:
            raise NotConnectedError(f"camera '{self.name}' is not connected")
        image, sim_time = self._draw()
        self._slot.publish(self._covered(image), sim_time)
