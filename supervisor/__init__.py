"""The operator's session, below any GUI: activities, the STOP latch and its ordering, handovers.

``Supervisor`` is what the desktop app wraps (signals in, commands out) and what
the tests drive directly; it imports no Qt.
"""

from .supervisor import (AUTONOMOUS, CONNECTING, DISCONNECTED, HALTED, HOMING, RECORDING, REPLAY, TELEOP, Events,
                         Halt, RigFactory, Supervisor, Ticket)

__all__ = ["AUTONOMOUS", "CONNECTING", "DISCONNECTED", "HALTED", "HOMING", "RECORDING", "REPLAY", "TELEOP",
           "Events", "Halt", "RigFactory", "Supervisor", "Ticket"]
