"""The operator-session state machine: one control thread, one activity at a time, a STOP that holds.

Activities (teleop, recording, autonomy, replay, homing, and while halted a
watch loop that commands nothing) all run on the project's one control loop,
on one control thread. Commands are calls from any thread that return at once
with a :class:`Ticket`; the control thread answers each one.

The operator's contract, as this module enforces it:

* **STOP holds until the operator releases it.** ``emergency_stop`` latches
  the safety layer at once (no I/O, any thread) and a dedicated stop line
  calls the driver's stop. Every halt (STOP, pause, OOD, a device failure, a
  finished task) bumps the *stop generation*. Every command carries the
  generation at the moment it was issued; a command that would move the arm or
  release the latch and was issued before the latest halt is refused, and the
  release itself happens under the same lock the STOP takes, so a STOP cannot
  slip between the check and the release. A rig connected while a halt is
  unreleased starts latched.
* **Nothing recorded is lost unless the operator discards it.** Commands that
  do not end the activity (loading a policy, deleting another episode) are
  served between two ticks of the running activity and never touch a
  recording. Commands that must end it (home, a scene reset, starting
  autonomy, disconnect, opening another dataset) end the episode and keep it,
  marked ``ended_by_<command>``; a STOP, a teleop device's emergency stop and
  device faults keep it too. Only discard and re-record throw an episode away.
* **Handovers start from the arm as it is.** A new source starts from the
  measured pose and the gripper's last command (not its measured opening,
  which would let go of a held object); the teleop device's state from before
  the handover (held keys, a pending gripper toggle) is forgotten. Starting,
  keeping, discarding and re-recording an episode act only while teleoperating
  or recording.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from policy.runner import run_autonomous
from evaluation.trials import LedgerError, stop_evidence
from recorder.dataset import Dataset, DatasetError
from recorder.idle import ORIGINALS_DIR, trim_episode
from recorder.outputs import DATASET, check_output
from recorder.replay import replay_episode, restore_scene
from recorder.session import RecorderConfig, RecordingSession, scene_extra, spec_for_rig
from robot_drivers.control import ControlLoop, StepOutput, TeleopSource
from core.errors import DeviceError
from robot_drivers.keyboard import KeyboardTeleop
from robot_drivers.rig import Rig
from robot_drivers.teleop import Button, CombinedTeleop, Teleop

log = logging.getLogger(__name__)

#: Builds the rig and the configured teleop device (None: keyboard only). Called on the control thread.
RigFactory = Callable[[], tuple[Rig, Teleop | None]]

DISCONNECTED, CONNECTING, TELEOP, RECORDING, AUTONOMOUS, REPLAY, HOMING, HALTED = (
    "disconnected", "connecting", "teleop", "recording", "autonomous", "replay", "homing", "halted")

#: Seconds the first frame of every camera may take after connecting.
CAMERA_START_TIMEOUT = 5.0


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
    def halted(self, halt: Halt) -> None: ...
    def halt_cleared(self) -> None: ...  # the arm moves again: the halt is resolved
    def error(self, text: str) -> None: ...
    def info(self, text: str) -> None: ...


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
class _Command:
    name: str
    args: tuple
    ticket: Ticket


class CommandRefused(Exception):
    """A command that cannot run now; its message tells the operator why and what to do."""


# Commands served between two ticks of whatever runs: they never end an activity (a recording goes on).
_NEUTRAL = frozenset({"set_policy", "delete_episode", "mark_trial"})
# Commands that lift the latch: only valid when issued after the latest halt.
_RELEASES = frozenset({"resume", "take_over", "take_over_record", "home"})
# Commands that move the arm without lifting the latch: also refused when issued before the latest halt.
_MOVES = frozenset({"record", "autonomy", "replay", "reset_scene"})

# Loop end reasons that are a device failing, and how the window says it.
_DEVICE_FAILURES = {"camera_lost": "a camera stopped delivering frames", "arm_error": "the arm reported a fault",
                    "teleop_lost": "the teleop device was disconnected"}

_LABELS = {"home": "Home", "take_over": "Take over", "take_over_record": "Take over & record", "resume": "Resume", "record": "Start recording",
           "autonomy": "Start", "replay": "Replay", "reset_scene": "the scene reset"}


class Supervisor:
    def __init__(self, rig_factory: RigFactory, recorder_config: RecorderConfig | None = None,
                 events: Events | None = None, ledger=None):
        """``ledger``: a :class:`evaluation.trials.TrialLedger` in which every autonomous run is recorded as a trial."""
        self._rig_factory = rig_factory
        self.ledger = ledger
        self.last_trial = None  # the newest trial (evaluation.trials.Trial) the ledger recorded
        self._intervention: dict | None = None  # the next episode is a correction of this halt
        self.recorder_config = recorder_config or RecorderConfig()
        self.events = events or Events()
        self.keyboard = KeyboardTeleop()
        self.rig: Rig | None = None
        self.teleop: Teleop = self.keyboard
        self.dataset: Dataset | None = None
        self.session: RecordingSession | None = None
        self.policy = None
        self.mode = DISCONNECTED
        self.halt: Halt | None = None  # the unresolved halt, if any
        # -- commands
        self._pending: deque[_Command] = deque()
        self._pending_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._end_activity = threading.Event()  # set between ticks when a waiting command must end the activity
        # -- the stop generation and the stop line
        self._stop_cond = threading.Condition()
        self._generation = 0  # bumped by every halt
        self._released_generation = 0  # the generation the latest release was issued in
        self._stop_requested = 0  # stop-line requests made / done
        self._stop_done = 0
        self._quit = threading.Event()
        self._stopper = threading.Thread(target=self._stop_line, name="stop-line", daemon=True)
        self._stopper.start()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ commands (any thread, never block)
    def connect_rig(self) -> Ticket:
        return self._submit("connect")

    def disconnect_rig(self) -> Ticket:
        return self._submit("disconnect")

    def open_dataset(self, path: str) -> Ticket:
        """Open a dataset to record into (created if the folder holds none; resumed if it does)."""
        return self._submit("open_dataset", path)

    def close_dataset(self) -> Ticket:
        return self._submit("close_dataset")

    def start_episode(self) -> Ticket:
        """Start recording (only while teleoperating)."""
        return self._submit("record")

    def stop_episode(self) -> bool:
        """End the episode being recorded and keep it; False when nothing is being recorded."""
        return self._press(Button.STOP)

    def discard_episode(self) -> bool:
        """End the episode being recorded and throw it away."""
        return self._press(Button.DISCARD)

    def rerecord_episode(self) -> bool:
        """Throw the episode being recorded away and start it again."""
        return self._press(Button.RERECORD)

    def delete_episode(self, index: int) -> Ticket:
        return self._submit("delete_episode", index)

    def replay(self, index: int) -> Ticket:
        return self._submit("replay", index)

    def trim_episode(self, index: int, config=None) -> Ticket:
        """Replace kept episode ``index`` by a copy without its idle stretches; the original is set aside
        intact (``recorder/idle.py``). Ends the running activity like a scene reset (it writes a while)."""
        return self._submit("trim_episode", index, config)

    def set_policy(self, policy) -> Ticket:
        return self._submit("set_policy", policy)

    def start_autonomy(self) -> Ticket:
        return self._submit("autonomy")

    def mark_last_trial(self, outcome: str) -> Ticket:
        """The operator's verdict ("success" or "failure") on the run that ended last: on a real rig nothing else
        tells whether the arm did the task; in the simulator it overrules the task check. A later mark replaces
        it. Written to the ledger on the control thread, between two ticks (nothing that runs is ended)."""
        return self._submit("mark_trial", outcome)

    def resume(self) -> Ticket:
        """After a pause, a STOP or an OOD halt: release the arm and run the policy again."""
        return self._submit("resume")

    def take_over(self) -> Ticket:
        """Release the arm to the operator's teleop device, from where it stands."""
        return self._submit("take_over")

    def take_over_and_record(self) -> Ticket:
        """After a halt of the policy: release the arm to the teleop device and record what the operator does
        from where it stands, as an episode tagged as an intervention (the policy, the run, the halt)."""
        return self._submit("take_over_record")

    def home(self) -> Ticket:
        return self._submit("home")

    def reset_scene(self, seed: int, scenario: str | None = None, training_index: int | None = None) -> Ticket:
        """Simulated rig only: a new scene (a scenario's placement, or training placement ``training_index``)."""
        return self._submit("reset_scene", seed, scenario, training_index)

    def restore_episode_scene(self, index: int) -> Ticket:
        """Simulated rig only: put the scene back as it was when episode ``index`` was recorded."""
        return self._submit("reset_scene", None, None, None, index)

    def pause(self) -> Ticket:
        """Hold the arm where it is (a halt like STOP); Resume goes on."""
        return self._halt_now(Halt("paused", "Paused: the arm holds its position. Resume, take over or home."))

    def emergency_stop(self) -> Ticket:
        """Halt the arm now (latched) and end whatever runs. Safe from any thread, returns at once."""
        return self._halt_now(Halt("stop", "STOP pressed: the arm is halted. Resume, take over or home."))

    def wait_stopped(self, timeout: float) -> bool:
        """Block until the stop line has stopped the arm for every STOP so far (tests, benchmarks)."""
        with self._stop_cond:
            return self._stop_cond.wait_for(lambda: self._stop_done >= self._stop_requested, timeout)

    @property
    def stop_generation(self) -> int:
        return self._generation

    def holding_object(self, state=None) -> bool:
        """Whether the gripper is closed on something (told to close, but measured open): Home would drop it.

        ``state``: the latest measured RobotState the caller has (a window passes the last tick's, so it
        never waits on the driver); None reads the arm."""
        rig = self.rig
        if rig is None or not rig.arm.is_connected:
            return False
        commanded = rig.arm.last_gripper_command
        if commanded is None or commanded > 0.5:
            return False
        if state is None:
            try:
                state = rig.arm.get_state()
            except DeviceError:
                return False
        return state.gripper > commanded + 0.05

    def shutdown(self, timeout: float = 10.0) -> None:
        """End the activity (a recording is kept), disconnect, and end the supervisor's threads."""
        if not self._thread.is_alive():
            return
        self._submit("quit")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the control thread did not end within %.0f s", timeout)
        self._quit.set()
        with self._stop_cond:
            self._stop_cond.notify_all()
        self._stopper.join(2.0)

    # ------------------------------------------------------------------ plumbing
    def _submit(self, name: str, *args) -> Ticket:
        with self._stop_cond:
            generation = self._generation
        ticket = Ticket(name, generation, time.monotonic())
        with self._pending_lock:
            self._pending.append(_Command(name, args, ticket))
        self._wakeup.set()
        return ticket

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

    def _press(self, button: Button) -> bool:
        session = self.session
        if session is not None and self.mode == RECORDING:
            session.request(button)
            return True
        return False

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

    def _bump_generation(self) -> None:
        """A halt that did not come through the stop line (OOD, a fault, a finished task)."""
        with self._stop_cond:
            self._generation += 1

    def _release(self, command: _Command) -> None:
        """Lift the latch, if no halt came after the operator issued ``command`` (atomic with STOP)."""
        rig = self._require_rig()
        with self._stop_cond:
            self._stop_cond.wait_for(lambda: self._stop_done >= self._stop_requested, 2.0)
            if command.ticket.generation != self._generation:
                raise CommandRefused(self._stale_message(command))
            rig.arm.release()
            self._released_generation = self._generation

    def _stale_message(self, command: _Command) -> str:
        return (f"{_LABELS.get(command.name, command.name)} was pressed before the latest halt and is ignored; "
                "press it again if you still want it")

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.events.mode_changed(mode)

    def _pop(self, wait: bool) -> _Command | None:
        while True:
            with self._pending_lock:
                if self._pending:
                    return self._pending.popleft()
                self._wakeup.clear()
            if not wait:
                return None
            self._wakeup.wait()

    def _answer(self, command: _Command, refusal: str | None = None) -> None:
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
            if command.name == "quit":
                self._execute(command, self._do_disconnect)
                return
            refusal = self._precheck(command)
            if refusal is not None:
                self._answer(command, refusal)
                continue  # the activity goes on as it was
            follow = self._execute(command, self._handler(command))
            if command.name not in _NEUTRAL:  # a neutral command leaves the activity as it was
                activity = follow if callable(follow) else self._default()

    def _handler(self, command: _Command) -> Callable[[], Callable | None]:
        handler = getattr(self, f"_do_{command.name}")
        if command.name in _RELEASES:
            return lambda: handler(command, *command.args)
        return lambda: handler(*command.args)

    def _execute(self, command: _Command, fn: Callable[[], Callable | None]) -> Callable | None | bool:
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

    def _precheck(self, command: _Command) -> str | None:
        """Why ``command`` cannot run now (None: it can). Runs on the control thread, between ticks."""
        name = command.name
        if name in _RELEASES | _MOVES and command.ticket.generation != self._generation:
            return self._stale_message(command)
        rig = self.rig
        if name in _RELEASES | _MOVES and rig is None:
            return "the rig is not connected; press Connect first"
        if name == "record":
            if self.session is None:
                return "open or create a dataset before recording"
            if self.mode == RECORDING:
                return "an episode is being recorded already"
            if self.mode != TELEOP:
                return (f"recording starts from teleoperation; the arm is {self.mode} now "
                        "(take over first)")
        if name in ("autonomy", "resume") and self.policy is None:
            return "load a policy first"
        if name == "take_over_record" and self.session is None:
            return "open the dataset to record the correction into first (the one the policy was trained on)"
        if name in ("autonomy", "replay", "reset_scene") and rig.arm.stopped:
            return {"autonomy": "the arm is halted; press Resume to release it and run the policy",
                    "replay": "the arm is halted; take over or home it before replaying",
                    "reset_scene": "the arm is halted: a scene reset moves it; take over or home first"}[name]
        if name == "replay" and self.dataset is None:
            return "open the dataset that holds the episode first"
        if name == "reset_scene" and rig.scene_control() is None:
            return "only the simulated rig can reset its scene; reset the real one by hand"
        return None

    def _serve(self) -> None:
        """Between two ticks of the running activity: answer what does not end it; end it for the rest."""
        while not self._end_activity.is_set():
            with self._pending_lock:
                if not self._pending:
                    return
                command = self._pending[0]
                refusal = None if command.name in _NEUTRAL or command.name == "quit" else self._precheck(command)
                if command.name not in _NEUTRAL and refusal is None:
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

    # ------------------------------------------------------------------ halts
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

    # ------------------------------------------------------------------ command handlers (control thread)
    def _require_rig(self) -> Rig:
        if self.rig is None:
            raise DeviceError("the rig is not connected; press Connect first")
        return self.rig

    def _do_halt(self, halt: Halt):
        with self._stop_cond:  # the stop line halted the arm already; this ends the activity and tells the window
            self._stop_cond.wait_for(lambda: self._stop_done >= self._stop_requested, 1.0)
        if self.rig is None:
            self.halt = halt  # it holds when the rig is connected again
            return None
        return self._enter_halt(halt, bump=False)

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
        try:
            if device is not None:
                device.connect()
            rig.wait_for_cameras(CAMERA_START_TIMEOUT)
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
            unreleased = self._released_generation != self._generation
            if unreleased:
                rig.arm.latch()  # a halt the operator has not released holds across a reconnect
        control = rig.scene_control()
        if control is not None and not unreleased:
            control.reset(0, "in_distribution")
        self.events.connected(rig)
        self.events.info(f"connected: {rig.name} rig, cameras {', '.join(rig.cameras)}, arm {rig.arm.name}")
        if unreleased:
            before = self.halt.message if self.halt is not None else "a STOP"
            return self._enter_halt(Halt("stop", f"Connected; the arm stays halted as before ({before}) until you "
                                                 "take over or home it."), bump=False)
        return None

    def _do_disconnect(self):
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
        self._set_mode(RECORDING)
        return self._activity_record

    def _do_set_policy(self, policy):
        self.policy = policy
        return None

    def _do_mark_trial(self, outcome: str):
        trial = self.last_trial
        if self.ledger is None:
            raise ValueError("there is no trial ledger to record the mark in")
        if trial is None:
            raise ValueError("no run to mark: marks are for the run that ended last, and none is in the ledger")
        self.ledger.mark(trial, outcome)  # ValueError when it has not ended (it runs)
        self.events.trial_marked(trial)
        return None

    # Handlers that start an activity announce its mode at once: a command queued right behind is checked
    # against the activity it will meet (Enter right after Take over starts a recording).
    def _do_autonomy(self):
        self._require_rig()
        self._set_mode(AUTONOMOUS)
        return self._activity_autonomy

    def _do_resume(self, command: _Command):
        self._release(command)
        self._set_mode(AUTONOMOUS)
        return self._activity_autonomy

    def _do_take_over(self, command: _Command):
        self._release(command)
        self.teleop.reset()
        self._clear_halt()
        self._set_mode(TELEOP)
        return self._activity_teleop

    def _do_take_over_record(self, command: _Command):
        self._release(command)
        halt, trial, policy = self.halt, self.last_trial, self.policy
        self._intervention = {
            "policy": str(policy.info.get("path", "")) if policy is not None else None,
            "version": int(policy.info.get("version", 1)) if policy is not None else None,
            "run": trial.id if trial is not None else None,
            "halt_reason": halt.reason if halt is not None else None}
        self._clear_halt()
        self.session._take_requests()
        self._set_mode(RECORDING)
        return self._activity_record

    def _do_home(self, command: _Command):
        rig = self._require_rig()
        self._release(command)
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
        if episode is not None:
            if self.dataset is None:
                raise DatasetError("open the dataset that holds the episode first")
            info = self.dataset.episode(episode)
            if not restore_scene(rig, info):
                raise DatasetError(f"episode {episode} has no stored scene (recorded on a real rig or an old "
                                   "version); place the object by hand")
            self.events.info(f"scene of episode {episode} restored: {control.describe(info.extra.get('scene'))}")
        else:
            record = control.reset(seed, scenario, training_index)
            self.events.info(f"new scene: {control.describe(record)}")
        self.teleop.reset()
        return None

    def _do_replay(self, index: int):
        self._require_rig()
        self._set_mode(REPLAY)
        return lambda: self._activity_replay(index)

    # ------------------------------------------------------------------ activities (control thread)
    def _loop_ended(self, reason: str, error: Exception | None) -> Callable | None:
        """A loop that ended on its own (not for a command): what follows."""
        if reason in _DEVICE_FAILURES:
            what = _DEVICE_FAILURES[reason]
            self.events.error(f"{what}: {error}")
            # No watch loop: it would fail the same way. Connect again, or take over to retry.
            return self._enter_halt(Halt(reason, f"Halted: {what}. Check the device, then take over or home."),
                                    watch=False)
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
            error = None
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

    def _activity_record(self):
        self._set_mode(RECORDING)
        self.teleop.reset()
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
        if outcome.reason in (*_DEVICE_FAILURES, "arm_stopped", "estop"):
            return self._loop_ended(outcome.reason, outcome.error)
        return self._default()

    def _activity_autonomy(self):
        self._set_mode(AUTONOMOUS)
        self._clear_halt()
        rig = self.rig
        control = rig.scene_control()
        trial = self._start_trial(control)
        result = None
        try:
            result = run_autonomous(rig, self.policy, on_event=self._emit_autonomy, cancel=self._end_activity,
                                    stop_when=control.task_succeeded if control is not None else None)
        finally:
            self._finish_trial(trial, result, task_check=control is not None)
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
            return self._enter_halt(Halt("done", "Task done: the mug is lifted. The arm holds it; take over or "
                                                 "home."))
        if result.reason == "cancelled":
            return self._default()
        return self._loop_ended(result.reason, result.loop.error)

    # -- the trial ledger ------------------------------------------------------------------
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
            elif result.reason in _DEVICE_FAILURES:
                outcome = "device_stop"
        path = [r.embedding for r in result.retrievals if r.embedding is not None] if result is not None else []
        try:
            self.ledger.finish(trial, outcome, reason, evidence=evidence, trajectory=np.stack(path) if path else None,
                               extra={"ticks": result.loop.ticks if result is not None else 0}, task_check=task_check)
        except (OSError, LedgerError) as exc:
            self.events.error(f"the trial ledger could not be written ({exc})")
            return
        self.events.trial_ended(trial)

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
