"""Why the arm halted, the frames at an OOD stop next to their best match, and the operator's choices."""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .controller import Halt
from .widgets import ImageView

_TITLES = {"ood": "Out of distribution: the arm stopped", "stop": "STOP: the arm is halted", "paused": "Paused",
           "done": "Task done"}


class HaltBox(QGroupBox):
    """Resume, take over, take over & record (a correction of this stop), or home; hidden while nothing is halted."""

    def __init__(self, controller, parent=None):
        super().__init__("Arm halted", parent)
        self.setStyleSheet("QGroupBox { background: #fbe3e2; font-weight: bold; }")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.live = {"hand": ImageView("hand at the stop", min_side=120),
                     "third": ImageView("third at the stop", min_side=120)}
        self.match = {"hand": ImageView("match (hand)", min_side=120),
                      "third": ImageView("match (third)", min_side=120)}
        self.resume = QPushButton("Resume policy")
        self.teleop = QPushButton("Take over (teleop)")
        self.record = QPushButton("Take over && record")
        self.record.setToolTip("Teleoperate from where the arm stands and record it as a correction of this "
                               "stop; Stop & keep (Enter) keeps it, then Add corrections")
        self.record.clicked.connect(controller.take_over_and_record)
        self.home = QPushButton("Home")
        self.resume.clicked.connect(controller.resume)
        self.teleop.clicked.connect(controller.take_over)
        self.home.clicked.connect(lambda: controller.request_home(self.window()))
        hl = QVBoxLayout(self)
        hl.addWidget(self.message)
        frames = QHBoxLayout()
        for view in (*self.live.values(), *self.match.values()):
            frames.addWidget(view)
        self.frames = QWidget()
        self.frames.setLayout(frames)
        hl.addWidget(self.frames)
        choices = QHBoxLayout()
        for b in (self.resume, self.teleop, self.record, self.home):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setMinimumHeight(36)
            choices.addWidget(b)
        hl.addLayout(choices)
        self.causes: list[Halt] = []  # the halts since the arm last moved, first first
        self._best = None
        controller.halt_cleared.connect(self._cleared)
        self.hide()

    def _cleared(self) -> None:
        self.causes = []
        self._best = None

    def show_halt(self, halt: Halt, policy_loaded: bool, can_record: bool):
        """Fill the box for ``halt`` (not shown yet); returns the best match at an OOD stop whose frames it shows
        (the caller fetches the match's frames into :attr:`match`), else None.

        The first cause stays: a halt that comes while the arm is still halted (a camera stall after the
        operator's STOP, a STOP after an OOD stop) is added under it, and the box keeps the first one's title and
        frames. The choices follow the newest halt."""
        self.causes.append(halt)
        first = self.causes[0]
        self.record.setVisible(halt.reason in ("ood", "stall", "stop", "paused") and can_record)
        done = halt.reason == "done"
        self.setTitle(_TITLES.get(first.reason, "Arm halted"))
        colour = "#e3f4e6" if first.reason == "done" and len(self.causes) == 1 else "#fbe3e2"
        self.setStyleSheet(f"QGroupBox {{ background: {colour}; font-weight: bold; }}")
        self.resume.setVisible(not done)  # a finished task is not resumed: take over or home
        self.resume.setEnabled(policy_loaded)
        if len(self.causes) == 1:
            self._best = self._show_evidence(first)
        text = self._evidence_text(first)
        for later in self.causes[1:]:
            text += f"\nThen: {later.message}"
        self.message.setText(text)
        return self._best

    def _show_evidence(self, halt: Halt):
        result = halt.evidence
        show_frames = result is not None and getattr(result, "ood_observation", None) is not None
        self.frames.setVisible(show_frames)
        if not show_frames:
            return None
        frames = result.ood_observation.frames
        for name, view in self.live.items():
            view.set_image(frames[name].image if name in frames else None)
        best = result.ood_evidence.matches[0]
        for name, view in self.match.items():  # short captions: a 120-px view cuts long ones off
            view.set_caption(f"match {name}: demo {best.episode}")
        return best

    @staticmethod
    def _evidence_text(halt: Halt) -> str:
        text = halt.message
        result = halt.evidence
        if result is not None and getattr(result, "ood_observation", None) is not None:
            best = result.ood_evidence.matches[0]
            text += (f"\nBest match: demo {best.episode}, frame {best.frame}, similarity "
                     f"{result.ood_evidence.similarity:.3f} (left: the views at the stop; right: that match).")
        return text
