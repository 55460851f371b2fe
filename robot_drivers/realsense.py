"""Intel RealSense colour camera (D400 series) through pyrealsense2.

The camera is opened at sensor level (``sensor.open`` / ``sensor.start`` into
an ``rs.syncer``), not through ``rs.pipeline``: the same code then drives a
USB camera, an ``rs.software_device`` fed with synthetic frames and a recorded
``.db3`` file played back, which is how this module is tested without a camera.

Per frame it keeps the device timestamp (``frame.get_timestamp()``, converted
from milliseconds to seconds; the global time domain is switched on where the
sensor supports it, so the timestamps of several cameras share the host time
base) and the host monotonic receive time. Optional depth is aligned to the
colour image (``rs.align``) and kept beside the frame (:meth:`depth_for`).

Connection follows the usual practice: up to ``connect_attempts`` tries, a USB
``hardware_reset`` before the last one; a stream that stalls for
``reconnect_after_s`` is reopened the same way (for up to ``reset_wait_s``
while the camera is off the bus), and readers get :class:`StaleFrameError`
meanwhile (frames older than the camera's stale limit are refused: ``stale_limit_s`` when
given, else derived from the frame rate and intervals, see :mod:`robot_drivers.camera`); ``disconnect``
ends a recovery in progress.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from robot_drivers.camera import Camera
from core.errors import ConnectionLostError, DeviceError, DeviceNotFoundError, UnsupportedModeError
from core.types import Frame
from robot_drivers.registry import register_camera

log = logging.getLogger(__name__)

HW_SYNC_ROLES = {"none": 0, "master": 1, "slave": 2}
BRINGUP = "see docs/bringup.md"
_SERIAL = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # pragma: no cover - the package is a dev dependency
        raise DeviceError("pyrealsense2 is not installed: pip install -e '.[realsense]' "
                          "(it also needs the Debian package libusb-1.0-0)") from exc
    return rs


@dataclass
class RealSenseCameraConfig:
    serial: str = ""  # the camera's serial number (`python main.py devices` lists them)
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = False  # also stream depth, aligned to the colour image
    hw_sync_role: str = "none"  # "none" | "master" | "slave" (needs a sync cable between the cameras)
    global_time: bool = True  # device timestamps on the host time base where supported
    warmup_frames: int = 15  # frames discarded at start while auto-exposure settles
    stale_limit_s: float | None = None  # fixed limit (s) for frames' age; None: derived (robot_drivers.camera)
    connect_attempts: int = 3  # a USB hardware reset precedes the last attempt
    timeout_ms: int = 1000  # longest wait for one frame while streaming
    startup_timeout_s: float = 5.0  # longest wait for the first frame after starting the sensors
    reconnect_after_s: float = 2.0  # reopen the camera after this long without a frame
    reset_wait_s: float = 10.0  # how long to wait for the camera to re-enumerate after a reset
    playback_file: str | None = None  # play a recorded .db3 instead of opening a camera
    playback_real_time: bool = False  # False: every recorded frame is delivered, none dropped

    def __post_init__(self):
        if not self.serial and not self.playback_file:
            raise ValueError("a RealSense camera needs its serial number (run `python main.py devices` to list them)")
        for key in ("width", "height", "fps", "connect_attempts", "timeout_ms"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"RealSense {key} must be positive, got {getattr(self, key)!r}")
        if self.warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {self.warmup_frames}")
        if self.stale_limit_s is not None and not 0.0 < self.stale_limit_s < float("inf"):
            raise ValueError(f"stale_limit_s must be positive, got {self.stale_limit_s}")
        if self.hw_sync_role not in HW_SYNC_ROLES:
            raise ValueError(f"hw_sync_role must be one of {sorted(HW_SYNC_ROLES)}, got {self.hw_sync_role!r}")


def realsense_from_rig_table(t, width: int, height: int, fps: float,
                             stale_limit_s: float | None) -> RealSenseCameraConfig:
    """A RealSense camera's config from its rig file's ``[[cameras]]`` entry ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`; D400 colour streams go up to 1920 x 1080, and up to 90 fps at low
    resolutions: fps must be a whole number). Its own keys:

        serial          1 to 32 letters, digits, '-' or '_' (`python main.py devices` lists them)
        playback_file   a recorded .db3 file to play instead (then serial may be left out)
        depth           false (default)
        hw_sync_role    "none" (default), "master" or "slave"
        warmup_frames   0..300 (default 15)
    """
    playback = t.str("playback_file", None)
    if playback is not None and not playback.strip():
        raise t.fail("playback_file", "is empty; give the path of a recorded .db3 file or leave it out")
    serial = t.str("serial", "" if playback else t.REQUIRED)
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
                                   stale_limit_s=stale_limit_s, playback_file=playback)
    if config.hw_sync_role != "none" and not config.depth:
        log.warning("%s: %s.hw_sync_role = %r with depth = false: on D400 cameras the sync cable drives the "
                    "depth sensor, so the colour frames are not hardware-synchronised; set depth = true, or "
                    "hw_sync_role = \"none\" and rely on the frame alignment by host time", t.file, t.where,
                    config.hw_sync_role)
    return config


def check_realsense_rig(configs: list[RealSenseCameraConfig]) -> None:
    """The RealSense cameras of one rig: each has its own serial, and hardware sync has one master (ValueError)."""
    serials = [c.serial for c in configs if c.serial]
    for serial in set(serials):
        if serials.count(serial) > 1:
            raise ValueError(f"serial {serial!r} is given to two cameras; each camera has its own")
    sync = [c.hw_sync_role for c in configs]
    if sync.count("master") > 1:
        raise ValueError("more than one camera has hw_sync_role = 'master'; make one the master and the others "
                         "'slave'")
    if "slave" in sync and "master" not in sync:
        raise ValueError("a camera has hw_sync_role = 'slave' but none is 'master'; set one to 'master'")


def device_info(device) -> dict[str, str]:
    """Serial, name, firmware, USB type and product line of an ``rs.device`` (missing fields are '')."""
    rs = _rs()
    fields = {"serial": rs.camera_info.serial_number, "name": rs.camera_info.name,
              "firmware": rs.camera_info.firmware_version, "usb": rs.camera_info.usb_type_descriptor,
              "product_line": rs.camera_info.product_line}
    return {key: (device.get_info(info) if device.supports(info) else "") for key, info in fields.items()}


def list_devices(context=None) -> list[dict[str, str]]:
    """Every RealSense camera the context sees, as :func:`device_info` dicts."""
    rs = _rs()
    context = context if context is not None else rs.context()
    return [device_info(d) for d in context.query_devices()]


def find_device(serial: str, devices: Iterable):
    """The device with this serial number; a clear error naming the serials found otherwise."""
    devices = list(devices)
    found = []
    for dev in devices:
        info = device_info(dev)
        if info["serial"] == serial:
            return dev
        found.append(f"{info['serial']} ({info['name'] or 'unknown model'})")
    if not found:
        raise DeviceNotFoundError(
            f"no RealSense camera with serial {serial!r}: none connected — check the USB cable (use a USB 3 "
            f"port), that the udev rules are installed and that no other program holds the camera ({BRINGUP})")
    raise DeviceNotFoundError(
        f"no RealSense camera with serial {serial!r}; connected: {', '.join(found)}. "
        "Put one of these serials in the rig file (`python main.py devices` lists them)")


@dataclass(frozen=True)
class _Mode:
    sensor_index: int
    profile: object
    stream: str
    width: int
    height: int
    fps: int
    fmt: str

    def label(self) -> str:
        return f"{self.width}x{self.height}@{self.fps}"


def _modes(device) -> list[_Mode]:
    rs = _rs()
    out = []
    for index, sensor in enumerate(device.query_sensors()):
        for profile in sensor.get_stream_profiles():
            if not profile.is_video_stream_profile():
                continue
            video = profile.as_video_stream_profile()
            stream = profile.stream_type()
            if stream == rs.stream.color and profile.format() in (rs.format.rgb8, rs.format.bgr8):
                kind = "color"
            elif stream == rs.stream.depth and profile.format() == rs.format.z16:
                kind = "depth"
            else:
                continue
            fmt = "bgr8" if profile.format() == rs.format.bgr8 else ("z16" if kind == "depth" else "rgb8")
            out.append(_Mode(index, profile, kind, video.width(), video.height(), profile.fps(), fmt))
    return out


@register_camera("realsense", RealSenseCameraConfig, parse=realsense_from_rig_table, check_rig=check_realsense_rig,
                 max_width=1920, max_height=1080, max_fps=90.0, ident="serial")
class RealSenseCamera(Camera):
    """One RealSense camera; frames arrive on a capture thread.

    ``device_source`` returns the ``rs.device`` to open (default: the camera
    with the configured serial in ``context``, or the configured playback
    file); tests pass a ``software_device`` through it, which then runs the
    exact code path a USB camera does.
    """

    skip_connect_when_connected = True

    def __init__(self, config: RealSenseCameraConfig, name: str | None = None, *, context=None,
                 device_source: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name or f"realsense-{config.serial or 'playback'}", config.width, config.height,
                         config.fps, clock, stale_limit_s=config.stale_limit_s)
        self.config = config
        self._context = context
        self._device_source = device_source
        self._device = None
        self._sensors: list = []
        self._syncer = None
        self._pending = None
        self._align = None
        self._depth_scale = 0.001
        self._color_format = "rgb8"
        self._lock = threading.Lock()
        self._last_frame_host = 0.0
        self._depth: deque[tuple[float, np.ndarray]] = deque(maxlen=8)
        self.timestamp_domain: str = ""  # the domain of the last frame's device timestamp
        self.usb_type: str = ""
        self.info: dict[str, str] = {}
        self.reconnects = 0  # successful reopenings after a stall or an error
        self._closing = threading.Event()  # set by disconnect(): a recovery in progress gives up

    # -- identity ---------------------------------------------------------
    @property
    def serial(self) -> str:
        return self.config.serial or self.info.get("serial", "") or self.name

    # -- opening ----------------------------------------------------------
    def _find(self):
        if self._device_source is not None:
            return self._device_source()
        rs = _rs()
        if self._context is None:
            self._context = rs.context()
        if self.config.playback_file:
            return self._context.load_device(self.config.playback_file)
        return find_device(self.config.serial, self._context.query_devices())

    def _select(self, device) -> tuple[_Mode, _Mode | None]:
        cfg = self.config
        modes = _modes(device)
        colour = [m for m in modes if m.stream == "color"]
        wanted = [m for m in colour if (m.width, m.height, m.fps) == (cfg.width, cfg.height, cfg.fps)]
        if not wanted:
            raise UnsupportedModeError(self._mode_message("colour", colour))
        chosen = min(wanted, key=lambda m: m.fmt != "rgb8")  # rgb8 when offered: no conversion
        depth = None
        if cfg.depth:
            depths = [m for m in modes if m.stream == "depth" and m.fps == cfg.fps]
            if not depths:
                raise UnsupportedModeError(self._mode_message("depth", [m for m in modes if m.stream == "depth"]))
            # Same resolution when offered, else the nearest: alignment resamples to the colour image anyway.
            depth = min(depths, key=lambda m: abs(m.width * m.height - cfg.width * cfg.height))
        return chosen, depth

    def _mode_message(self, stream: str, offered: list[_Mode]) -> str:
        cfg = self.config
        labels = sorted({m.label() for m in offered},
                        key=lambda s: _mode_distance(s, cfg.width, cfg.height, cfg.fps))
        near = ", ".join(labels[:8]) if labels else "none"
        msg = (f"RealSense {self.serial}: no {stream} mode {cfg.width}x{cfg.height}@{cfg.fps}; "
               f"supported (nearest first): {near}. Pick one of these in the rig file")
        if self.usb_type.startswith("2"):
            msg += (f". The camera is on a USB {self.usb_type} link, which offers only low-bandwidth modes: "
                    "plug it into a USB 3 port with a USB 3 cable")
        return msg

    def _configure_options(self, device) -> None:
        rs = _rs()
        sensors = device.query_sensors()
        for sensor in sensors:
            if sensor.supports(rs.option.global_time_enabled) and not sensor.is_option_read_only(
                    rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1.0 if self.config.global_time else 0.0)
        role = self.config.hw_sync_role
        sync_sensors = [s for s in sensors if s.supports(rs.option.inter_cam_sync_mode)]
        if role != "none":
            if not sync_sensors:
                raise UnsupportedModeError(
                    f"RealSense {self.serial} ({self.info.get('name') or 'unknown model'}) has no hardware sync "
                    "(option inter_cam_sync_mode); set hw_sync_role = \"none\" for this camera")
            for sensor in sync_sensors:
                sensor.set_option(rs.option.inter_cam_sync_mode, float(HW_SYNC_ROLES[role]))

    def _open(self, device) -> None:
        """Select the modes, start the sensors into a syncer and wait for the first frames."""
        rs = _rs()
        self._device = device
        self.info = device_info(device)
        self.usb_type = self.info.get("usb", "")
        if self.usb_type.startswith("2"):
            log.warning("RealSense %s is on a USB %s link: bandwidth is limited and frames may drop; "
                        "use a USB 3 port and cable", self.serial, self.usb_type)
        if device.is_playback():
            device.as_playback().set_real_time(self.config.playback_real_time)
        colour, depth = self._select(device)
        self._color_format = colour.fmt
        self._configure_options(device)
        by_sensor: dict[int, list] = {}
        for mode in (colour, depth):
            if mode is not None:
                by_sensor.setdefault(mode.sensor_index, []).append(mode.profile)
        sensors = device.query_sensors()
        self._syncer = rs.syncer(4)
        self._align = rs.align(rs.stream.color) if depth is not None else None
        if depth is not None:
            depth_sensor = sensors[depth.sensor_index]
            if depth_sensor.supports(rs.option.depth_units):
                self._depth_scale = float(depth_sensor.get_option(rs.option.depth_units))
        try:
            for index, profiles in by_sensor.items():
                sensor = sensors[index]
                sensor.open(profiles if len(profiles) > 1 else profiles[0])
                self._sensors.append(sensor)
                sensor.start(self._syncer)
            deadline = time.monotonic() + self.config.startup_timeout_s
            for _ in range(self.config.warmup_frames + 1):
                frames = None
                while frames is None:
                    frames = self._next_colour(deadline)
            self._pending = frames  # the first frame after the warm-up is delivered, not dropped
        except Exception:
            self._close_sensors()
            raise
        self._last_frame_host = time.monotonic()

    def _next_colour(self, deadline: float):
        """One frameset holding a colour frame before ``deadline``, or None if this one lacked colour."""
        if self._closing.is_set():
            raise ConnectionLostError(f"RealSense {self.serial}: disconnected while waiting for the first frame")
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            raise ConnectionLostError(
                f"RealSense {self.serial} started but delivered no frame within "
                f"{self.config.startup_timeout_s:.1f} s; check the USB cable and power ({BRINGUP})")
        ok, frames = self._syncer.try_wait_for_frames(min(remaining_ms, self.config.timeout_ms))
        if not ok or not frames.get_color_frame():
            return None
        return frames

    def _close_sensors(self) -> None:
        for sensor in self._sensors:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError as exc:  # already stopped, or the device went away
                    log.debug("RealSense %s: %s: %s", self.serial, step.__name__, exc)
        self._sensors = []
        self._syncer = None

    def _hardware_reset(self) -> None:
        """USB reset of the last device found, then wait until it enumerates again."""
        device = self._device
        if device is None:
            return
        log.warning("RealSense %s: hardware reset before the last connection attempt", self.serial)
        try:
            device.hardware_reset()
        except RuntimeError as exc:
            log.warning("RealSense %s: hardware reset failed: %s", self.serial, exc)
            return
        self._device = None
        deadline = time.monotonic() + self.config.reset_wait_s
        if self._closing.wait(1.0):  # the camera drops off the bus first
            return
        while time.monotonic() < deadline:
            try:
                self._context = None  # a fresh context sees the re-enumerated device
                self._find()
                return
            except DeviceNotFoundError:
                if self._closing.wait(0.5):
                    return

    def _open_with_attempts(self) -> None:
        attempts = self.config.connect_attempts
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            if attempt == attempts and attempts > 1:
                self._hardware_reset()
            try:
                self._open(self._find())
                return
            except (DeviceNotFoundError, UnsupportedModeError):
                raise  # wrong configuration: trying again cannot help
            except (RuntimeError, ConnectionLostError) as exc:
                last = exc
                log.warning("RealSense %s: connection attempt %d/%d failed: %s", self.serial, attempt, attempts, exc)
        raise ConnectionLostError(
            f"RealSense {self.serial}: {attempts} connection attempts failed (the last after a USB hardware "
            f"reset): {last}. Unplug and replug the camera, try another USB 3 port, and close other programs "
            f"using it ({BRINGUP})") from last

    # -- life cycle -------------------------------------------------------
    def _connect(self) -> None:
        self._slot.reset()
        self._depth.clear()
        self._closing.clear()
        self._open_with_attempts()
        self._start_capture(self._grab)

    def _disconnect(self) -> None:
        self._closing.set()  # a recovery (reopen, reset wait) in progress on the capture thread gives up
        self._stop_capture(timeout=self.config.timeout_ms / 1000.0 + 1.0)
        self._close_sensors()
        self._device = None

    @property
    def is_connected(self) -> bool:
        return self._capturing

    # -- streaming --------------------------------------------------------
    def _grab(self):
        if self._pending is not None:
            frames, self._pending = self._pending, None
            return self._convert(frames)
        try:
            ok, frames = self._syncer.try_wait_for_frames(self.config.timeout_ms)
        except RuntimeError as exc:
            log.warning("RealSense %s: %s", self.serial, exc)
            ok, frames = False, None
        if not ok:
            stalled = time.monotonic() - self._last_frame_host
            if stalled > self.config.reconnect_after_s:
                self._recover(stalled)
            return None
        result = self._convert(frames)
        if result is not None:
            self._last_frame_host = time.monotonic()
        return result

    def _recover(self, stalled: float) -> None:
        """Reopen a stalled camera; while it is off the bus (re-enumerating) keep trying for ``reset_wait_s``."""
        log.warning("RealSense %s: no frame for %.1f s, reopening the camera", self.serial, stalled)
        self._close_sensors()
        deadline = time.monotonic() + self.config.reset_wait_s
        while True:
            try:
                self._open_with_attempts()
                break
            except DeviceNotFoundError as exc:
                if time.monotonic() < deadline and not self._closing.wait(0.5):
                    continue
                error: DeviceError = exc
            except DeviceError as exc:
                error = exc
            if self._closing.is_set():
                raise ConnectionLostError(f"RealSense {self.serial}: disconnected while reopening the camera") \
                    from error
            raise ConnectionLostError(
                f"RealSense {self.serial} stopped delivering frames ({stalled:.1f} s) and could not be reopened: "
                f"{error}") from error
        self.reconnects += 1

    def _convert(self, frames) -> tuple[np.ndarray, float] | None:
        if self._align is not None:
            frames = self._align.process(frames)
        colour = frames.get_color_frame()
        if not colour:
            return None
        image = np.asanyarray(colour.get_data())
        if image.shape != (self.height, self.width, 3):
            raise ConnectionLostError(f"RealSense {self.serial}: got a {image.shape} image, expected "
                                      f"{(self.height, self.width, 3)}")
        image = np.ascontiguousarray(image[..., ::-1]) if self._color_format == "bgr8" else image.copy()
        device_time = colour.get_timestamp() / 1000.0
        self.timestamp_domain = str(colour.get_frame_timestamp_domain()).rsplit(".", 1)[-1]
        if self._align is not None:
            depth = frames.get_depth_frame()
            if depth:
                metres = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(self._depth_scale)
                with self._lock:
                    self._depth.append((device_time, metres))
        return image, device_time

    def depth_for(self, frame: Frame) -> np.ndarray | None:
        """The depth map (metres, HxW float32, aligned to the colour image) taken with ``frame``, if kept."""
        with self._lock:
            for device_time, depth in reversed(self._depth):
                if device_time == frame.device_time:
                    return depth
        return None


def _mode_distance(label: str, width: int, height: int, fps: int) -> tuple:
    size, rate = label.split("@")
    w, h = (int(v) for v in size.split("x"))
    return (abs(w * h - width * height), abs(int(rate) - fps))
