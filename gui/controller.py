"""The rig controller: one control thread that runs whatever the operator asked for.

The GUI never touches the arm in its own thread. It calls the methods below
(each returns at once) and listens to the signals. Work happens on the
control thread, one activity at a time, all on the project's one control
loop: teleoperation (``RecordingSession.run_reset_phase`` or the bare loop),
recording (``RecordingSession.record_episode``), autonomy
(``policy.runner.run_autonomous``), replay (``recorder.replay``) and homing.
A command interrupts the running activity at its next tick (<= one period).

STOP does not queue behind anything: a dedicated thread calls the safety
layer's latched ``stop()`` the moment the button is pressed, whatever the
control thread is doing; the arm then refuses motion until the operator
chooses resume, take over (teleop) or home, each of which releases it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from PyQt6.QtCore import QObject, QThread, pyqtSignal

from policy.runner import run_autonomous
from recorder.dataset import Dataset, DatasetError
from recorder.replay import replay_episode, restore_scene
from recorder.session import RecorderConfig, RecordingSession, scene_extra, spec_for_rig
from robot_drivers.control import ControlLoop, StepOutput, TeleopSource
from robot_drivers.errors import DeviceError
from robot_drivers.keyboard import KeyboardTeleop
from robot_drivers.rig import Rig
from robot_drivers.teleop import Button, CombinedTeleop, Teleop

log = logging.getLogger(__name__)

#: Builds the rig and the configured teleop device (None: keyboard only). Called on the control thread.
RigFactory = Callable[[], tuple[Rig, Teleop | None]]

# What the controller is doing; shown in the status bar.
DISCONNECTED, CONNECTING, TELEOP, RECORDING, AUTONOMOUS, REPLAY, HOMING, HALTED = (
    "disconnected", "connecting", "teleop", "recording", "autonomous", "replay", "homing", "halted")


@dataclass(frozen=True)
class Halt:
    """Why the arm is standing still and waiting for the operator."""

    reason: str  # "stop" (the STOP button), "ood", "paused", "camera_lost", "arm_error", "teleop_lost", "done", ...
    message: str
    evidence: object | None = None  # AutonomyResult for "ood"


class _ControlThread(QThread):
    def __init__(self, target: Callable[[], None]):
        super().__init__()
        self.setObjectName("control")
        self._target = target

    def run(self) -> None:
        self._target()


class RigController(QObject):
    mode_changed = pyqtSignal(str)
    connected = pyqtSignal(object)  # the Rig
    disconnected = pyqtSignal()
    tick = pyqtSignal(object)  # TickRecord, every tick of every activity
    record_event = pyqtSignal(object)  # RecordEvent
    episode_finished = pyqtSignal(object)  # EpisodeOutcome
    dataset_changed = pyqtSignal(object)  # the dataset's folder (Path) or None
    episodes_changed = pyqtSignal(object)  # list[EpisodeInfo]
    autonomy_event = pyqtSignal(object)  # AutonomyEvent
    halted = pyqtSignal(object)  # Halt
    error = pyqtSignal(str)
    info = pyqtSignal(str)

    def __init__(self, rig_factory: RigFactory, recorder_config: RecorderConfig | None = None, parent=None):
        super().__init__(parent)
        self._rig_factory = rig_factory
        self.recorder_config = recorder_config or RecorderConfig()
        self.keyboard = KeyboardTeleop()
        self.rig: Rig | None = None
        self.teleop: Teleop = self.keyboard
        self.dataset: Dataset | None = None
        self.session: RecordingSession | None = None
        self.policy = None
        self.mode = DISCONNECTED
        self._commands: queue.Queue = queue.Queue()
        self._command_lock = threading.Lock()
        self._interrupt = threading.Event()
        self._stop_requested = threading.Event()
        self._stop_done = threading.Event()
        self._quit = threading.Event()
        self._last_stop_error: str | None = None
        self._stopper = threading.Thread(target=self._stop_line, name="stop-line", daemon=True)
        self._stopper.start()
        self._thread = _ControlThread(self._run)
        self._thread.start()

    # ------------------------------------------------------------------ commands (any thread, never block)
    def connect_rig(self) -> None:
        self._submit("connect")

    def disconnect_rig(self) -> None:
        self._submit("disconnect")

    def open_dataset(self, path: str) -> None:
        """Open a dataset to record into (created if the folder holds none; resumed if it does)."""
        self._submit("open_dataset", path)

    def close_dataset(self) -> None:
        self._submit("close_dataset")

    def start_episode(self) -> None:
        self._submit("record")

    def stop_episode(self) -> None:
        """End the episode being recorded and keep it."""
        self._press(Button.STOP)

    def discard_episode(self) -> None:
        """End the episode being recorded and throw it away."""
        self._press(Button.DISCARD)

    def rerecord_episode(self) -> None:
        """Throw the episode being recorded away and start it again."""
        self._press(Button.RERECORD)

    def delete_episode(self, index: int) -> None:
        self._submit("delete_episode", index)

    def replay(self, index: int) -> None:
        self._submit("replay", index)

    def set_policy(self, policy) -> None:
        self._submit("set_policy", policy)

    def start_autonomy(self) -> None:
        self._submit("autonomy", False)

    def resume(self) -> None:
        """After a pause, a STOP or an OOD halt: release the arm and run the policy again."""
        self._submit("autonomy", True)

    def pause(self) -> None:
        self._submit("pause")

    def take_over(self) -> None:
        """Release the arm to the operator's teleop device."""
        self._submit("teleop", True)

    def home(self) -> None:
        self._submit("home")

    def reset_scene(self, seed: int, scenario: str | None = None, training_index: int | None = None) -> None:
        """Simulated rig only: a new scene (a scenario's placement, or training placement ``training_index``)."""
        self._submit("reset_scene", seed, scenario, training_index)

    def emergency_stop(self) -> None:
        """Halt the arm now (latched) and end whatever runs. Safe from any thread, returns at once."""
        self._stop_done.clear()
        self._stop_requested.set()
        self._submit("halt", Halt("stop", "STOP pressed: the arm is halted. Resume, take over or home."))

    def wait_stopped(self, timeout: float) -> bool:
        """For tests and benchmarks: block until the stop line has halted the arm."""
        return self._stop_done.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._quit.set()
        self._submit("quit")
        if not self._thread.wait(int(timeout * 1000)):
            log.error("the control thread did not end within %.0f s", timeout)
        self._stop_requested.set()

    # ------------------------------------------------------------------ plumbing
    def _submit(self, name: str, *args) -> None:
        with self._command_lock:
            self._commands.put((name, args))
            self._interrupt.set()

    def _press(self, button: Button) -> None:
        session = self.session
        if session is not None and self.mode == RECORDING:
            session.request(button)

    def _stop_line(self) -> None:
        while True:
            self._stop_requested.wait()
            if self._quit.is_set():
                return
            self._stop_requested.clear()
            rig = self.rig
            try:
                if rig is not None and rig.arm.is_connected:
                    rig.arm.stop()
            except Exception as exc:  # noqa: BLE001 - reported; the latch is set before the driver call
                self._last_stop_error = str(exc)
                self.error.emit(f"STOP: the arm driver reported an error while stopping: {exc}")
            self._stop_done.set()

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)

    def _run(self) -> None:
        activity: Callable[[], Callable | None] | None = None
        while True:
            with self._command_lock:
                idle = self._commands.empty()
                if idle:
                    self._interrupt.clear()
            if idle and activity is not None:
                activity = self._run_activity(activity)
                continue
            if idle:
                self._set_mode(HALTED if self.rig is not None else DISCONNECTED)
            name, args = self._commands.get()
            if name == "quit":
                self._run_command(self._do_disconnect)
                return
            handler = getattr(self, f"_do_{name}")
            refused, follow = self._run_command(lambda: handler(*args))
            if not refused and (follow is not None or name in _ENDS_ACTIVITY):
                activity = follow
            # else: a refused command (or one that starts nothing) lets the interrupted activity go on

    def _run_command(self, fn: Callable[[], Callable | None]) -> tuple[bool, Callable | None]:
        """A command handler; an error is a refusal with a message, and the arm keeps doing what it did."""
        try:
            return False, fn()
        except (DeviceError, DatasetError, OSError, ValueError, RuntimeError) as exc:
            log.error("%s", exc)
            self.error.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - the control thread must survive anything
            log.exception("unexpected error on the control thread")
            self.error.emit(f"unexpected error: {exc!r}")
        if self.rig is None:
            self._set_mode(DISCONNECTED)
        return True, None

    def _run_activity(self, fn: Callable[[], Callable | None]) -> Callable | None:
        """An activity moves the arm: any error in it halts the arm and is reported."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the control thread must survive anything
            log.exception("error while the arm was running")
            self.error.emit(str(exc) if isinstance(exc, (DeviceError, DatasetError, OSError, ValueError))
                            else f"unexpected error: {exc!r}")
        if self.rig is not None and self.rig.arm.is_connected:
            try:
                self.rig.arm.stop()
            except Exception as exc:  # noqa: BLE001
                self.error.emit(f"the arm could not be stopped: {exc}")
            self.halted.emit(Halt("error", "The arm was halted after an error (see the message)."))
        return None

    # ------------------------------------------------------------------ command handlers (control thread)
    def _default(self) -> Callable | None:
        """What runs when nothing else does: teleop; while the arm is latched, watching without moving."""
        if self.rig is None:
            return None
        return self._activity_monitor if self.rig.arm.stopped else self._activity_teleop

    def _do_connect(self):
        if self.rig is not None:
            return self._default()
        self._set_mode(CONNECTING)
        rig, device = self._rig_factory()
        rig.connect()
        try:
            if device is not None:
                device.connect()
        except Exception:
            rig.disconnect()
            raise
        self.rig = rig
        self.teleop = CombinedTeleop([self.keyboard, device]) if device is not None else self.keyboard
        if hasattr(rig, "reset"):
            rig.reset(0, "in_distribution")
        self.connected.emit(rig)
        self.info.emit(f"connected: {rig.name} rig, cameras {', '.join(rig.cameras)}, arm {rig.arm.name}")
        return self._default()

    def _do_disconnect(self):
        self._close_dataset()
        rig, self.rig = self.rig, None
        if rig is None:
            return None
        try:
            if self.teleop is not self.keyboard:
                self.teleop.disconnect()
            rig.disconnect()
        finally:
            if hasattr(rig, "close"):
                rig.close()
            self.teleop = self.keyboard
            self.disconnected.emit()
            self._set_mode(DISCONNECTED)
        return None

    def _require_rig(self) -> Rig:
        if self.rig is None:
            raise DeviceError("the rig is not connected; press Connect first")
        return self.rig

    def _do_open_dataset(self, path: str):
        rig = self._require_rig()
        self._close_dataset()
        dataset = Dataset.open_or_create(path, spec_for_rig(rig))
        self.dataset = dataset
        self.session = RecordingSession(rig, dataset, self.teleop, self.recorder_config,
                                        on_event=self._emit_record)
        self.session.cancel = self._interrupt  # a command ends the phase or episode at its next tick
        interrupted = dataset.interrupted()
        if interrupted:
            self.info.emit(f"{len(interrupted)} interrupted episode(s) in {path} are left aside; "
                           "`main.py dataset delete --interrupted` removes them")
        self.dataset_changed.emit(dataset.root)
        self.episodes_changed.emit(dataset.episodes())
        return self._default()

    def _close_dataset(self) -> None:
        if self.dataset is not None:
            self.dataset.close()
            self.dataset, self.session = None, None
            self.dataset_changed.emit(None)

    def _do_close_dataset(self):
        self._close_dataset()
        return self._default()

    def _do_delete_episode(self, index: int):
        if self.dataset is None:
            raise DatasetError("no dataset is open")
        self.dataset.delete_episode(index)
        self.info.emit(f"episode {index} deleted")
        self.episodes_changed.emit(self.dataset.episodes())
        return self._default()

    def _do_record(self):
        self._require_rig()
        if self.session is None:
            raise DatasetError("open or create a dataset before recording")
        if self.rig.arm.stopped:
            raise DeviceError("the arm is halted; take over or home it before recording")
        return self._activity_record

    def _do_set_policy(self, policy):
        self.policy = policy
        return None

    def _do_autonomy(self, release: bool):
        rig = self._require_rig()
        if self.policy is None:
            raise RuntimeError("load a policy first")
        if release:
            rig.arm.release()
        elif rig.arm.stopped:
            raise DeviceError("the arm is halted; press Resume to release it and run the policy")
        return self._activity_autonomy

    def _do_pause(self):
        rig = self._require_rig()
        rig.arm.stop()
        self.halted.emit(Halt("paused", "Paused: the arm holds its position. Resume, take over or home."))
        return self._default()

    def _do_halt(self, halt: Halt):
        # The stop line already halted the arm; this ends the activity and tells the window.
        self._stop_done.wait(1.0)
        self.halted.emit(halt)
        return self._default()

    def _do_teleop(self, release: bool):
        rig = self._require_rig()
        if release:
            rig.arm.release()
        return self._default()

    def _do_home(self):
        rig = self._require_rig()
        rig.arm.release()
        self._set_mode(HOMING)
        rig.arm.home()
        if rig.arm.stopped:  # STOP pressed while homing
            return self._default()
        self.info.emit("homed")
        return self._default()

    def _do_reset_scene(self, seed: int, scenario: str | None, training_index: int | None):
        rig = self._require_rig()
        if not hasattr(rig, "reset"):
            raise DeviceError("only the simulated rig can reset its scene; reset the real one by hand")
        if training_index is not None:
            from robot_drivers.sim.task import training_scene

            rig.reset(seed, scene=training_scene(rig.task, training_index))
        else:
            rig.reset(seed, scenario or "in_distribution")
        return self._default()

    def _do_replay(self, index: int):
        self._require_rig()
        if self.dataset is None:
            raise DatasetError("open the dataset that holds the episode first")
        if self.rig.arm.stopped:
            raise DeviceError("the arm is halted; take over or home it before replaying")
        return lambda: self._activity_replay(index)

    # ------------------------------------------------------------------ activities (control thread)
    def _loop_ended(self, reason: str, error: Exception | None) -> Callable | None:
        """Common handling of a loop that ended on its own."""
        if reason in _DEVICE_FAILURES:
            what = _DEVICE_FAILURES[reason]
            self.error.emit(f"{what}: {error}")
            self.halted.emit(Halt(reason, f"Halted: {what}. Check the device, then take over or home."))
            return None  # no monitor: it would fail the same way; Connect again or take over to retry
        if reason == "estop":
            self.halted.emit(Halt("stop", "STOP pressed on the teleop device: the arm is halted."))
        if reason == "arm_stopped" and self._commands.empty():  # not our STOP button (that one queues a halt)
            self.halted.emit(Halt("stop", f"The arm was stopped ({error}). Take over or home."))
        return self._default()

    def _activity_monitor(self):
        """Halted: keep the previews and the arm readout live, send nothing."""
        self._set_mode(HALTED)
        result = ControlLoop(self.rig).run(_Watch(), on_tick=self.tick.emit, cancel=self._interrupt)
        if result.reason == "cancelled":
            return None
        return self._loop_ended(result.reason, result.error)

    def _activity_teleop(self):
        self._set_mode(TELEOP)
        if self.session is not None:
            reason = self.session.run_reset_phase()
            error = None
        else:
            result = ControlLoop(self.rig).run(TeleopSource(self.teleop), on_tick=self.tick.emit,
                                               cancel=self._interrupt, end_on=frozenset({Button.START}))
            reason, error = result.reason, result.error
        if reason == "start_button":
            if self.session is None:
                self.info.emit("START pressed: open a dataset to record into first")
                return self._activity_teleop
            return self._activity_record
        if reason == "cancelled":
            return self._default()
        return self._loop_ended(reason, error)

    def _activity_record(self):
        self._set_mode(RECORDING)
        self.teleop.reset()
        outcome = self.session.record_episode(extra=scene_extra(self.rig))
        self.episode_finished.emit(outcome)
        self.episodes_changed.emit(self.dataset.episodes())
        if outcome.reason == "write_error":
            self.error.emit(f"the episode could not be written and was discarded: {outcome.error}")
            return self._default()
        if outcome.reason == "rerecord":
            return self._activity_record
        if outcome.reason in (*_DEVICE_FAILURES, "arm_stopped", "estop"):
            return self._loop_ended(outcome.reason, outcome.error)
        return self._default()

    def _activity_autonomy(self):
        self._set_mode(AUTONOMOUS)
        rig = self.rig
        succeeded = getattr(rig, "success", None)
        result = run_autonomous(rig, self.policy, on_event=self._emit_autonomy, cancel=self._interrupt,
                                stop_when=succeeded)
        if result.reason == "ood":
            sim = result.ood_evidence.similarity if result.ood_evidence is not None else float("nan")
            self.halted.emit(Halt("ood", f"Out of distribution: similarity {sim:.3f} is below gamma "
                                         f"{self.policy.gamma:.3f}. The arm is halted; resume, take over or home.",
                                  result))
            return self._default()
        if result.reason == "done":
            rig.arm.stop()
            self.halted.emit(Halt("done", "Task done: the mug is lifted. The arm holds; take over or home."))
            return self._default()
        if result.reason == "cancelled":
            return None  # a command ended it and decides what follows
        return self._loop_ended(result.reason, result.loop.error)

    def _emit_record(self, event) -> None:
        self.record_event.emit(event)
        self.tick.emit(event.record)

    def _emit_autonomy(self, event) -> None:
        self.autonomy_event.emit(event)
        self.tick.emit(event.record)

    def _activity_replay(self, index: int):
        self._set_mode(REPLAY)
        info = self.dataset.episode(index)
        if restore_scene(self.rig, info):
            self.info.emit(f"scene of episode {index} restored")
        result = replay_episode(self.rig, self.dataset, index, on_tick=self.tick.emit, cancel=self._interrupt)
        if result.reason == "stop_button":  # the replay source presses STOP after the last action
            self.info.emit(f"replayed episode {index} ({result.ticks} ticks)")
        if result.reason == "cancelled":
            return None
        return self._loop_ended(result.reason, result.error)


class _Watch:
    """An action source that never moves the arm."""

    def begin(self, observation) -> None:
        pass

    def step(self, observation, dt) -> StepOutput:
        return StepOutput(None)

    def sent(self, action) -> None:
        pass


# Loop end reasons that are a device failing, and how the window says it.
_DEVICE_FAILURES = {"camera_lost": "a camera stopped delivering frames", "arm_error": "the arm reported a fault",
                    "teleop_lost": "the teleop device was disconnected"}

# Commands after which the interrupted activity must not simply go on.
_ENDS_ACTIVITY = frozenset({"connect", "disconnect", "record", "autonomy", "pause", "halt", "teleop", "home",
                            "reset_scene", "replay", "open_dataset", "close_dataset", "delete_episode"})
