"""The clocks of a simulated world, shared by the simulated rigs.

A world here is anything with ``step(n)`` (advance ``n`` physics steps), ``physics_dt`` (seconds per step),
``time`` (simulated seconds, never going back) and ``lock``.

* :class:`LockstepClock`: nothing runs in the background; each tick advances the world by one control period
  and renders every camera once; timestamps are simulation seconds (bit-for-bit repeatable).
* :class:`PhysicsThread`: steps the world in real time beside the host clock (the cameras capture on threads
  of their own).
"""

from __future__ import annotations

import threading
import time

from core.clock import Clock, TickTiming


class LockstepClock(Clock):
    """Advances the simulation one control period per tick, then renders the cameras."""

    def __init__(self, world, rate_hz: float):
        super().__init__(rate_hz)
        self._world = world
        self._cameras: list = []
        self._index = 0
        self._substeps = max(1, round(self.dt / world.physics_dt))
        self.last_physics_s = 0.0  # host time the last tick spent in physics / rendering, for reports
        self.last_render_s = 0.0

    def attach(self, cameras: list) -> None:
        self._cameras = cameras

    @property
    def is_realtime(self) -> bool:
        return False

    def now(self) -> float:
        return self._world.time

    def _render(self) -> None:
        t0 = time.perf_counter()
        for cam in self._cameras:
            if cam.is_connected:
                cam.capture()
        self.last_render_s = time.perf_counter() - t0

    def start(self) -> TickTiming:
        self._index = 0
        self._render()
        now = self.now()
        return TickTiming(0, now, now, False, 0)

    def wait_next_tick(self) -> TickTiming:
        t0 = time.perf_counter()
        self._world.step(self._substeps)
        self.last_physics_s = time.perf_counter() - t0
        self._render()
        self._index += 1
        now = self.now()
        return TickTiming(self._index, now, now, False, 0)

    def advance(self, seconds: float) -> None:
        """Let simulated time pass outside the tick grid (homing, settling)."""
        self._world.step(max(1, round(seconds / self._world.physics_dt)))


class PhysicsThread:
    """Steps the world in real time; falls behind gracefully instead of bursting."""

    def __init__(self, world):
        self._world = world
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-physics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        dt = self._world.physics_dt
        next_time = time.monotonic()
        while not self._stop.is_set():
            behind = time.monotonic() - next_time
            steps = 1 if behind < dt else min(int(behind / dt) + 1, 8)
            self._world.step(steps)
            next_time += steps * dt
            if time.monotonic() - next_time > 0.25:
                next_time = time.monotonic()  # a long stall (render, GC): resync, do not replay it
            delay = next_time - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)


class PhysicsWhileConnected:
    """Mixed into a simulated :class:`robot_drivers.rig.Rig` (before it): on a real-time clock a
    :class:`PhysicsThread` steps ``physics_world`` from connect to disconnect."""

    physics_world = None  # the world the physics thread steps (set by the rig)
    _physics: PhysicsThread | None = None

    def _connect(self) -> None:
        super()._connect()
        if self.clock.is_realtime:
            self._physics = PhysicsThread(self.physics_world)
            self._physics.start()

    def _disconnect(self) -> None:
        if self._physics is not None:
            self._physics.stop()
            self._physics = None
        super()._disconnect()


def wait_for_frames_after(cameras, sim_time: float, timeout: float = 5.0) -> None:
    """Real time: the scene just jumped; wait until no camera's alignment window holds the old one.

    ``observe`` aligns on a reference one frame period back, so every camera
    must have two frames of the new scene, not just one; and the frames of the
    old scene are then forgotten: when renders bunch up on a loaded machine, an
    old frame can lie nearer that reference than the new ones.
    """
    for camera in cameras:
        frame = camera.wait_for_frame(-1, timeout)
        fresh, first = 0, None
        while fresh < 2:
            is_new = frame.device_time is None or frame.device_time >= sim_time
            fresh = fresh + 1 if is_new else 0
            first = (first or frame) if is_new else None
            if fresh < 2:
                frame = camera.wait_for_frame(frame.sequence, timeout)
        camera.forget_frames_before(first.host_time)
