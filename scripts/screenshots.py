#!/usr/bin/env python3
"""Screenshots of each main screen of the app, in a real window (run under Xvfb by scripts/screenshots.sh).

Operator's flow on the real-time simulated rig: connect, record an episode with
the keyboard (the grasp aid on the hand view), browse it, train (mid-training
and finished, with gamma), run the policy to a finished task, an OOD stop, a
camera fault. PNGs go to --out (default screenshots/, ignored by git).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PyQt6.QtCore import QEventLoop, Qt  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="screenshots")
    ap.add_argument("--work", default="data/screenshots", help="scratch datasets and policies")
    ap.add_argument("--episodes", type=int, default=8, help="scripted episodes to train on")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--policy", help="run this policy instead of training one (no training screenshots)")
    args = ap.parse_args()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    demos = work / "scripted"
    if not (demos / "dataset.json").exists():
        print(f"recording {args.episodes} scripted episodes into {demos} ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "main.py"), "record", "--episodes", str(args.episodes),
                        "--out", str(demos)], check=True)

    app = QApplication.instance() or QApplication([])
    from gui.app import create_window, dispose, sim_rig_factory
    from gui.controller import AUTONOMOUS, HALTED, RECORDING, TELEOP

    controller, window = create_window(sim_rig_factory(), work / "data", work / "runs")
    window.resize(1600, 1000)
    window.show()

    def spin(seconds: float, until=lambda: False) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.005)
        return until()

    def shot(name: str) -> None:
        spin(0.3)
        path = out / f"{name}.png"
        window.screen().grabWindow(int(window.winId())).save(str(path))
        print(f"wrote {path}", flush=True)

    try:
        if not spin(60, lambda: controller.mode == TELEOP):
            raise SystemExit(f"the rig did not connect: {list(window.messages.history)}")
        spin(1.0)

        # 1. Record: a keyboard episode in progress, with the grasp aid drawn on the hand view.
        record = window.record_panel
        record.path_edit.setText(str(work / "data" / f"keyboard-{time.strftime('%H%M%S')}"))
        QTest.mouseClick(record.open_button, Qt.MouseButton.LeftButton)
        spin(5, lambda: record.root is not None)
        QTest.mouseClick(record.place_button, Qt.MouseButton.LeftButton)
        spin(1.0)
        QTest.mouseClick(record.start_button, Qt.MouseButton.LeftButton)
        spin(5, lambda: controller.mode == RECORDING)
        for key, hold in ((Qt.Key.Key_F, 1.6), (Qt.Key.Key_W, 0.8)):
            QTest.keyPress(window, key)
            spin(hold)
            QTest.keyRelease(window, key)
        shot("1-record-grasp-aid")
        QTest.mouseClick(record.stop_button, Qt.MouseButton.LeftButton)
        if not spin(60, lambda: record.episodes and controller.mode == TELEOP):
            raise SystemExit(f"the episode was not kept: {list(window.messages.history)[-5:]}")

        # 2. Record: the kept episode in the browser, scrubbed to the middle (pose and gripper on their own axes).
        record.table.select_episode(record.episodes[-1].index)
        spin(3, lambda: record.browser.episode is not None)
        record.browser.slider.setValue(record.browser.episode.length // 2)
        spin(1.0)
        shot("2-record-episode-browser")

        # 3-4. Train: mid-training, then finished (gamma shown).
        auto = window.autonomy_panel
        if args.policy:
            auto.select_and_load(args.policy)
        else:
            train = window.train_panel
            window.tabs.setCurrentWidget(train)
            train.dataset_edit.setText(str(demos))
            train.name_edit.setText(f"scripted-{time.strftime('%H%M%S')}")
            train.epochs.setValue(args.epochs)
            trained: list[str] = []
            train.policy_trained.connect(trained.append)
            QTest.mouseClick(train.train_button, Qt.MouseButton.LeftButton)
            spin(600, lambda: train.loss_plot.count >= 40 or not train.running)
            shot("3-train-in-progress")
            spin(3600, lambda: bool(trained) or not train.running)
            shot("4-train-finished")

        def start_policy_at_spot(seed: int) -> None:
            """The mug at training spot 3, then Start."""
            controller.reset_scene(seed, training_index=3)
            spin(2.0)
            QTest.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
            spin(20, lambda: controller.mode == AUTONOMOUS)

        # 5. Autonomous: the policy drives the arm at a training placement until the task is done.
        window.tabs.setCurrentWidget(auto)
        spin(60, lambda: auto.policy is not None)
        if controller.mode == HALTED:  # e.g. a camera that fell behind while training loaded the machine
            controller.take_over()
            spin(30, lambda: controller.mode == TELEOP)
        start_policy_at_spot(5)
        spin(3.0)
        shot("5-autonomous-running")
        done = spin(120, lambda: controller.halt is not None and controller.halt.reason == "done")
        spin(1.0)
        shot("6-task-done" if done else "6-task-not-done")

        # 7. OOD: from home, the policy runs again and noise covers the third-person camera.
        controller.home()
        spin(30, lambda: controller.mode == TELEOP)
        start_policy_at_spot(6)
        spin(1.0)
        QTest.mouseClick(auto.drill_noise, Qt.MouseButton.LeftButton)
        spin(30, lambda: auto.halt_box.isVisible())
        spin(1.5)
        shot("7-autonomous-ood-stop")

        # 7b. The coverage map (its own window): the table in 2-D, the runs, the OOD stop just made, what to record.
        auto.show_coverage()
        spin(120, lambda: auto.coverage_window.view.has_image())
        spin(0.5)
        path = out / "7b-coverage-map.png"
        auto.coverage_window.screen().grabWindow(int(auto.coverage_window.winId())).save(str(path))
        print(f"wrote {path}", flush=True)
        auto.coverage_window.close()
        QTest.mouseClick(auto.drill_clear, Qt.MouseButton.LeftButton)
        QTest.mouseClick(auto.halt_teleop, Qt.MouseButton.LeftButton)
        spin(3, lambda: controller.mode == TELEOP)

        # 8. A fault: the hand camera dies; the window says so, the arm is halted.
        controller.rig.cameras["hand"]._renderer._process.kill()
        spin(10, lambda: window.messages.level == "error")
        spin(1.0)
        shot("8-camera-lost")
    finally:
        dispose(controller, window)  # also after a failure: never a crash at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
