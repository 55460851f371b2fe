"""The window's handle on the rig: the Qt-free :class:`supervisor.Supervisor`, its events as Qt signals.

The supervisor owns the control thread, the STOP latch and the session's rules
(see ``supervisor/supervisor.py``, and ``supervisor/modes.py`` for which command
each mode accepts); this class only turns its events into signals (delivered to
widgets in the GUI thread) and passes commands through, gamma changes included.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import QMessageBox, QWidget

from .widgets import ask, close_open_questions

from recorder.session import RecorderConfig
from supervisor import (AUTONOMOUS, CONNECTING, DISCONNECTED, HALTED, HOMING, RECORDING, REPLAY, TELEOP, Events,
                        Halt, RigFactory, Supervisor)

__all__ = ["AUTONOMOUS", "CONNECTING", "DISCONNECTED", "HALTED", "HOMING", "RECORDING", "REPLAY", "TELEOP", "Halt",
           "RigController", "RigFactory"]


class _Relay(Events):
    """Supervisor events -> the controller's signals (emitted from the supervisor's threads; Qt queues them)."""

    def __init__(self, controller: "RigController"):
        self.c = controller

    def mode_changed(self, mode):
        self.c.mode_changed.emit(mode)

    def connected(self, rig):
        self.c.connected.emit(rig)

    def disconnected(self):
        self.c.disconnected.emit()

    def tick(self, record):
        self.c.tick.emit(record)

    def record_event(self, event):
        self.c.record_event.emit(event)

    def episode_finished(self, outcome):
        self.c.episode_finished.emit(outcome)

    def dataset_changed(self, root):
        self.c.dataset_changed.emit(root)

    def episodes_changed(self, episodes):
        self.c.episodes_changed.emit(episodes)

    def autonomy_event(self, event):
        self.c.autonomy_event.emit(event)

    def trial_ended(self, trial):
        self.c.trial_ended.emit(trial)

    def trial_marked(self, trial):
        self.c.trial_marked.emit(trial)

    def scene_changed(self, description):
        self.c.scene_changed.emit(description)

    def halted(self, halt):
        self.c.halted.emit(halt)

    def halt_cleared(self):
        self.c.halt_cleared.emit()

    def error(self, text):
        self.c.error.emit(text)

    def info(self, text):
        self.c.info.emit(text)


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
    trial_ended = pyqtSignal(object)  # evaluation.trials.Trial, recorded in the ledger
    trial_marked = pyqtSignal(object)  # evaluation.trials.Trial, with the operator's mark
    scene_changed = pyqtSignal(str)  # a simulated rig placed its scene: how, in words
    halted = pyqtSignal(object)  # Halt
    halt_cleared = pyqtSignal()
    error = pyqtSignal(str)
    info = pyqtSignal(str)

    def __init__(self, rig_factory: RigFactory, recorder_config: RecorderConfig | None = None, ledger=None,
                 parent=None):
        super().__init__(parent)
        self.supervisor = Supervisor(rig_factory, recorder_config, _Relay(self), ledger=ledger)
        s = self.supervisor
        self.keyboard = s.keyboard
        self.recorder_config = s.recorder_config
        # Commands: each returns at once.
        self.last_state = None  # the newest measured arm state, from the tick signal (GUI thread)
        self.home_question: QMessageBox | None = None  # open while the operator is asked before homing
        self.tick.connect(self._remember_state)
        self.halted.connect(lambda _halt: self._close_questions())
        for name in ("connect_rig", "disconnect_rig", "open_dataset", "close_dataset", "start_episode",
                     "stop_episode", "discard_episode", "rerecord_episode", "delete_episode", "trim_episode", "replay",
                     "set_policy", "set_gamma",
                     "start_autonomy", "resume", "pause", "take_over", "take_over_and_record", "home", "reset_scene",
                     "restore_episode_scene", "mark_last_trial", "wait_stopped", "holding_object",
                     "set_rig_factory", "shutdown"):
            setattr(self, name, getattr(s, name))

    def _remember_state(self, record) -> None:
        self.last_state = record.observation.state

    def emergency_stop(self):
        """STOP: the supervisor latches the arm first, then every open question closes unanswered (a Home asked
        before the STOP must not home after it)."""
        ticket = self.supervisor.emergency_stop()
        self._close_questions()
        return ticket

    def _close_questions(self) -> None:
        closed = close_open_questions()
        if closed:
            self.info.emit("the arm halted: closed unanswered: " + "; ".join(f"'{t}'" for t in closed))

    def request_home(self, parent: QWidget | None = None) -> None:
        """Home, but ask first when the gripper holds something (homing opens the gripper: the object would drop).

        The question is a window-modal box opened without a nested event loop; STOP keys still work. A STOP or any
        halt closes it unanswered, and a Yes counts only if no halt came since it was asked."""
        if not self.supervisor.holding_object(self.last_state):
            self.home()
            return
        if self.home_question is not None:
            return
        generation = self.supervisor.stop_generation

        def answered(yes: bool) -> None:
            self.home_question = None
            if yes and self.supervisor.stop_generation == generation:
                self.home()
            elif yes:
                self.info.emit("home not done: the arm halted after the question was asked; ask again")
            else:
                self.info.emit("home cancelled: the gripper keeps holding")

        self.home_question = ask(parent, "Home with an object held?",
                                 "The gripper is holding something. Homing opens the gripper and the object will "
                                 "drop.\nHome anyway?", "Home", answered, icon=QMessageBox.Icon.Warning)

    @property
    def mode(self) -> str:
        return self.supervisor.mode

    @property
    def rig(self):
        return self.supervisor.rig

    @property
    def rig_factory_name(self) -> str | None:
        """The operator's name for the rig the next connect builds (None: the one the window was opened on)."""
        return self.supervisor.rig_factory_name

    @property
    def dataset(self):
        return self.supervisor.dataset

    @property
    def session(self):
        return self.supervisor.session

    @property
    def teleop(self):
        return self.supervisor.teleop

    @property
    def policy(self):
        return self.supervisor.policy

    @property
    def halt(self) -> Halt | None:
        return self.supervisor.halt
