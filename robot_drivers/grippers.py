"""Gripper adapters for arms whose SDK has no gripper of its own (UR).

A gripper takes the program's scalar, 0 closed .. 1 open, and reports the
same. :class:`RobotiqSocketGripper` talks to a Robotiq 2F-85/2F-140/Hand-E
through the Robotiq URCap's socket server on the UR controller (port 63352),
an ASCII protocol: ``SET ACT 1``, ``SET GTO 1``, ``SET POS n SPE n FOR n``
(0 = open .. 255 = closed) answered by ``ack``, and ``GET POS`` answered by
``POS n``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass

from core.errors import ConnectionLostError, DeviceError, NotConnectedError
from robot_drivers.device import Device

log = logging.getLogger(__name__)


class Gripper(Device):
    """A gripper driven beside its arm's controller (the life cycle is :class:`Device`'s)."""

    name = "gripper"

    @abstractmethod
    def move(self, opening: float) -> None:
        """Command an opening in [0, 1] (0 closed); returns without waiting for the motion."""

    @abstractmethod
    def position(self) -> float:
        """The measured opening in [0, 1]."""

    def halt(self) -> float | None:
        """A stop: a motion under way ends where the fingers are; a grip at rest (on an object or not) is kept.
        Returns the opening now commanded when a motion was frozen, else None. This one cannot tell (no
        gripper): None."""
        return None


class NoGripper(Gripper):
    """An arm without a gripper: commands are remembered and echoed back."""

    name = "none"

    def __init__(self):
        self._opening = 1.0

    def move(self, opening: float) -> None:
        self._opening = float(opening)

    def position(self) -> float:
        return self._opening


@dataclass
class RobotiqConfig:
    host: str = ""  # the UR controller's address (the URCap serves the gripper there)
    port: int = 63352
    speed: int = 255  # 0..255
    force: int = 100  # 0..255
    timeout: float = 2.0  # seconds per request
    activate_timeout: float = 5.0  # seconds for the activation to complete

    def __post_init__(self):
        if not self.host:
            raise ValueError("a Robotiq gripper needs the host address of the UR controller")
        for key in ("speed", "force"):
            if not 0 <= int(getattr(self, key)) <= 255:
                raise ValueError(f"Robotiq {key} must be in 0..255, got {getattr(self, key)}")


class RobotiqSocketGripper(Gripper):
    name = "robotiq"

    def __init__(self, config: RobotiqConfig):
        self.config = config
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def _request(self, text: str) -> str:
        if self._sock is None:
            raise NotConnectedError("the Robotiq gripper is not connected; call connect() first")
        with self._lock:
            try:
                self._sock.sendall(text.encode("ascii") + b"\n")
                while b"\n" not in self._buffer:
                    chunk = self._sock.recv(1024)
                    if not chunk:
                        raise ConnectionLostError("the Robotiq URCap closed the connection")
                    self._buffer += chunk
            except (OSError, ConnectionLostError) as exc:
                # Close: a late reply to this request must never be read as the answer to the next one.
                self.disconnect()
                raise ConnectionLostError(f"Robotiq gripper at {self.config.host}:{self.config.port}: {text!r} got no "
                                          f"answer ({exc or type(exc).__name__}); the connection was closed, "
                                          "reconnect the rig") from exc
            line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def _set(self, **values: int) -> None:
        reply = self._request("SET " + " ".join(f"{k} {int(v)}" for k, v in values.items()))
        if reply != "ack":
            raise DeviceError(f"Robotiq gripper refused SET {values}: {reply!r}")

    def _get(self, var: str) -> int:
        reply = self._request(f"GET {var}")
        parts = reply.split()
        if len(parts) != 2 or parts[0] != var or not parts[1].lstrip("-").isdigit():
            raise DeviceError(f"Robotiq gripper: unexpected reply {reply!r} to GET {var}")
        return int(parts[1])

    def _connect(self) -> None:
        cfg = self.config
        try:
            self._sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        except OSError as exc:
            raise ConnectionLostError(
                f"cannot reach the Robotiq URCap at {cfg.host}:{cfg.port}: {exc}; is the Robotiq Grippers URCap "
                "installed on the robot and the gripper activated once from the pendant?") from exc
        self._buffer = b""
        try:
            if self._get("STA") != 3:
                self._set(ACT=1)
                deadline = time.monotonic() + cfg.activate_timeout
                while self._get("STA") != 3:
                    if time.monotonic() > deadline:
                        raise DeviceError(f"Robotiq gripper did not finish activating within {cfg.activate_timeout} s")
                    time.sleep(0.05)
            self._set(GTO=1)
        except Exception:
            self.disconnect()
            raise

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer = b""

    def move(self, opening: float) -> None:
        opening = min(1.0, max(0.0, float(opening)))
        self._set(POS=round((1.0 - opening) * 255), SPE=self.config.speed, FOR=self.config.force)

    def position(self) -> float:
        return 1.0 - min(255, max(0, self._get("POS"))) / 255.0

    def halt(self) -> float | None:
        """The gripper's own object detection (``OBJ``) tells a motion under way (0) from fingers at rest (1, 2:
        stopped on an object, opening or closing; 3: at the requested position). Moving, it is told to go where
        it is now (``POS``), so the motion ends there; at rest nothing is sent (a grip keeps its force)."""
        if self._get("OBJ") != 0:
            return None
        position = min(255, max(0, self._get("POS")))
        self._set(POS=position)
        return 1.0 - position / 255.0
