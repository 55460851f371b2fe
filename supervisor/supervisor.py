"""The operator-session state machine: one control thread, one activity at a time, a STOP that holds.

Its modes and the commands each accepts are one table (``modes.py``); the work is split by job:
``control.py`` (the command queue and the control thread), ``handlers.py`` (what each command does),
``activities.py`` (what runs between commands), ``stopping.py`` (the STOP latch and halts),
``trial_log.py`` (each attempt at the task as a trial), ``events.py`` and ``tickets.py`` (what goes in and out).

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
  unreleased starts latched, whichever rig it is (``set_rig_factory`` may
  choose another while disconnected: a rig that cannot connect any more must
  not keep the operator from the others, and the halt holds on the next one).
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
from collections import deque
from typing import Callable

from core.errors import DeviceError
from recorder.dataset import Dataset
from recorder.session import RecorderConfig, RecordingSession
from robot_drivers.keyboard import KeyboardTeleop
from robot_drivers.rig import Rig
from robot_drivers.teleop import Button, Teleop

from .activities import Activities
from .control import ControlThread
from .events import Events, Halt
from .handlers import CAMERA_START_TIMEOUT, Handlers
from .modes import AUTONOMOUS, COMMANDS, CONNECTING, DISCONNECTED, HALTED, HOMING, RECORDING, REPLAY, TELEOP, Mode
from .stopping import StopHandling
from .trial_log import TrialRecording
from .tickets import CommandRefused, QueuedCommand, Ticket

# What this module held before it was split by job stays importable from here.
__all__ = ["AUTONOMOUS", "CAMERA_START_TIMEOUT", "CONNECTING", "DISCONNECTED", "HALTED", "HOMING", "RECORDING",
           "REPLAY", "TELEOP", "CommandRefused", "Events", "Halt", "Mode", "RigFactory", "Supervisor", "Ticket"]

log = logging.getLogger(__name__)

#: Builds the rig and the configured teleop device (None: keyboard only). Called on the control thread.
RigFactory = Callable[[], tuple[Rig, Teleop | None]]

#: The session's buttons (``stop_episode`` and the others): their rows in the table, and what each presses.
_BUTTONS = {"keep_episode": Button.STOP, "discard_episode": Button.DISCARD, "rerecord_episode": Button.RERECORD}


class Supervisor(ControlThread, StopHandling, Handlers, Activities, TrialRecording):
    def __init__(self, rig_factory: RigFactory, recorder_config: RecorderConfig | None = None,
                 events: Events | None = None, ledger=None):
        """``ledger``: a :class:`evaluation.trials.TrialLedger` in which every attempt (from Start to success, failure or
        the operator's verdict; halts and resumes inside it are its events) is recorded as a trial."""
        self._rig_factory = rig_factory
        self._first_rig_factory = rig_factory
        self.rig_factory_name: str | None = None  # the operator's name for the factory chosen last (None: the first)
        self.ledger = ledger
        self.last_trial = None  # the newest trial (evaluation.trials.Trial) the ledger recorded
        self._attempt = None  # the attempt under way, running or halted (trial_log.Attempt)
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
        self._pending: deque[QueuedCommand] = deque()
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

    def set_rig_factory(self, factory: RigFactory | None = None, name: str | None = None) -> Ticket:
        """Build the rig of the next connect with ``factory`` (None: the one this supervisor was made with);
        ``name``: what the operator calls that rig (messages, ``rig_factory_name``). Refused unless disconnected. A
        halt not yet released holds on the rig chosen: it connects latched."""
        return self._submit("set_rig", factory, name)

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
        return self._press("keep_episode")

    def discard_episode(self) -> bool:
        """End the episode being recorded and throw it away."""
        return self._press("discard_episode")

    def rerecord_episode(self) -> bool:
        """Throw the episode being recorded away and start it again."""
        return self._press("rerecord_episode")

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

    def set_gamma(self, value: "float | dict", by: str = "operator", rate: float | None = None) -> Ticket:
        """Change the loaded policy's gate on the control thread, between two lookups of a run (which goes on).
        ``value``: gamma (the similarity threshold), or a dict of signal -> threshold (``"similarity"``,
        ``"hand_view"``, ``"third_view"``) that moves the gate as a whole; ``rate``: the false-stop rate such a
        dict was read at (``policy.thresholds_at_rate``). ``policy.set_gamma`` / ``policy.set_thresholds`` log the
        change (``gamma_changes``; a run's AutonomyResult lists those made while it ran); a value that is not a
        similarity, or a signal the policy has no threshold for, is refused."""
        if isinstance(value, dict):
            return self._submit("set_gamma", {str(k): float(v) for k, v in value.items()}, by, rate)
        return self._submit("set_gamma", float(value), by)

    def start_autonomy(self) -> Ticket:
        return self._submit("autonomy")

    def mark_last_trial(self, outcome: str, trial_id: str | None = None) -> Ticket:
        """The operator's verdict ("success" or "failure") on the attempt that ended last, or on the halted one (the
        verdict ends it): on a real rig nothing else tells whether the arm did the task; in the simulator it
        overrules the task check. A later mark replaces it. Refused while the policy runs. Written to the ledger on
        the control thread, between two ticks (nothing that runs is ended). ``trial_id``: the trial the operator
        was asked about; the mark is refused if another one has become the last meanwhile."""
        return self._submit("mark_trial", outcome, trial_id)

    def resume(self) -> Ticket:
        """After a pause, a STOP or an OOD halt: release the arm and run the policy again, in the same attempt (the
        same trial) when the halt was inside one."""
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

    def _press(self, name: str) -> bool:
        """A button of the recording session (its row in the table says when it is accepted); any thread."""
        session = self.session
        if session is not None and self.mode in COMMANDS[name].modes:
            session.request(_BUTTONS[name])
            return True
        return False
