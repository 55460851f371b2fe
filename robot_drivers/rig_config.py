"""Rig config files (TOML): which arm, cameras and teleop device make up a real rig.

    rate_hz = 10
    state_rate_hz = 50                 # arm state sampling, to pair frames with the state at their capture time
    [arm]
    type = "xarm"                      # "xarm" or "ur"
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
    type = "realsense"                 # "realsense" or "opencv"
    serial = "123456789012"
    width = 640
    height = 480
    fps = 30
    [teleop]
    type = "spacemouse"                # "spacemouse", "gamepad" or "none"

Every key is checked before anything is built or connected: an unknown key (a
typo; the error suggests the nearest valid name, in every table), a wrong type
or a bad value is a :class:`RigConfigError` naming the file, the key, the bad
value and the allowed range. Every number must be finite (``nan``/``inf`` are
refused everywhere: NaN compares False, so a NaN limit would never clip) and a
real number (``true`` is not 1). The ranges ([a, b] inclusive, (a, b] excludes a):

    rate_hz                      [1, 100] Hz (also for --rate)
    state_rate_hz                0 (off) or [1, 500] Hz
    arm.ip                       an IP address: IPv4 for an xArm (its SDK opens a
                                 serial port for anything else), IPv4 or IPv6 for a UR;
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
    arm.rtde_frequency (UR)      -1 (the controller's rate) or [1, 500] Hz
    arm.servo_lookahead (UR)     [0.03, 0.2] s
    arm.servo_gain (UR)          [100, 2000]
    arm.servo_rate_hz (UR)       [125, 500] Hz, at most rtde_frequency
    arm.gripper.host (UR)        an IP address or a host name (letters, digits, '-', '.')
    arm.gripper.port / speed / force   whole numbers in 1..65535 / 0..255 / 0..255
    cameras[].width x height     RealSense 1..1920 x 1..1080, OpenCV 1..4096 x 1..4096
    cameras[].fps                RealSense a whole number in 1..90, OpenCV [1, 120]
    cameras[].serial             1 to 32 letters, digits, '-' or '_' (RealSense)
    cameras[].source             a device index 0..255 or a non-empty path (OpenCV)
    cameras[].fourcc             four printable ASCII characters (OpenCV)
    cameras[].warmup_frames      0..300
    cameras[].stale_limit_s      [0.01, 5] s
    teleop.dead_zone             [0, 0.95]
    teleop.max_linear_speed      (0, 0.5] m/s
    teleop.max_angular_speed     (0, 3] rad/s
    teleop.operator_yaw_deg      [-180, 180]
    teleop.signs                 six values of 1 or -1
    teleop.index (gamepad)       0..15
    teleop.buttons               button numbers 0..63 mapped to a known action

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.clock import RealTimeClock
from robot_drivers.rig import DEFAULT_STATE_RATE_HZ, Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.teleop import Teleop

log = logging.getLogger(__name__)

ARM_TYPES = ("xarm", "ur")
CAMERA_TYPES = ("realsense", "opencv")
CAMERA_ROLES = ("hand", "third")
TELEOP_TYPES = ("spacemouse", "gamepad", "none")
MIN_RATE_HZ = 1.0
MAX_RATE_HZ = 100.0
WORKSPACE_BOUND_M = 2.0  # no supported arm reaches further than this from its base
_REQUIRED = object()
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SERIAL = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BUTTON = re.compile(r"0|[1-9][0-9]?")
MAX_BUTTON = 63


class RigConfigError(ValueError):
    """A rig file that cannot be used; the message names the file, the key and the fix."""


@dataclass
class CameraSpec:
    role: str
    type: str
    config: Any  # RealSenseCameraConfig | OpenCVCameraConfig


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


@dataclass
class ArmSpec:
    type: str
    config: Any  # XArmConfig | URConfig
    safety: SafetyConfig  # its per-tick steps are those of ``limits`` at the rig's rate
    limits: SpeedLimits
    gripper: Any = None  # RobotiqConfig for a UR with a Robotiq gripper

    def at_rate(self, rate_hz: float) -> "ArmSpec":
        """This arm run at ``rate_hz``: per-tick steps from the speed limits, the UR's waypoint period, checks."""
        step_m, step_rad = self.limits.per_tick(rate_hz)
        safety = replace(self.safety, max_translation_per_tick=step_m, max_rotation_per_tick=step_rad)
        config = self.config
        if self.type == "ur":
            config = replace(config, rate_hz=rate_hz)
        else:
            from robot_drivers.xarm import check_streaming_rate

            check_streaming_rate(config, rate_hz, step_m)
        return replace(self, config=config, safety=safety)


@dataclass
class TeleopSpec:
    type: str
    config: Any = None  # SpaceMouseConfig | GamepadConfig


