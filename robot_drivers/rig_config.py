"""Rig config files (TOML): which arm, cameras and teleop device make up a real rig.

    rate_hz = 10
    state_rate_hz = 50                 # arm state sampling, to pair frames with the state at their capture time
    [arm]
    type = "xarm"                      # a registered arm: "xarm" or "ur"
    ip = "192.168.1.200"
    home = { position = [0.35, 0.0, 0.30], orientation = [1.0, 0.0, 0.0, 0.0], gripper = 1.0 }
    [arm.workspace]
    min = [0.15, -0.40, 0.02]          # metres, robot base frame
    max = [0.65, 0.40, 0.50]
    [arm.limits]
    max_step_m = 0.02                  # per control tick
    max_step_rad = 0.15
    max_speed_m_s = 0.10               # the per-tick step is also capped by these speeds / rate_hz
    max_angular_speed_rad_s = 1.0
    [[cameras]]
    role = "hand"                      # "hand" or "third"
    type = "realsense"                 # a registered camera: "realsense" or "opencv"
    serial = "123456789012"
    width = 640
    height = 480
    fps = 30
    [teleop]
    type = "spacemouse"                # a registered teleop device ("spacemouse", "gamepad") or "none"

Every key is checked before anything is built or connected: an unknown key (a
typo; the error suggests the nearest valid name, in every table), a wrong type
or a bad value is a :class:`RigConfigError` naming the file, the key, the bad
value and the allowed range. Every number must be finite (``nan``/``inf`` are
refused everywhere: NaN compares False, so a NaN limit would never clip) and a
real number (``true`` is not 1). The ranges ([a, b] inclusive, (a, b] excludes a)
of the keys every rig has:

    rate_hz                      [1, 100] Hz (also for --rate)
    state_rate_hz                0 (off) or [1, 500] Hz
    arm.ip                       an IP address (IPv4 only where the driver says so);
                                 not 0.0.0.0, a multicast or the broadcast address
    arm.workspace.min / max      3 numbers each in [-2, 2] m, min < max on every axis
    arm.home.position            3 numbers inside the workspace box
    arm.home.orientation         a unit quaternion [x, y, z, w] (norm 1 within 0.01)
    arm.home.gripper             [0, 1]
    arm.home_speed               (0, 0.25] m/s
    arm.limits.max_step_m        (0, 0.05] m per tick
    arm.limits.max_step_rad      (0, 0.5] rad per tick
    arm.limits.max_speed_m_s     (0, 1] m/s
    arm.limits.max_angular_speed_rad_s  (0, 3] rad/s
    arm.limits.watchdog_s        [0.05, 5] s
    cameras[].width x height     up to the camera kind's maximum (RealSense 1920 x 1080, OpenCV 4096 x 4096)
    cameras[].fps                [1, the kind's maximum] (RealSense 90, OpenCV 120)
    cameras[].stale_limit_s      [0.01, 5] s; optional: a fixed limit on a frame's age that
                                 replaces the one derived from the camera's frame rate and
                                 measured frame intervals (robot_drivers/camera.py: a camera
                                 that stops is then refused within 1 s, 3 frame periods below 3 fps)

The keys of one kind of device are read by the parser registered with its
driver (:mod:`robot_drivers.registry`), which documents their ranges: the xArm's
and UR's in ``xarm.py`` and ``ur.py``, the cameras' in ``realsense.py`` and
``opencv_camera.py``, the teleop devices' in ``spacemouse.py`` and ``gamepad.py``
(their axes and buttons: ``hand_controller_from_rig_table`` in ``teleop.py``).

``load_rig_config`` reads and validates (it builds and connects nothing);
``build_rig`` makes the (unconnected) :class:`Rig`, its arm always behind
:class:`SafeArm`, whose :class:`SafetyConfig` refuses non-finite limits too;
``build_teleop`` makes the teleop device. Examples: ``configs/*.toml``.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.clock import RealTimeClock
from robot_drivers import registry
from robot_drivers.registry import one_of as _one_of
from robot_drivers.rig import DEFAULT_STATE_RATE_HZ, Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.teleop import Teleop

log = logging.getLogger(__name__)

CAMERA_ROLES = ("hand", "third")
NO_TELEOP = "none"  # a rig file's teleop type for no device
MIN_RATE_HZ = 1.0
MAX_RATE_HZ = 100.0
WORKSPACE_BOUND_M = 2.0  # no supported arm reaches further than this from its base
_REQUIRED = object()
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class RigConfigError(ValueError):
    """A rig file that cannot be used; the message names the file, the key and the fix."""


@dataclass
class CameraEntry:
    """One ``[[cameras]]`` entry of a rig file: the role it plays, its registered kind and the driver's config."""

    role: str
    type: str
    config: Any  # the registered driver's config: RealSenseCameraConfig | OpenCVCameraConfig | ...


