"""The activities that run on the control loop between commands: teleop, recording, autonomy, replay, halted."""

from __future__ import annotations

from typing import Callable

from policy.runner import run_autonomous
from recorder.replay import replay_episode, restore_scene
from recorder.session import scene_extra
from robot_drivers.control import ControlLoop, StepOutput, TeleopSource
from robot_drivers.teleop import Button

from .events import DEVICE_FAILURES, Halt
from .modes import AUTONOMOUS, DISCONNECTED, HALTED, RECORDING, REPLAY, TELEOP


class Activities:
    """The Supervisor's activities (a mixin: the state lives on the Supervisor). Each returns the activity that
    follows it (None: nothing runs until a command comes)."""

    def _default(self) -> Callable | None:
        """What runs when nothing else does: teleop; while the arm is latched, watching without moving."""
        if self.rig is None:
            self._set_mode(DISCONNECTED)
            return None
        if self.rig.arm.stopped:
            self._set_mode(HALTED)
            return self._activity_monitor
        self._set_mode(TELEOP)  # now, not when the loop starts: a command right behind sees the mode it will meet
        return self._activity_teleop

    def _loop_ended(self, reason: str, error: Exception | None) -> Callable | None:
        """A loop that ended on its own (not for a command): what follows."""
        if reason in DEVICE_FAILURES:
            what = DEVICE_FAILURES[reason]
            self.events.error(f"{what}: {error}")
            # No watch loop: it would fail the same way. Connect again, or take over to retry.
            detail = f" ({error})" if error is not None and str(error) else ""  # names the device, e.g. the camera
            return self._enter_halt(Halt(reason, f"Halted: {what}{detail}. Check the device, then take over or "
                                                 "home."), watch=False)
        if reason == "estop":
            self._halt_now(Halt("stop", "STOP pressed on the teleop device: the arm is halted."))
            return None  # the halt command that follows ends it
        if reason == "arm_stopped":
            with self._pending_lock:
                halt_pending = any(c.name == "halt" for c in self._pending)
            if not halt_pending:  # not our STOP (that one queues a halt): a limit violation, say
                return self._enter_halt(Halt("arm_stopped", f"The arm was stopped ({error}). Take over or home."))
        return self._default()

    def _activity_monitor(self):
        """Halted: keep the previews and the arm readout live, send nothing."""
        self._set_mode(HALTED)
        result = ControlLoop(self.rig).run(_Watch(), on_tick=self._on_tick, cancel=self._end_activity)
        if result.reason == "cancelled":
            return self._default()
        return self._loop_ended(result.reason, result.error)

    def _on_tick(self, record) -> None:
        self._serve()
        self.events.tick(record)

    def _activity_teleop(self):
        self._set_mode(TELEOP)
        self._clear_halt()
        gripper = self.rig.arm.last_gripper_command
        if self.session is not None:
            reason = self.session.run_reset_phase()
            error = self.session.reset_phase_error
        else:
            result = ControlLoop(self.rig).run(TeleopSource(self.teleop, gripper), on_tick=self._on_tick,
                                               cancel=self._end_activity, end_on=frozenset({Button.START}))
            reason, error = result.reason, result.error
        if reason == "start_button":
            if self.session is None:
                self.events.info("START pressed: open a dataset to record into first")
                return self._activity_teleop
            return self._activity_record
        if reason == "cancelled":
            return self._default()
        return self._loop_ended(reason, error)

    def _enter_recording(self) -> None:
        """Keys held from before the episode are forgotten, then the mode says RECORDING (once: the command that
        starts a recording announces it, and its activity, or a re-record, does not forget keys again). A key
        pressed once the window shows RECORDING is the operator's first command of the episode; nothing clears it."""
        if self.mode != RECORDING:
            self.teleop.reset()
            self._set_mode(RECORDING)

    def _activity_record(self):
        self._enter_recording()
        self.session.cancel_reason = "cancel"
        extra = scene_extra(self.rig)
        intervention, self._intervention = self._intervention, None
        if intervention is not None:
            extra["intervention"] = intervention
        outcome = self.session.record_episode(extra=extra)
        self.events.episode_finished(outcome)
        self.events.episodes_changed(self.dataset.episodes())
        if outcome.reason == "write_error":
            self.events.error(f"the episode could not be written and was discarded: {outcome.error}")
            return self._default()
        if outcome.reason == "rerecord":
            return self._activity_record
        if outcome.reason in (*DEVICE_FAILURES, "arm_stopped", "estop"):
            return self._loop_ended(outcome.reason, outcome.error)
        return self._default()

    def _activity_autonomy(self, resume: bool = False):
        """Run the policy: from Start a new attempt (a trial), from Resume the halted attempt goes on
        (``trial_log.py``: halts are its events, the task done or the operator's next move ends it)."""
        self._set_mode(AUTONOMOUS)
        self._clear_halt()
        rig = self.rig
        control = rig.scene_control()
        attempt = self._begin_attempt(control, resume)
        result = None
        try:
            result = run_autonomous(rig, self.policy, on_event=self._emit_autonomy, cancel=self._end_activity,
                                    stop_when=control.task_succeeded if control is not None else None)
        finally:
            self._run_ended(attempt, result)
        why = result.message  # the gate's or the watchdog's own words, naming the signal
        if result.reason == "ood":
            sim = result.ood_evidence.similarity if result.ood_evidence is not None else float("nan")
            why = why or f"similarity {sim:.3f} is below gamma {self.policy.gamma:.3f}"
            return self._enter_halt(Halt("ood", f"Out of distribution: {why}. The arm is halted; resume, take "
                                                "over (and record a correction) or home.", result))
        if result.reason == "stall":
            return self._enter_halt(Halt("stall", f"No progress: {why or 'the arm stopped moving'}. The arm is "
                                                  "halted; take over (and record a correction), resume or home.",
                                         result))
        if result.reason == "done":
            rig.arm.stop()
            what = control.success_text if control is not None else "the task is done"
            return self._enter_halt(Halt("done", f"Task done: {what}. The arm holds where it is; take over or "
                                                 "home."))
        if result.reason == "cancelled":
            return self._default()
        return self._loop_ended(result.reason, result.loop.error)

    def _emit_record(self, event) -> None:
        self.events.record_event(event)
        self.events.tick(event.record)

    def _emit_autonomy(self, event) -> None:
        self._serve()
        self.events.autonomy_event(event)
        self.events.tick(event.record)

    def _activity_replay(self, index: int):
        self._set_mode(REPLAY)
        self._clear_halt()
        info = self.dataset.episode(index)
        if restore_scene(self.rig, info):
            self.events.info(f"scene of episode {index} restored")
        result = replay_episode(self.rig, self.dataset, index, on_tick=self._on_tick, cancel=self._end_activity)
        if result.reason == "stop_button":  # the replay source presses STOP after the last action
            self.events.info(f"replayed episode {index} ({result.ticks} ticks)")
            self.teleop.reset()
        if result.reason == "cancelled":
            return self._default()
        return self._loop_ended(result.reason, result.error)


class _Watch:
    """An action source that never moves the arm."""

    def begin(self, observation) -> None:
        pass

    def step(self, observation, dt) -> StepOutput:
        return StepOutput(None)

    def sent(self, action) -> None:
        pass
