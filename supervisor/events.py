"""What the supervisor reports (Events) and why the arm stands still (Halt)."""

from __future__ import annotations

from dataclasses import dataclass

from robot_drivers.rig import Rig

#: Loop end reasons that are a device failing, and how the window says it.
DEVICE_FAILURES = {"camera_lost": "a camera stopped delivering frames", "arm_error": "the arm reported a fault",
                   "teleop_lost": "the teleop device was disconnected"}


@dataclass(frozen=True)
class Halt:
    """Why the arm is standing still and waiting for the operator."""

    reason: str  # "stop", "paused", "ood", "done", "camera_lost", "arm_error", "teleop_lost", "arm_stopped", "error"
    message: str
    evidence: object | None = None  # AutonomyResult for "ood"

    @property
    def is_fault(self) -> bool:
        """A device or software failure (shown as an error), as opposed to the operator's or the policy's stop."""
        return self.reason not in ("stop", "paused", "done", "ood", "stall")


class Events:
    """What the supervisor reports; override what you need (all are called from the supervisor's threads)."""

    def mode_changed(self, mode: str) -> None: ...
    def connected(self, rig: Rig) -> None: ...
    def disconnected(self) -> None: ...
    def tick(self, record) -> None: ...  # TickRecord, every tick of every activity
    def record_event(self, event) -> None: ...  # RecordEvent
    def episode_finished(self, outcome) -> None: ...  # EpisodeOutcome
    def dataset_changed(self, root) -> None: ...  # Path or None
    def episodes_changed(self, episodes) -> None: ...  # list[EpisodeInfo]
    def autonomy_event(self, event) -> None: ...  # AutonomyEvent
    def trial_ended(self, trial) -> None: ...  # evaluation.trials.Trial, as the ledger recorded it (awaiting_mark)
    def trial_marked(self, trial) -> None: ...  # evaluation.trials.Trial with the operator's mark
    def scene_changed(self, description: str) -> None: ...  # a simulated rig placed its scene (how, in words)
    def halted(self, halt: Halt) -> None: ...
    def halt_cleared(self) -> None: ...  # the arm moves again: the halt is resolved
    def error(self, text: str) -> None: ...
    def info(self, text: str) -> None: ...
