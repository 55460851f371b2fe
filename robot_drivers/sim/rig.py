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
import time
from dataclasses import dataclass, field, replace

import numpy as np

from core.clock import Clock, RealTimeClock
from robot_drivers.rig import Rig
from robot_drivers.sim_clock import LockstepClock, PhysicsWhileConnected, wait_for_frames_after
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.sim.arm import SimArm
from robot_drivers.sim.camera import SimCamera, SimCameraConfig, hand_camera, third_person_camera
from robot_drivers.sim.task import SCENARIOS, SUCCESS_LIFT_M, Scene, TaskConfig, make_scene
from robot_drivers.sim.world import SimWorld, WorldConfig

log = logging.getLogger(__name__)

CLOCKS = ("lockstep", "realtime")

#: ``went_wrong``: the mug counts as undisturbed within this distance (horizontally) of where it was placed
#: and this tilt
UNDISTURBED_M = 0.01
UPRIGHT_DEG = 15.0


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


class SimRig(PhysicsWhileConnected, Rig):
    """The simulated rig with its task: ``reset(seed, scenario)`` and ``success()``."""

    def __init__(self, config: SimRigConfig | None = None):
        config = config or SimRigConfig()
        self.config = config
        self.world = SimWorld(config.world)
        self.scene: Scene | None = None
        self._placed_xy: np.ndarray | None = None  # where the mug stood after the last reset
        self.physics_world = self.world
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
        self._placed_xy = np.asarray(self.world.mug_pose().position[:2], dtype=float)
        if self.config.clock == "realtime":
            self._wait_for_frames_after(self.world.time)
        return scene

    def _wait_for_frames_after(self, sim_time: float, timeout: float = 5.0) -> None:
        wait_for_frames_after(self.cameras.values(), sim_time, timeout)

    def success(self) -> bool:
        """Mug lifted >= 5 cm above the table and held between both fingers."""
        lifted = self.world.mug_height_above_table() >= SUCCESS_LIFT_M
        return lifted and all(self.world.fingers_touching(self.world.mug))

    def went_wrong(self) -> bool:
        """Whether the episode has gone wrong since the reset (:meth:`what_went_wrong`)."""
        return self.what_went_wrong() is not None

    def what_went_wrong(self) -> str | None:
        """What went wrong since the reset, in words (None: nothing): the mug pushed more than
        :data:`UNDISTURBED_M` or tipped more than :data:`UPRIGHT_DEG`, or the gripper closed without holding
        the mug between both fingers. A stop mid-lift, or right after a grasp that holds, leaves the task for
        the operator to finish."""
        from core.transforms import quat_to_matrix

        if self._placed_xy is None or self.success():
            return None
        pose = self.world.mug_pose()
        moved = float(np.linalg.norm(np.asarray(pose.position[:2]) - self._placed_xy))
        tilt = float(np.degrees(np.arccos(np.clip(quat_to_matrix(pose.orientation)[2, 2], -1, 1))))
        closed = self.arm.get_state().gripper < 0.9
        held = all(self.world.fingers_touching(self.world.mug))
        if tilt > UPRIGHT_DEG:
            return f"the mug tipped {tilt:.0f} degrees"
        if moved > UNDISTURBED_M:
            return f"the mug was pushed {100 * moved:.1f} cm"
        if closed and not held:
            return "the gripper closed without holding the mug between both fingers"
        return None
