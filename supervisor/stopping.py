"""The STOP latch and its ordering: the stop line, the stop generation, halts entered, held and released."""

from __future__ import annotations

from typing import Callable

from .events import Halt
from .modes import COMMANDS, FRESH, HALTED
from .tickets import CommandRefused, QueuedCommand, Ticket


class StopHandling:
    """The Supervisor's halts (a mixin: the state lives on the Supervisor)."""

    def _halt_now(self, halt: Halt) -> Ticket:
        """STOP and pause: latch at once, have the stop line stop the driver, then end the activity."""
        self.keyboard.reset()  # keys held or a gripper toggle pending from before the STOP are forgotten
        with self._stop_cond:
            self._generation += 1
            rig = self.rig
            if rig is not None:
                rig.arm.latch()
            self._stop_requested += 1
            self._stop_cond.notify_all()
        return self._submit("halt", halt)

    def _stop_line(self) -> None:
        while True:
            with self._stop_cond:
                self._stop_cond.wait_for(lambda: self._quit.is_set() or self._stop_requested > self._stop_done)
                if self._quit.is_set():
                    return
                target = self._stop_requested
                rig = self.rig
            try:
                if rig is not None and rig.arm.is_connected:
                    rig.arm.stop()
            except Exception as exc:  # noqa: BLE001 - reported; the latch was set before the driver call
                self.events.error(f"STOP: the arm driver reported an error while stopping: {exc}")
            with self._stop_cond:
                self._stop_done = max(self._stop_done, target)
                self._stop_cond.notify_all()

    @property
    def halt_unreleased(self) -> bool:
        """A halt came after the latest release (a STOP, a pause, OOD, a fault, a finished task): it holds across
        a disconnect, and a rig connected meanwhile starts latched."""
        return self._released_generation != self._generation

    def _bump_generation(self) -> None:
        """A halt that did not come through the stop line (OOD, a fault, a finished task)."""
        with self._stop_cond:
            self._generation += 1

    def _release(self, command: QueuedCommand) -> None:
        """Lift the latch, if no halt came after the operator issued ``command`` (atomic with STOP)."""
        rig = self._require_rig()
        with self._stop_cond:
            self._stop_cond.wait_for(lambda: self._stop_done >= self._stop_requested, 2.0)
            stale = FRESH.check(self, command, COMMANDS[command.name])  # issued before the latest halt?
            if stale is not None:
                raise CommandRefused(stale)
            rig.arm.release()
            self._released_generation = self._generation

    def _enter_halt(self, halt: Halt, bump: bool = True, watch: bool = True) -> Callable | None:
        """The arm is latched and waits for the operator; ``watch``: keep previews live meanwhile."""
        if bump:
            self._bump_generation()
        if self.rig is not None:
            self.rig.arm.latch()
        self.halt = halt
        self._set_mode(HALTED)  # first: a window that reads the mode when told of the halt finds it halted
        self.events.halted(halt)
        return self._activity_monitor if watch and self.rig is not None else None

    def _clear_halt(self) -> None:
        if self.halt is not None:
            self.halt = None
            self.events.halt_cleared()

    def _do_halt(self, halt: Halt):
        with self._stop_cond:  # the stop line halted the arm already; this ends the activity and tells the window
            self._stop_cond.wait_for(lambda: self._stop_done >= self._stop_requested, 1.0)
        if self.rig is None:
            self.halt = halt  # it holds when the rig is connected again
            return None
        return self._enter_halt(halt, bump=False)
