"""Builds rigs and teleop devices from command-line names (the names come from :mod:`robot_drivers.registry`)."""

from __future__ import annotations

from pathlib import Path

from robot_drivers import registry
from robot_drivers.registry import one_of as _one_of
from robot_drivers.rig import Rig
from robot_drivers.teleop import Teleop

#: ``--robot``: the built-in robots (registered rigs); a real rig is given as a rig file with ``--rig``. A rig
#: registered with a ``parameter`` option is named with its parameter: ``metaworld:pick-place-v3``.
ROBOTS = registry.names("rig")


def robot_names() -> tuple[str, ...]:
    """The built-in robots as a user names them: ``sim``, ``metaworld:<task>``."""
    out = []
    for r in registry.registrations("rig"):
        parameter = r.option("parameter")
        out.append(f"{r.name}:<{parameter}>" if parameter else r.name)
    return tuple(out)


def split_robot(robot: str) -> tuple[str, str | None]:
    """``"metaworld:pick-place-v3"`` -> ``("metaworld", "pick-place-v3")``; ``"sim"`` -> ``("sim", None)``.
    ValueError when the robot is not a built-in one, or its parameter is missing or not wanted."""
    base, sep, arg = robot.partition(":")
    names = registry.names("rig")
    if base not in names:
        raise ValueError(f"unknown robot {robot!r}: the built-in robots are {', '.join(robot_names())}"
                         f"{registry.nearest(base, names)}")
    parameter = registry.lookup("rig", base).option("parameter")
    if parameter and not (sep and arg):
        choices = registry.lookup("rig", base).option("choices")
        listed = f" (one of {', '.join(choices())})" if choices else ""
        raise ValueError(f"robot '{base}' needs a {parameter}: give --robot {base}:<{parameter}>{listed}")
    if sep and not parameter:
        raise ValueError(f"robot '{base}' takes no parameter; give --robot {base}")
    return base, (arg if parameter else None)


def is_builtin_robot(robot: str) -> bool:
    return robot.partition(":")[0] in registry.names("rig")
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
    if is_builtin_robot(robot):
        base, arg = split_robot(robot)
        driver = registry.lookup("rig", base).driver
        if arg is not None:
            return driver(arg, clock=clock, image_size=image_size, rate_hz=rate_hz)
        return driver(clock=clock, image_size=image_size, rate_hz=rate_hz)
    if Path(robot).is_file():  # a rig file, whatever its name (``devices`` and ``gui`` take any name too)
        return make_rig_from_file(robot, rate_hz=rate_hz, clock=clock)
    robots = robot_names()
    raise ValueError(f"unknown robot {robot!r}: it is not one of the built-in robots ({', '.join(robots)}) and no "
                     f"file exists at that path; choose {_one_of(robots)}, or give the path of an existing rig file "
                     f"(--rig FILE; examples in configs/){registry.nearest(robot, registry.names('rig'))}")


def make_rig_from_file(path, rate_hz: float | None = None, clock: str = "lockstep") -> Rig:
    """The rig a rig file describes (not connected); ``rate_hz`` overrides the file's control rate, and the
    per-tick step limits follow it (:meth:`RigConfig.with_rate`). A file naming a simulated rig (top-level
    ``kind``) gives that rig, in ``clock``."""
    from robot_drivers.rig_config import build_rig, load_rig_config, load_sim_rig_file

    sim = load_sim_rig_file(path)
    if sim is not None:  # a file naming a built-in simulated rig (kind = "metaworld", task = ...)
        return make_rig(sim.robot, clock=clock, image_size=sim.camera_size,
                        rate_hz=sim.rate_hz if rate_hz is None else rate_hz)
    config = load_rig_config(path)
    if rate_hz is not None and rate_hz != config.rate_hz:
        config = config.with_rate(rate_hz)
    return build_rig(config)


def make_teleop(name: str, rig: Rig, seed: int = 0) -> Teleop:
    if name == "scripted":
        operator = rig.scripted_operator(seed)
        if operator is None:
            raise ValueError(f"the scripted operator needs a simulated rig (--robot {' or '.join(robot_names())})")
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