@dataclass
class RigConfig:
    path: str
    name: str
    rate_hz: float
    arm: ArmSpec
    cameras: list[CameraSpec]
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


class _Table:
    """One TOML table being read: typed getters, and unknown keys reported at the end."""

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

    def table(self, name: str, required: bool = False) -> "_Table":
        value = self.get(name, _REQUIRED if required else {})
        return _Table(value, self.key(name), self.file)

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


def _address(t: "_Table", name: str, default=_REQUIRED, ipv4_only: bool = False, hostname: bool = False) -> str:
    """An arm's (or gripper's) network address: an IP address, or also a host name when ``hostname``."""
    value = t.str(name, default)
    want = ("an IPv4 address such as \"192.168.1.200\"" if ipv4_only
            else "an IP address such as \"192.168.1.200\"" + (" or a host name" if hostname else ""))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if hostname and _is_hostname(value):
            return value
        raise t.fail(name, f"must be {want}, got {value!r}") from None
    if ipv4_only and address.version != 4:
        raise t.fail(name, f"must be {want} (the xArm SDK opens a serial port for anything else), got {value!r}")
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise t.fail(name, f"must be the device's own address, not {value!r} (unspecified, multicast or broadcast)")
    return value


def _one_of(choices) -> str:
    quoted = [f"'{c}'" for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _wrap(file: str, where: str, exc: ValueError) -> RigConfigError:
    return RigConfigError(f"{file}: [{where}] {exc}")


# -- sections -------------------------------------------------------------------
def _parse_arm(t: _Table, rate_hz: float) -> ArmSpec:
    kind = t.str("type", choices=ARM_TYPES)
    ip = _address(t, "ip", ipv4_only=kind == "xarm")
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
    speed = limits.max_speed_m_s
    home_speed = t.num("home_speed", 0.05, 0.0, 0.25, low_open=True, unit="m/s")
    common = dict(ip=ip, workspace_min=lo, workspace_max=hi, home_position=home_position,
                  home_orientation=home_orientation, home_gripper=home_gripper)
    gripper = None
    try:
        step_m, step_rad = limits.per_tick(rate_hz)
        safety = SafetyConfig(workspace_min=lo, workspace_max=hi, max_translation_per_tick=step_m,
                              max_rotation_per_tick=step_rad, watchdog_timeout=watchdog)
        if kind == "xarm":
            from robot_drivers.xarm import XArmConfig

            config = XArmConfig(**common, mode=t.str("mode", "online", choices=("online", "servo")),
                                tcp_speed=speed, home_speed=min(speed, home_speed),
                                gripper=t.bool("gripper", True),
                                clear_errors_on_connect=t.bool("clear_errors_on_connect", False))
        else:
            from robot_drivers.grippers import RobotiqConfig
            from robot_drivers.ur import URConfig

            rtde_frequency = t.num("rtde_frequency", -1.0, unit="Hz")
            if rtde_frequency != -1 and not 1.0 <= rtde_frequency <= 500.0:
                raise t.fail("rtde_frequency", f"must be -1 (the controller's own rate) or in [1, 500] Hz, got "
                                               f"{rtde_frequency!r}")
            config = URConfig(**common, rate_hz=rate_hz, rtde_frequency=rtde_frequency,
                              servo_lookahead=t.num("servo_lookahead", 0.1, 0.03, 0.2, unit="s"),
                              servo_gain=t.num("servo_gain", 300.0, 100.0, 2000.0),
                              servo_rate_hz=t.num("servo_rate_hz", 125.0, 125.0, 500.0, unit="Hz"),
                              home_speed=home_speed)
            g = t.table("gripper")
            gtype = g.str("type", "none", choices=("none", "robotiq"))
            if gtype == "robotiq":
                gripper = RobotiqConfig(host=_address(g, "host", ip, hostname=True),
                                        port=int(g.num("port", 63352, 1, 65535, integer=True)),
                                        speed=int(g.num("speed", 255, 0, 255, integer=True)),
                                        force=int(g.num("force", 100, 0, 255, integer=True)))
            g.done()
        spec = ArmSpec(kind, config, safety, limits, gripper).at_rate(rate_hz)
    except ValueError as exc:
        if isinstance(exc, RigConfigError):
            raise
        raise _wrap(t.file, t.where, exc) from exc
    t.done()
    return spec


def _parse_camera(t: _Table) -> CameraSpec:
    role = t.str("role", choices=CAMERA_ROLES)
    kind = t.str("type", choices=CAMERA_TYPES)
    if kind == "realsense":  # D400 colour streams go up to 1920x1080, 90 fps at low resolutions
        width = int(t.num("width", integer=True, low=1, high=1920, unit="pixels"))
        height = int(t.num("height", integer=True, low=1, high=1080, unit="pixels"))
        fps = t.num("fps", low=1.0, high=90.0, unit="fps")
    else:  # a webcam or a capture card: up to 4K
        width = int(t.num("width", integer=True, low=1, high=4096, unit="pixels"))
        height = int(t.num("height", integer=True, low=1, high=4096, unit="pixels"))
        fps = t.num("fps", low=1.0, high=120.0, unit="fps")
    stale = t.num("stale_limit_s", 0.5, 0.01, 5.0, unit="s")
    try:
        if kind == "realsense":
            from robot_drivers.realsense import RealSenseCameraConfig

            playback = t.str("playback_file", None)
            if playback is not None and not playback.strip():
                raise t.fail("playback_file", "is empty; give the path of a recorded .db3 file or leave it out")
            serial = t.str("serial", "" if playback else _REQUIRED)
            if not playback and not serial.strip():
                raise t.fail("serial", "is empty; run `python main.py devices` to list the connected cameras")
            if serial and not _SERIAL.fullmatch(serial):
                raise t.fail("serial", f"must be a camera serial number (1 to 32 letters, digits, '-' or '_'; "
                                       f"`python main.py devices` lists them), got {serial!r}")
            if int(fps) != fps:
                raise t.fail("fps", f"must be a whole number for a RealSense camera, got {fps}")
            config = RealSenseCameraConfig(serial=serial, width=width, height=height, fps=int(fps),
                                           depth=t.bool("depth", False),
                                           hw_sync_role=t.str("hw_sync_role", "none", choices=("none", "master", "slave")),
                                           warmup_frames=int(t.num("warmup_frames", 15, 0, 300, integer=True)),
                                           stale_limit_s=stale, playback_file=playback)
            if config.hw_sync_role != "none" and not config.depth:
                log.warning("%s: %s.hw_sync_role = %r with depth = false: on D400 cameras the sync cable drives the "
                            "depth sensor, so the colour frames are not hardware-synchronised; set depth = true, or "
                            "hw_sync_role = \"none\" and rely on the frame alignment by host time", t.file, t.where,
                            config.hw_sync_role)
        else:
            from robot_drivers.opencv_camera import OpenCVCameraConfig

            source = t.get("source")
            if isinstance(source, bool) or not isinstance(source, (int, str)):
                raise t.fail("source", f"must be a device index (0, 1, ...) or a path, got {source!r}")
            if isinstance(source, str) and source.isascii() and source.isdigit():
                source = int(source)
            if isinstance(source, int) and not 0 <= source <= 255:
                raise t.fail("source", f"must be a device index in 0..255 (/dev/videoN) or a path, got {source!r}")
            if isinstance(source, str) and (not source.strip() or "\0" in source):
                raise t.fail("source", f"must be a device index (0, 1, ...) or a non-empty path, got {source!r}")
            fourcc = t.str("fourcc", None)
            if fourcc is not None and not (len(fourcc) == 4 and fourcc.isascii() and fourcc.isprintable()):
                raise t.fail("fourcc", f"must be four characters such as \"MJPG\", got {fourcc!r}")
            config = OpenCVCameraConfig(source=source, width=width, height=height, fps=float(fps),
                                        fourcc=fourcc, stale_limit_s=stale,
                                        warmup_frames=int(t.num("warmup_frames", 5, 0, 300, integer=True)))
    except ValueError as exc:
        if isinstance(exc, RigConfigError):
            raise
        raise _wrap(t.file, t.where, exc) from exc
    t.done()
    return CameraSpec(role, kind, config)


def _parse_teleop(t: _Table) -> TeleopSpec | None:
    kind = t.str("type", choices=TELEOP_TYPES)
    if kind == "none":
        t.done()
        return None
    from robot_drivers.spacemouse import AxisScaling

    signs = t.vec("signs", 6, (1, 1, 1, 1, 1, 1))
    if any(v not in (1.0, -1.0) for v in signs):
        raise t.fail("signs", f"must be six values of 1 or -1, got {list(signs)}")
    try:
        scaling = AxisScaling(dead_zone=t.num("dead_zone", 0.1 if kind == "spacemouse" else 0.15, 0.0, 0.95),
                              max_linear_speed=t.num("max_linear_speed", 0.10, 0.0, 0.5, low_open=True, unit="m/s"),
                              max_angular_speed=t.num("max_angular_speed", 0.6, 0.0, 3.0, low_open=True,
                                                      unit="rad/s"),
                              signs=signs,
                              operator_yaw_deg=t.num("operator_yaw_deg", 0.0, -180.0, 180.0, unit="degrees"))
    except ValueError as exc:
        if isinstance(exc, RigConfigError):
            raise
        raise _wrap(t.file, t.where, exc) from exc
    raw_buttons = t.get("buttons", None)
    buttons = None
    if raw_buttons is not None:
        if not isinstance(raw_buttons, dict):
            raise t.fail("buttons", "must be a table such as { 0 = \"gripper\", 1 = \"start_stop\" }")
        from robot_drivers.spacemouse import BUTTON_ACTIONS

        buttons = {}
        for key, action in raw_buttons.items():
            if not _BUTTON.fullmatch(key) or int(key) > MAX_BUTTON:
                raise t.fail(f"buttons.{key}", f"must be a button number in 0..{MAX_BUTTON}")
            if not isinstance(action, str) or action not in BUTTON_ACTIONS:
                raise t.fail(f"buttons.{key}", f"must be {_one_of(BUTTON_ACTIONS)}, got {action!r}")
            buttons[int(key)] = action
    if kind == "spacemouse":
        from robot_drivers.spacemouse import SpaceMouseConfig

        device = t.str("device", None)
        if device is not None and not device.strip():
            raise t.fail("device", "is empty; give a model name (see pyspacemouse's device list) or leave it out")
        config = SpaceMouseConfig(device=device, scaling=scaling)
    else:
        from robot_drivers.gamepad import GamepadConfig

        config = GamepadConfig(index=int(t.num("index", 0, 0, 15, integer=True)), scaling=scaling)
    if buttons is not None:
        config.buttons = buttons
    t.done()
    return TeleopSpec(kind, config)


# -- public API -------------------------------------------------------------------
def load_rig_config(path) -> RigConfig:
    """Read and validate a rig file, whatever its name; :class:`RigConfigError` says what is wrong and how to fix
    it. Nothing is built or connected here: ``devices``, ``record`` and ``gui`` all validate through this."""
    file = str(path)
    p = Path(path)
    if not p.is_file():
        raise RigConfigError(f"{file}: no such rig file (examples are in configs/)")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RigConfigError(f"{file}: not valid TOML: {exc}") from exc
    root = _Table(data, "", file)
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
    cameras = [_parse_camera(_Table(c, f"cameras[{i}]", file)) for i, c in enumerate(raw_cameras)]
    roles = [c.role for c in cameras]
    for role in set(roles):
        if roles.count(role) > 1:
            raise RigConfigError(f"{file}: two cameras have role '{role}'; each role ('hand', 'third') names one camera")
    serials = [c.config.serial for c in cameras if c.type == "realsense" and c.config.serial]
    for serial in set(serials):
        if serials.count(serial) > 1:
            raise RigConfigError(f"{file}: serial {serial!r} is given to two cameras; each camera has its own")
    sync = [c.config.hw_sync_role for c in cameras if c.type == "realsense"]
    if sync.count("master") > 1:
        raise RigConfigError(f"{file}: more than one camera has hw_sync_role = 'master'; make one the master and "
                             "the others 'slave'")
    if "slave" in sync and "master" not in sync:
        raise RigConfigError(f"{file}: a camera has hw_sync_role = 'slave' but none is 'master'; set one to 'master'")
    teleop = _parse_teleop(root.table("teleop")) if "teleop" in data else None
    root.used.add("teleop")
    root.done()
    return RigConfig(file, name, float(rate_hz), arm, cameras, teleop, float(state_rate_hz))


class HardwareRig(Rig):
    """A rig of real devices; it also closes the teleop device built for it."""

    def disconnect(self) -> None:
        try:
            super().disconnect()
        finally:
            teleop = self.extras.get("teleop")
            if teleop is not None:
                teleop.disconnect()


def build_arm(spec: ArmSpec):
    if spec.type == "xarm":
        from robot_drivers.xarm import XArm

        driver = XArm(spec.config)
    else:
        from robot_drivers.grippers import RobotiqSocketGripper
        from robot_drivers.ur import URArm

        driver = URArm(spec.config, RobotiqSocketGripper(spec.gripper) if spec.gripper is not None else None)
    return SafeArm(driver, spec.safety)


def build_camera(spec: CameraSpec):
    if spec.type == "realsense":
        from robot_drivers.realsense import RealSenseCamera

        return RealSenseCamera(spec.config, spec.role)
    from robot_drivers.opencv_camera import OpenCVCamera

    return OpenCVCamera(spec.config, spec.role)


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
    if spec.type == "spacemouse":
        from robot_drivers.spacemouse import SpaceMouseTeleop

        teleop = SpaceMouseTeleop(spec.config)
    else:
        from robot_drivers.gamepad import GamepadTeleop

        teleop = GamepadTeleop(spec.config)
    if rig is not None:
        rig.extras["teleop"] = teleop
    return teleop
