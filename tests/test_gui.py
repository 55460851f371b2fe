"""The desktop app driven through its real widgets, offscreen, on the real-time simulated rig.

The module follows an operator's day in order: connect, teleoperate, record two
episodes, train from the button, run the policy, STOP, an OOD halt, then faults.
One window (and one simulated rig) serves the whole module; each test leaves it
in a state the next one starts from.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

from gui.app import create_window, dispose, sim_rig_factory
from gui.controller import AUTONOMOUS, HALTED, RECORDING, TELEOP
from gui.stall_probe import StallProbe
from recorder.dataset import Dataset
from recorder.idle import ORIGINALS_DIR, IdleConfig
from recording_helpers import fill_disk_on_new_episodes

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def studio(qapp, tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    controller, window = create_window(sim_rig_factory(image_size=48), root / "data", root / "runs")
    window.show()
    window.activateWindow()
    deadline = time.monotonic() + 60
    while controller.mode != TELEOP and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.01)
    assert controller.mode == TELEOP, list(window.messages.history)
    yield controller, window, root
    dispose(controller, window)


def _click(qtbot, button, timeout: int = 10_000) -> None:
    """Click ``button`` once the window shows it enabled. The supervisor's mode changes on its own thread and the
    window enables its buttons when it is told, a moment later: a click before then is a click on a disabled
    button, which does nothing (a test that then waits for what the click does times out)."""
    qtbot.waitUntil(lambda: button.isVisible() and button.isEnabled(), timeout=timeout)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _z(controller) -> float:
    return float(controller.rig.arm.get_state().ee_pose.position[2])


def test_connect_shows_live_previews_and_arm_state(studio, qtbot):
    controller, window, _ = studio
    panel = window.rig_panel
    shown = {name: view.frames_shown for name, view in panel.previews.items()}
    qtbot.waitUntil(lambda: all(view.frames_shown >= shown[name] + 5 for name, view in panel.previews.items()),
                    timeout=5000)
    assert set(panel.previews) == {"hand", "third"}
    assert all(light.state == "ok" for light in panel.camera_lights.values())
    qtbot.waitUntil(lambda: "x " in panel.arm_state.text(), timeout=3000)
    assert "gripper" in panel.arm_state.text()
    # Where the mug stands stays in view (a message would fade), with the rig's hint on grasping it by hand.
    assert "mug at x" in panel.scene_label.text() and "handle" in panel.task_hint.text()


def test_keyboard_teleop_moves_the_arm_up_and_stops_on_release(studio, qtbot):
    controller, window, _ = studio
    start = _z(controller)
    QTest.keyPress(window, Qt.Key.Key_R)
    qtbot.waitUntil(lambda: _z(controller) > start + 0.02, timeout=5000)
    QTest.keyRelease(window, Qt.Key.Key_R)
    qtbot.wait(400)
    settled = _z(controller)
    qtbot.wait(400)
    assert abs(_z(controller) - settled) < 0.005  # key up: the target stays put
    assert controller.keyboard.held == frozenset()


def _record_one(controller, window, qtbot, key=Qt.Key.Key_W, hold_ms=1200, move_m=0.04):
    """Record one episode, ``key`` held for ``hold_ms`` and until the arm has moved ``move_m`` (a loaded machine
    ticks the control loop fewer times in the same wall time)."""
    panel = window.record_panel
    before = len(panel.episodes)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == RECORDING, timeout=5000)
    start = np.array(controller.rig.arm.get_state().ee_pose.position)
    QTest.keyPress(window, key)
    qtbot.wait(hold_ms)
    _wait_moved(controller, window, qtbot, start, move_m, key)
    QTest.keyRelease(window, key)
    qtbot.wait(300)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.episodes) == before + 1, timeout=10000)
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=5000)


def _wait_moved(controller, window, qtbot, start, move_m: float, key, timeout_s: float = 20.0) -> None:
    """Wait until the arm has moved ``move_m`` from ``start``; if it has not in ``timeout_s``, fail saying what the
    keys, the mode, the arm and the window's focus were (a key held that does not move the arm is a lost command)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        moved = float(np.linalg.norm(np.array(controller.rig.arm.get_state().ee_pose.position) - start))
        if moved >= move_m:
            return
        seen.append((controller.mode, tuple(sorted(controller.keyboard.held))))
        qtbot.wait(50)
    arm = controller.rig.arm
    app = window.windowHandle()
    pytest.fail(f"{key.name} held {timeout_s:g} s and the arm moved {moved * 1000:.1f} mm: mode {controller.mode}, "
                f"keys held {sorted(controller.keyboard.held)}, arm stopped {arm.stopped}, safety "
                f"{getattr(arm, 'counters', None)}, focus {type(window.focusWidget()).__name__}, window active "
                f"{window.isActiveWindow()} ({app.isActive() if app is not None else None}), "
                f"first/last seen {seen[:1]} {seen[-1:]}, messages {list(window.messages.history)[-5:]}")