@dataclass(frozen=True)
class SpeedLimits:
    """The arm's limits in the rig file; the per-tick steps follow the control rate."""

    max_step_m: float
    max_step_rad: float
    max_speed_m_s: float
    max_angular_speed_rad_s: float

    def per_tick(self, rate_hz: float) -> tuple[float, float]:
        """(metres, radians) one control tick may move at ``rate_hz`` without exceeding the speed limits."""
        return (min(self.max_step_m, self.max_speed_m_s / rate_hz),
                min(self.max_step_rad, self.max_angular_speed_rad_s / rate_hz))


@dataclass(frozen=True)
class ArmShared:
    """What every arm's ``[arm]`` table holds, read and checked before the kind's own keys: ``fields`` are the
    driver config's common fields (ip, workspace_min/max, home_position, home_orientation, home_gripper)."""

    fields: dict
    max_speed_m_s: float
    home_speed: float
    rate_hz: float


@dataclass
class ArmSpec:
    type: str
    config: Any  # the registered driver's config: XArmConfig | URConfig | ...
    safety: SafetyConfig  # its per-tick steps are those of ``limits`` at the rig's rate
    limits: SpeedLimits
    gripper: Any = None  # RobotiqConfig for a UR with a Robotiq gripper

    def at_rate(self, rate_hz: float) -> "ArmSpec":
        """This arm run at ``rate_hz``: per-tick steps from the speed limits, the driver's own rate-dependent
        settings (the UR's waypoint period) and checks (the xArm's servo mode)."""
        step_m, step_rad = self.limits.per_tick(rate_hz)
        safety = replace(self.safety, max_translation_per_tick=step_m, max_rotation_per_tick=step_rad)
        at_rate = registry.lookup("arm", self.type).option("at_rate")
        config = self.config if at_rate is None else at_rate(self.config, rate_hz, step_m)
        return replace(self, config=config, safety=safety)


@dataclass
class TeleopSpec:
    type: str
    config: Any = None  # the registered driver's config: SpaceMouseConfig | GamepadConfig | ...


@dataclass
class RigConfig:
    path: str
    name: str
    rate_hz: float
    arm: ArmSpec
    cameras: list[CameraEntry]
    teleop: TeleopSpec | None = None
    state_rate_hz: float = DEFAULT_STATE_RATE_HZ  # 0: the arm state is read only when observing

    def with_rate(self, rate_hz: float) -> "RigConfig":
        """The same rig run at another control rate: the per-tick steps (max speed / rate) and the UR's waypoint
        period follow it. A rate the rig cannot run at is a :class:`RigConfigError`."""
        if (isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float))
                or not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ):  # also refuses nan
            shown = f"{rate_hz:g}" if isinstance(rate_hz, (int, float)) and not isinstance(rate_hz, bool) \
                else repr(rate_hz)
            raise RigConfigError(f"{self.path}: a control rate of {shown} Hz is out of range; "
                                 f"use one in [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}] Hz")
        try:
            arm = self.arm.at_rate(float(rate_hz))
        except ValueError as exc:
            raise RigConfigError(f"{self.path}: at {rate_hz:g} Hz: {exc}") from exc
        return replace(self, rate_hz=float(rate_hz), arm=arm)


