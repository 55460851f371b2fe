"""Device kinds by name: each driver registers itself, beside its config, under the name rig files use.

    @register_arm("xarm", XArmConfig, parse=xarm_from_rig_table, port=502)
    class XArm(Arm): ...

A rig file's ``type = "xarm"``, the ``--teleop`` and ``--robot`` choices and their error messages all come
from here, so a new device adds a module (and its name to :data:`BUILTIN_MODULES`, or a ``register_*`` call
of its own), not a branch in ``rig_config`` or ``factory``. The kinds:

``arm``     driver(config) behind :class:`SafeArm`. Options: ``parse(table, shared) -> (config, gripper)``
            reads the kind's own keys of ``[arm]`` (``shared``: :class:`robot_drivers.rig_config.ArmShared`);
            ``build(spec) -> Arm`` (default ``driver(spec.config)``); ``at_rate(config, rate_hz, step_m)
            -> config`` (default: unchanged); ``ipv4_only`` (why ``arm.ip`` must be IPv4); ``port`` (the TCP
            port its SDK talks to: ``devices --ping``).
``camera``  driver(config, role). Options: ``parse(table, width, height, fps, stale_limit_s) -> config``
            (``stale_limit_s`` None: derived from the camera's rhythm);
            ``max_width``, ``max_height``, ``max_fps``; ``check_rig(configs) -> None`` (raises ValueError):
            checks across every camera of this kind in one rig (two with one serial, say); ``ident`` (the
            config field that names the camera: ``devices`` shows it).
``teleop``  driver(config), or driver() from the command line. Options: ``parse(table) -> config`` (a
            hand-held device reads its axes and buttons with ``teleop.hand_controller_from_rig_table``).
``rig``     a function ``(clock=, image_size=, rate_hz=) -> Rig``: a built-in robot (``--robot sim``). Options:
            ``parameter`` (a word: the rig takes one argument, given as ``--robot name:<argument>`` and passed
            first: ``(argument, clock=, ...)``), ``choices`` (a function listing the arguments, for messages).

Registering imports no vendor SDK: the drivers import theirs when they connect. The built-in modules of a
kind are imported the first time that kind is looked up.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

KINDS = ("arm", "camera", "teleop", "rig")

#: The modules whose import registers the built-in devices of each kind, in the order they are listed.
BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "arm": ("robot_drivers.xarm", "robot_drivers.ur"),
    "camera": ("robot_drivers.realsense", "robot_drivers.opencv_camera"),
    "teleop": ("robot_drivers.spacemouse", "robot_drivers.gamepad"),
    "rig": ("robot_drivers.sim", "robot_drivers.metaworld"),
}


class UnknownDeviceError(ValueError):
    """A device name no driver registered; the message lists the registered ones and the nearest."""


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    driver: Any  # the driver class (a function that builds the rig, for kind "rig")
    config: type | None = None  # the driver's config class
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


_registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
_loaded: set[str] = set()


def register(kind: str, name: str, config: type | None = None, **options) -> Callable:
    """A decorator that registers its class (or function) as the device ``name`` of ``kind``; the same name
    registered again replaces the earlier one."""
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}; the kinds are {one_of(KINDS)}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a {kind} needs a non-empty name, got {name!r}")

    def decorator(driver):
        _registry[kind][name] = Registration(kind, name, driver, config, MappingProxyType(dict(options)))
        return driver

    return decorator


def register_arm(name: str, config: type, **options) -> Callable:
    return register("arm", name, config, **options)


def register_camera(name: str, config: type, **options) -> Callable:
    return register("camera", name, config, **options)


def register_teleop(name: str, config: type, **options) -> Callable:
    return register("teleop", name, config, **options)


def register_rig(name: str, **options) -> Callable:
    return register("rig", name, None, **options)


def unregister(kind: str, name: str) -> None:
    """Remove a registration (tests that register a device of their own)."""
    _registry[kind].pop(name, None)


def _load(kind: str) -> None:
    if kind not in _loaded:
        for module in BUILTIN_MODULES[kind]:
            importlib.import_module(module)
        _loaded.add(kind)


def _order(registration: Registration) -> int:
    """Built-ins first, in BUILTIN_MODULES' order whichever module was imported first (sorted() is stable: the
    others follow in the order they registered)."""
    modules = BUILTIN_MODULES[registration.kind]
    module = getattr(registration.driver, "__module__", None)
    return modules.index(module) if module in modules else len(modules)


def registrations(kind: str) -> tuple[Registration, ...]:
    _load(kind)
    return tuple(sorted(_registry[kind].values(), key=_order))


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, built-ins first."""
    return tuple(r.name for r in registrations(kind))


def lookup(kind: str, name: str) -> Registration:
    """The registration of ``name``; :class:`UnknownDeviceError` names the registered ones and the nearest."""
    _load(kind)
    found = _registry[kind].get(name)
    if found is None:
        raise UnknownDeviceError(f"unknown {kind} {name!r}; choose {one_of(names(kind))}{nearest(name, names(kind))}")
    return found


def nearest(name: Any, choices) -> str:
    """'; did you mean 'xarm'?' when a choice is close to ``name``, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1) if isinstance(name, str) else []
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices) -> str:
    """'a', 'b' or 'c' (for messages)."""
    quoted = [f"'{c}'" for c in choices]
    if len(quoted) < 2:
        return quoted[0] if quoted else "(none registered)"
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