def test_record_two_episodes_and_keep_them(studio, qtbot):
    controller, window, root = studio
    panel = window.record_panel
    panel.path_edit.setText(str(root / "data" / "demos"))
    qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.root is not None, timeout=5000)
    assert not panel.stop_button.isEnabled()

    qtbot.mouseClick(panel.place_button, Qt.MouseButton.LeftButton)  # training spot 0
    qtbot.wait(500)
    _record_one(controller, window, qtbot, Qt.Key.Key_W)
    assert "Episode 0 kept" in panel.last_label.text()
    qtbot.mouseClick(panel.place_button, Qt.MouseButton.LeftButton)
    qtbot.wait(500)
    _record_one(controller, window, qtbot, Qt.Key.Key_F)

    assert panel.table.rowCount() == 2
    assert panel.count_bar.value() == 2 and panel.count_bar.maximum() == 30
    with Dataset.open(root / "data" / "demos") as dataset:
        episodes = dataset.episodes()
        assert [e.index for e in episodes] == [0, 1]
        assert all(e.length >= 10 and e.end_reason == "stop_button" for e in episodes)
        states = dataset.load_episode(0).states
        assert states[-1, 0] - states[0, 0] > 0.03  # W moved the arm forward while recording
        assert dataset.load_episode(1).states[-1, 2] < dataset.load_episode(1).states[0, 2] - 0.03


def _answer(qtbot, question, text: str) -> None:
    """Click the button labelled ``text`` of an open (non-blocking) question box."""
    qtbot.waitUntil(lambda: question.isVisible(), timeout=3000)
    button = next(b for b in question.buttons() if b.text().replace("&", "") == text)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_place_as_in_episode_k_restores_that_episodes_scene(studio, qtbot):
    controller, window, root = studio
    panel, browser = window.record_panel, window.record_panel.browser
    control = controller.rig.scene_control()
    with Dataset.open(root / "data" / "demos") as dataset:
        stored = dataset.episode(0).extra["scene"]
    assert control.record() != stored  # the scene is episode 1's now
    panel.table.select_episode(0)
    qtbot.waitUntil(lambda: browser.episode is not None and browser.episode.index == 0, timeout=5000)
    assert browser.place_button.isVisible()
    qtbot.mouseClick(browser.place_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: control.record() == stored, timeout=10_000)
    qtbot.waitUntil(lambda: "scene of episode 0 restored" in window.messages.text, timeout=5000)
    assert controller.mode == TELEOP


def test_next_episode_releases_homes_and_places_the_next_spot(studio, qtbot):
    controller, window, _ = studio
    panel = window.record_panel
    control = controller.rig.scene_control()
    QTest.keyPress(window, Qt.Key.Key_F)  # move away from home first
    qtbot.wait(600)
    QTest.keyRelease(window, Qt.Key.Key_F)
    assert panel.place_button.text() == "Reset to training scene 2"
    qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: (control.record() or {}).get("training_index") == 2, timeout=15_000)
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=5000)
    state = controller.rig.arm.get_state()
    assert state.gripper > 0.9  # released


def test_an_idle_episode_warns_and_trimming_keeps_the_original(studio, qtbot):
    controller, window, root = studio
    panel = window.record_panel
    panel.idle_config = IdleConfig(min_stretch_s=1.5, margin_s=0.2)  # an operator's 8 s, shortened
    before = [e.index for e in panel.episodes]
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == RECORDING, timeout=5000)
    qtbot.waitUntil(lambda: panel.warning.text().startswith("idle:"), timeout=10_000)  # nothing moves
    QTest.keyPress(window, Qt.Key.Key_W)
    qtbot.wait(800)
    QTest.keyRelease(window, Qt.Key.Key_W)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.episodes) == len(before) + 1, timeout=10_000)
    idle = panel.episodes[-1].index
    qtbot.waitUntil(lambda: panel.trim_button.isVisible(), timeout=3000)
    assert "idle" in panel.last_label.text()
    with Dataset.open(root / "data" / "demos") as dataset:
        original = dataset.load_episode(idle)
        original_states = original.states.copy()
    qtbot.mouseClick(panel.trim_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: idle not in [e.index for e in panel.episodes] and len(panel.episodes) == len(before) + 1,
                    timeout=15_000)
    trimmed = panel.episodes[-1]
    assert trimmed.length < original.info.length and trimmed.extra["trimmed_from"]["episode"] == idle
    aside = root / "data" / "demos" / trimmed.extra["trimmed_from"]["original"]
    assert aside.parent.name == ORIGINALS_DIR and (aside / "meta.json").is_file()
    with np.load(aside / "steps.npz", allow_pickle=False) as arrays:  # the original, intact
        assert np.array_equal(arrays["state"], original_states)
    controller.delete_episode(trimmed.index)  # leave the dataset as the next tests expect it
    qtbot.waitUntil(lambda: [e.index for e in panel.episodes] == before, timeout=5000)


