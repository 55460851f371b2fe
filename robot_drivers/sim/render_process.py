"""Renders one simulated camera in a process of its own (real-time mode).

PyBullet's CPU renderer holds the GIL for the whole ~30 ms of a render. Run on
a thread of the application, two cameras at 15 fps would leave the control
loop, the policy and the GUI waiting tens of milliseconds at a time. So each
real-time camera owns a child process with a copy of the world that is never
stepped: the capture thread sends a snapshot of the live world (joint angles,
body poses, lights; microseconds to take), waits for the image with the GIL
released, and publishes it. The copy is posed exactly as the snapshot, so the
image is the one the in-process renderer would draw. The capture thread sends
a snapshot only when the scene moved since the last one drawn (``SimCamera``):
an idle or halted rig leaves these processes asleep.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from multiprocessing.connection import Connection, Pipe
from pathlib import Path

import numpy as np

from core.errors import ConnectionLostError

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
_RENDER_TIMEOUT_S = 5.0


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def serve(fd: int) -> None:
    """The child's main loop: configs first, then one image per snapshot until None."""
    from robot_drivers.sim.camera import render_camera
    from robot_drivers.sim.world import SimWorld

    conn = Connection(fd)
    world_config, camera_config = conn.recv()
    world = SimWorld(world_config)
    conn.send("ready")
    try:
        while True:
            snapshot = conn.recv()
            if snapshot is None:
                break
            world.apply_snapshot(snapshot)
            conn.send_bytes(render_camera(world, camera_config).tobytes())
    except (EOFError, KeyboardInterrupt, OSError):
        pass  # the parent went away
    finally:
        world.close()


class RenderProcess:
    """A child process that renders snapshots of the world for one camera."""

    def __init__(self, world_config, camera_config):
        self._shape = (camera_config.height, camera_config.width, 3)
        # A fresh interpreter, not fork (this process runs Qt and torch threads) and not
        # multiprocessing's spawn (it re-imports the caller's __main__ script).
        self._conn, child = Pipe()
        code = f"from robot_drivers.sim.render_process import serve; serve({child.fileno()})"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_PROJECT_ROOT),
                                                                        os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[child.fileno()], env=env,
                                         cwd=_PROJECT_ROOT, stdin=subprocess.DEVNULL)
        child.close()
        try:
            self._conn.send((world_config, camera_config))
            if not self._conn.poll(_START_TIMEOUT_S):
                raise EOFError("no answer")
            self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise ConnectionLostError(f"the render process of camera '{camera_config.name}' did not start "
                                      f"({exc})") from exc

    def render(self, snapshot) -> np.ndarray:
        try:
            self._conn.send(snapshot)
            if not self._conn.poll(_RENDER_TIMEOUT_S):
                raise ConnectionLostError("the render process stopped answering")
            data = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise ConnectionLostError(f"the render process ended ({exc})") from exc
        return np.frombuffer(data, dtype=np.uint8).reshape(self._shape)

    def check_alive(self) -> None:
        """Raise ConnectionLostError if the process has ended (a frame that needs no new render still needs a
        renderer: a dead one is reported at once, not at the next change of the scene)."""
        code = self._process.poll()
        if code is not None:
            raise ConnectionLostError(f"the render process ended (exit status {code})")

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        try:
            self._process.wait(2.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(1.0)
        self._conn.close()
