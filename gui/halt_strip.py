"""Why the arm stands still, and the way out of it, in one fixed place above every tab."""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from .controller import Halt


class HaltStrip(QWidget):
    """The halt's causes (the first one first; later halts added after it, never replacing it) with Take over
    and Home beside them, on every tab. Always the same size, empty while the arm moves: nothing in the window
    shifts when the arm halts or moves again."""

    LINES = 2

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.causes: list[Halt] = []
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.take_over = QPushButton("Take over (teleop)")
        self.home = QPushButton("Home")
        self.take_over.clicked.connect(controller.take_over)
        self.home.clicked.connect(lambda: controller.request_home(self.window()))
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 2, 8, 2)
        row.addWidget(self.label, 1)
        for button in (self.take_over, self.home):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Space is STOP, never a click on these
            row.addWidget(button)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setFixedHeight(max(self.home.sizeHint().height(), self.LINES * self.fontMetrics().lineSpacing()) + 8)
        controller.halted.connect(self.add)
        controller.halt_cleared.connect(self.clear)
        controller.disconnected.connect(self.clear)
        self.clear()

    @property
    def text(self) -> str:
        return self.label.text()

    def add(self, halt: Halt) -> None:
        """A halt: the first since the arm last moved is shown first; later ones follow it."""
        self.causes.append(halt)
        first = self.causes[0]
        text = f"Arm halted: {first.message}"
        for later in self.causes[1:]:
            text += f"  Then: {later.message}"
        self.label.setText(text)
        self.label.setToolTip(text)
        fault = any(h.is_fault for h in self.causes)
        done = all(h.reason == "done" for h in self.causes)
        colour = "#e3f4e6" if done else "#fbe3e2" if fault or first.reason in ("stop", "ood", "stall") else "#fff4d6"
        self.setStyleSheet(f"HaltStrip {{ background: {colour}; font-weight: bold; }}")
        for button in (self.take_over, self.home):
            button.setEnabled(True)

    def clear(self) -> None:
        """The arm moves again (or the rig is gone): nothing to show, nothing to choose."""
        self.causes = []
        self.label.setText("")
        self.label.setToolTip("")
        self.setStyleSheet("HaltStrip { background: transparent; }")
        for button in (self.take_over, self.home):
            button.setEnabled(False)
