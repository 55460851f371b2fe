"""Small widgets, each showing one thing."""

from __future__ import annotations

from collections import deque

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PyQt6.QtWidgets import (QHBoxLayout, QLabel, QMessageBox, QPushButton, QSizePolicy, QTableWidget,
                             QTableWidgetItem, QVBoxLayout, QWidget, QAbstractItemView, QHeaderView)

from core.transforms import quat_to_matrix

pg.setConfigOptions(antialias=True, background="w", foreground="k")

OK, WARN, ERROR, OFF = "ok", "warn", "error", "off"
_LIGHT_COLOURS = {OK: "#2e9d49", WARN: "#e0a100", ERROR: "#d0312d", OFF: "#9a9a9a"}


def to_qimage(image: np.ndarray) -> QImage:
    """An RGB uint8 array as a QImage that owns a copy of the pixels."""
    image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    h, w, _ = image.shape
    return QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class ImageView(QWidget):
    """One image, scaled to fit with its aspect ratio, a caption above it and an optional overlay text."""

    def __init__(self, caption: str = "", parent=None, min_side: int = 160):
        super().__init__(parent)
        self._caption = caption
        self._image: QImage | None = None
        self._placeholder = "no image"
        self._border: QColor | None = None
        self._overlay = None  # GraspOverlay: drawn over the image
        self._badge: tuple[str, QColor] | None = None
        self.frames_shown = 0
        self.setMinimumSize(min_side, min_side)
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)

    def set_caption(self, caption: str) -> None:
        self._caption = caption
        self.update()

    @property
    def caption(self) -> str:
        return self._caption

    def set_image(self, image: np.ndarray | None, placeholder: str = "no image") -> None:
        self._image = None if image is None else to_qimage(image)
        self._placeholder = placeholder
        if image is not None:
            self.frames_shown += 1
        self.update()

    def set_border(self, colour: str | None) -> None:
        self._border = None if colour is None else QColor(colour)
        self.update()

    def set_overlay(self, overlay) -> None:
        """Draw a camera's grasp overlay (robot_drivers.camera.GraspOverlay) over its images; None: none."""
        self._overlay = overlay
        self.update()

    @property
    def overlay(self):
        return self._overlay

    def set_badge(self, text: str | None, colour: str = "#2e9d49") -> None:
        """A label in the image's corner (e.g. "holding"); None removes it."""
        self._badge = None if text is None else (text, QColor(colour))
        self.update()

    @property
    def badge(self) -> str | None:
        return None if self._badge is None else self._badge[0]

    def has_image(self) -> bool:
        return self._image is not None

    def sizeHint(self) -> QSize:
        return QSize(260, self.heightForWidth(260))

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        """Tall enough for the image at this width, no black bands."""
        aspect = self._image.height() / self._image.width() if self._image is not None else 1.0
        return int(width * aspect) + 20

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#1e1e1e"))
        caption_h = 20
        p.setPen(QColor("#e8e8e8"))
        p.drawText(QRectF(6, 0, self.width() - 12, caption_h), Qt.AlignmentFlag.AlignVCenter, self._caption)
        area = QRectF(0, caption_h, self.width(), self.height() - caption_h)
        if self._image is None:
            p.setPen(QColor("#9a9a9a"))
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, self._placeholder)
        else:
            iw, ih = self._image.width(), self._image.height()
            scale = min(area.width() / iw, area.height() / ih)
            w, h = iw * scale, ih * scale
            target = QRectF(area.x() + (area.width() - w) / 2, area.y() + (area.height() - h) / 2, w, h)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(target, self._image)
            if self._overlay is not None:
                self._paint_overlay(p, target)
            if self._badge is not None:
                text, colour = self._badge
                box = QRectF(target.x() + 6, target.y() + 6, 12 + 8 * len(text), 22)
                p.fillRect(box, colour)
                p.setPen(QColor("white"))
                p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        if self._border is not None:
            pen = p.pen()
            pen.setColor(self._border)
            pen.setWidth(4)
            p.setPen(pen)
            p.drawRect(self.rect().adjusted(2, 2, -2, -2))
        p.end()


    def _paint_overlay(self, p: QPainter, target: QRectF) -> None:
        """The grasp point, the fingers' closing line and the gripper axis with its depth marks."""
        o = self._overlay

        def at(uv) -> QPointF:
            return QPointF(target.x() + uv[0] * target.width(), target.y() + uv[1] * target.height())

        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pen = QPen(QColor(0, 230, 255, 200), 1.5, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawLine(at(o.finger_span[0]), at(o.finger_span[1]))
        p.setPen(QPen(QColor(0, 230, 255, 200), 1.5))
        for a, b in zip(o.axis, o.axis[1:]):
            p.drawLine(at(a), at(b))
        font = p.font()
        font.setPointSize(7)
        p.setFont(font)
        for i, (uv, depth) in enumerate(zip(o.axis[1:], o.depths_m[1:])):
            c = at(uv)
            p.drawLine(QPointF(c.x() - 5, c.y()), QPointF(c.x() + 5, c.y()))
            label = f"{100 * depth:.0f} cm"
            width = p.fontMetrics().horizontalAdvance(label)
            # Perspective packs the far marks close together: labels alternate sides so they never overlap.
            x = c.x() + 7 if i % 2 == 0 else c.x() - 7 - width
            p.drawText(QPointF(x, c.y() + 4), label)
        c = at(o.grasp_point)
        p.setPen(QPen(QColor(255, 80, 40, 230), 2))
        p.drawEllipse(c, 6, 6)
        p.drawLine(QPointF(c.x() - 10, c.y()), QPointF(c.x() + 10, c.y()))


class StatusLight(QWidget):
    """A coloured dot and a label: one device's health."""

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.state = OFF
        self._dot = QLabel()
        self._dot.setFixedSize(14, 14)
        self._text = QLabel(name)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._dot)
        layout.addWidget(self._text, 1)
        self.set_state(OFF)

    MAX_CHARS = 48

    def set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self._dot.setStyleSheet(f"background:{_LIGHT_COLOURS[state]}; border-radius:7px;")
        text = f"{self.name}: {detail}" if detail else self.name
        if len(text) > self.MAX_CHARS:
            text = text[:self.MAX_CHARS - 1] + "…"  # the whole message is in the tooltip and the message bar
        self._text.setText(text)
        self.setToolTip(detail)


