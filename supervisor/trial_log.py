"""Every attempt at the task as a trial in the ledger (evaluation/trials.py): started, its halts and resumes recorded
as events of it, ended, kept with its evidence.

An attempt starts at Start (``start_autonomy``). A halt inside it (an OOD stop, a stall stop, the operator's pause or
STOP, a device halt) is an event of that trial, and Resume carries on with the same trial; a gamma change made during
the attempt is an event too. The attempt ends when the simulator's task check says the task is done (success), when
the operator gives a verdict (``mark_last_trial`` on a halted attempt), or when the operator does anything but Resume
after a halt: take over, take over & record, home, a scene reset, a new Start, another command that ends the run,
disconnect or quit. It then ends with its last halt as the outcome (``extra["ended_by"]`` names what ended it;
``extra["task_check_says"]`` what the simulator's check said then, where there is one). Only an ended attempt is
reported (``events.trial_ended``): that is when the window asks about it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from evaluation.trials import HALTS, LedgerError, stop_evidence

from .events import DEVICE_FAILURES

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """The attempt under way: its trial and what its end record needs."""

    trial: object  # evaluation.trials.Trial
    policy: object  # the policy it runs (Resume with another policy is a new attempt)
    control: object | None  # the simulator's scene control (its task check); None on a real rig
    path: list = field(default_factory=list)  # per-tick embeddings over every run of the attempt
    ticks: int = 0
    gamma_seen: int = 0  # how many of the policy's gamma_changes are recorded already


def halt_kind(result, halt_pending: bool = True) -> str | None:
    """The halt event a run's result is (one of HALTS), "success", or None (it ended with an error).
    ``halt_pending``: a STOP or pause of the operator's is queued (an ``arm_stopped`` run is then theirs)."""
    if result is None:
        return None
    reason = result.reason
    if reason == "done":
        return "success"
    if reason == "ood":
        return "ood_stop"
    if reason == "stall":
        return "stall_stop"
    if reason in ("cancelled", "estop"):
        return "operator_stop"  # STOP, pause, the teleop device's STOP, or another command of the operator's
    if reason == "arm_stopped":  # the operator's STOP reached the driver mid-command, or the safety layer stopped it
        return "operator_stop" if halt_pending else "device_stop"
    if reason in DEVICE_FAILURES:
        return "device_stop"
    return None


