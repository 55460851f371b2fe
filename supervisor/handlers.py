"""The command handlers: what each queued command does, on the control thread (rows of the table in modes.py)."""

from __future__ import annotations

from core.errors import DeviceError
from recorder.dataset import Dataset, DatasetError
from recorder.idle import ORIGINALS_DIR, trim_episode
from recorder.outputs import DATASET, check_output
from recorder.replay import restore_scene
from recorder.session import RecordingSession, spec_for_rig
from robot_drivers.rig import Rig
from robot_drivers.teleop import CombinedTeleop

from .events import Halt
from .modes import AUTONOMOUS, CONNECTING, DISCONNECTED, HOMING, RECORDING, REPLAY, TELEOP
from .tickets import QueuedCommand

#: Seconds the first frame of every camera may take after connecting.
CAMERA_START_TIMEOUT = 5.0


class Handlers:
    """The Supervisor's command handlers (a mixin: the state lives on the Supervisor)."""

    def _require_rig(self) -> Rig:
        if self.rig is None:
            raise DeviceError("the rig is not connected; press Connect first")
        return self.rig

    def _do_connect(self):
        if self.rig is not None:
            return None
        self._set_mode(CONNECTING)
        rig, device = self._rig_factory()
        try:
            rig.connect()
        except Exception:
            rig.close()
            self._set_mode(DISCONNECTED)
            raise
        control = rig.scene_control()
        try:
            if device is not None:
                device.connect()
            rig.wait_for_cameras(CAMERA_START_TIMEOUT)
            if control is not None:  # a simulator connects to an empty world: place the scene before a halt latches
                record = control.reset(0, "in_distribution")
        except Exception:
            if device is not None:
                device.disconnect()
            rig.disconnect()
            rig.close()
            self._set_mode(DISCONNECTED)
            raise
        self.teleop = CombinedTeleop([self.keyboard, device]) if device is not None else self.keyboard
        with self._stop_cond:
            self.rig = rig
            unreleased = self.halt_unreleased
            if unreleased:
                rig.arm.latch()  # a halt the operator has not released holds across a reconnect
        self.events.connected(rig)
        if control is not None:
            self.events.scene_changed(control.describe(record))
        self.events.info(f"connected: {rig.name} rig, cameras {', '.join(rig.cameras)}, arm {rig.arm.name}")
        if unreleased:
            before = self.halt.message if self.halt is not None else "a STOP"
            return self._enter_halt(Halt("stop", f"Connected; the arm stays halted as before ({before}) until you "
                                                 "take over or home it."), bump=False)
        return None

    def _do_disconnect(self):
        self._end_attempt("disconnect")  # a halted attempt ends here (quit too)
        self._close_dataset()
        rig = self.rig
        if rig is None:
            return None
        with self._stop_cond:
            self.rig = None
        try:
            if self.teleop is not self.keyboard:
                self.teleop.disconnect()
            rig.disconnect()
        finally:
            rig.close()
            self.teleop = self.keyboard
            self.events.disconnected()
            self._set_mode(DISCONNECTED)
        return None

    def _do_set_rig(self, factory, name: str | None):
        """Only while disconnected (the row's guard): the next connect builds this rig; a halt not yet released
        holds on it (``_do_connect`` latches it)."""
        if factory is None:
            factory = self._first_rig_factory
        self._rig_factory = factory
        self.rig_factory_name = name
        self.events.info(f"rig chosen: {name or 'the one the app was opened on'}; press Connect to connect it")
        return None

    def _do_open_dataset(self, path: str):
        rig = self._require_rig()
        check_output(path, DATASET, append=True, option="dataset folder")  # never a policy, the project, ...
        self._close_dataset()
        dataset = Dataset.open_or_create(path, spec_for_rig(rig))
        self.dataset = dataset
        self.session = RecordingSession(rig, dataset, self.teleop, self.recorder_config,
                                        on_event=self._emit_record)
        self.session.cancel = self._end_activity
        self.session.tick_hook = self._serve
        interrupted = dataset.interrupted()
        if interrupted:
            self.events.info(f"{len(interrupted)} interrupted episode(s) in {path} are left aside; "
                             "`main.py dataset delete --interrupted` removes them")
        self.events.dataset_changed(dataset.root)
        self.events.episodes_changed(dataset.episodes())
        return None

    def _close_dataset(self) -> None:
        if self.dataset is not None:
            self.dataset.close()
            self.dataset, self.session = None, None
            self.events.dataset_changed(None)

    def _do_close_dataset(self):
        self._close_dataset()
        return None

    def _do_delete_episode(self, index: int):
        if self.dataset is None:
            raise DatasetError("no dataset is open")
        self.dataset.delete_episode(index)
        self.events.info(f"episode {index} deleted")
        self.events.episodes_changed(self.dataset.episodes())
        return None

    def _do_trim_episode(self, index: int, config):
        if self.dataset is None:
            raise DatasetError("open the dataset that holds the episode first")
        trimmed, cut = trim_episode(self.dataset, index, config)
        self.events.info(f"episode {index} trimmed: {cut} idle steps cut ({cut / self.dataset.spec.fps:.1f} s); "
                         f"the copy is episode {trimmed.index}, the original is kept in {ORIGINALS_DIR}/")
        self.events.episodes_changed(self.dataset.episodes())
        return None

    def _do_record(self):
        self._require_rig()
        self.session._take_requests()  # keep / discard pressed before this episode are not for it
        self._enter_recording()
        return self._activity_record

    def _do_set_policy(self, policy):
        self.policy = policy
        return None

    def _do_set_gamma(self, value, by: str, rate: float | None = None):
        """The policy's gate, changed between two lookups: gamma alone (``policy.set_gamma``) or a dict of
        thresholds (``policy.set_thresholds``); the policy logs the change. ValueError (a refusal) when a value is
        not a similarity or names a signal the policy has no threshold for."""
        if isinstance(value, dict):
            self.policy.set_thresholds(value, by=by, rate=rate)
        else:
            self.policy.set_gamma(value, by=by)
        self._gate_changed()  # an event of the open attempt, written now
        return None

    def _do_mark_trial(self, outcome: str, trial_id: str | None = None):
        trial = self.last_trial
        if self.ledger is None:
            raise ValueError("there is no trial ledger to record the mark in")
        if trial is None:
            raise ValueError("no run to mark: marks are for the run that ended last, and none is in the ledger")
        if trial_id is not None and trial.id != trial_id:
            raise ValueError(f"the attempt asked about ({trial_id}) is no longer the last one ({trial.id} is): "
                             f"mark it with `main.py trials --mark {trial_id} {outcome}`")
        if trial.outcome is None and self._attempt is not None and self._attempt.trial is trial \
                and self.mode != AUTONOMOUS:
            self._end_attempt("mark")  # the verdict on a halted attempt ends it
        self.ledger.mark(trial, outcome)  # ValueError when it has not ended (it runs)
        self.events.trial_marked(trial)
        return None

    # Handlers that start an activity announce its mode at once: a command queued right behind is checked
    # against the activity it will meet (Enter right after Take over starts a recording).
    def _do_autonomy(self):
        self._require_rig()
        self._set_mode(AUTONOMOUS)
        return self._activity_autonomy

    def _do_resume(self, command: QueuedCommand):
        self._release(command)
        self._set_mode(AUTONOMOUS)
        return lambda: self._activity_autonomy(resume=True)  # the halted attempt goes on

    def _do_take_over(self, command: QueuedCommand):
        self._release(command)
        self._end_attempt("take_over")
        self.teleop.reset()
        self._clear_halt()
        self._set_mode(TELEOP)
        return self._activity_teleop

    def _do_take_over_record(self, command: QueuedCommand):
        self._release(command)
        halt, trial, policy = self.halt, self.last_trial, self.policy
        self._intervention = {
            "policy": str(policy.info.get("path", "")) if policy is not None else None,
            "version": int(policy.info.get("version", 1)) if policy is not None else None,
            "run": trial.id if trial is not None else None,
            "halt_reason": halt.reason if halt is not None else None,
            "event": self._last_halt_event()}  # which halt of the attempt this corrects
        self._end_attempt("take_over_record")
        self._clear_halt()
        self.session._take_requests()
        self._enter_recording()
        return self._activity_record

    def _do_home(self, command: QueuedCommand):
        rig = self._require_rig()
        self._release(command)
        self._end_attempt("home")
        self._clear_halt()
        self._set_mode(HOMING)
        rig.arm.home()
        if rig.arm.stopped:  # STOP pressed while homing: the halt command that follows says so
            return None
        self.teleop.reset()
        self.events.info("homed")
        return None

    def _do_reset_scene(self, seed: int | None, scenario: str | None, training_index: int | None,
                        episode: int | None = None):
        rig = self._require_rig()
        control = rig.scene_control()
        self._end_attempt("reset_scene")
        if episode is not None:
            if self.dataset is None:
                raise DatasetError("open the dataset that holds the episode first")
            info = self.dataset.episode(episode)
            if not restore_scene(rig, info):
                raise DatasetError(f"episode {episode} has no stored scene (recorded on a real rig or an old "
                                   "version); place the object by hand")
            described = control.describe(info.extra.get('scene'))
            self.events.info(f"scene of episode {episode} restored: {described}")
            self.events.scene_changed(f"as in episode {episode}: {described}")
        else:
            record = control.reset(seed, scenario, training_index)
            self.events.info(f"new scene: {control.describe(record)}")
            self.events.scene_changed(control.describe(record))
        self.teleop.reset()
        return None

    def _do_replay(self, index: int):
        self._require_rig()
        self._set_mode(REPLAY)
        return lambda: self._activity_replay(index)