def quat_to_rpy_deg(q: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (fixed axes x, y, z) in degrees, for display."""
    r = quat_to_matrix(np.asarray(q, dtype=np.float64))
    pitch = np.arcsin(-np.clip(r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arctan2(r[1, 0], r[0, 0])
    return np.degrees([roll, pitch, yaw])


class ArmStateView(QLabel):
    """The measured end-effector pose, gripper opening and safety layer counters."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFont(QFont("monospace", 9))
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_state(None)

    def show_state(self, state, stopped: bool = False, counters=None, holding: bool = False) -> None:
        self.last = (state, stopped, counters, holding)
        if state is None:
            self.setText("arm: not connected")
            return
        p = state.ee_pose.position * 1000
        rpy = quat_to_rpy_deg(state.ee_pose.orientation)
        lines = [f"x {p[0]:7.1f}  y {p[1]:7.1f}  z {p[2]:7.1f} mm",
                 f"roll {rpy[0]:6.1f}  pitch {rpy[1]:6.1f}  yaw {rpy[2]:6.1f} deg",
                 f"gripper {100 * state.gripper:5.1f} % open" + ("  HOLDING an object" if holding else "")]
        if counters is not None:
            lines.append(f"safety: {counters.workspace_clips} workspace / "
                         f"{counters.translation_clips + counters.rotation_clips} step clips, "
                         f"{counters.watchdog_stops} watchdog stops")
        lines.append("HALTED (motion refused until released)" if stopped else "motion allowed")
        self.setText("\n".join(lines))


def keep_place(*widgets: QWidget) -> None:
    """Hidden or shown, each widget keeps its place: showing it never moves its neighbours."""
    for widget in widgets:
        policy = widget.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        widget.setSizePolicy(policy)


def fixed_split(split, minimum_widths: list[int], sizes: list[int]) -> None:
    """A splitter that moves only when the operator drags it: each pane's minimum width is set here, not taken
    from its contents (a long label or a new view would otherwise push the handle when it appears)."""
    for i, width in enumerate(minimum_widths):
        split.widget(i).setMinimumWidth(width)
    split.setChildrenCollapsible(False)
    split.setSizes(sizes)


class StopButton(QPushButton):
    """The big red STOP. Focus-less, so Space never 'clicks' some other focused button instead."""

    def __init__(self, text: str = "STOP  (Space / Esc)", parent=None):
        super().__init__(text, parent)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setMinimumHeight(64)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setStyleSheet("QPushButton { background:#d0312d; color:white; font-size:22px; font-weight:bold;"
                           " border-radius:8px; } QPushButton:pressed { background:#8f1f1c; }")


class MessageBar(QWidget):
    """The newest message, in a place of its own that never changes size: errors stay until dismissed (or
    resolved); warnings and infos go after a while. Nothing else in the window moves when a message comes or
    goes (the bar keeps its height, empty or not; a long message is cut to two lines, whole in its tooltip and
    in :attr:`history`)."""

    FADE_S = {"info": 8.0, "warn": 30.0}
    LINES = 2

    def __init__(self, parent=None):
        super().__init__(parent)
        self._label = QLabel()
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.dismiss = QPushButton("Dismiss")
        self.dismiss.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.dismiss.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 2, 8, 2)
        layout.addWidget(self._label, 1)
        layout.addWidget(self.dismiss)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setFixedHeight(max(self.dismiss.sizeHint().height(), self.LINES * self.fontMetrics().lineSpacing()) + 8)
        self.history: deque[tuple[str, str]] = deque(maxlen=200)
        self.level = ""
        self._fade = QTimer(self)
        self._fade.setSingleShot(True)
        self._fade.timeout.connect(self.clear)
        self.clear()

    @property
    def text(self) -> str:
        """The message shown now ("" when none)."""
        return self._label.text() if self.level else ""

    def show_message(self, level: str, text: str) -> None:
        self.history.append((level, text))
        if level == "info" and self.level == "error":
            return  # an unread error is not pushed away by chatter
        self.level = level
        colour = {"error": "#fbe3e2", "warn": "#fff4d6", "info": "#e6f1fb"}[level]
        self.setStyleSheet(f"MessageBar {{ background:{colour}; }}")
        shown = ("Error: " if level == "error" else "") + text
        self._label.setText(shown)
        self._label.setToolTip(shown)
        self.dismiss.setEnabled(True)
        if level in self.FADE_S:
            self._fade.start(int(1000 * self.FADE_S[level]))
        else:
            self._fade.stop()

    def keep(self) -> None:
        """The shown message stays until dismissed (a halt that waits for the operator)."""
        self._fade.stop()

    def resolve(self, *words: str) -> None:
        """An error about something that has since worked (e.g. opening a dataset) goes."""
        if self.level == "error" and any(w and w in self._label.text() for w in words):
            self.clear()

    def clear(self) -> None:
        self.level = ""
        self._fade.stop()
        self._label.setText("")
        self._label.setToolTip("")
        self.dismiss.setEnabled(False)
        self.setStyleSheet("MessageBar { background: transparent; }")


