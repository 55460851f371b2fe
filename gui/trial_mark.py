"""The operator's verdict on the attempt that ended last: a real rig has no task check, only the operator can tell.

An attempt (a trial) runs from Start until the task is done or the operator does something other than Resume after a
halt; a pause, a STOP or an OOD stop inside it is not its end, so the box asks nothing then (supervisor/trial_log.py).
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .controller import AUTONOMOUS, HALTED


class MarkBox(QWidget):
    """The question about the last attempt (hidden until one ended), its Success / Failure buttons and S / F keys."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self._controller = controller
        self.prompt = QLabel("")
        self.prompt.setWordWrap(True)
        self.prompt.setStyleSheet("font-weight: bold;")
        self.success = QPushButton("Success (S)")
        self.failure = QPushButton("Failure (F)")
        marks = QHBoxLayout(self)
        marks.setContentsMargins(0, 0, 0, 0)
        marks.addWidget(self.prompt, 1)
        self.keys: list[QShortcut] = []
        for button, outcome, key in ((self.success, "success", Qt.Key.Key_S),
                                     (self.failure, "failure", Qt.Key.Key_F)):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _checked=False, o=outcome: self._mark(o))
            marks.addWidget(button)
            # A window shortcut owned by the box: live only while the box (so this tab) is shown; a text field
            # that has focus takes the letter first.
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.activated.connect(lambda o=outcome: self._mark(o))
            self.keys.append(shortcut)
        self.hide()
        self.trial = None  # the ended trial (evaluation.trials.Trial) the prompt asks about

    def _mark(self, outcome: str) -> None:
        """The verdict on the attempt the prompt asks about (refused if another one has ended since)."""
        if self.trial is not None:
            self._controller.mark_last_trial(outcome, self.trial.id)

    def ended(self, trial, mode: str) -> None:
        """An attempt ended (never a halt inside one): ask about it (not while another one runs: the question then
        waits for that run's end)."""
        self.trial = trial
        self.show_prompt(mode)
        self.setVisible(mode != AUTONOMOUS)

    def marked(self, trial, mode: str) -> None:
        if self.trial is not None and trial.id == self.trial.id:
            self.show_prompt(mode)

    def on_mode(self, mode: str) -> None:
        if self.trial is not None:
            self.show_prompt(mode)

    def show_prompt(self, mode: str) -> None:
        """The question about the last run, or the mark recorded. S and F are teleop motion keys too: they mark only
        while the arm is halted (the keyboard cannot move it then); the buttons work in every mode."""
        trial = self.trial
        keys = mode == HALTED
        for shortcut in self.keys:
            shortcut.setEnabled(keys)
        how = "Press S for success, F for failure." if keys else "Mark it with the buttons."
        stops = getattr(trial, "stops", 0)
        inside = "" if not stops else \
            (f"The attempt ended ({trial.outcome}) after {stops} stop{'s' * (stops != 1)} and "
             f"{trial.resumes} resume{'s' * (trial.resumes != 1)}. ")
        if trial.marked is not None:
            text = f"Marked: {trial.marked}." + (" S or F changes it." if keys else "")
        elif trial.task_check:
            said = (trial.end_extra or {}).get("task_check_says") or \
                ("success" if trial.outcome == "success" else "failure")
            recorded = "success" if trial.outcome == "success" else "not a success"
            if (said == "success") == (trial.outcome == "success"):
                text = f"{inside}The simulator's check said {said}. Overrule it? {how}"
            else:  # e.g. taken over after a stop, and the operator then did the task by hand
                text = (f"{inside}Recorded as {recorded} ({trial.outcome}); the simulator's check says {said} now. "
                        f"Mark it? {how}")
        else:
            text = f"{inside}Did the arm do the task? {how}"
        self.prompt.setText(text)
