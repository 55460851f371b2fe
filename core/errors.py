"""Exceptions raised by device drivers. Every message says what happened and what to do."""


class DeviceError(RuntimeError):
    """Base class of every hardware (or simulated hardware) error."""


class ConnectionLostError(DeviceError):
    """The device stopped answering or was never reachable."""


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
    """The newest frame of a camera is older than the caller accepts, or there is none yet."""


class DeviceNotFoundError(DeviceError):
    """No device with the configured identity (serial, address, index) is attached or reachable."""


class UnsupportedModeError(DeviceError):
    """The device does not offer the requested mode (resolution, rate, format, feature)."""


class ProtectiveStopError(ArmFaultError):
    """The arm controller is in a protective or emergency stop; clear it on the pendant first."""


class ArmCommandError(DeviceError):
    """The arm's SDK refused a command (bad state, parameter, communication)."""
