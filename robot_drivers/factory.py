"""Builds rigs and teleop devices from command-line names."""

from __future__ import annotations

from .rig import Rig
from .teleop import Teleop

ROBOTS = ("sim",)
TELEOPS = ("scripted",)


def make_rig(robot: str, *, clock: str = "lockstep", image_size: int = 128, rate_hz: float = 10.0) -> Rig:
    if robot == "sim":
        from .sim.rig import SimRig, SimRigConfig

        return SimRig(SimRigConfig(clock=clock, rate_hz=rate_hz).with_image_size(image_size, image_size))
    raise ValueError(f"unknown robot {robot!r}; choose one of {', '.join(ROBOTS)}")


def make_teleop(name: str, rig: Rig, seed: int = 0) -> Teleop:
    if name == "scripted":
        from .sim.rig import SimRig
        from .sim.expert import ScriptedExpert

        if not isinstance(rig, SimRig):
            raise ValueError("the scripted operator needs the simulated rig (--robot sim)")
        return ScriptedExpert(rig.world, seed)
    raise ValueError(f"unknown teleop device {name!r}; choose one of {', '.join(TELEOPS)}")
