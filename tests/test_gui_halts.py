"""Halts in the window: what the operator sees and can do, on a fast fake rig (a kinematic arm whose fingers
close on an object, synthetic cameras), offscreen.

- a halt names its camera, and Take over / Home are beside it on every tab;
- the operator's STOP stays the first cause when a camera stall follows it;
- a Home question asked before a STOP is closed by the STOP, and a Yes cannot home after it;
- messages and halts appear in fixed places: nothing else in the window moves.
"""

from __future__ import annotations

import time

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

from core.clock import RealTimeClock
from core.types import RobotState
from gui.app import create_window, dispose
from gui.controller import HALTED, TELEOP
from gui.widgets import open_questions
from robot_drivers.fake import SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from supervisor_helpers import IMAGE, RATE_HZ, LoggingArm

pytestmark = pytest.mark.timeout(300)

OBJECT_WIDTH = 0.4  # the opening at which the fingers meet the object


class GraspingArm(LoggingArm):
    """Fingers that stop on an object: told to close, they measure ``OBJECT_WIDTH`` open (until homed)."""

    def get_state(self) -> RobotState:
        state = super().get_state()
        if state.gripper < OBJECT_WIDTH:
            return RobotState(state.host_time, state.ee_pose, OBJECT_WIDTH, state.joint_positions)
        return state


def _factory():
    def build():
        arm = SafeArm(GraspingArm(home_s=0.3), SafetyConfig(watchdog_timeout=0.5))
        cameras = {name: SyntheticCamera(name, IMAGE, IMAGE, fps=RATE_HZ, seed=i)
                   for i, name in enumerate(("hand", "third"))}
        return Rig(arm, cameras, RealTimeClock(RATE_HZ), name="fake"), None

    return build


@pytest.fixture
def studio(qapp, tmp_path):
    controller, window = create_window(_factory(), tmp_path / "data", tmp_path / "runs")
    window.show()
    window.activateWindow()
    deadline = time.monotonic() + 30
    while controller.mode != TELEOP and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.01)
    assert controller.mode == TELEOP, list(window.messages.history)
    yield controller, window
    dispose(controller, window)


def _grasp(controller, window, qtbot) -> None:
    """Close the gripper with the teleop key: the fingers meet the object and it is held."""
    QTest.keyClick(window, Qt.Key.Key_G)
    qtbot.waitUntil(lambda: controller.holding_object(), timeout=5000)
    qtbot.waitUntil(lambda: controller.last_state is not None and controller.holding_object(controller.last_state),
                    timeout=5000)


def _stall(camera: SyntheticCamera) -> None:
    camera.unplug()  # the next grab fails as a disconnected USB camera's does


def test_a_stop_closes_a_pending_home_question_and_a_late_yes_does_not_home(studio, qtbot):
    controller, window = studio
    _grasp(controller, window, qtbot)
    QTest.keyClick(window, Qt.Key.Key_H)  # Home: the gripper holds something, so the window asks first
    qtbot.waitUntil(lambda: controller.home_question is not None and controller.home_question.isVisible(),
                    timeout=3000)
    question = controller.home_question
    yes = next(b for b in question.buttons() if b.text() == "Home")
    qtbot.mouseClick(window.rig_panel.stop_button, Qt.MouseButton.LeftButton)
    assert controller.wait_stopped(2.0)
    # The STOP closed the question unanswered: nothing is left to click, and no home was issued.
    assert not question.isVisible() and question not in open_questions() and controller.home_question is None
    yes.click()  # a click that was on its way when the STOP came lands on a closed box: still no home
    qtbot.wait(500)
    qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)
    assert controller.rig.arm.stopped
    assert controller.rig.arm.get_state().gripper == pytest.approx(OBJECT_WIDTH)  # not homed: homing opens the fingers
    assert "closed unanswered" in " ".join(t for _, t in window.messages.history)


def test_a_yes_after_a_halt_does_not_home_even_if_the_box_survived(studio, qtbot):
    """Belt and braces: a Yes counts only if no halt came since the question was asked."""
    controller, window = studio
    _grasp(controller, window, qtbot)
    QTest.keyClick(window, Qt.Key.Key_H)
    qtbot.waitUntil(lambda: controller.home_question is not None, timeout=3000)
    question = controller.home_question
    controller.supervisor.emergency_stop()  # a STOP the window's own button did not send (the teleop device's)
    assert controller.wait_stopped(2.0)
    qtbot.waitUntil(lambda: controller.home_question is None, timeout=3000)  # the halt closed it
    assert not question.isVisible()
    qtbot.wait(300)
    assert controller.rig.arm.stopped and controller.mode == HALTED


def test_a_camera_stall_after_stop_keeps_stop_first_and_names_the_camera(studio, qtbot):
    controller, window = studio
    strip = window.halt_strip
    assert strip.text == "" and not strip.take_over.isEnabled()
    qtbot.mouseClick(window.rig_panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == HALTED and strip.text != "", timeout=5000)
    assert strip.text.startswith("Arm halted: STOP")
    _stall(controller.rig.cameras["third"])
    qtbot.waitUntil(lambda: "Then:" in strip.text, timeout=10_000)
    first, later = strip.text.split("Then:", 1)
    assert "STOP" in first and "camera" not in first  # the operator's STOP stays first
    assert "camera 'third'" in later  # the stall names its camera
    assert [h.reason for h in strip.causes] == ["stop", "camera_lost"]
    # Take over and Home are beside the halt, whichever tab is shown.
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        qtbot.wait(20)
        assert strip.isVisible() and strip.take_over.isEnabled() and strip.home.isEnabled()
    # The Autonomous tab's box keeps the STOP's title and lists the stall under it.
    box = window.autonomy_panel.halt_box
    assert "STOP" in box.title() and "Then:" in box.message.text() and "camera 'third'" in box.message.text()


def test_messages_and_halts_do_not_move_the_window(studio, qtbot):
    controller, window = studio
    qtbot.wait(200)
    watched = [window.tabs, window.rig_panel, window.rig_panel.stop_button, window.record_panel.start_button]

    def places():
        return [(w.mapTo(window, w.rect().topLeft()), w.size()) for w in watched]

    before = places()
    window.messages.show_message("info", "a message " * 40)  # long enough to wrap
    qtbot.wait(50)
    assert places() == before
    window.messages.show_message("error", "an error")
    qtbot.wait(50)
    assert places() == before
    window.messages.clear()
    qtbot.mouseClick(window.rig_panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.halt_strip.text != "", timeout=5000)
    qtbot.wait(50)
    assert places() == before
    qtbot.mouseClick(window.halt_strip.take_over, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == TELEOP and window.halt_strip.text == "", timeout=5000)
    qtbot.wait(50)
    assert places() == before


def test_the_episode_just_kept_cannot_be_discarded_once_its_dataset_is_closed(studio, qtbot, tmp_path):
    controller, window = studio
    panel = window.record_panel
    panel.path_edit.setText(str(tmp_path / "data" / "demos"))
    qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.root is not None, timeout=5000)
    controller.start_episode()
    qtbot.waitUntil(lambda: controller.mode == "recording", timeout=5000)
    qtbot.wait(300)
    controller.stop_episode()
    qtbot.waitUntil(lambda: len(panel.episodes) == 1 and panel.discard_last_button.isVisible(), timeout=10_000)
    assert panel.count_bar.value() == 1  # a complete demonstration counts
    controller.close_dataset()
    qtbot.waitUntil(lambda: panel.root is None, timeout=5000)
    assert not panel.discard_last_button.isVisible() and not panel.rerecord_last_button.isVisible()
    assert panel.last_label.text() == ""