def test_discard_or_rerecord_the_episode_just_kept(studio, qtbot):
    controller, window, root = studio
    panel = window.record_panel
    _record_one(controller, window, qtbot, Qt.Key.Key_A, hold_ms=500)
    new = panel.episodes[-1].index  # indices are never reused: whatever came and went before, it is a new one
    assert [e.index for e in panel.episodes] == [0, 1, new] and new >= 2
    qtbot.mouseClick(panel.discard_last_button, Qt.MouseButton.LeftButton)  # a kept episode: it asks first
    qtbot.waitUntil(lambda: panel.discard_question is not None, timeout=3000)
    _answer(qtbot, panel.discard_question, "No")
    qtbot.waitUntil(lambda: panel.discard_question is None, timeout=3000)
    assert [e.index for e in panel.episodes] == [0, 1, new] and panel.discard_last_button.isVisible()
    qtbot.mouseClick(panel.discard_last_button, Qt.MouseButton.LeftButton)  # discard after the fact
    qtbot.waitUntil(lambda: panel.discard_question is not None, timeout=3000)
    _answer(qtbot, panel.discard_question, "Delete")
    qtbot.waitUntil(lambda: [e.index for e in panel.episodes] == [0, 1], timeout=5000)

    _record_one(controller, window, qtbot, Qt.Key.Key_D, hold_ms=500)
    qtbot.mouseClick(panel.rerecord_last_button, Qt.MouseButton.LeftButton)  # delete it and record again
    qtbot.waitUntil(lambda: controller.mode == RECORDING, timeout=5000)
    qtbot.waitUntil(lambda: [e.index for e in panel.episodes] == [0, 1], timeout=3000)  # the list comes by signal
    qtbot.wait(500)
    qtbot.mouseClick(panel.discard_button, Qt.MouseButton.LeftButton)  # and discard the running one
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=5000)
    # the mode is read from the session at once; the panel hears the outcome through a queued signal
    qtbot.waitUntil(lambda: "discarded" in panel.last_label.text(), timeout=3000)
    with Dataset.open(root / "data" / "demos") as dataset:
        assert dataset.episode_indices() == [0, 1] and not dataset.interrupted()


def test_episode_browser_scrubs_both_views_and_plots(studio, qtbot):
    controller, window, _ = studio
    panel = window.record_panel
    browser = panel.browser
    splits = (window.split.sizes(), panel.split.sizes())
    panel.table.select_episode(1)
    qtbot.waitUntil(lambda: browser.episode is not None and browser.episode.index == 1, timeout=5000)
    qtbot.waitUntil(lambda: all(v.has_image() for v in browser.views.values()), timeout=5000)
    browser.slider.setValue(browser.episode.length - 1)
    last = browser.episode.length - 1
    qtbot.waitUntil(lambda: all(f"frame {last}" in v.caption for v in browser.views.values()), timeout=5000)
    assert (window.split.sizes(), panel.split.sizes()) == splits  # selecting an episode moves no splitter
    assert f"frame {last} " in browser.position.text()  # the header and the captions count alike
    assert browser.replay_button.isEnabled() and browser.delete_button.isEnabled()
    # Millimetres and percent have an axis each.
    assert browser.gripper_plot.getViewBox().viewRange()[1][1] <= 110
    qtbot.mouseClick(browser.delete_button, Qt.MouseButton.LeftButton)  # asks; No keeps the episode
    qtbot.waitUntil(lambda: browser.delete_question is not None, timeout=3000)
    _answer(qtbot, browser.delete_question, "No")
    qtbot.waitUntil(lambda: browser.delete_question is None, timeout=3000)
    assert browser.episode is not None and [e.index for e in panel.episodes] == [0, 1]


def test_replay_drives_the_arm_through_the_episode(studio, qtbot):
    controller, window, root = studio
    browser = window.record_panel.browser
    assert browser.episode is not None and browser.episode.index == 1
    with Dataset.open(root / "data" / "demos") as dataset:
        recorded = dataset.load_episode(1).actions
    panel = window.record_panel
    splits = (window.split.sizes(), panel.split.sizes())
    plot_at = browser.pose_plot.mapTo(window, browser.pose_plot.rect().topLeft())
    qtbot.mouseClick(browser.replay_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == "replay", timeout=10_000)
    qtbot.waitUntil(lambda: browser.replay_progress.isVisible() and browser.replay_progress.value() > 0,
                    timeout=10_000)  # the browser says the arm is replaying, and how far
    assert (window.split.sizes(), panel.split.sizes()) == splits  # a replay moves no splitter
    assert browser.pose_plot.mapTo(window, browser.pose_plot.rect().topLeft()) == plot_at  # nor the plots
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=30_000)
    qtbot.waitUntil(lambda: not browser.replay_progress.isVisible(), timeout=3000)
    qtbot.waitUntil(lambda: any("replayed episode 1" in text for _, text in window.messages.history), timeout=3000)
    sent = controller.rig.arm.last_sent
    assert sent is not None
    # The arm was driven down as recorded (F held): it ends near the recorded last target.
    assert abs(float(controller.rig.arm.get_state().ee_pose.position[2]) - float(recorded[-1, 2])) < 0.02


