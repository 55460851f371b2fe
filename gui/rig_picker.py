"""The rig picker: which rig Connect builds (the simulated Panda, a Meta-World task, the rig file given), chosen
while the rig is disconnected; and the factories that build each choice.

A choice is a robot name (``sim``, ``metaworld:<task>``) or a rig file's path. The picker only hands the
supervisor a factory (``Supervisor.set_rig_factory``: refused while connected, or while a halt is unreleased);
the rig is built and connected on the supervisor's control thread when Connect is pressed, as always, so the
window never waits on a simulator. Meta-World's full task list needs Meta-World imported (about a second): it
is asked for on a thread of its own the first time the list is opened, and kept for the process.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from supervisor import DISCONNECTED, RigFactory

#: The Meta-World tasks listed first; the others follow once Meta-World has listed them.
FEATURED_TASKS = ("pick-place-v3", "reach-v3", "button-press-topdown-v3", "drawer-open-v3", "door-open-v3",
                  "peg-insert-side-v3")

#: The key of the entry for a factory the picker cannot name (a window opened on a rig given as a function).
GIVEN = ""

_TOOLTIP_ROLE = Qt.ItemDataRole.ToolTipRole

_ENABLED_TIP = ("The rig Connect builds: the simulated Panda (sim), a Meta-World task, or the rig file given. "
                "Chosen while disconnected; Connect then builds and connects it.")


# --------------------------------------------------------------------------- factories
def builtin_rig_factory(robot: str, image_size: int = 128, rate_hz: float | None = None) -> RigFactory:
    """A built-in simulated rig (``sim``, ``metaworld:<task>``) on the host clock, as the window runs it; made
    when the factory is called (on the control thread)."""

    def build():
        from robot_drivers.factory import make_rig

        return make_rig(robot, clock="realtime", image_size=image_size, rate_hz=rate_hz), None

    return build


def check_robot(robot: str) -> None:
    """A ValueError now, naming what is wrong, for a robot that is not a built-in rig or whose parameter (a
    Meta-World task) the rig does not have. Asks the rig for its parameters: Meta-World is imported (a second)."""
    from robot_drivers.factory import split_robot
    from robot_drivers.registry import lookup, nearest

    base, arg = split_robot(robot)
    registration = lookup("rig", base)
    choices = registration.option("choices")
    if arg is None or choices is None:
        return
    try:
        names = tuple(choices())
    except ImportError as exc:  # the rig's simulator is not installed
        raise ValueError(f"robot {robot!r}: {exc}") from None
    if arg not in names:
        parameter = registration.option("parameter")
        raise ValueError(f"robot {robot!r}: {base} has no {parameter} {arg!r}{nearest(arg, names)} (its "
                         f"{len(names)} {parameter}s: {', '.join(names)})")


def file_rig_factory(path: str, rate_hz: float | None = None, check: bool = True) -> RigFactory:
    """The rig a rig file describes, validated now (a typo is reported before anything is built): a real rig, or
    the built-in simulated rig a file with a top-level ``kind`` names, in real time at the file's rate and camera
    size. ``rate_hz`` overrides the file's rate (a real rig's per-tick step limits follow it); ``check``: also
    check a simulated rig's parameter (its Meta-World task) now."""
    from robot_drivers.rig_config import load_rig_config, load_sim_rig_file

    sim = load_sim_rig_file(path)
    if sim is not None:
        if check:
            check_robot(sim.robot)
        return builtin_rig_factory(sim.robot, sim.camera_size, sim.rate_hz if rate_hz is None else rate_hz)
    config = load_rig_config(path)
    if rate_hz is not None:
        config = config.with_rate(rate_hz)  # the per-tick step limits follow the rate

    def build():
        from robot_drivers.rig_config import build_rig, build_teleop

        rig = build_rig(config)
        return rig, build_teleop(config, rig)

    return build


