"""The window on the built-in rigs: a Meta-World rig connected with live previews, the rig picker switching
rigs while disconnected (refused while connected; a halt not yet released holds on the rig chosen), and the gui verb's
``--robot`` / ``--rig`` options."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

import main
from core.clock import RealTimeClock
from gui.app import RigCatalog, create_window, dispose, rig_setup, run_app, sim_rig_factory
from gui.controller import DISCONNECTED, HALTED, TELEOP
from gui.rig_picker import FEATURED_TASKS, GIVEN
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from supervisor import Supervisor

import robot_drivers.metaworld  # noqa: E402,F401 - picks MuJoCo's offscreen back end before MuJoCo is imported

pytest.importorskip("metaworld")  # installed by scripts/setup.sh (the metaworld extra)

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
SIM_RIG_FILE = ROOT / "configs" / "simulated" / "metaworld_drawer_open.toml"
REAL_RIG_FILE = ROOT / "configs" / "xarm_realsense.toml"
CONNECT_MS = 90_000  # a loaded 2-core machine: building and connecting a simulator takes seconds


# -- the command line: parsed, checked, no window ---------------------------------------------------------------
def _gui_config(monkeypatch, *argv):
    """The GuiConfig ``main.py gui ARGV`` would open the window with (main.py's own --rig over --robot rule)."""
    import cli.gui

    seen = []
    monkeypatch.setattr(cli.gui, "run", lambda config: seen.append(config) or 0)
    assert main.main(["gui", *argv]) == 0
    return seen[0]


def test_robot_option_names_a_builtin_rig_and_a_wrong_task_is_named_before_the_window_opens(monkeypatch, capsys):
    config = _gui_config(monkeypatch, "--robot", "metaworld:reach-v3", "--camera-size", "48")
    assert (config.robot, config.rig, config.camera_size) == ("metaworld:reach-v3", None, 48)
    assert _gui_config(monkeypatch).robot == "sim"

    config = _gui_config(monkeypatch, "--robot", "metaworld:nosuch")  # the name's form is right: it parses
    assert config.robot == "metaworld:nosuch"
    with pytest.raises(ValueError, match="metaworld has no task 'nosuch'"):
        run_app(robot=config.robot)  # refused before any QApplication or window exists
    with pytest.raises(ValueError, match="did you mean 'pick-place-v3'"):
        rig_setup("metaworld:pick-plac-v3")

    for bad, why in (("metaworld", "needs a task"), ("nosuch", "unknown robot 'nosuch'")):
        with pytest.raises(SystemExit) as exited:
            main.main(["gui", "--robot", bad])
        assert exited.value.code == 2 and why in capsys.readouterr().err


def test_rig_option_takes_a_simulated_rig_file_at_its_own_rate_and_camera_size(monkeypatch):
    config = _gui_config(monkeypatch, "--robot", "sim", "--rig", str(SIM_RIG_FILE))
    assert config.rig == str(SIM_RIG_FILE)  # --rig wins over --robot, as in every verb
    factory, catalog = rig_setup(config.robot, config.rig, config.camera_size, config.rate)
    assert catalog.current == catalog.rig_file == str(SIM_RIG_FILE)
    rig, teleop = factory()
    try:
        assert rig.name == "metaworld:drawer-open-v3" and teleop is None
        assert rig.clock.is_realtime and rig.config.rate_hz == 20.0  # the file's rate
        assert {(c.width, c.height) for c in rig.cameras.values()} == {(128, 128)}  # the file's camera size
    finally:
        rig.close()
    factory, _ = rig_setup(config.robot, config.rig, config.camera_size, 10.0)  # --rate overrides the file's
    rig, _ = factory()
    try:
        assert rig.config.rate_hz == 10.0
    finally:
        rig.close()

    config = _gui_config(monkeypatch, "--rig", str(REAL_RIG_FILE))  # a real rig's file: validated, not built
    factory, catalog = rig_setup(config.robot, config.rig, config.camera_size, config.rate)
    assert callable(factory) and catalog.rig_file == str(REAL_RIG_FILE)


# -- the supervisor's command (no Qt) -----------------------------------------------------------------------------
def _fake_factory(name: str, built: list):
    def build():
        arm = SafeArm(KinematicArm(), SafetyConfig(watchdog_timeout=0.5))
        cameras = {n: SyntheticCamera(n, 32, 32, fps=50.0, seed=i) for i, n in enumerate(("hand", "third"))}
        rig = Rig(arm, cameras, RealTimeClock(50.0), name=name)
        built.append(name)
        return rig, None

    return build


def _answered(ticket):
    assert ticket.wait(20), f"{ticket.name} was not answered"
    return ticket


def _wait_mode(sup, mode, timeout=20.0):
    deadline = time.monotonic() + timeout
    while sup.mode != mode and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sup.mode == mode


def test_the_supervisor_swaps_its_rig_factory_only_while_disconnected_and_a_halt_holds_on_the_next_rig():
    built: list[str] = []
    sup = Supervisor(_fake_factory("first", built))
    try:
        assert not _answered(sup.set_rig_factory(_fake_factory("second", built), "second")).refused
        assert sup.rig_factory_name == "second"
        _answered(sup.connect_rig())
        _wait_mode(sup, TELEOP)
        assert sup.rig.name == "second" and built == ["second"]

        refused = _answered(sup.set_rig_factory(_fake_factory("third", built), "third"))
        assert refused.refused and "Disconnect" in refused.refusal and "teleop" in refused.refusal
        assert sup.rig_factory_name == "second" and sup.mode == TELEOP  # nothing changed, the arm runs on

        sup.emergency_stop()  # a STOP holds across the disconnect ...
        _wait_mode(sup, HALTED)
        _answered(sup.disconnect_rig())
        assert sup.mode == DISCONNECTED and sup.halt_unreleased
        assert not _answered(sup.set_rig_factory(_fake_factory("third", built), "third")).refused
        _answered(sup.connect_rig())  # ... so the rig chosen meanwhile comes up latched
        _wait_mode(sup, HALTED)
        assert sup.rig.name == "third" and sup.rig.arm.stopped and sup.halt_unreleased
        _answered(sup.take_over())  # the operator's release
        _wait_mode(sup, TELEOP)
        _answered(sup.disconnect_rig())

        assert not _answered(sup.set_rig_factory()).refused  # None: back to the first factory
        _answered(sup.connect_rig())
        _wait_mode(sup, TELEOP)
        assert sup.rig.name == "first" and not sup.rig.arm.stopped
    finally:
        sup.shutdown()


# -- the window -------------------------------------------------------------------------------------------------
def _choose(qtbot, picker, key: str) -> None:
    """Pick ``key`` in the list as the operator does, and wait for the supervisor's answer."""
    index = picker.combo.findData(key)
    assert index >= 0, key
    picker.combo.setCurrentIndex(index)
    picker.combo.activated.emit(index)
    qtbot.waitUntil(lambda: picker.answered, timeout=10_000)


def _frames_arrive(qtbot, panel, more: int = 5) -> None:
    shown = {name: view.frames_shown for name, view in panel.previews.items()}
    qtbot.waitUntil(lambda: set(panel.previews) == {"hand", "third"} and all(
        view.frames_shown >= shown.get(name, 0) + more for name, view in panel.previews.items()), timeout=30_000)


def test_the_picker_lists_the_rigs_and_switches_while_disconnected(qapp, qtbot, tmp_path):
    factory = sim_rig_factory(image_size=48)
    controller, window = create_window(factory, tmp_path / "data", tmp_path / "runs", connect=False,
                                       rig_catalog=RigCatalog("sim", image_size=48))
    try:
        picker = window.rig_panel.picker
        assert picker.keys()[:7] == ["sim", *(f"metaworld:{t}" for t in FEATURED_TASKS)]
        assert picker.combo.isEnabled() and picker.combo.currentData() == "sim"
        assert picker.status.text() == "not connected; Connect builds sim: PyBullet Panda and mug"

        _choose(qtbot, picker, "metaworld:drawer-open-v3")
        assert controller.rig_factory_name == "metaworld:drawer-open-v3" == picker.active
        assert controller.supervisor._rig_factory is not factory
        assert "Connect builds metaworld:drawer-open-v3" in picker.status.text()
        _choose(qtbot, picker, "sim")  # back: the factory the window was opened with
        assert controller.rig_factory_name == "sim" and controller.supervisor._rig_factory is factory

        picker.combo.showPopup()  # opening the list has Meta-World list all its tasks, off the GUI thread
        QTest.keyClick(picker.combo.view(), Qt.Key.Key_Space)  # STOP, with the list open too ...
        qtbot.waitUntil(lambda: controller.supervisor.halt_unreleased, timeout=5000)
        picker.combo.hidePopup()
        qtbot.waitUntil(lambda: picker.tasks_listed, timeout=30_000)
        keys = picker.keys()
        assert len(keys) == 1 + 50 and len(set(keys)) == len(keys)
        assert keys[:7] == ["sim", *(f"metaworld:{t}" for t in FEATURED_TASKS)] and "metaworld:hammer-v3" in keys

        # ... and a STOP taken while disconnected holds on the rig chosen next (it will connect latched).
        _choose(qtbot, picker, "metaworld:hammer-v3")
        assert picker.active == "metaworld:hammer-v3" == controller.rig_factory_name
        assert controller.supervisor.halt_unreleased
    finally:
        dispose(controller, window)


def test_a_window_given_an_unnamed_factory_lists_it_first(qapp, tmp_path):
    controller, window = create_window(sim_rig_factory(image_size=48), tmp_path / "data", tmp_path / "runs",
                                       connect=False)
    try:
        picker = window.rig_panel.picker
        assert picker.keys()[:2] == [GIVEN, "sim"] and picker.active == GIVEN
        assert picker.combo.currentText() == "the rig the window was opened with"
    finally:
        dispose(controller, window)


def test_the_window_runs_a_metaworld_rig_and_switches_rig_only_while_disconnected(qapp, qtbot, tmp_path):
    factory, catalog = rig_setup("metaworld:reach-v3", camera_size=48)
    controller, window = create_window(factory, tmp_path / "data", tmp_path / "runs", rig_catalog=catalog)
    window.show()
    try:
        panel, picker = window.rig_panel, window.rig_panel.picker
        qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=CONNECT_MS)
        _frames_arrive(qtbot, panel)
        assert controller.rig.name == "metaworld:reach-v3"
        assert window.windowTitle() == "ALT Studio: metaworld:reach-v3"
        assert picker.status.text() == "connected: metaworld:reach-v3"
        assert {(v._image.width(), v._image.height()) for v in panel.previews.values()} == {(48, 48)}
        assert "reach-v3" in panel.task_hint.text() and panel.sim_box.isVisible()

        # Connected: the list is disabled and says why; a choice sent anyway is refused, and the arm runs on.
        assert not picker.combo.isEnabled() and "Disconnect" in picker.combo.toolTip()
        _choose(qtbot, picker, "sim")
        assert picker.active == "metaworld:reach-v3" == picker.combo.currentData()
        assert controller.mode == TELEOP and controller.rig.name == "metaworld:reach-v3"
        qtbot.waitUntil(lambda: "needs the rig disconnected" in window.messages.text, timeout=5000)

        controller.emergency_stop()  # STOP works as ever on this rig
        qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=10_000)
        assert controller.rig.arm.stopped and not picker.combo.isEnabled()
        controller.take_over()
        qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=10_000)

        qtbot.mouseClick(panel.disconnect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: controller.mode == DISCONNECTED, timeout=20_000)
        qtbot.waitUntil(lambda: picker.combo.isEnabled() and window.windowTitle() == "ALT Studio", timeout=10_000)
        _choose(qtbot, picker, "sim")
        assert controller.rig_factory_name == "sim"
        qtbot.mouseClick(panel.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=CONNECT_MS)
        _frames_arrive(qtbot, panel)
        assert controller.rig.name == "sim" and window.windowTitle() == "ALT Studio: sim"
        assert picker.status.text() == "connected: sim"
        assert "mug at x" in panel.scene_label.text()  # the scene line follows the rig
        assert "distractors" in [panel.scenario_combo.itemText(i) for i in range(panel.scenario_combo.count())]
    finally:
        dispose(controller, window)
