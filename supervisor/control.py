"""The control thread: one queue of commands, checked against the table, answered between activities or ticks."""

from __future__ import annotations

import logging
import time
from typing import Callable

from core.errors import DeviceError
from recorder.dataset import DatasetError

from .events import Halt
from .modes import COMMANDS, DISCONNECTED, Kind, Mode
from .tickets import CommandRefused, QueuedCommand, Ticket

log = logging.getLogger(__name__)


class ControlThread:
    """The Supervisor's command queue and control thread (a mixin: the state lives on the Supervisor)."""

    def _submit(self, name: str, *args) -> Ticket:
        with self._stop_cond:
            generation = self._generation
        ticket = Ticket(name, generation, time.monotonic())
        with self._pending_lock:
            self._pending.append(QueuedCommand(name, args, ticket))
        self._wakeup.set()
        return ticket

    def _set_mode(self, mode: Mode) -> None:
        if mode != self.mode:
            self.mode = mode
            self.events.mode_changed(mode)

    def _pop(self, wait: bool) -> QueuedCommand | None:
        while True:
            with self._pending_lock:
                if self._pending:
                    return self._pending.popleft()
                self._wakeup.clear()
            if not wait:
                return None
            self._wakeup.wait()

    def _answer(self, command: QueuedCommand, refusal: str | None = None) -> None:
        command.ticket.refusal = refusal
        command.ticket._answered.set()
        if refusal is not None:
            log.info("refused %s: %s", command.name, refusal)
            self.events.info(refusal)

    # ------------------------------------------------------------------ the control thread
    def _run(self) -> None:
        activity: Callable[[], Callable | None] | None = None
        while True:
            command = self._pop(wait=activity is None)
            if command is None:  # nothing waiting: run the activity; it serves commands between its ticks
                self._end_activity.clear()
                activity = self._run_activity(activity)
                continue
            row = COMMANDS[command.name]
            if row.kind is Kind.QUIT:
                self._execute(command, self._handler(command))
                return
            refusal = self._precheck(command)
            if refusal is not None:
                self._answer(command, refusal)
                continue  # the activity goes on as it was
            follow = self._execute(command, self._handler(command))
            if row.kind is not Kind.NEUTRAL:  # a neutral command leaves the activity as it was
                activity = follow if callable(follow) else self._default()

    def _handler(self, command: QueuedCommand) -> Callable[[], Callable | None]:
        """The row's handler, called with the command's arguments (a release also gets the command itself: it
        checks the command's stop generation again as it lifts the latch)."""
        row = COMMANDS[command.name]
        handler = getattr(self, row.handler)
        if row.kind is Kind.RELEASES:
            return lambda: handler(command, *command.args)
        return lambda: handler(*command.args)

    def _execute(self, command: QueuedCommand, fn: Callable[[], Callable | None]) -> Callable | None | bool:
        """Run a command handler; an error is a refusal with a message. Returns the activity the handler
        asks for (None: the default one), or False when the command failed."""
        try:
            follow = fn()
        except CommandRefused as exc:
            self._answer(command, str(exc))
            return False
        except (DeviceError, DatasetError, OSError, ValueError, RuntimeError) as exc:
            log.error("%s", exc)
            self.events.error(str(exc))
            self._answer(command, str(exc))
            if self.rig is None:
                self._set_mode(DISCONNECTED)
            return False
        except Exception as exc:  # noqa: BLE001 - the control thread must survive anything
            log.exception("unexpected error on the control thread")
            self.events.error(f"unexpected error: {exc!r}")
            self._answer(command, f"unexpected error: {exc!r}")
            return False
        self._answer(command)
        return follow

    def _precheck(self, command: QueuedCommand) -> str | None:
        """Why ``command`` cannot run now (None: it can): its row's guards, in order. Runs on the control thread,
        between ticks."""
        return COMMANDS[command.name].refusal(self, command)

    def _serve(self) -> None:
        """Between two ticks of the running activity: answer what does not end it; end it for the rest."""
        while not self._end_activity.is_set():
            with self._pending_lock:
                if not self._pending:
                    return
                command = self._pending[0]
                refusal = self._precheck(command)
                if COMMANDS[command.name].kind is not Kind.NEUTRAL and refusal is None:
                    if self.session is not None:
                        self.session.cancel_reason = command.name
                    self._end_activity.set()  # the main loop runs it once the activity has ended cleanly
                    return
                self._pending.popleft()
            if refusal is not None:
                self._answer(command, refusal)
            else:
                self._execute(command, self._handler(command))

    def _run_activity(self, fn: Callable[[], Callable | None]) -> Callable | None:
        """An activity moves the arm: any error in it halts the arm and is reported."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the control thread must survive anything
            log.exception("error while the arm was running")
            self.events.error(str(exc) if isinstance(exc, (DeviceError, DatasetError, OSError, ValueError))
                              else f"unexpected error: {exc!r}")
        if self.rig is not None and self.rig.arm.is_connected:
            try:
                self.rig.arm.stop()
            except Exception as exc:  # noqa: BLE001
                self.events.error(f"the arm could not be stopped: {exc}")
            return self._enter_halt(Halt("error", "The arm was halted after an error (see the message)."))
        return None