class RigTable:
    """One TOML table being read: typed getters, and unknown keys reported at the end. The drivers' parsers
    read their keys through it (``REQUIRED``: the default of a key that must be given)."""

    REQUIRED = _REQUIRED

    def __init__(self, data: Any, where: str, file: str):
        if not isinstance(data, dict):
            raise RigConfigError(f"{file}: {where} must be a table, got {type(data).__name__}")
        self.data, self.where, self.file = data, where, file
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> RigConfigError:
        return RigConfigError(f"{self.file}: {self.key(name)} {message}")

    def get(self, name: str, default=_REQUIRED):
        self.used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise RigConfigError(f"{self.file}: {self.key(name)} is missing; add it"
                                     + (f" to the [{self.where}] table" if self.where else ""))
            return default
        return self.data[name]

    def str(self, name: str, default=_REQUIRED, choices: tuple[str, ...] | None = None) -> str:
        value = self.get(name, default)
        if value is None:
            return value
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string (in quotes), got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"must be {_one_of(choices)}, got {value!r}")
        return value

    def num(self, name: str, default=_REQUIRED, low: float | None = None, high: float | None = None,
            integer: bool = False, low_open: bool = False, unit: str = ""):
        """A finite number (an int when ``integer``) in [low, high] ((low, high] when ``low_open``).

        NaN and infinities are refused whatever the range (``value < low`` is False for NaN, so a range
        check alone lets it through), and so are booleans (``true`` is an int to Python)."""
        value = self.get(name, default)
        allowed = _allowed(low, high, low_open, unit)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.fail(name, f"must be {'a whole number' if integer else 'a number'}, got {_show(value)}"
                                  f"{allowed}")
        if not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {value!r}{allowed}")
        if low is not None and (value < low or (low_open and value == low)):
            raise self.fail(name, f"must be {'>' if low_open else '>='} {low:g}, got {value!r}{allowed}")
        if high is not None and value > high:
            raise self.fail(name, f"must be <= {high:g}, got {value!r}{allowed}")
        return value

    def bool(self, name: str, default=_REQUIRED) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def vec(self, name: str, n: int, default=_REQUIRED, low: float | None = None, high: float | None = None,
            unit: str = "") -> tuple[float, ...]:
        """A list of ``n`` finite numbers (not booleans), each in [low, high] when given."""
        value = self.get(name, default)
        allowed = _allowed(low, high, False, unit)
        if (not isinstance(value, (list, tuple)) or len(value) != n
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise self.fail(name, f"must be a list of {n} numbers, got {_show(value)}{allowed}")
        if not all(math.isfinite(v) for v in value):
            raise self.fail(name, f"must be a list of {n} finite numbers, got {value!r}{allowed}")
        for i, v in enumerate(value):
            if (low is not None and v < low) or (high is not None and v > high):
                raise self.fail(f"{name}[{i}]", f"is out of range, got {v!r} in {value!r}{allowed}")
        return tuple(float(v) for v in value)

    def table(self, name: str, required: bool = False) -> "RigTable":
        value = self.get(name, _REQUIRED if required else {})
        return RigTable(value, self.key(name), self.file)

    def kind(self, kind: str, extra: tuple[str, ...] = ()) -> str:
        """The ``type`` key: the name of a registered ``kind`` of device (or one of ``extra``); an unknown one is
        refused with the registered names and the nearest of them."""
        choices = (*registry.names(kind), *extra)
        value = self.str("type")
        if value not in choices:
            raise self.fail("type", f"must be {_one_of(choices)}, got {value!r}{registry.nearest(value, choices)}")
        return value

    def address(self, name: str, default=_REQUIRED, ipv4_only: str | None = None, hostname: bool = False) -> str:
        """A device's network address: an IP address (IPv4 only when ``ipv4_only``, the reason, is given), or
        also a host name when ``hostname``."""
        value = self.str(name, default)
        want = ("an IPv4 address such as \"192.168.1.200\"" if ipv4_only
                else "an IP address such as \"192.168.1.200\"" + (" or a host name" if hostname else ""))
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if hostname and _is_hostname(value):
                return value
            raise self.fail(name, f"must be {want}, got {value!r}") from None
        if ipv4_only and address.version != 4:
            raise self.fail(name, f"must be {want} ({ipv4_only}), got {value!r}")
        if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
            raise self.fail(name, f"must be the device's own address, not {value!r} (unspecified, multicast or "
                                  "broadcast)")
        return value

    def checked(self, build):
        """``build()``, its ValueError (a driver config's own check) reported as this table's."""
        try:
            return build()
        except ValueError as exc:
            if isinstance(exc, RigConfigError):
                raise
            raise RigConfigError(f"{self.file}: [{self.where}] {exc}") from exc

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, sorted(self.used), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(self.used))}"
            raise self.fail(name, f"is not a known key; {hint}")