def test_train_a_tiny_policy_from_the_button_without_freezing(studio, qtbot):
    controller, window, _ = studio
    panel = window.train_panel
    window.tabs.setCurrentWidget(panel)
    assert panel.dataset_edit.text().endswith("demos")  # the recording dataset is preselected
    panel.epochs.setValue(2)
    panel.image_size.setValue(32)
    panel.stride.setValue(1)
    probe = StallProbe()
    probe.start()
    with qtbot.waitSignal(panel.policy_trained, timeout=300_000) as trained:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
        assert panel.cancel_button.isEnabled() and not panel.train_button.isEnabled()
    stall_ms = probe.stop().max()
    assert Path(trained.args[0], "manifest.json").is_file()
    assert panel.loss_plot.count >= 2 and panel.progress.value() == 1000
    assert "gamma 0." in panel.result.text() or "gamma 1." in panel.result.text()  # gamma is shown at the end
    assert stall_ms < 500, f"the event loop stalled {stall_ms:.0f} ms while training"
    auto = window.autonomy_panel
    qtbot.waitUntil(lambda: auto.policy is not None, timeout=30_000)  # picked and loaded automatically
    assert Path(auto.picker.currentData()).resolve() == Path(trained.args[0]).resolve()


def test_training_can_be_cancelled_and_saves_nothing(studio, qtbot):
    controller, window, root = studio
    panel = window.train_panel
    before = set((root / "runs" / "policies").iterdir())
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.progress.value() > 0, timeout=60_000)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)  # asks first; No trains on
    qtbot.waitUntil(lambda: panel.cancel_question is not None, timeout=3000)
    _answer(qtbot, panel.cancel_question, "No")
    qtbot.waitUntil(lambda: panel.cancel_question is None, timeout=3000)
    assert panel.running and "cancelling" not in panel.stage.text()
    with qtbot.waitSignal(panel.worker.cancelled, timeout=60_000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: panel.cancel_question is not None, timeout=3000)
        _answer(qtbot, panel.cancel_question, "Cancel training")
    qtbot.waitUntil(lambda: "cancelled" in panel.stage.text(), timeout=3000)
    assert panel.train_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert set((root / "runs" / "policies").iterdir()) == before


def test_a_policy_arriving_during_a_recording_leaves_it_running_and_kept(studio, qtbot):
    """Training finishing (the window then loads the new policy by itself) must not touch the recording."""
    controller, window, root = studio
    panel, auto = window.record_panel, window.autonomy_panel
    before = len(panel.episodes)
    policy_path = auto.picker.currentData()
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == RECORDING, timeout=5000)
    loaded = auto.policy
    window.train_panel.policy_trained.emit(policy_path)  # as when a training run finishes
    qtbot.waitUntil(lambda: auto.policy is not None and auto.policy is not loaded, timeout=30_000)
    qtbot.wait(300)
    assert controller.mode == RECORDING, "loading the policy ended the recording"
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.episodes) == before + 1, timeout=10_000)
    kept = panel.episodes[-1]
    assert kept.end_reason == "stop_button" and kept.length >= 3
    qtbot.mouseClick(panel.discard_last_button, Qt.MouseButton.LeftButton)  # leave the dataset as it was
    qtbot.waitUntil(lambda: panel.discard_question is not None, timeout=3000)
    _answer(qtbot, panel.discard_question, "Delete")
    qtbot.waitUntil(lambda: len(panel.episodes) == before, timeout=5000)


def test_the_gamma_slider_reaches_the_policy_only_through_the_supervisor(studio, qtbot, monkeypatch):
    """Gamma is a supervisor command like every other: letting go of the slider issues ``set_gamma``, and the policy's
    threshold changes on the control thread (where ``policy.set_gamma`` logs it), never from the window."""
    controller, window, _ = studio
    auto = window.autonomy_panel
    window.tabs.setCurrentWidget(auto)
    policy, sup = auto.policy, controller.supervisor
    qtbot.waitUntil(lambda: sup.policy is policy, timeout=5000)
    issued, applied = [], []
    submit, set_gamma = sup._submit, policy.set_gamma

    def spy_submit(name, *args):
        issued.append((name, args))
        return submit(name, *args)

    def spy_set_gamma(value, by="operator"):
        applied.append((threading.current_thread().name, value))
        return set_gamma(value, by=by)

    monkeypatch.setattr(sup, "_submit", spy_submit)
    monkeypatch.setattr(policy, "set_gamma", spy_set_gamma)
    slider = auto.gamma_slider
    before, changes = policy.gamma, len(policy.gamma_changes)
    target = slider.value() + 20 if slider.value() + 20 <= slider.maximum() else slider.value() - 20
    slider.setSliderDown(True)  # dragging: shown, not applied
    slider.setValue(target)
    assert auto.gamma_label.text().endswith("?") and issued == [] and policy.gamma == before
    slider.setSliderDown(False)  # let go
    if auto.gamma_question is not None:  # below the calibrated value: confirm
        _answer(qtbot, auto.gamma_question, "Lower gamma")
        qtbot.waitUntil(lambda: auto.gamma_question is None, timeout=3000)
    qtbot.waitUntil(lambda: policy.gamma == pytest.approx(target / 1000), timeout=3000)
    assert [name for name, _ in issued] == ["set_gamma"] and issued[0][1][0] == pytest.approx(target / 1000)
    assert applied == [("control", pytest.approx(target / 1000))]  # on the supervisor's control thread
    assert [c["to"] for c in policy.gamma_changes[changes:]] == [pytest.approx(target / 1000)]
    assert "window" in policy.gamma_changes[-1]["by"] and auto.gamma_label.text() == f"{target / 1000:.3f}"