@dataclass(frozen=True)
class RigCatalog:
    """What the picker offers, and how a choice becomes a factory.

    ``current``: the choice the window was opened on, a robot name or ``rig_file`` (its factory is the one the
    supervisor was made with); None: a factory the picker cannot name, listed as the rig given. Built-in rigs
    chosen later get ``image_size`` and ``rate_hz`` (None: the rig's own rate)."""

    current: str | None = None
    image_size: int = 128
    rate_hz: float | None = None
    rig_file: str | None = None

    @property
    def current_key(self) -> str:
        return GIVEN if self.current is None else self.current

    def factory(self, choice: str) -> RigFactory | None:
        """None for the current choice: the supervisor's own first factory."""
        if choice == self.current_key:
            return None
        if choice == self.rig_file:
            return file_rig_factory(choice, self.rate_hz, check=False)
        return builtin_rig_factory(choice, self.image_size, self.rate_hz)

    def name(self, choice: str) -> str | None:
        """What the operator calls the choice (None: the rig given)."""
        return None if choice == GIVEN else choice


# --------------------------------------------------------------------------- Meta-World's task list
class _TaskList:
    """Meta-World's tasks, listed once per process on a thread of its own (the import takes a second)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.tasks: tuple[str, ...] | None = None
        self.error: str | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._list, name="metaworld-tasks", daemon=True)
                self._thread.start()

    def _list(self) -> None:
        try:
            from robot_drivers.metaworld import task_names

            self.tasks = tuple(task_names())
        except Exception as exc:  # noqa: BLE001 - shown in the list instead of the tasks
            self.error = str(exc) or repr(exc)

    @property
    def done(self) -> bool:
        return self.tasks is not None or self.error is not None


_TASKS = _TaskList()


def metaworld_installed() -> bool:
    return importlib.util.find_spec("metaworld") is not None


# --------------------------------------------------------------------------- the widget
class _Combo(QComboBox):
    """A combo box that says when its list is about to open."""

    opening = pyqtSignal()

    def showPopup(self) -> None:
        self.opening.emit()
        super().showPopup()


class RigPicker(QWidget):
    """A list of rigs and a line naming the connected one. Enabled only while disconnected; a choice is sent to
    the supervisor, and the list goes back to the rig in force when the supervisor refuses it (its message says
    why)."""

    chosen = pyqtSignal(str)  # a choice the supervisor accepted (its key)

    def __init__(self, controller, catalog: RigCatalog | None = None, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.catalog = catalog or RigCatalog()
        self.combo = _Combo()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(24)
        self.combo.setMaxVisibleItems(20)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.active = self.catalog.current_key  # the choice the supervisor has (its next connect builds it)
        self._pending: list[tuple[object, str]] = []  # (ticket, key) not answered yet, in the order sent
        self._placeholder: int | None = None  # the row standing for Meta-World's other tasks until listed
        self._metaworld = metaworld_installed()
        self._build_items()

        self._answers = QTimer(self)
        self._answers.setInterval(50)
        self._answers.timeout.connect(self._check_answers)
        self._listing = QTimer(self)
        self._listing.setInterval(100)
        self._listing.timeout.connect(self._check_listing)

        row = QHBoxLayout()
        row.addWidget(QLabel("Rig"))
        row.addWidget(self.combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)

        self.combo.activated.connect(self._on_activated)
        self.combo.opening.connect(self.list_all_tasks)
        controller.mode_changed.connect(self._on_mode)
        controller.connected.connect(lambda rig: self._show_status(rig))
        controller.disconnected.connect(lambda: self._show_status(None))
        self._on_mode(controller.mode)
        self._select(self.active)
        self._show_status(controller.rig)

    # -- the list -------------------------------------------------------------
    def keys(self) -> list[str]:
        """The choices listed, in order (separators and the placeholder left out)."""
        return [self.combo.itemData(i) for i in range(self.combo.count()) if self.combo.itemData(i) is not None]

    @staticmethod
    def label(key: str) -> str:
        if key == GIVEN:
            return "the rig the window was opened with"
        if key == "sim":
            return "sim: PyBullet Panda and mug"
        if key.partition(":")[0] == "metaworld":
            return key
        return f"rig file: {key}"

    def _add(self, key: str, at: int | None = None, tip: str | None = None) -> None:
        at = self.combo.count() if at is None else at
        self.combo.insertItem(at, self.label(key), key)
        self.combo.setItemData(at, tip or key, _TOOLTIP_ROLE)
        if key.partition(":")[0] == "metaworld" and not self._metaworld:
            self._disable(at, "needs Meta-World and MuJoCo: pip install '.[metaworld]'")

    def _disable(self, row: int, tip: str) -> None:
        item = self.combo.model().item(row)
        item.setEnabled(False)
        item.setToolTip(tip)

    def _build_items(self) -> None:
        c, catalog = self.combo, self.catalog
        if catalog.current is None:
            self._add(GIVEN, tip="the rig (factory) the window was opened with")
        self._add("sim", tip="sim: the simulated Franka Panda and a mug (PyBullet)")
        c.insertSeparator(c.count())
        for task in FEATURED_TASKS:
            self._add(f"metaworld:{task}", tip=f"Meta-World's {task} (MuJoCo)")
        current = catalog.current
        if current is not None and current != catalog.rig_file and c.findData(current) < 0:
            self._add(current)  # a task further down Meta-World's list, or another built-in rig
        self._placeholder = c.count()
        c.addItem("other Meta-World tasks: listing..." if self._metaworld
                  else "Meta-World is not installed (pip install '.[metaworld]')")
        self._disable(self._placeholder, "Meta-World lists its tasks when this list is first opened")
        if catalog.rig_file is not None:
            c.insertSeparator(c.count())
            self._add(catalog.rig_file, tip=f"the rig file {catalog.rig_file}")

    def list_all_tasks(self) -> None:
        """Ask Meta-World for all its tasks (on a thread of its own); they join the list when it answers."""
        if self._placeholder is None or not self._metaworld:
            return
        _TASKS.start()
        self._listing.start()
        self._check_listing()

    @property
    def tasks_listed(self) -> bool:
        return self._placeholder is None

    def _check_listing(self) -> None:
        if not _TASKS.done or self._placeholder is None:
            return
        self._listing.stop()
        at = self._placeholder
        if _TASKS.tasks is None:
            self.combo.setItemText(at, "other Meta-World tasks: could not be listed")
            self.combo.model().item(at).setToolTip(_TASKS.error)
            return
        self.combo.removeItem(at)
        self._placeholder = None
        for task in _TASKS.tasks:
            key = f"metaworld:{task}"
            if self.combo.findData(key) < 0:
                self._add(key, at)
                at += 1
        self._select(self.active)

    # -- choosing -------------------------------------------------------------
    def _on_activated(self, index: int) -> None:
        key = self.combo.itemData(index)
        if key is not None:
            self.choose(key)

    def choose(self, key: str) -> None:
        """Have the supervisor build ``key``'s rig at the next connect (what choosing it in the list does)."""
        self._select(key)
        if key == self.active and not self._pending:
            return
        try:
            factory = self.catalog.factory(key)
        except ValueError as exc:  # a rig file that no longer reads
            self.controller.error.emit(str(exc))
            self._select(self.active)
            return
        ticket = self.controller.set_rig_factory(factory, self.catalog.name(key))
        self._pending.append((ticket, key))
        self._answers.start()

    def _check_answers(self) -> None:
        while self._pending and self._pending[0][0].answered:
            ticket, key = self._pending.pop(0)
            if not ticket.refused:
                self.active = key
                self.chosen.emit(key)
        if not self._pending:
            self._answers.stop()
            self._select(self.active)  # back to the rig in force when refused (the message bar says why)
            self._show_status(self.controller.rig)

    def _select(self, key: str) -> None:
        index = self.combo.findData(key)
        if index >= 0 and index != self.combo.currentIndex():
            self.combo.setCurrentIndex(index)

    @property
    def answered(self) -> bool:
        """Every choice sent has been answered by the supervisor."""
        return not self._pending

    # -- the connection -------------------------------------------------------
    def _on_mode(self, mode: str) -> None:
        free = mode == DISCONNECTED
        self.combo.setEnabled(free)
        self.combo.setToolTip(_ENABLED_TIP if free else
                              f"Disconnect to choose another rig (the rig is {mode} now); STOP keeps working")

    def _show_status(self, rig) -> None:
        if rig is not None:
            self.status.setText(f"connected: {rig.name}")
        else:
            self.status.setText(f"not connected; Connect builds {self.label(self.active)}")