class RollingPlot(pg.PlotWidget):
    """A line over the last ``window`` samples, optionally with a horizontal threshold line."""

    def __init__(self, title: str, y_label: str, window: int = 300, y_range: tuple[float, float] | None = None,
                 threshold: float | None = None, parent=None):
        super().__init__(parent=parent, title=title)
        self.setLabel("left", y_label)
        self.setLabel("bottom", "tick")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        if y_range is not None:
            self.setYRange(*y_range, padding=0.02)
        self._x: deque[float] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window)
        self._curve = self.plot(pen=pg.mkPen("#1f5fbf", width=2))
        self._marks = self.plot(pen=None, symbol="x", symbolBrush="#d0312d", symbolPen="#d0312d", symbolSize=10)
        self._mark_x: deque[float] = deque(maxlen=window)
        self._mark_y: deque[float] = deque(maxlen=window)
        self.threshold_line = None
        if threshold is not None:
            self.threshold_line = pg.InfiniteLine(pos=threshold, angle=0, pen=pg.mkPen("#d0312d", width=2,
                                                                                         style=Qt.PenStyle.DashLine))
            self.addItem(self.threshold_line)

    def set_threshold(self, value: float) -> None:
        if self.threshold_line is not None:
            self.threshold_line.setValue(value)

    def add(self, x: float, y: float, mark: bool = False) -> None:
        self._x.append(x)
        self._y.append(y)
        if mark:
            self._mark_x.append(x)
            self._mark_y.append(y)
            self._marks.setData(list(self._mark_x), list(self._mark_y))
        self._curve.setData(list(self._x), list(self._y))

    def clear_data(self) -> None:
        for d in (self._x, self._y, self._mark_x, self._mark_y):
            d.clear()
        self._curve.setData([], [])
        self._marks.setData([], [])

    @property
    def count(self) -> int:
        return len(self._y)

    def values(self) -> list[float]:
        return list(self._y)