def test_autonomy_shows_live_and_retrieved_frames_and_similarity(studio, qtbot):
    controller, window, _ = studio
    auto = window.autonomy_panel
    window.tabs.setCurrentWidget(auto)
    auto.gamma_slider.setValue(auto.gamma_slider.minimum())  # run, whatever this tiny policy thinks
    _answer(qtbot, auto.gamma_question, "Lower gamma")  # below the calibrated value: it asks first
    qtbot.waitUntil(lambda: auto.gamma_question is None, timeout=3000)
    qtbot.waitUntil(lambda: auto.policy.gamma == pytest.approx(0.5), timeout=3000)  # the supervisor set it
    assert auto.policy.gamma_changes[-1]["below_calibrated"]  # and the change is logged
    # This policy knows three short keyboard demonstrations: its per-view gate, its grasp check, its progress
    # watchdog and its time limit would stop it within seconds. These tests are about the window, so they run
    # it on similarity alone.
    auto.policy.view_thresholds.clear()
    auto.policy.grasp_check = None
    auto.policy.config = replace(auto.policy.config, stall_seconds=3600.0, time_limit_factor=1000.0)
    probe = StallProbe()
    probe.start()
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS, timeout=5000)
    start = auto.similarity_plot.count
    qtbot.waitUntil(lambda: auto.similarity_plot.count >= start + 15 or controller.halt is not None, timeout=20_000)
    assert controller.halt is None, controller.halt.message
    stall_ms = probe.stop().max()
    assert all(v.has_image() for v in auto.live.values())
    qtbot.waitUntil(lambda: all(v.has_image() for v in auto.retrieved.values()), timeout=5000)
    assert all("demo" in v.caption and "frame" in v.caption for v in auto.retrieved.values())
    assert all(0.0 < s <= 1.0 + 1e-6 for s in auto.similarity_plot.values())
    assert "lookup" in auto.latency_label.text()
    assert stall_ms < 500, f"the event loop stalled {stall_ms:.0f} ms while running"


def test_an_aligned_replay_shows_its_phase_offset_and_target_frame(studio, qtbot):
    """The aligned method's line and target picture (policy/runner.py ReplayState; the method itself is tested
    on the simulated rig in test_alignment.py)."""
    from policy.runner import ReplayState

    controller, window, _ = studio
    auto = window.autonomy_panel
    episode = int(auto.policy.database.episodes[0])
    auto._show_replay(ReplayState(episode, 3, 6, np.array([0.02, -0.01]), 0.5))
    text = auto.alignment_label.text()
    assert text.startswith("approach") and f"demo {episode} frame 3" in text and "its frame 6" in text
    assert "correction 2.2 cm (x +2.0, y -1.0)" in text and "remaining 1.1 cm" in text
    qtbot.waitUntil(auto.target_view.has_image, timeout=5000)  # the demonstration's frame it aligns to
    assert f"demo {episode}, frame 6" in auto.target_view.caption
    auto._show_replay(ReplayState(episode, 8, 6, np.array([0.02, -0.01]), 1.0))
    assert auto.alignment_label.text().startswith("replay") and "remaining 0.0 cm" in auto.alignment_label.text()


def test_enter_while_the_policy_runs_does_not_start_a_recording(studio, qtbot):
    controller, window, _ = studio
    assert controller.mode == AUTONOMOUS
    episodes = len(window.record_panel.episodes)
    QTest.keyClick(window, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "only while teleoperating" in window.messages.text, timeout=3000)
    qtbot.wait(300)
    assert controller.mode == AUTONOMOUS
    assert len(window.record_panel.episodes) == episodes


