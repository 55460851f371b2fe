"""Builds rigs and teleop devices from command-line names (the names come from :mod:`robot_drivers.registry`)."""

from __future__ import annotations

from pathlib import Path

from robot_drivers import registry
from robot_drivers.registry import one_of as _one_of
from robot_drivers.rig import Rig
from robot_drivers.teleop import Teleop

#: ``--robot``: the built-in robots (registered rigs); a real rig is given as a rig file with ``--rig``.
ROBOTS = registry.names("rig")
#: ``--teleop``: the scripted operator, the rig file's device, or a registered teleop device by name.
TELEOPS = ("scripted", "config", *registry.names("teleop"))


def make_rig(robot: str, *, clock: str = "lockstep", image_size: int = 128, rate_hz: float | None = None) -> Rig:
    """``robot`` is a built-in robot ("sim") or the path of an existing rig file (TOML, any file name; see
    configs/), as given with ``--rig``. Anything else is a ValueError naming the valid robots.

    ``rate_hz`` None means the rig's own rate: the file's ``rate_hz``, or
    10 Hz for the simulator. A real rig always runs on the host clock; its
    image size is the cameras' own (``clock`` and ``image_size`` concern the
    simulator).
    """
    if robot in registry.names("rig"):
        return registry.lookup("rig", robot).driver(clock=clock, image_size=image_size, rate_hz=rate_hz)
    if Path(robot).is_file():  # a rig file, whatever its name (``devices`` and ``gui`` take any name too)
        return make_rig_from_file(robot, rate_hz=rate_hz)
    robots = registry.names("rig")
    raise ValueError(f"unknown robot {robot!r}: it is not one of the built-in robots ({', '.join(robots)}) and no "
                     f"file exists at that path; choose {_one_of(robots)}, or give the path of an existing rig file "
                     f"(--rig FILE; examples in configs/){registry.nearest(robot, robots)}")


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
        operator = rig.scripted_operator(seed)
        if operator is None:
            raise ValueError("the scripted operator needs the simulated rig (--robot sim)")
        return operator
    if name == "config":
        from robot_drivers.rig_config import build_teleop

        config = rig.extras.get("rig_config")
        if config is None:
            raise ValueError("--teleop config takes the device from a rig file: give one with --rig FILE")
        teleop = build_teleop(config, rig)
        if teleop is None:
            raise ValueError(f"{config.path}: no [teleop] table; add one, or pass --teleop "
                             f"{'|'.join(registry.names('teleop'))}")
        return teleop
    if name in registry.names("teleop"):
        return registry.lookup("teleop", name).driver()
    teleops = ("scripted", "config", *registry.names("teleop"))
    raise ValueError(f"unknown teleop device {name!r}; choose one of {', '.join(teleops)}"
                     f"{registry.nearest(name, teleops)}")
