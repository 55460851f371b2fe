#!/usr/bin/env python3
"""Desktop app responsiveness: event-loop stalls and STOP-to-halt latency, while training and while running.

Drives the real window on the real-time simulated rig (offscreen unless a
display is set):
1. records a small scripted dataset (lock-step CLI, not timed);
2. presses Train (cpu preset, --epochs) and, while the child trains, measures
   how late a 5 ms timer fires (the longest time the event loop could not run)
   and presses STOP --stops times (the arm is under teleop), releasing it in between;
3. loads the policy and presses Start (gamma lowered so it keeps running),
   then measures the same for --seconds while the policy drives the arm.

STOP-to-halt = from the click to the safety layer's latched stop having
returned from the arm driver (the sim arm then holds its joints; no command
passes afterwards).

    .venv/bin/python benchmarks/gui_latency.py
    .venv/bin/python benchmarks/gui_latency.py --epochs 3 --seconds 30 --stops 20

Targets: stall p99 <= 50 ms, STOP-to-halt <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt6.QtCore import QEventLoop, Qt  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402


def spin(app: QApplication, seconds: float, until=lambda: False) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until():
            return True
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.002)
    return until()


def press_stop(app, window, controller) -> float:
    """Click STOP, return the seconds until the arm is halted; then release it again."""
    t0 = time.perf_counter()
    QTest.mouseClick(window.rig_panel.stop_button, Qt.MouseButton.LeftButton)
    if not controller.wait_stopped(2.0):
        raise SystemExit("STOP did not halt the arm within 2 s")
    halted = time.perf_counter() - t0
    if not controller.rig.arm.stopped:
        raise SystemExit("STOP returned but the arm is not latched")
    spin(app, 0.3)
    return halted


def describe(name: str, values: np.ndarray, unit: str = "ms") -> str:
    if len(values) == 0:
        return f"{name}: no samples"
    return (f"{name}: p50 {np.median(values):.1f} {unit}, p99 {np.percentile(values, 99):.1f} {unit}, "
            f"max {values.max():.1f} {unit} (n={len(values)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="train on this dataset instead of recording a small one")
    ap.add_argument("--episodes", type=int, default=6, help="scripted episodes to record (default 6)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    ap.add_argument("--seconds", type=float, default=20.0, help="autonomous run to measure (default 20 s)")
    ap.add_argument("--stops", type=int, default=10, help="STOP presses per phase (default 10)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gui-latency-"))
    dataset = args.dataset
    if dataset is None:
        dataset = str(work / "demos")
        print(f"recording {args.episodes} scripted episodes into {dataset} ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "main.py"), "record", "--episodes", str(args.episodes),
                        "--out", dataset], check=True, stderr=subprocess.DEVNULL)

    app = QApplication.instance() or QApplication([])
    from gui.app import create_window, dispose, sim_rig_factory
    from gui.controller import AUTONOMOUS, HALTED, TELEOP
    from gui.stall_probe import StallProbe

    controller, window = create_window(sim_rig_factory(), work / "data", work / "runs")
    try:
        window.show()
        if not spin(app, 60, lambda: controller.mode == TELEOP):
            raise SystemExit(f"the rig did not connect: {list(window.messages.history)}")
        spin(app, 2.0)

        # -- while training ----------------------------------------------------------
        panel = window.train_panel
        panel.dataset_edit.setText(dataset)
        panel.epochs.setValue(args.epochs)
        probe = StallProbe()
        trained: list[str] = []
        panel.policy_trained.connect(trained.append)
        QTest.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
        t_train = time.monotonic()
        spin(app, 3.0)  # let the child get going
        probe.start()
        stops_training = []
        for _ in range(args.stops):
            stops_training.append(press_stop(app, window, controller))
            controller.take_over()
            spin(app, 1.0, lambda: controller.mode == TELEOP and not controller.rig.arm.stopped)
            spin(app, 0.5)
        if not spin(app, 3600, lambda: bool(trained) or not panel.running):
            raise SystemExit("training did not finish")
        stall_training = probe.stop()
        if not trained:
            raise SystemExit(f"training failed: {panel.result.text()}")
        print(f"training took {time.monotonic() - t_train:.0f} s", flush=True)

        # -- while running autonomously ---------------------------------------------------
        auto = window.autonomy_panel
        if not spin(app, 60, lambda: auto.policy is not None):
            raise SystemExit("the policy did not load")
        auto.gamma_slider.setValue(auto.gamma_slider.minimum())
        QTest.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
        spin(app, 5, lambda: controller.mode == AUTONOMOUS)
        probe.start()
        stops_running = []
        end = time.monotonic() + args.seconds
        interval = args.seconds / max(args.stops, 1)
        while time.monotonic() < end:
            spin(app, interval)
            if len(stops_running) < args.stops:
                if controller.mode != AUTONOMOUS:  # the policy finished or halted by itself: start it again
                    controller.resume()
                    spin(app, 2, lambda: controller.mode == AUTONOMOUS)
                stops_running.append(press_stop(app, window, controller))
                spin(app, 2, lambda: controller.mode == HALTED)
                controller.resume()
                spin(app, 2, lambda: controller.mode == AUTONOMOUS)
        stall_running = probe.stop()
        ticks = auto.similarity_plot.count
        lat = np.asarray(auto._latencies)
    finally:
        dispose(controller, window)  # not left to interpreter exit: that crashed (exit status 139)

    print("\nALT Studio GUI latency (real-time sim rig, this machine)")
    print(describe("event-loop stall while training ", stall_training))
    print(describe("STOP-to-halt while training     ", np.asarray(stops_training) * 1000))
    print(describe("event-loop stall while running  ", stall_running))
    print(describe("STOP-to-halt while running      ", np.asarray(stops_running) * 1000))
    print(f"policy ticks shown: {ticks}; lookup latency last 100 ticks: p50 {np.median(lat):.0f} ms, "
          f"max {lat.max():.0f} ms" if len(lat) else "no policy ticks")
    ok = (np.percentile(stall_training, 99) <= 50 and np.percentile(stall_running, 99) <= 50
          and max(stops_training + stops_running) <= 0.1)
    print("targets (stall p99 <= 50 ms, STOP-to-halt <= 100 ms):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
