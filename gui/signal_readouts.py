"""Every gate signal's live value beside its own threshold, green or red against that threshold."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFont, QFontMetrics
from PyQt6.QtWidgets import QGridLayout, QLabel, QWidget

from policy.gate import UPPER_BOUND_SIGNALS, fails

#: Every signal the gate may judge a lookup by, in the order shown: (label, when it applies).
#: Said of the three view signals and the grasp check: once the arm moves, unless the gripper holds what it grasped
#: or is about to close, they stop a run only after lookups in a row on which one of them failed.
PERSISTS = ("; once the arm moves, unless the gripper holds what it grasped or is about to close, it stops the "
            "run after gate_persistence lookups in a row (default 3) on which it or another view or grasp check "
            "failed")
SIGNALS = {
    "similarity": ("similarity", "the best match's similarity, against gamma (the aligned method's replay gamma "
                                 "while it replays a shifted demonstration)" + PERSISTS),
    "hand_view": ("hand view", "the live hand view's agreement with the retrieved frame's" + PERSISTS),
    "third_view": ("third view", "the live third-person view's agreement with the retrieved frame's" + PERSISTS),
    "grasp_alignment": ("grasp check", "before a demonstration's grasp: the live hand view's edges against the "
                                       "retrieved frame's (- when it does not apply)" + PERSISTS +
                                       "; within a chunk of the demonstration's close it stops at once"),
    "grip": ("grip", "after a close: how far the fingers' measured opening lies below what every demonstration's "
                     "read that many ticks after closing (a slip, or a grasp on air); stops when larger"),
    "hand_camera": ("hand camera", "a run's first lookup only: the gripper where every demonstration's hand view "
                                   "has it"),
    "third_camera": ("third camera", "a run's first lookup only: the table and the arm where every demonstration "
                                     "started"),
    "correction": ("correction", "the shift onto the object found (the landmark method: the most the replayed "
                                 "demonstration is moved); stops when larger than the demonstrations cover"),
    "coverage": ("coverage", "the landmark method: how far the landmarks stand beyond where the demonstrations "
                             "had them, as a share of their range; stops when larger"),
}
GREEN, RED, GREY = "#2e9d49", "#d0312d", "#777777"


class SignalReadouts(QWidget):
    """Every gate signal's live value beside its own threshold, green when it passes that threshold and red when
    it does not (``policy.gate.fails``); ``-`` where the signal did not apply to the lookup. A grid of fixed-width
    cells: the layout does not move when the numbers change."""

    def __init__(self, parent=None):
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(0)
        self.names: dict[str, QLabel] = {}
        self.values: dict[str, QLabel] = {}
        self.limits: dict[str, QLabel] = {}
        self.thresholds: dict[str, float | None] = {}
        bold = "font-size: 15px; font-weight: bold;"
        for col, (name, (label, tip)) in enumerate(SIGNALS.items()):
            title, value, limit = QLabel(label), QLabel("-"), QLabel("")
            value.setStyleSheet(bold + f" color: {GREY};")
            width = max(title.fontMetrics().horizontalAdvance(w) for w in (label, "≤ 10.0 cm", "≥ 0.000"))
            big = QFont(value.font())
            big.setPixelSize(15)
            big.setBold(True)
            width = max(width, QFontMetrics(big).horizontalAdvance("00.0 cm")) + 6
            for w in (title, value, limit):
                w.setFixedWidth(width)
                w.setToolTip(tip)
                w.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            grid.addWidget(title, 0, col)
            grid.addWidget(value, 1, col)
            grid.addWidget(limit, 2, col)
            self.names[name], self.values[name], self.limits[name] = title, value, limit
        grid.setColumnStretch(len(SIGNALS), 1)
        self.setSizePolicy(self.sizePolicy().horizontalPolicy(), self.sizePolicy().Policy.Fixed)
        self.set_signals(["similarity"])

    def set_signals(self, names) -> None:
        """Which signals this policy has (the others' cells are hidden); values cleared."""
        names = set(names)
        for name in SIGNALS:
            for w in (self.names[name], self.values[name], self.limits[name]):
                w.setVisible(name in names)
            self.values[name].setText("-")
            self.values[name].setStyleSheet(self._style(GREY))
        self.thresholds = {k: v for k, v in self.thresholds.items() if k in names}

    def shown(self) -> list[str]:
        return [name for name in SIGNALS if not self.names[name].isHidden()]

    @staticmethod
    def _style(colour: str) -> str:
        return f"font-size: 15px; font-weight: bold; color: {colour};"

    @staticmethod
    def _format(name: str, value: float | None) -> str:
        if value is None or not np.isfinite(value):
            return "-"
        return f"{100 * value:.1f} cm" if name == "correction" else f"{value:.3f}"

    def set_thresholds(self, thresholds: dict) -> None:
        """The thresholds in force (shown until the next lookup brings its own)."""
        for name, limit in thresholds.items():
            if name in SIGNALS:
                self.thresholds[name] = limit
                self._show_limit(name, limit)

    def _show_limit(self, name: str, limit: float | None) -> None:
        side = "≤" if name in UPPER_BOUND_SIGNALS else "≥"
        self.limits[name].setText("" if limit is None else f"{side} {self._format(name, limit)}")

    def show_readings(self, readings: dict) -> None:
        """One lookup's signals: name -> (value, threshold)."""
        for name, (value, limit) in readings.items():
            if name not in SIGNALS:
                continue
            self.thresholds[name] = limit
            self._show_limit(name, limit)
            label = self.values[name]
            label.setText(self._format(name, value))
            if value is None or not np.isfinite(value) or limit is None:
                colour = GREY
            else:
                colour = RED if fails(name, value, limit) else GREEN
            label.setStyleSheet(self._style(colour))

    def colour(self, name: str) -> str:
        """The colour a value is shown in ("green", "red" or "grey"), for tests and screenshots."""
        style = self.values[name].styleSheet()
        return "red" if RED in style else "green" if GREEN in style else "grey"