class TrialRecording:
    """The Supervisor's trial bookkeeping (a mixin: the state lives on the Supervisor)."""

    _attempt: Attempt | None = None

    def _start_trial(self, control):
        if self.ledger is None:
            return None
        self.last_trial = None  # a mark must not land on an earlier run if this one cannot be recorded
        policy = self.policy
        scene = control.record() if control is not None else None
        try:
            trial = self.ledger.start(policy.info.get("path", "(unsaved policy)"), int(policy.info.get("version", 1)),
                                      str(policy.info.get("method", "alt")), float(policy.gamma),
                                      thresholds=policy.thresholds(), extra={"rig": self.rig.name, "scene": scene})
        except (OSError, LedgerError) as exc:  # the run goes on; the operator is told the ledger could not be written
            self.events.error(f"the trial ledger could not be written ({exc}); this run is not recorded")
            return None
        self.last_trial = trial
        return trial

    def _begin_attempt(self, control, resume: bool) -> Attempt | None:
        """Before a run: Resume carries on with the open attempt (same policy); Start, or Resume with no open
        attempt or another policy loaded, ends an open one and starts a new trial."""
        attempt = self._attempt
        if resume and attempt is not None and attempt.policy is self.policy:
            self._record_gamma_changes(attempt)
            self._event(attempt, "resume", "the operator resumed")
            attempt.control = control
            return attempt
        if attempt is not None:
            self._end_attempt("resume with another policy" if resume else "autonomy")
        trial = self._start_trial(control)
        if trial is None:
            return None
        self._attempt = Attempt(trial, self.policy, control,
                                gamma_seen=len(getattr(self.policy, "gamma_changes", ())))
        return self._attempt

    def _run_ended(self, attempt: Attempt | None, result) -> None:
        """After a run (from Start or Resume): the task done ends the attempt (success); a halt is an event of it
        (the attempt waits for Resume or its end); a run ended by a command other than pause or STOP, or by an
        error, ends it."""
        if attempt is None or attempt is not self._attempt:
            return
        self._record_gamma_changes(attempt)
        if result is not None:
            attempt.ticks += result.loop.ticks
            attempt.path += [r.embedding for r in result.retrievals if r.embedding is not None]
        with self._pending_lock:
            halt_pending = any(c.name == "halt" for c in self._pending)
        kind = halt_kind(result, halt_pending or (self.halt is not None and self.halt.reason in ("stop", "paused")))
        if kind is None:
            self._end_attempt("error", "failure", "the run ended with an error")
        elif kind == "success":
            self._end_attempt("task check", "success", result.reason)
        elif result.reason == "cancelled" and not (self.rig is not None and self.rig.arm.stopped):
            # Not a pause or STOP (those latch the arm first): a command that ends the run ended the attempt,
            # unless it is a Resume (a second click): that one carries on with the same attempt.
            with self._pending_lock:
                by = self._pending[0].name if self._pending else "a command"
            if by != "resume":
                self._end_attempt(by, "operator_stop", result.reason)
        else:
            evidence = None
            if kind == "ood_stop" and result.ood_observation is not None:
                try:
                    evidence = stop_evidence(attempt.policy, result.ood_observation, result.ood_evidence)
                except Exception as exc:  # noqa: BLE001 - the stop is recorded without its frames
                    log.warning("OOD evidence not kept: %s", exc)
            extra = {"signal": result.stop_signal} if result.stop_signal else {}
            drill = attempt.control.covered_cameras() if attempt.control is not None else ()
            if drill:  # an OOD drill covered these cameras: the stop says nothing about where to record
                extra["drill"] = list(drill)
            self._event(attempt, kind, result.message or result.reason, ticks=result.loop.ticks, evidence=evidence,
                        extra=extra or None)

    def _event(self, attempt: Attempt, kind: str, reason: str, **kwargs) -> None:
        try:
            self.ledger.event(attempt.trial, kind, reason, **kwargs)
        except (OSError, LedgerError, ValueError) as exc:
            self.events.error(f"the trial ledger could not be written ({exc})")

    def _gate_changed(self) -> None:
        """The operator changed the gate: an open attempt of this policy records it now (a crash after it cannot
        lose it)."""
        attempt = self._attempt
        if attempt is not None and attempt.policy is self.policy:
            self._record_gamma_changes(attempt)

    def _record_gamma_changes(self, attempt: Attempt) -> None:
        changes = getattr(attempt.policy, "gamma_changes", [])
        for change in changes[attempt.gamma_seen:]:  # gamma alone, or the gate as a whole (its thresholds too)
            try:
                why = f"gamma {float(change['from']):.3f} -> {float(change['to']):.3f} by {change.get('by', '?')}"
            except (KeyError, TypeError, ValueError):
                why = "the gate changed"
            self._event(attempt, "gamma", why, extra=dict(change))
        attempt.gamma_seen = len(changes)

    def _end_attempt(self, by: str, outcome: str | None = None, reason: str | None = None):
        """End the open attempt, if any: with ``outcome``, else its last halt's (``by``: what ended it). Returns its
        trial (None when none was open)."""
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return None
        trial = attempt.trial
        self._record_gamma_changes(attempt)
        if outcome is None:
            halt = trial.last_halt
            outcome, reason = (halt["kind"], halt["reason"]) if halt is not None else ("operator_stop", by)
        extra = {"ticks": attempt.ticks, "ended_by": by}
        if attempt.control is not None and outcome != "success":
            try:  # what the simulator's check says as the attempt ends (before the command moves anything)
                extra["task_check_says"] = "success" if attempt.control.task_succeeded() else "failure"
            except Exception as exc:  # noqa: BLE001 - the end is recorded without it
                log.warning("task check not read at the end of trial %s: %s", trial.id, exc)
        try:
            self.ledger.finish(trial, outcome, reason or "", extra=extra, task_check=attempt.control is not None,
                               trajectory=np.stack(attempt.path) if attempt.path else None)
        except (OSError, LedgerError, ValueError) as exc:
            self.events.error(f"the trial ledger could not be written ({exc})")
            return None
        self.events.trial_ended(trial)
        return trial

    def _last_halt_event(self) -> int | None:
        """The index, among the open attempt's events, of its newest halt (what a correction recorded now
        corrects); None without one."""
        attempt = self._attempt
        if attempt is None:
            return None
        events = attempt.trial.events
        return next((i for i in range(len(events) - 1, -1, -1) if events[i]["kind"] in HALTS), None)
