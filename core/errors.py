"""Exceptions raised by device drivers. Every message says what happened and what to do."""


class DeviceError(RuntimeError):
    """Base class of every hardware (or simulated hardware) error."""


class ConnectionLostError(DeviceError):
    """The device stopped answering or was never reachable."""


class CameraLostError(ConnectionLostError):
    """A camera's driver failed (unplugged, its capture ended); ``camera`` names it."""

    def __init__(self, message: str, *, camera: str | None = None):
        super().__init__(message)
        self.camera = camera

    def __reduce__(self):
        return _rebuild, (type(self), self.args, {"camera": self.camera})


class ArmConnectionLostError(ConnectionLostError):
    """The arm (or its gripper) stopped answering; :class:`SafeArm` raises it for every arm backend."""


class NotConnectedError(DeviceError):
    """A method that needs a connection was called before connect() or after disconnect()."""


class ArmFaultError(DeviceError):
    """The arm controller reported a fault (collision, joint limit, emergency stop)."""


class LimitViolationError(DeviceError):
    """The arm is outside the configured safe workspace."""


class ArmStoppedError(DeviceError):
    """A motion command was refused because the arm is stopped; release the stop first."""


class StaleFrameError(DeviceError):
    """The newest frame of a camera is older than the caller accepts, or there is none yet.

    Machine-readable beside the message: ``camera`` (its name), ``age_s`` (the newest frame's age, seconds;
    None when there is no frame yet) and ``limit_s`` (the limit it broke, seconds; None when no frame yet)."""

    def __init__(self, message: str, *, camera: str | None = None, age_s: float | None = None,
                 limit_s: float | None = None):
        super().__init__(message)
        self.camera = camera
        self.age_s = age_s
        self.limit_s = limit_s

    def __reduce__(self):
        return _rebuild, (type(self), self.args, {"camera": self.camera, "age_s": self.age_s,
                                                  "limit_s": self.limit_s})


class DeviceNotFoundError(DeviceError):
    """No device with the configured identity (serial, address, index) is attached or reachable."""


class UnsupportedModeError(DeviceError):
    """The device does not offer the requested mode (resolution, rate, format, feature)."""


class ProtectiveStopError(ArmFaultError):
    """The arm controller is in a protective or emergency stop; clear it on the pendant first."""


class ArmCommandError(DeviceError):
    """The arm's SDK refused a command (bad state, parameter, communication)."""


def _rebuild(cls, args, attributes):
    """Unpickles an error with keyword attributes (errors cross process boundaries in reports)."""
    error = cls(*args)
    error.__dict__.update(attributes)
    return error
