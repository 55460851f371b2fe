"""Commands as the control thread queues them: the caller's Ticket, the queued command, a refusal."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Ticket:
    """A command's receipt: ``wait`` until the control thread has answered it."""

    name: str
    generation: int  # the stop generation when the operator issued it
    issued_at: float
    refusal: str | None = None
    _answered: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._answered.wait(timeout)

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    @property
    def refused(self) -> bool:
        return self.refusal is not None


@dataclass
class QueuedCommand:
    name: str
    args: tuple
    ticket: Ticket


class CommandRefused(Exception):
    """A command that cannot run now; its message tells the operator why and what to do."""