def _show(value) -> str:
    """A value as the rig file spells it (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _allowed(low, high, low_open: bool, unit: str) -> str:
    """'; allowed: (0, 0.05] m' and the like, for error messages."""
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"; allowed: {'(' if low_open else '['}{low:g}, {high:g}]{unit}"
    if low is not None:
        return f"; allowed: {'>' if low_open else '>='} {low:g}{unit}"
    if high is not None:
        return f"; allowed: <= {high:g}{unit}"
    return ""


def _is_hostname(text: str) -> bool:
    """A syntactically valid DNS host name (RFC 1123 labels); all-numeric names are not (they are bad IPs)."""
    labels = text.split(".")
    return (0 < len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


# -- sections -------------------------------------------------------------------
def _parse_arm(t: RigTable, rate_hz: float) -> ArmSpec:
    kind = t.kind("arm")
    driver = registry.lookup("arm", kind)
    ip = t.address("ip", ipv4_only=driver.option("ipv4_only"))
    home = t.table("home", required=True)
    home_position = home.vec("position", 3)
    home_orientation = home.vec("orientation", 4)
    norm = math.sqrt(sum(v * v for v in home_orientation))
    if abs(norm - 1.0) > 0.01:
        raise home.fail("orientation", f"must be a unit quaternion [x, y, z, w] (norm 1 within 0.01), got "
                                       f"{list(home_orientation)} of norm {norm:.4g}")
    home_gripper = home.num("gripper", 1.0, 0.0, 1.0)
    home.done()
    ws = t.table("workspace", required=True)
    lo = ws.vec("min", 3, low=-WORKSPACE_BOUND_M, high=WORKSPACE_BOUND_M, unit="m")
    hi = ws.vec("max", 3, low=-WORKSPACE_BOUND_M, high=WORKSPACE_BOUND_M, unit="m")
    ws.done()
    for axis, a, b in zip("xyz", lo, hi):
        if a >= b:
            raise ws.fail("min", f"must be below {ws.key('max')} on every axis; on {axis}: {a} >= {b}")
    if any(p < a or p > b for p, a, b in zip(home_position, lo, hi)):
        raise home.fail("position", f"{list(home_position)} lies outside the workspace {list(lo)}..{list(hi)}; "
                                    "move the home pose inside the box or grow the box")
    limits_table = t.table("limits")
    limits = SpeedLimits(
        max_step_m=limits_table.num("max_step_m", 0.02, 0.0, 0.05, low_open=True, unit="m"),
        max_step_rad=limits_table.num("max_step_rad", 0.15, 0.0, 0.5, low_open=True, unit="rad"),
        max_speed_m_s=limits_table.num("max_speed_m_s", 0.10, 0.0, 1.0, low_open=True, unit="m/s"),
        max_angular_speed_rad_s=limits_table.num("max_angular_speed_rad_s", 1.0, 0.0, 3.0, low_open=True,
                                                 unit="rad/s"))
    watchdog = limits_table.num("watchdog_s", 0.5, 0.05, 5.0, unit="s")
    limits_table.done()
    home_speed = t.num("home_speed", 0.05, 0.0, 0.25, low_open=True, unit="m/s")
    shared = ArmShared(dict(ip=ip, workspace_min=lo, workspace_max=hi, home_position=home_position,
                            home_orientation=home_orientation, home_gripper=home_gripper),
                       limits.max_speed_m_s, home_speed, rate_hz)

    def build() -> ArmSpec:
        step_m, step_rad = limits.per_tick(rate_hz)
        safety = SafetyConfig(workspace_min=lo, workspace_max=hi, max_translation_per_tick=step_m,
                              max_rotation_per_tick=step_rad, watchdog_timeout=watchdog)
        config, gripper = driver.option("parse")(t, shared)
        return ArmSpec(kind, config, safety, limits, gripper).at_rate(rate_hz)

    spec = t.checked(build)
    t.done()
    return spec


def _parse_camera(t: RigTable) -> CameraEntry:
    role = t.str("role", choices=CAMERA_ROLES)
    kind = t.kind("camera")
    driver = registry.lookup("camera", kind)
    width = int(t.num("width", integer=True, low=1, high=driver.option("max_width"), unit="pixels"))
    height = int(t.num("height", integer=True, low=1, high=driver.option("max_height"), unit="pixels"))
    fps = t.num("fps", low=1.0, high=driver.option("max_fps"), unit="fps")
    # Left out: the limit is derived from the camera's frame rate and intervals (robot_drivers/camera.py);
    # given: that fixed limit, instead of the derived one.
    stale = t.num("stale_limit_s", None, 0.01, 5.0, unit="s") if "stale_limit_s" in t.data else None
    config = t.checked(lambda: driver.option("parse")(t, width, height, fps, stale))
    t.done()
    return CameraEntry(role, kind, config)


def _parse_teleop(t: RigTable) -> TeleopSpec | None:
    kind = t.kind("teleop", extra=(NO_TELEOP,))
    if kind == NO_TELEOP:
        t.done()
        return None
    config = registry.lookup("teleop", kind).option("parse")(t)
    t.done()
    return TeleopSpec(kind, config)


def _check_cameras(file: str, cameras: list[CameraEntry]) -> None:
    """Checks across the cameras: one camera per role, then each kind's own (a serial given twice, say)."""
    roles = [c.role for c in cameras]
    for role in set(roles):
        if roles.count(role) > 1:
            raise RigConfigError(f"{file}: two cameras have role '{role}'; each role ('hand', 'third') names one camera")
    for driver in registry.registrations("camera"):
        check = driver.option("check_rig")
        if check is not None:
            try:
                check([c.config for c in cameras if c.type == driver.name])
            except ValueError as exc:
                raise RigConfigError(f"{file}: {exc}") from exc


