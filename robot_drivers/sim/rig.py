"""Assembles the simulated rig, in either clock.

* ``clock="lockstep"``: nothing runs in the background. Each
  ``clock.wait_next_tick()`` advances physics by one control period and renders
  every camera once; all timestamps are simulation seconds. Bit-for-bit
  repeatable for a given seed.
* ``clock="realtime"``: a physics thread advances the world in step with the
  host clock and each camera delivers frames on its own capture thread at its
  fps, drawing a new image only when the picture changed (an idle or halted
  rig renders nothing: :class:`robot_drivers.sim.camera.SimCamera`);
  timestamps are host monotonic seconds, as with real hardware. At rest the
  physics thread costs ~3 % of a core (``benchmarks/sim_idle_cpu.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from core.clock import Clock, RealTimeClock, TickTiming
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.sim.arm import SimArm
from robot_drivers.sim.camera import SimCamera, SimCameraConfig, hand_camera, third_person_camera
from robot_drivers.sim.task import SCENARIOS, SUCCESS_LIFT_M, Scene, TaskConfig, make_scene
from robot_drivers.sim.world import SimWorld, WorldConfig

log = logging.getLogger(__name__)

CLOCKS = ("lockstep", "realtime")


def sim_safety_config() -> SafetyConfig:
    # z = 0 is the table top; 1 cm keeps the fingertips off it.
    return SafetyConfig(workspace_min=(0.25, -0.35, 0.01), workspace_max=(0.80, 0.35, 0.50),
                        max_translation_per_tick=0.03, max_rotation_per_tick=0.2, watchdog_timeout=0.5)


@dataclass
class SimRigConfig:
    rate_hz: float = 10.0
    clock: str = "lockstep"
    cameras: list[SimCameraConfig] = field(default_factory=lambda: [hand_camera(), third_person_camera()])
    world: WorldConfig = field(default_factory=WorldConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    safety: SafetyConfig = field(default_factory=sim_safety_config)

    def __post_init__(self):
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, not {self.clock!r}")

    def with_image_size(self, width: int, height: int) -> "SimRigConfig":
        self.cameras = [replace(cam, width=width, height=height) for cam in self.cameras]  # re-validates
        return self


class LockstepClock(Clock):
    """Advances the simulation one control period per tick, then renders the cameras."""

    def __init__(self, world: SimWorld, rate_hz: float):
        super().__init__(rate_hz)
        self._world = world
        self._cameras: list[SimCamera] = []
        self._index = 0
        self._substeps = max(1, round(self.dt / world.physics_dt))
        self.last_physics_s = 0.0  # host time the last tick spent in physics / rendering, for reports
        self.last_render_s = 0.0

    def attach(self, cameras: list[SimCamera]) -> None:
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

    def __init__(self, world: SimWorld):
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


class SimRig(Rig):
    """The simulated rig with its task: ``reset(seed, scenario)`` and ``success()``."""

    def __init__(self, config: SimRigConfig | None = None):
        config = config or SimRigConfig()
        self.config = config
        self.world = SimWorld(config.world)
        self.scene: Scene | None = None
        self._physics: PhysicsThread | None = None
        if config.clock == "lockstep":
            clock: Clock = LockstepClock(self.world, config.rate_hz)
            wait = clock.advance
        else:
            clock = RealTimeClock(config.rate_hz)
            wait = time.sleep
        threaded = config.clock == "realtime"
        if not threaded:  # in lock-step each camera delivers exactly one frame per tick
            config.cameras = [replace(c, fps=config.rate_hz) for c in config.cameras]
        cameras = {c.name: SimCamera(self.world, c, clock.now, threaded=threaded) for c in config.cameras}
        if isinstance(clock, LockstepClock):
            clock.attach(list(cameras.values()))
        arm = SafeArm(SimArm(self.world, clock.now, wait), config.safety, clock.now)
        super().__init__(arm=arm, cameras=cameras, clock=clock, name="sim")

    @property
    def task(self) -> TaskConfig:
        return self.config.task

    def _connect(self) -> None:
        super()._connect()
        if self.config.clock == "realtime":
            self._physics = PhysicsThread(self.world)
            self._physics.start()

    def _disconnect(self) -> None:
        if self._physics is not None:
            self._physics.stop()
            self._physics = None
        super()._disconnect()

    def close(self) -> None:
        if self.arm.is_connected:
            self.disconnect()
        self.world.close()

    def scene_control(self):
        from robot_drivers.sim.scene_control import SimSceneControl

        return SimSceneControl(self)

    def scripted_operator(self, seed: int = 0):
        from robot_drivers.sim.expert import ScriptedExpert

        return ScriptedExpert(self.world, seed)

    def reset(self, seed: int, scenario: str = "in_distribution", scene: Scene | None = None,
              release: bool = True) -> Scene:
        """Start an episode: arm at rest, mug (and props, lights) as the scenario asks.

        ``release`` lifts a latched stop first (scripted runs); the supervisor passes False, so a scene
        reset never undoes the operator's STOP (the arm is then left where it is, latched)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
        scene = scene or make_scene(self.config.task, scenario, seed)
        if not release and self.arm.stopped:
            from core.errors import ArmStoppedError

            raise ArmStoppedError("the arm is halted: a scene reset would move it; take over or home first")
        self.world.reset((scene.mug.x, scene.mug.y, scene.mug.yaw), scene.distractors, scene.lighting)
        self.forget_states()  # the arm jumped: no state from before may be interpolated with one from after
        if release:
            self.arm.release()
        self.arm.home()  # clears the safety layer's reference so the first command starts from here
        self.scene = scene
        if self.config.clock == "realtime":
            self._wait_for_frames_after(self.world.time)
        return scene

    def _wait_for_frames_after(self, sim_time: float, timeout: float = 5.0) -> None:
        """Real time: the scene just jumped; wait until no camera's alignment window holds the old one.

        ``observe`` aligns on a reference one frame period back, so every camera
        must have two frames of the new scene, not just one; and the frames of the
        old scene are then forgotten: when renders bunch up on a loaded machine, an
        old frame can lie nearer that reference than the new ones.
        """
        for camera in self.cameras.values():
            frame = camera.wait_for_frame(-1, timeout)
            fresh, first = 0, None
            while fresh < 2:
                is_new = frame.device_time is None or frame.device_time >= sim_time
                fresh = fresh + 1 if is_new else 0
                first = (first or frame) if is_new else None
                if fresh < 2:
                    frame = camera.wait_for_frame(frame.sequence, timeout)
            camera.forget_frames_before(first.host_time)

    def success(self) -> bool:
        """Mug lifted >= 5 cm above the table and held between both fingers."""
        lifted = self.world.mug_height_above_table() >= SUCCESS_LIFT_M
        return lifted and all(self.world.fingers_touching(self.world.mug))
