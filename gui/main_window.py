"""The main window: rig panel on the left, Record / Train / Autonomous on the right, STOP always in reach."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QAbstractSpinBox, QComboBox, QLabel, QLineEdit, QMainWindow, QSplitter, QTabWidget,
                             QTextEdit, QVBoxLayout, QWidget)

from .autonomy_panel import AutonomyPanel
from .controller import RECORDING, RigController
from .record_panel import RecordPanel
from .rig_panel import RigPanel
from .train_panel import TrainPanel
from .widgets import MessageBar
from .workers import DatasetReader, PolicyLoader, TrainingWorker, start_worker

_QT_KEY_NAMES = {Qt.Key.Key_Shift: "shift"}


def _key_name(event) -> str | None:
    if event.key() in _QT_KEY_NAMES:
        return _QT_KEY_NAMES[event.key()]
    text = event.text().lower()
    if len(text) == 1 and text.isalpha():
        return text
    # With Shift held, text() is upper case; with other modifiers it may be empty: use the key code.
    if Qt.Key.Key_A.value <= event.key() <= Qt.Key.Key_Z.value:
        return chr(ord("a") + event.key() - Qt.Key.Key_A.value)
    return None


class TeleopKeyFilter(QObject):
    """Turns key presses anywhere in the window into keyboard-teleop commands (not while typing in a field)."""

    def __init__(self, controller: RigController, window: QMainWindow):
        super().__init__(window)
        self.controller = controller
        self.window = window

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            if event.isAutoRepeat():
                return False
            focus = self.window.focusWidget()
            if isinstance(focus, (QLineEdit, QAbstractSpinBox, QTextEdit)) or \
                    (isinstance(focus, QComboBox) and focus.isEditable()):
                return False
            name = _key_name(event)
            if name is None:
                return False
            keyboard = self.controller.keyboard
            if kind == QEvent.Type.KeyPress:
                if name == "h" and not event.modifiers() & ~Qt.KeyboardModifier.ShiftModifier:
                    self.controller.home()
                    return True
                return keyboard.press(name)
            return keyboard.release(name)
        if kind in (QEvent.Type.WindowDeactivate, QEvent.Type.ApplicationDeactivate):
            self.controller.keyboard.release_all()  # a key released elsewhere must not keep the arm moving
        return False


class MainWindow(QMainWindow):
    def __init__(self, controller: RigController, data_root: Path, runs_root: Path):
        super().__init__()
        self.setWindowTitle("ALT Studio")
        self.controller = controller
        self.data_root = Path(data_root)
        self.runs_root = Path(runs_root)

        self.trainer = TrainingWorker()
        self.loader = PolicyLoader()
        self.reader = DatasetReader()
        self._threads = [start_worker(self.trainer, "training"), start_worker(self.loader, "policy-loader"),
                         start_worker(self.reader, "dataset-reader")]

        self.messages = MessageBar()
        self.rig_panel = RigPanel(controller)
        self.record_panel = RecordPanel(controller, self.reader, self.data_root)
        self.train_panel = TrainPanel(self.trainer, self.runs_root)
        self.autonomy_panel = AutonomyPanel(controller, self.loader, self.reader, self.runs_root)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.record_panel, "Record")
        self.tabs.addTab(self.train_panel, "Train")
        self.tabs.addTab(self.autonomy_panel, "Autonomous")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.rig_panel)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 2)
        split.setSizes([420, 980])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.messages)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self.mode_label = QLabel("disconnected")
        self.statusBar().addPermanentWidget(self.mode_label)

        # STOP: Space and Esc anywhere in the window, whatever has focus.
        self.stop_shortcuts = []
        for key in (Qt.Key.Key_Space, Qt.Key.Key_Escape):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)
            shortcut.activated.connect(controller.emergency_stop)
            self.stop_shortcuts.append(shortcut)
        # Recording: Enter starts / stops and keeps; Backspace discards; Ctrl+R re-records.
        for key, action in ((Qt.Key.Key_Return, self._start_or_stop), (Qt.Key.Key_Enter, self._start_or_stop),
                            (Qt.Key.Key_Backspace, controller.discard_episode),
                            (QKeySequence("Ctrl+R"), controller.rerecord_episode)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.activated.connect(action)
        self.key_filter = TeleopKeyFilter(controller, self)
        from PyQt6.QtWidgets import QApplication

        QApplication.instance().installEventFilter(self.key_filter)

        controller.error.connect(lambda text: self.messages.show_message("error", text))
        controller.info.connect(lambda text: self.messages.show_message("info", text))
        controller.halted.connect(lambda halt: self.messages.show_message(
            "warn" if halt.reason in ("stop", "paused", "done") else "error", halt.message))
        controller.mode_changed.connect(self._on_mode)
        controller.dataset_changed.connect(self.train_panel.set_dataset)
        self.train_panel.policy_trained.connect(self._on_policy_trained)
        for worker in (self.trainer, self.loader, self.reader):
            worker.failed.connect(lambda text: self.messages.show_message("error", text))
        self.resize(1440, 900)

    def _on_mode(self, mode: str) -> None:
        self.mode_label.setText(f"mode: {mode}")

    def _start_or_stop(self) -> None:
        if self.controller.mode == RECORDING:
            self.controller.stop_episode()
        else:
            self.controller.start_episode()

    def _on_policy_trained(self, path: str) -> None:
        self.messages.show_message("info", f"new policy: {path}")
        self.autonomy_panel.select_and_load(path)

    def closeEvent(self, event) -> None:
        self.trainer.cancel()
        self.controller.shutdown()
        for thread in self._threads:
            thread.quit()
        for thread in self._threads:
            thread.wait(10_000)
        super().closeEvent(event)