# -- public API -------------------------------------------------------------------
def _read_rig_file(path) -> tuple[str, Path, dict]:
    """(the name as given, the path, the parsed TOML) of a rig file; RigConfigError when it is missing or not
    TOML."""
    file = str(path)
    p = Path(path)
    if not p.is_file():
        raise RigConfigError(f"{file}: no such rig file (examples are in configs/)")
    try:
        return file, p, tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RigConfigError(f"{file}: not valid TOML: {exc}") from exc


@dataclass(frozen=True)
class SimRigFile:
    """A rig file that names a built-in simulated rig (top-level ``kind``), e.g.::

        kind = "metaworld"          # a registered built-in rig: "sim" or "metaworld"
        task = "drawer-open-v3"     # the rig's parameter, where it takes one
        rate_hz = 20                # optional: the rig's own rate when left out
        camera_size = 128           # optional: square images of this side (16..512)
    """

    path: str
    name: str
    robot: str  # as --robot names it: "sim", "metaworld:drawer-open-v3"
    rate_hz: float | None
    camera_size: int


def load_sim_rig_file(path) -> SimRigFile | None:
    """The simulated rig a file names (its top level has ``kind``), None for a real rig's file;
    :class:`RigConfigError` names what is wrong."""
    file, p, data = _read_rig_file(path)
    if "kind" not in data:
        return None
    root = RigTable(data, "", file)
    kinds = registry.names("rig")
    kind = root.str("kind", choices=kinds)
    parameter = registry.lookup("rig", kind).option("parameter")
    robot = kind
    if parameter:
        value = root.str(parameter)
        if not value.strip():
            raise root.fail(parameter, f"is empty; the {kind} rig needs its {parameter}")
        robot = f"{kind}:{value}"
    rate = root.get("rate_hz", None)
    rate_hz = None if rate is None else root.num("rate_hz", None, MIN_RATE_HZ, MAX_RATE_HZ, unit="Hz")
    size = root.num("camera_size", 128, 16, 512, unit="px")
    if size != int(size):
        raise root.fail("camera_size", f"must be a whole number of pixels, got {size!r}")
    name = root.str("name", p.stem)
    root.done()
    return SimRigFile(file, name, robot, None if rate_hz is None else float(rate_hz), int(size))


