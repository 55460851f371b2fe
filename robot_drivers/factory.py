"""Builds rigs and teleop devices from command-line names."""

from __future__ import annotations

from pathlib import Path

from robot_drivers.rig import Rig
from robot_drivers.teleop import Teleop

ROBOTS = ("sim",)
TELEOPS = ("scripted", "config", "spacemouse", "gamepad")


SIM_RATE_HZ = 10.0


def make_rig(robot: str, *, clock: str = "lockstep", image_size: int = 128, rate_hz: float | None = None) -> Rig:
    """``robot`` is "sim" or the path of an existing rig file (TOML, any file name; see configs/), as given
    with ``--rig``. Anything else is a ValueError naming the valid robots.

    ``rate_hz`` None means the rig's own rate: the file's ``rate_hz``, or
    10 Hz for the simulator. A real rig always runs on the host clock; its
    image size is the cameras' own (``clock`` and ``image_size`` concern the
    simulator).
    """
    if robot == "sim":
        from robot_drivers.sim.rig import SimRig, SimRigConfig

        rate = SIM_RATE_HZ if rate_hz is None else rate_hz
        return SimRig(SimRigConfig(clock=clock, rate_hz=rate).with_image_size(image_size, image_size))
    if Path(robot).is_file():  # a rig file, whatever its name (``devices`` and ``gui`` take any name too)
        return make_rig_from_file(robot, rate_hz=rate_hz)
    raise ValueError(f"unknown robot {robot!r}: it is not one of the built-in robots ({', '.join(ROBOTS)}) and no "
                     f"file exists at that path; choose {_one_of(ROBOTS)}, or give the path of an existing rig file "
                     "(--rig FILE; examples in configs/)")


def _one_of(names) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def make_rig_from_file(path, rate_hz: float | None = None) -> Rig:
    """The rig a rig file describes (not connected); ``rate_hz`` overrides the file's control rate, and the
    per-tick step limits follow it (:meth:`RigConfig.with_rate`)."""
    from robot_drivers.rig_config import build_rig, load_rig_config

    config = load_rig_config(path)
    if rate_hz is not None and rate_hz != config.rate_hz:
        config = config.with_rate(rate_hz)
    return build_rig(config)


def make_teleop(name: str, rig: Rig, seed: int = 0) -> Teleop:
    if name == "scripted":
        from robot_drivers.sim.rig import SimRig
        from robot_drivers.sim.expert import ScriptedExpert

        if not isinstance(rig, SimRig):
            raise ValueError("the scripted operator needs the simulated rig (--robot sim)")
        return ScriptedExpert(rig.world, seed)
    if name == "config":
        from robot_drivers.rig_config import build_teleop

        config = rig.extras.get("rig_config")
        if config is None:
            raise ValueError("--teleop config takes the device from a rig file: give one with --rig FILE")
        teleop = build_teleop(config, rig)
        if teleop is None:
            raise ValueError(f"{config.path}: no [teleop] table; add one, or pass --teleop spacemouse|gamepad")
        return teleop
    if name == "spacemouse":
        from robot_drivers.spacemouse import SpaceMouseTeleop

        return SpaceMouseTeleop()
    if name == "gamepad":
        from robot_drivers.gamepad import GamepadTeleop

        return GamepadTeleop()
    raise ValueError(f"unknown teleop device {name!r}; choose one of {', '.join(TELEOPS)}")
