"""The operator's session, below any GUI: activities, the STOP latch and its ordering, handovers.

``Supervisor`` is what the desktop app wraps (signals in, commands out) and what
the tests drive directly; it imports no Qt. Its state graph (the modes, and which
command each accepts) is the table in ``modes.py``.
"""

from .events import Events, Halt
from .modes import (AUTONOMOUS, COMMANDS, CONNECTING, DISCONNECTED, HALTED, HOMING, RECORDING, REPLAY, TELEOP,
                    Mode)
from .supervisor import RigFactory, Supervisor
from .tickets import CommandRefused, Ticket

__all__ = ["AUTONOMOUS", "COMMANDS", "CONNECTING", "DISCONNECTED", "HALTED", "HOMING", "RECORDING", "REPLAY",
           "TELEOP", "CommandRefused", "Events", "Halt", "Mode", "RigFactory", "Supervisor", "Ticket"]