class EpisodeTable(QTableWidget):
    """Kept episodes: index, steps, duration, how it ended, timing health."""

    episode_selected = pyqtSignal(int)
    COLUMNS = ("episode", "steps", "duration s", "ended by", "late ticks")

    def __init__(self, parent=None):
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # "ended by" is never cut off
        header.setStretchLastSection(True)
        self.itemSelectionChanged.connect(self._selected)
        self._indices: list[int] = []
        self._fit_columns()

    def show_episodes(self, episodes) -> None:
        keep = self.selected_index()
        self.blockSignals(True)
        self.setRowCount(len(episodes))
        self._indices = [e.index for e in episodes]
        for row, e in enumerate(episodes):
            late = e.stats.get("late_ticks", 0) if isinstance(e.stats, dict) else 0
            for col, value in enumerate((e.index, e.length, f"{e.duration_s:.1f}", e.end_reason, late)):
                item = QTableWidgetItem(str(value))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.setItem(row, col, item)
        if keep in self._indices:
            self.selectRow(self._indices.index(keep))
        self.blockSignals(False)
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Wide enough for every column: no header or end reason cut off behind a scroll bar."""
        header = self.horizontalHeader()
        columns = sum(max(header.sectionSizeHint(c), self.sizeHintForColumn(c)) for c in range(self.columnCount()))
        self.setMinimumWidth(columns + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth())

    def selected_index(self) -> int | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        return self._indices[rows[0].row()] if rows else None

    def select_episode(self, index: int) -> None:
        if index in self._indices:
            self.selectRow(self._indices.index(index))

    def _selected(self) -> None:
        index = self.selected_index()
        if index is not None:
            self.episode_selected.emit(index)


class KeyHelp(QLabel):
    """The teleop keys, always on screen."""

    def __init__(self, keys, parent=None):
        super().__init__(parent)
        rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;{what}</td></tr>" for k, what in keys)
        self.setText(f"<table>{rows}</table>")
        self.setTextFormat(Qt.TextFormat.RichText)


def labelled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    header = QLabel(f"<b>{title}</b>")
    layout.addWidget(header)
    layout.addWidget(widget, 1)
    return box


#: The questions open now (see :func:`ask`): a STOP or a halt closes them unanswered.
_OPEN_QUESTIONS: list[QMessageBox] = []


def ask(parent: QWidget, title: str, text: str, yes_text: str, answered, icon=QMessageBox.Icon.Question) -> QMessageBox:
    """A yes/no question that does not block: a window-modal box opened without a nested event loop (the
    control loop's signals, STOP keys and previews keep running); ``answered(bool)`` is called once.
    The safe answer (No) is the default, and it is the answer when a STOP or a halt closes the question
    (:func:`close_open_questions`): nothing asked before a STOP is done after it."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.No, parent)
    yes = box.addButton(yes_text, QMessageBox.ButtonRole.YesRole)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    box.closed_by_halt = False

    def finished(_result: int) -> None:
        if box in _OPEN_QUESTIONS:
            _OPEN_QUESTIONS.remove(box)
        if parent is not None:
            parent.window().activateWindow()  # the window's shortcuts (Enter, Backspace) work again at once
        answered(box.clickedButton() is yes and not box.closed_by_halt)

    box.finished.connect(finished)
    _OPEN_QUESTIONS.append(box)
    box.open()
    return box


def open_questions() -> list[QMessageBox]:
    return list(_OPEN_QUESTIONS)


def close_open_questions() -> list[str]:
    """Close every open question as if answered No (a STOP or a halt came); returns their titles."""
    titles = []
    for box in list(_OPEN_QUESTIONS):
        box.closed_by_halt = True
        titles.append(box.windowTitle())
        box.reject()
    return titles