def test_stop_halts_the_arm_within_100_ms(studio, qtbot):
    controller, window, _ = studio
    auto = window.autonomy_panel
    assert controller.mode == AUTONOMOUS
    arm = controller.rig.arm
    clicked = time.perf_counter()
    qtbot.mouseClick(auto.stop_button, Qt.MouseButton.LeftButton)
    assert controller.wait_stopped(1.0)
    halted_s = time.perf_counter() - clicked
    assert arm.stopped
    assert halted_s < 0.1, f"STOP took {1000 * halted_s:.0f} ms to halt the arm"
    held = controller.rig.arm.get_state().ee_pose.position
    qtbot.wait(300)
    drift = np.linalg.norm(controller.rig.arm.get_state().ee_pose.position - held)
    assert drift < 0.002, f"the hand moved {1000 * drift:.1f} mm after STOP"
    commands = arm.counters.commands
    qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)
    qtbot.wait(300)
    assert arm.counters.commands == commands  # nothing was sent after STOP
    assert auto.halt_box.isVisible() and "STOP" in auto.halt_box.title()
    assert "STOP" in window.halt_strip.text and window.halt_strip.take_over.isEnabled()


def test_space_and_escape_are_stop_too(studio, qtbot):
    controller, window, _ = studio
    auto = window.autonomy_panel
    for key in (Qt.Key.Key_Space, Qt.Key.Key_Escape):
        _click(qtbot, auto.halt_resume)
        qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS and not controller.rig.arm.stopped, timeout=5000)
        QTest.keyClick(window, key)
        assert controller.wait_stopped(1.0)
        assert controller.rig.arm.stopped
        qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)


def test_pause_holds_the_arm_and_resume_goes_on(studio, qtbot):
    controller, window, _ = studio
    auto = window.autonomy_panel
    _click(qtbot, auto.halt_resume)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS, timeout=20_000)
    _click(qtbot, auto.pause_button)
    # generous: a loaded machine (a training beside the suite) once took longer than 5 s to show it
    try:
        qtbot.waitUntil(lambda: controller.mode == HALTED and auto.halt_box.isVisible(), timeout=20_000)
    except qtbot.TimeoutError:  # say which half did not come
        pytest.fail(f"20 s after Pause: mode {controller.mode}, halt box visible {auto.halt_box.isVisible()} "
                    f"(title {auto.halt_box.title()!r}), arm stopped {controller.rig.arm.stopped}, autonomy tab "
                    f"shown {auto.isVisible()}; messages {list(window.messages.history)[-5:]}")
    assert controller.rig.arm.stopped and auto.halt_box.title() == "Paused"
    ticks = auto.similarity_plot.count
    _click(qtbot, auto.resume_button)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS and auto.similarity_plot.count > ticks + 3,
                    timeout=10_000)
    assert not controller.rig.arm.stopped
    _click(qtbot, auto.pause_button)
    qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)


def test_ood_halts_the_arm_and_shows_why(studio, qtbot):
    controller, window, _ = studio
    auto = window.autonomy_panel
    _click(qtbot, auto.halt_resume)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS, timeout=5000)
    start = auto.similarity_plot.count
    qtbot.waitUntil(lambda: auto.similarity_plot.count >= start + 10, timeout=10_000)
    # Gamma just under what this tiny policy scores on the scene: it runs on, and noise must stop it.
    normal = min(auto.similarity_plot.values()[-10:])
    auto.gamma_slider.setValue(int(1000 * (normal - 0.02)))
    if auto.gamma_question is not None:  # below the calibrated value: confirm
        _answer(qtbot, auto.gamma_question, "Lower gamma")
        qtbot.waitUntil(lambda: auto.gamma_question is None, timeout=3000)
    qtbot.waitUntil(lambda: auto.policy.gamma == pytest.approx(int(1000 * (normal - 0.02)) / 1000), timeout=3000)
    qtbot.wait(500)
    assert controller.mode == AUTONOMOUS
    with qtbot.waitSignal(controller.halted, timeout=15_000,
                          check_params_cb=lambda halt: halt.reason == "ood") as halted:
        qtbot.mouseClick(auto.drill_noise, Qt.MouseButton.LeftButton)  # noise over the third camera
    halt = halted.args[0]
    assert controller.rig.arm.stopped
    assert halt.evidence.ood_evidence.similarity < auto.policy.gamma
    assert "Out of distribution" in auto.halt_box.title() or "Out of distribution" in auto.halt_text.text()
    assert "Out of distribution" in window.halt_strip.text and "gamma" in window.halt_strip.text
    assert all(v.has_image() for v in auto.halt_live.values())  # the frames that triggered it
    noise = auto.halt_live["third"]._image
    assert noise is not None
    qtbot.mouseClick(auto.drill_clear, Qt.MouseButton.LeftButton)
    _click(qtbot, auto.halt_teleop)  # take over with teleop
    qtbot.waitUntil(lambda: controller.mode == TELEOP and not controller.rig.arm.stopped, timeout=5000)
    # The halt is resolved: its box goes, and the "live" views are live under teleop too.
    qtbot.waitUntil(lambda: not auto.halt_box.isVisible() and auto.views.isVisible(), timeout=5000)
    shown = auto.live["hand"].frames_shown
    qtbot.waitUntil(lambda: auto.live["hand"].frames_shown >= shown + 5, timeout=5000)
    assert window.halt_strip.text == "" and not window.halt_strip.take_over.isEnabled()


