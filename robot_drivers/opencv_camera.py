"""USB webcams (and video files) through ``cv2.VideoCapture``, behind the same interface as RealSense.

The requested resolution and rate are asked of the driver and then read
back: a webcam that silently gives another mode is an error naming what it
gave. Frames are converted BGR -> RGB. The device timestamp is the driver's
``CAP_PROP_POS_MSEC`` (the V4L2 buffer time for a webcam, the stream position
for a file) when it is meaningful, else None; the host receive time is always
kept. A video file is played at its configured fps (frames are paced, not
read as fast as the disk allows) and ends with a clear "end of file" error.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from robot_drivers.camera import Camera
from core.errors import ConnectionLostError, DeviceNotFoundError, UnsupportedModeError
from robot_drivers.registry import register_camera

log = logging.getLogger(__name__)


@dataclass
class OpenCVCameraConfig:
    source: int | str = 0  # a device index (/dev/videoN), a device path, or a video file
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str | None = None  # e.g. "MJPG": most webcams need it for 720p at 30 fps over USB 2
    warmup_frames: int = 5
    stale_limit_s: float | None = None  # fixed limit (s) for frames' age; None: derived (robot_drivers.camera)
    connect_attempts: int = 3
    reconnect_after_s: float = 2.0  # reopen after this long without a frame
    fps_tolerance: float = 1.0  # a reported rate further off than this is an error

    def __post_init__(self):
        if isinstance(self.source, str) and self.source.isdigit():
            self.source = int(self.source)
        for key in ("width", "height", "fps", "connect_attempts"):
            if not 0 < getattr(self, key) < float("inf"):  # refuses nan too
                raise ValueError(f"OpenCV camera {key} must be positive and finite, got {getattr(self, key)!r}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be four characters such as 'MJPG', got {self.fourcc!r}")
        if self.warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {self.warmup_frames}")
        if self.stale_limit_s is not None and not 0.0 < self.stale_limit_s < float("inf"):
            raise ValueError(f"stale_limit_s must be a positive number of seconds (or left out), "
                             f"got {self.stale_limit_s}")

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, str) and not self.source.startswith("/dev/")


def opencv_from_rig_table(t, width: int, height: int, fps: float,
                          stale_limit_s: float | None) -> OpenCVCameraConfig:
    """An OpenCV camera's config from its rig file's ``[[cameras]]`` entry ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`; width x height up to 4096 x 4096, fps up to 120: a webcam or a
    capture card, up to 4K). Its own keys:

        source          a device index 0..255 (/dev/videoN) or a non-empty path
        fourcc          four printable ASCII characters such as "MJPG"
        warmup_frames   0..300 (default 5)
    """
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
    return OpenCVCameraConfig(source=source, width=width, height=height, fps=float(fps), fourcc=fourcc,
                              stale_limit_s=stale_limit_s,
                              warmup_frames=int(t.num("warmup_frames", 5, 0, 300, integer=True)))


def list_video_devices() -> list[str]:
    """The V4L2 device nodes present (Linux); empty elsewhere."""
    return sorted(glob.glob("/dev/video*"))


@register_camera("opencv", OpenCVCameraConfig, parse=opencv_from_rig_table, max_width=4096, max_height=4096,
                 max_fps=120.0, ident="source")
class OpenCVCamera(Camera):
    skip_connect_when_connected = True

    def __init__(self, config: OpenCVCameraConfig, name: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 capture_factory: Callable[..., cv2.VideoCapture] = cv2.VideoCapture):
        super().__init__(name or f"opencv-{config.source}", config.width, config.height, config.fps, clock,
                         stale_limit_s=config.stale_limit_s)
        self.config = config
        self._factory = capture_factory
        self._cap: cv2.VideoCapture | None = None
        self._last_frame_host = 0.0
        self.reconnects = 0

    @property
    def serial(self) -> str:
        return str(self.config.source)

    # -- opening ----------------------------------------------------------
    def _open(self) -> cv2.VideoCapture:
        cfg = self.config
        if cfg.is_file:
            if not os.path.exists(cfg.source):
                raise DeviceNotFoundError(f"video file {cfg.source!r} does not exist")
            cap = self._factory(cfg.source)
        elif sys.platform.startswith("linux"):
            cap = self._factory(cfg.source, cv2.CAP_V4L2)
        else:  # pragma: no cover - other platforms pick their own backend
            cap = self._factory(cfg.source)
        if not cap.isOpened():
            cap.release()
            present = ", ".join(list_video_devices()) or "none"
            raise DeviceNotFoundError(
                f"could not open camera {cfg.source!r} (video devices present: {present}); check the cable, "
                "that your user is in the 'video' group, and that no other program holds it (see docs/bringup.md)")
        if not cfg.is_file:
            if cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        try:
            self._verify(cap)
        except Exception:
            cap.release()
            raise
        return cap

    def _verify(self, cap: cv2.VideoCapture) -> None:
        """What the driver actually gave, against what was asked."""
        cfg = self.config
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        what = "the video file is" if cfg.is_file else "the camera gave"
        if (width, height) != (cfg.width, cfg.height):
            hint = ("set width/height to the file's size" if cfg.is_file else
                    "pick a mode the camera offers (v4l2-ctl --list-formats-ext), or try fourcc = \"MJPG\"")
            raise UnsupportedModeError(f"camera {cfg.source!r}: asked for {cfg.width}x{cfg.height}, {what} "
                                       f"{width}x{height}; {hint}")
        if not cfg.is_file and fps > 0 and abs(fps - cfg.fps) > cfg.fps_tolerance:  # a file plays at cfg.fps
            raise UnsupportedModeError(f"camera {cfg.source!r}: asked for {cfg.fps:g} fps, the camera gave {fps:g} fps; "
                                       "set fps to a rate the camera offers (v4l2-ctl --list-formats-ext)")

    def _open_with_attempts(self) -> None:
        last: Exception | None = None
        for attempt in range(1, self.config.connect_attempts + 1):
            try:
                cap = self._open()
                for _ in range(self.config.warmup_frames if not self.config.is_file else 0):
                    cap.read()
                self._cap = cap
                self._last_frame_host = time.monotonic()
                return
            except (UnsupportedModeError, DeviceNotFoundError) as exc:
                last = exc
                if self.config.is_file or isinstance(exc, UnsupportedModeError):
                    raise
                log.warning("camera %s: attempt %d/%d failed: %s", self.config.source, attempt,
                            self.config.connect_attempts, exc)
                time.sleep(0.2)
        raise last  # type: ignore[misc]

    # -- life cycle -------------------------------------------------------
    def _connect(self) -> None:
        self._slot.reset()
        self._open_with_attempts()
        period = 1.0 / self.config.fps if self.config.is_file else None
        self._start_capture(self._grab, period=period)

    def _disconnect(self) -> None:
        self._stop_capture()
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def is_connected(self) -> bool:
        return self._capturing

    # -- streaming --------------------------------------------------------
    def _grab(self):
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.config.is_file:
                raise ConnectionLostError(f"camera '{self.name}': end of the video file {self.config.source!r}")
            stalled = time.monotonic() - self._last_frame_host
            if stalled > self.config.reconnect_after_s:
                self._recover(stalled)
            else:
                time.sleep(0.01)
            return None
        self._last_frame_host = time.monotonic()
        if bgr.shape[:2] != (self.height, self.width):
            raise ConnectionLostError(f"camera '{self.name}': frame of {bgr.shape[1]}x{bgr.shape[0]}, expected "
                                      f"{self.width}x{self.height}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        device_time = msec / 1000.0 if (msec > 0 or self.config.is_file) else None
        return np.ascontiguousarray(image), device_time

    def _recover(self, stalled: float) -> None:
        log.warning("camera %s: no frame for %.1f s, reopening", self.name, stalled)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        try:
            self._open_with_attempts()
        except Exception as exc:
            raise ConnectionLostError(f"camera '{self.name}' stopped delivering frames ({stalled:.1f} s) and "
                                      f"could not be reopened: {exc}") from exc
        self.reconnects += 1
