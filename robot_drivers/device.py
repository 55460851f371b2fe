"""The life cycle every device shares (arms, cameras, teleop devices, grippers and whole rigs).

``connect()``, ``disconnect()``, ``is_connected`` and the ``with`` statement are written here once; a device
implements the hooks ``_connect()`` and ``_disconnect()`` (both do nothing by default: a keyboard or a
scripted operator needs no connection). ``is_connected`` is True between a successful ``connect()`` and the
next ``disconnect()``; a driver that can tell better (a live SDK handle, a capture thread) overrides it.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar


class Device(ABC):
    """Something that is opened before use and closed after: ``with device: ...`` does both."""

    name: str = "device"

    #: True for drivers of real hardware, where opening twice would drop the live connection: ``connect()`` on
    #: a device that ``is_connected`` returns at once. False: every ``connect()`` runs ``_connect()``.
    skip_connect_when_connected: ClassVar[bool] = False

    _connected = False  # the default ``is_connected``: set by connect(), cleared by disconnect()

    def connect(self) -> None:
        """Open the device; an error leaves it closed (``_connect`` releases what it had opened)."""
        if self.skip_connect_when_connected and self.is_connected:
            return
        self._connect()
        self._connected = True

    def disconnect(self) -> None:
        """Release the device (also when it was never connected, or is half open after a failed connect)."""
        self._connected = False
        self._disconnect()

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _connect(self) -> None:
        """Open the device (no-op for devices that need no connection)."""

    def _disconnect(self) -> None:
        """Release what ``_connect`` opened."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
        return False