def test_an_ood_stop_becomes_a_correction_the_next_run_retrieves(studio, qtbot):
    """OOD halt -> Take over & record -> keep -> Add corrections -> the new version is loaded and selected, and
    the next run, in the same situation, retrieves frames of the correction."""
    controller, window, root = studio
    auto, record = window.autonomy_panel, window.record_panel
    window.tabs.setCurrentWidget(auto)
    version = int(auto.policy.info.get("version", 1))
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS, timeout=5000)
    with qtbot.waitSignal(controller.halted, timeout=15_000, check_params_cb=lambda halt: halt.reason == "ood"):
        qtbot.mouseClick(auto.drill_noise, Qt.MouseButton.LeftButton)  # stays covered while the operator corrects
    qtbot.waitUntil(lambda: auto.halt_record.isVisible(), timeout=5000)
    kept_before = len(record.episodes)
    demos_before = record.count_bar.value()
    _click(qtbot, auto.halt_record)
    qtbot.waitUntil(lambda: controller.mode == RECORDING and not controller.rig.arm.stopped, timeout=5000)
    QTest.keyPress(window, Qt.Key.Key_R)
    qtbot.wait(800)
    QTest.keyRelease(window, Qt.Key.Key_R)
    qtbot.mouseClick(record.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(record.episodes) == kept_before + 1, timeout=10_000)
    correction = record.episodes[-1]
    assert correction.extra["intervention"]["halt_reason"] == "ood"
    # A correction is no demonstration: the count toward the target stays, and says what else the dataset holds.
    assert record.count_bar.value() == demos_before == sum(e.is_demonstration for e in record.episodes)
    assert "1 correction" in record.count_bar.format()

    qtbot.mouseClick(auto.add_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: auto.policy is not None and int(auto.policy.info.get("version", 1)) == version + 1,
                    timeout=60_000)
    assert Path(auto.picker.currentData()).resolve() == Path(auto.policy.info["path"]).resolve()
    assert correction.index in auto.policy.info["episodes"]

    retrieved = []
    controller.autonomy_event.connect(lambda event: retrieved.append(event.retrieval.matches[0].episode))
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=5000)
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(retrieved) >= 1, timeout=10_000)
    assert retrieved[0] == correction.index, f"the run retrieved demos {retrieved}, not the correction"
    controller.emergency_stop()
    qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)
    qtbot.waitUntil(lambda: "v2" in auto.trials_label.text() or f"v{version + 1}" in auto.trials_label.text(),
                    timeout=10_000)  # the ledger counts this version's trials
    # the coverage map: the correction's frames are in the table and the OOD stop is covered by it
    qtbot.mouseClick(auto.coverage_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: auto.coverage_window.view.has_image(), timeout=30_000)
    found = re.search(r"\((\d+) correction episode\(s\)\), (\d+) run\(s\), (\d+) OOD stop\(s\), (\d+) covered",
                      auto.coverage_window.status.text())
    assert found and int(found[1]) == 1 and int(found[2]) >= 2 and int(found[3]) >= 1 and int(found[4]) >= 1, \
        auto.coverage_window.status.text()  # the correction, both runs' trajectories, the OOD stop it covers
    auto.coverage_window.close()
    qtbot.mouseClick(auto.drill_clear, Qt.MouseButton.LeftButton)
    controller.take_over()
    qtbot.waitUntil(lambda: controller.mode == TELEOP and not controller.rig.arm.stopped, timeout=5000)
    controller.delete_episode(correction.index)  # the later tests count the demonstrations
    qtbot.waitUntil(lambda: len(record.episodes) == kept_before, timeout=5000)


def test_stop_keys_work_in_text_and_number_fields(studio, qtbot):
    controller, window, _ = studio
    record, train = window.record_panel, window.train_panel
    for field in (record.path_edit, train.epochs):
        window.tabs.setCurrentWidget(record if field is record.path_edit else train)
        field.setFocus()
        qtbot.waitUntil(lambda: window.focusWidget() is field or field.isAncestorOf(window.focusWidget()),
                        timeout=2000)
        before = field.text() if hasattr(field, "text") else None
        focused = window.focusWidget()
        QTest.keyClick(focused, Qt.Key.Key_Space)
        assert controller.wait_stopped(1.0) and controller.rig.arm.stopped
        qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)
        if before is not None:
            assert field.text() == before  # the space was STOP, not typed
        controller.take_over()
        qtbot.waitUntil(lambda: controller.mode == TELEOP and not controller.rig.arm.stopped, timeout=5000)
        QTest.keyClick(window.focusWidget(), Qt.Key.Key_Escape)
        assert controller.wait_stopped(1.0) and controller.rig.arm.stopped
        qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=5000)
        controller.take_over()
        qtbot.waitUntil(lambda: controller.mode == TELEOP and not controller.rig.arm.stopped, timeout=5000)