def load_rig_config(path) -> RigConfig:
    """Read and validate a rig file, whatever its name; :class:`RigConfigError` says what is wrong and how to fix
    it. Nothing is built or connected here: ``devices``, ``record`` and ``gui`` all validate through this."""
    file, p, data = _read_rig_file(path)
    root = RigTable(data, "", file)
    name = root.str("name", p.stem)
    if not name.strip():
        raise root.fail("name", "is empty; name the rig, or leave the key out to use the file's name")
    rate_hz = root.num("rate_hz", 10.0, MIN_RATE_HZ, MAX_RATE_HZ, unit="Hz")
    state_rate_hz = root.num("state_rate_hz", DEFAULT_STATE_RATE_HZ, 0.0, 500.0, unit="Hz")
    if 0.0 < state_rate_hz < 1.0:
        raise root.fail("state_rate_hz", f"must be 0 (read the arm state only when observing) or in [1, 500] Hz, "
                                         f"got {state_rate_hz!r}")
    arm = _parse_arm(root.table("arm", required=True), rate_hz)
    raw_cameras = root.get("cameras", None)
    if not isinstance(raw_cameras, list) or not raw_cameras:
        raise RigConfigError(f"{file}: cameras must be one or more [[cameras]] tables (a 'hand' and a 'third' "
                             "camera for ALT); see configs/ for examples")
    cameras = [_parse_camera(RigTable(c, f"cameras[{i}]", file)) for i, c in enumerate(raw_cameras)]
    _check_cameras(file, cameras)
    teleop = _parse_teleop(root.table("teleop")) if "teleop" in data else None
    root.used.add("teleop")
    root.done()
    return RigConfig(file, name, float(rate_hz), arm, cameras, teleop, float(state_rate_hz))


class HardwareRig(Rig):
    """A rig of real devices; it also closes the teleop device built for it."""

    def _disconnect(self) -> None:
        try:
            super()._disconnect()
        finally:
            teleop = self.extras.get("teleop")
            if teleop is not None:
                teleop.disconnect()


def build_arm(spec: ArmSpec) -> SafeArm:
    """The registered driver of ``spec.type`` (its ``build`` option, else ``driver(config)``) behind SafeArm."""
    registered = registry.lookup("arm", spec.type)
    build = registered.option("build")
    return SafeArm(build(spec) if build is not None else registered.driver(spec.config), spec.safety)


def build_camera(spec: CameraEntry):
    return registry.lookup("camera", spec.type).driver(spec.config, spec.role)


def build_rig(config: RigConfig) -> Rig:
    """The rig the file describes, not yet connected; the arm is wrapped in :class:`SafeArm`."""
    cameras = {spec.role: build_camera(spec) for spec in config.cameras}
    return HardwareRig(arm=build_arm(config.arm), cameras=cameras, clock=RealTimeClock(config.rate_hz),
                       name=config.name, extras={"rig_config": config}, state_rate_hz=config.state_rate_hz)


def build_teleop(config: RigConfig, rig: Rig | None = None) -> Teleop | None:
    """The teleop device named in the file (None for none); opened on first use or by connect()."""
    spec = config.teleop
    if spec is None:
        return None
    teleop = registry.lookup("teleop", spec.type).driver(spec.config)
    if rig is not None:
        rig.extras["teleop"] = teleop
    return teleop
