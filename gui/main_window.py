"""The main window: rig panel on the left, Record / Train / Autonomous on the right, STOP always in reach."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QAbstractSpinBox, QComboBox, QLabel, QLineEdit, QMainWindow, QSplitter, QTabWidget,
                             QTextEdit, QVBoxLayout, QWidget)

from .autonomy_panel import AutonomyPanel
from .controller import AUTONOMOUS, HALTED, RECORDING, REPLAY, TELEOP, RigController
from .halt_strip import HaltStrip
from .record_panel import RecordPanel
from .rig_panel import RigPanel
from .rig_picker import RigCatalog
from .train_panel import TrainPanel
from .widgets import MessageBar, fixed_split
from .workers import DatasetReader, PolicyBookkeeper, PolicyLoader, TrainingWorker, start_worker

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


#: STOP, whatever has focus (a text field, a spin box, a button).
STOP_KEYS = (Qt.Key.Key_Space, Qt.Key.Key_Escape)


class TeleopKeyFilter(QObject):
    """Application-wide keys: Space and Esc are STOP whatever widget has focus; other keys become
    keyboard-teleop commands (not while typing in a field)."""

    def __init__(self, controller: RigController, window: QMainWindow):
        super().__init__(window)
        self.controller = controller
        self.window = window

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.ShortcutOverride and event.key() in STOP_KEYS:
            event.accept()  # no widget's shortcut may take the key: the KeyPress that follows is STOP
            return True
        if kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            if event.key() in STOP_KEYS:
                if kind == QEvent.Type.KeyPress and not event.isAutoRepeat():
                    self.controller.emergency_stop()
                return True  # consumed: a focused field never sees it (no space typed, no button clicked)
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
                    self.controller.request_home(self.window)
                    return True
                taken = keyboard.press(name)
                if taken and name != "shift":
                    self._say_why_ignored()
                return taken
            return keyboard.release(name)
        if kind in (QEvent.Type.WindowDeactivate, QEvent.Type.ApplicationDeactivate):
            self.controller.keyboard.release_all()  # a key released elsewhere must not keep the arm moving
        return False


    _IGNORED = {HALTED: "the arm is halted: motion keys do nothing until you take over (or home)",
                AUTONOMOUS: "the policy drives the arm: motion keys do nothing; pause or STOP, then take over",
                REPLAY: "an episode is being replayed: motion keys do nothing; STOP, then take over"}

    def _say_why_ignored(self) -> None:
        """A motion key while the keys cannot move the arm: say so once, instead of ignoring it silently."""
        why = self._IGNORED.get(self.controller.mode)
        if why is not None and why not in self.window.messages.text:
            self.window.messages.show_message("info", why)


class MainWindow(QMainWindow):
    def __init__(self, controller: RigController, data_root: Path, runs_root: Path,
                 rig_catalog: RigCatalog | None = None):
        """``rig_catalog``: what the rig picker offers (None: the rig the window is opened with, and the
        built-in rigs)."""
        super().__init__()
        self.setWindowTitle("ALT Studio")
        self.controller = controller
        self.data_root = Path(data_root)
        self.runs_root = Path(runs_root)

        self.trainer = TrainingWorker()
        self.loader = PolicyLoader()
        self.reader = DatasetReader()
        self.bookkeeper = PolicyBookkeeper()
        self._threads = [start_worker(self.trainer, "training"), start_worker(self.loader, "policy-loader"),
                         start_worker(self.reader, "dataset-reader"), start_worker(self.bookkeeper, "bookkeeper")]

        self.messages = MessageBar()
        self.halt_strip = HaltStrip(controller)
        self.rig_panel = RigPanel(controller, rig_catalog)
        self.record_panel = RecordPanel(controller, self.reader, self.data_root)
        self.train_panel = TrainPanel(self.trainer, self.runs_root)
        self.autonomy_panel = AutonomyPanel(controller, self.loader, self.reader, self.runs_root, self.bookkeeper)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.record_panel, "Record")
        self.tabs.addTab(self.train_panel, "Train")
        self.tabs.addTab(self.autonomy_panel, "Autonomous")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.rig_panel)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 2)
        # The live previews get room (1600 px wide is the operator's screen); the handle moves only when dragged.
        fixed_split(split, [380, 600], [620, 980])
        self.split = split
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.halt_strip)  # fixed places: a halt or a message never moves the rest of the window
        layout.addWidget(self.messages)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self.mode_label = QLabel("disconnected")
        self.statusBar().addPermanentWidget(self.mode_label)

        # STOP (Space, Esc) is the application-wide key filter below, whatever has focus.
        # Recording: Enter starts (while teleoperating) / stops and keeps; Backspace discards; Ctrl+R re-records.
        # They act only in their activity: Enter while the policy runs is not a recording.
        for key, action in ((Qt.Key.Key_Return, self._start_or_stop), (Qt.Key.Key_Enter, self._start_or_stop),
                            (Qt.Key.Key_Backspace, self._discard), (QKeySequence("Ctrl+R"), self._rerecord)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.activated.connect(action)
        self.key_filter = TeleopKeyFilter(controller, self)
        from PyQt6.QtWidgets import QApplication

        QApplication.instance().installEventFilter(self.key_filter)

        controller.error.connect(lambda text: self.messages.show_message("error", text))
        controller.info.connect(lambda text: self.messages.show_message("info", text))
        controller.mode_changed.connect(self._on_mode)
        controller.connected.connect(lambda rig: self.setWindowTitle(f"ALT Studio: {rig.name}"))
        controller.disconnected.connect(lambda: self.setWindowTitle("ALT Studio"))
        controller.dataset_changed.connect(self.train_panel.set_dataset)
        # An error from an earlier attempt to open a dataset is stale once one is open.
        controller.dataset_changed.connect(lambda root: root is not None and self.messages.resolve(
            "dataset", str(root)))
        self.train_panel.policy_trained.connect(self._on_policy_trained)
        for worker in (self.trainer, self.loader, self.reader, self.bookkeeper):
            worker.failed.connect(lambda text: self.messages.show_message("error", text))
        self.resize(1600, 1000)

    def _on_mode(self, mode: str) -> None:
        self.mode_label.setText(f"mode: {mode}")

    def _start_or_stop(self) -> None:
        mode = self.controller.mode
        if mode == RECORDING:
            self.controller.stop_episode()
        elif mode == TELEOP:
            self.controller.start_episode()
        else:
            self.messages.show_message("info", f"Enter starts a recording only while teleoperating (now: {mode}); "
                                               "take over first")

    def _discard(self) -> None:
        if not self.controller.discard_episode():
            self.messages.show_message("info", "Backspace discards the episode being recorded; none is")

    def _rerecord(self) -> None:
        if not self.controller.rerecord_episode():
            self.messages.show_message("info", "Ctrl+R re-records the episode being recorded; none is")

    def _on_policy_trained(self, path: str) -> None:
        self.messages.show_message("info", f"new policy: {path}")
        self.autonomy_panel.select_and_load(path)

    @property
    def workers(self) -> tuple:
        return self.trainer, self.loader, self.reader, self.bookkeeper

    @property
    def threads(self) -> tuple:
        return tuple(self._threads)

    def closeEvent(self, event) -> None:
        self.trainer.cancel()
        self.controller.shutdown()
        for thread in self._threads:
            thread.quit()
        for thread in self._threads:
            thread.wait(10_000)
        super().closeEvent(event)