def test_a_training_run_is_checked_and_named_before_it_starts(studio, qtbot, tmp_path):
    controller, window, root = studio
    panel = window.train_panel
    panel.dataset_edit.setText(str(tmp_path / "nowhere"))
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "does not exist" in panel.result.text(), timeout=2000)  # at once, not after 10 s
    assert not panel.running
    panel.dataset_edit.setText(str(root / "data" / "demos"))
    panel.name_edit.setText("my policy/../x")
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "not a folder name" in panel.result.text(), timeout=2000)
    assert not panel.running
    panel.name_edit.setText("")


def test_bad_inputs_become_messages_not_crashes(studio, qtbot, tmp_path):
    controller, window, _ = studio
    not_a_dataset = tmp_path / "file.txt"
    not_a_dataset.write_text("hello")
    window.messages.clear()
    record = window.record_panel
    record.path_edit.setText(str(not_a_dataset))
    qtbot.mouseClick(record.open_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.messages.level == "error", timeout=5000)
    assert str(not_a_dataset) in window.messages.text
    window.messages.clear()
    assert controller.mode == TELEOP  # the refused command left the arm under teleop

    broken = tmp_path / "policy"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    (broken / "config.json").write_text("{}")
    auto = window.autonomy_panel
    auto.refresh_policies(select=str(broken))
    qtbot.mouseClick(auto.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "cannot load the policy" in auto.policy_label.text(), timeout=10_000)
    assert "cannot load the policy" in window.messages.text


def test_a_full_disk_ends_the_episode_with_a_message_and_keeps_the_others(studio, qtbot):
    controller, window, root = studio
    window.messages.clear()
    panel = window.record_panel
    panel.path_edit.setText(str(root / "data" / "demos"))
    before = controller.dataset
    qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    # the supervisor opens it anew (a queued command): patch the dataset object it records into, not the old one
    qtbot.waitUntil(lambda: controller.dataset is not None and controller.dataset is not before, timeout=5000)
    qtbot.waitUntil(lambda: panel.root is not None and len(panel.episodes) == 2, timeout=5000)
    undo = fill_disk_on_new_episodes(controller.dataset, "hand")  # the image pack gets ENOSPC
    try:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "disk is full" in window.messages.text, timeout=10_000)
    finally:
        undo()
    qtbot.waitUntil(lambda: controller.mode == TELEOP, timeout=5000)
    # the mode is read from the session at once; the panel hears the outcome through a queued signal
    qtbot.waitUntil(lambda: "discarded" in panel.last_label.text(), timeout=3000)
    assert len(panel.episodes) == 2
    with Dataset.open(root / "data" / "demos") as reread:
        assert reread.episode_indices() == [0, 1]
        for index in (0, 1):
            reread.verify(index)


def test_a_lost_camera_halts_the_arm_with_a_message_and_reconnect_recovers(studio, qtbot):
    controller, window, root = studio
    window.messages.clear()
    camera = controller.rig.cameras["hand"]
    camera._renderer._process.kill()  # the device dies, as an unplugged camera does
    qtbot.waitUntil(lambda: controller.mode == HALTED, timeout=10_000)
    qtbot.waitUntil(lambda: window.messages.level == "error", timeout=5000)
    assert "camera" in window.messages.text
    # the halt names the camera, with Take over beside it (the strip hears of the halt by a queued signal, which
    # may come after the message)
    qtbot.waitUntil(lambda: "camera 'hand'" in window.halt_strip.text, timeout=5000)
    assert window.halt_strip.take_over.isEnabled()
    qtbot.waitUntil(lambda: window.rig_panel.camera_lights["hand"].state == "error", timeout=5000)
    with Dataset.open(root / "data" / "demos") as dataset:
        assert dataset.episode_indices() == [0, 1]  # kept recordings are untouched
    qtbot.mouseClick(window.rig_panel.disconnect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.rig_panel.connect_button.isEnabled(), timeout=10_000)
    assert controller.rig is None and window.rig_panel.arm_light.state == "off"
    qtbot.mouseClick(window.rig_panel.connect_button, Qt.MouseButton.LeftButton)
    # The halt was not released: the reconnected arm stays halted until the operator takes over.
    qtbot.waitUntil(lambda: controller.mode == HALTED and controller.rig is not None, timeout=60_000)
    assert controller.rig.arm.stopped
    mug = controller.rig.world.mug_pose().position
    assert np.linalg.norm(mug[:2] - [0.6, 0.0]) < 0.2 and abs(controller.rig.world.mug_height_above_table()) < 0.02
    qtbot.waitUntil(lambda: window.rig_panel.camera_lights["hand"].state == "ok", timeout=5000)
    qtbot.mouseClick(window.autonomy_panel.halt_teleop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == TELEOP and not controller.rig.arm.stopped, timeout=10_000)
