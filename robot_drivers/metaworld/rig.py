"""Assembles the Meta-World rig, in either clock (as the PyBullet rig: :mod:`robot_drivers.sim_clock`).

* ``clock="lockstep"``: each tick advances the world by one control period (``round(period / 12.5 ms)``
  Meta-World steps, each tracking the current target) and draws both cameras once; timestamps are simulated
  seconds; repeatable for a given seed.
* ``clock="realtime"``: a physics thread steps the world beside the host clock; each camera draws on its
  own thread at its fps, and only when the scene moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.clock import Clock, RealTimeClock
from robot_drivers.metaworld.arm import MetaWorldArm
from robot_drivers.metaworld.camera import MetaWorldCamera, MetaWorldCameraConfig
from robot_drivers.metaworld.env import MetaWorldEnv
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.sim_clock import LockstepClock, PhysicsWhileConnected, wait_for_frames_after

CLOCKS = ("lockstep", "realtime")


def metaworld_safety_config(env: MetaWorldEnv, rate_hz: float) -> SafetyConfig:
    """The workspace is the box Meta-World keeps its hand target in; a tick may move the target by what the
    hand can travel in it at full speed (4 cm at 20 Hz), the rotation is fixed."""
    per_tick = float(np.clip(0.8 / rate_hz, 0.01, 0.1))  # Meta-World's hand: 1 cm per 12.5 ms step at most
    return SafetyConfig(workspace_min=tuple(env.mocap_low), workspace_max=tuple(env.mocap_high),
                        max_translation_per_tick=per_tick, max_rotation_per_tick=0.2, watchdog_timeout=0.5)


@dataclass
class MetaWorldRigConfig:
    task: str
    rate_hz: float = 20.0
    clock: str = "lockstep"
    image_size: int = 128
    cameras: list[MetaWorldCameraConfig] = field(default_factory=list)

    def __post_init__(self):
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, not {self.clock!r}")
        if not 1.0 <= self.rate_hz <= 80.0:
            raise ValueError(f"the Meta-World rig runs at 1..80 Hz (a Meta-World step is 12.5 ms), "
                             f"not {self.rate_hz} Hz")
        if not self.cameras:
            size = self.image_size
            self.cameras = [MetaWorldCameraConfig("hand", "hand", size, size),
                            MetaWorldCameraConfig("third", "fixed", size, size)]


class MetaWorldRig(PhysicsWhileConnected, Rig):
    """One Meta-World task as a rig; the scene is controlled through :meth:`scene_control`."""

    def __init__(self, config: MetaWorldRigConfig):
        self.config = config
        self.env = MetaWorldEnv(config.task)
        self.physics_world = self.env
        threaded = config.clock == "realtime"
        if threaded:
            clock: Clock = RealTimeClock(config.rate_hz)
            wait = time.sleep
        else:
            clock = LockstepClock(self.env, config.rate_hz)
            wait = clock.advance
            for c in config.cameras:  # in lock-step each camera delivers exactly one frame per tick
                c.fps = config.rate_hz
        cameras = {c.name: MetaWorldCamera(self.env, c, clock.now, threaded=threaded) for c in config.cameras}
        if isinstance(clock, LockstepClock):
            clock.attach(list(cameras.values()))
        arm = SafeArm(MetaWorldArm(self.env, clock.now, wait), metaworld_safety_config(self.env, config.rate_hz),
                      clock.now)
        super().__init__(arm=arm, cameras=cameras, clock=clock, name=f"metaworld:{config.task}")
        self._control = None
        self.env.draw(np.random.default_rng(0))  # a scene from the start: the first frames show the task

    def close(self) -> None:
        if self.arm.is_connected:
            self.disconnect()
        for camera in self.cameras.values():
            camera.free_renderers()

    def scene_control(self):
        if self._control is None:
            from robot_drivers.metaworld.scene_control import MetaWorldSceneControl

            self._control = MetaWorldSceneControl(self)
        return self._control

    def scripted_operator(self, seed: int = 0):
        from robot_drivers.metaworld.expert import MetaWorldExpert

        return MetaWorldExpert(self.env, seed)

    def check_can_reset(self) -> None:
        """A scene reset moves the arm: refused while the operator's stop holds."""
        if self.arm.stopped:
            from core.errors import ArmStoppedError

            raise ArmStoppedError("the arm is halted: a scene reset would move it; take over or home first")

    def place(self, variation, lighting=None) -> None:
        """Put the world in ``variation`` (RejectedVariation if the task refuses it), the hand at its start."""
        self.env.reset_to(variation, lighting)
        self.forget_states()  # the arm jumped: no state from before may be interpolated with one from after
        if self.arm.is_connected:
            self.arm.home()  # clears the safety layer's reference so the first command starts from here
            if self.config.clock == "realtime":
                wait_for_frames_after(self.cameras.values(), self.env.time)
            else:
                self.clock.start()  # draw the new scene now: the next observation must not show the old one
