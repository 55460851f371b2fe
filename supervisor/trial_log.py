"""Every autonomous run as a trial in the ledger (evaluation/trials.py): started, finished, kept with its evidence."""

from __future__ import annotations

import logging

import numpy as np

from evaluation.trials import LedgerError, stop_evidence

from .events import DEVICE_FAILURES

log = logging.getLogger(__name__)


class TrialRecording:
    """The Supervisor's trial bookkeeping (a mixin: the state lives on the Supervisor)."""

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

    def _finish_trial(self, trial, result, task_check: bool) -> None:
        """``task_check``: the simulator's check decided success; without one (a real rig) the trial awaits the
        operator's mark."""
        if trial is None:
            return
        outcome, reason, evidence = "failure", "the run ended with an error", None
        if result is not None:
            reason = result.reason
            if result.reason == "done":
                outcome = "success"
            elif result.reason == "ood":
                outcome = "ood_stop"
                if result.ood_observation is not None:
                    try:
                        evidence = stop_evidence(self.policy, result.ood_observation, result.ood_evidence)
                    except Exception as exc:  # noqa: BLE001 - the trial is recorded without its frames
                        log.warning("OOD evidence not kept: %s", exc)
            elif result.reason == "stall":
                outcome = "stall_stop"
            elif result.reason in ("cancelled", "arm_stopped"):
                outcome = "operator_stop"  # STOP, pause, or another command of the operator's ended it
            elif result.reason in DEVICE_FAILURES:
                outcome = "device_stop"
        path = [r.embedding for r in result.retrievals if r.embedding is not None] if result is not None else []
        try:
            self.ledger.finish(trial, outcome, reason, evidence=evidence, trajectory=np.stack(path) if path else None,
                               extra={"ticks": result.loop.ticks if result is not None else 0}, task_check=task_check)
        except (OSError, LedgerError) as exc:
            self.events.error(f"the trial ledger could not be written ({exc})")
            return
        self.events.trial_ended(trial)
