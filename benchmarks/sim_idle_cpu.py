#!/usr/bin/env python3
"""CPU used by the real-time simulated rig while nobody moves the arm: connected-idle and halted.

Runs the supervisor (Qt-free, as the desktop app drives it) on the real-time
simulated rig at the app's image size, with no teleop device, and reads the
CPU time (utime + stime from /proc) of this process (split into the physics
thread and the rest: control loop, capture threads) and of the render
processes, and the images the cameras drew (``SimCamera.renders``, per second,
both cameras; each camera delivers 15 frames a second whether it draws them or
not), over a window of --seconds, in two states:

* ``idle``: connected, teleoperation mode, the scene reset (mug on the table), nobody touching anything;
* ``halted``: after STOP (the arm latched, the monitor loop keeps the previews live).

Each state is measured --runs times; the medians are printed, in percent of
one core. A figure depends on the machine and its load: compare before and
after on the same machine, in the same minute.

    .venv/bin/python benchmarks/sim_idle_cpu.py
    .venv/bin/python benchmarks/sim_idle_cpu.py --runs 5 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_drivers.factory import make_rig  # noqa: E402
from supervisor import HALTED, TELEOP, Supervisor  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(stat_path: str) -> float:
    """utime + stime of a process or thread, in seconds."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _threads() -> dict[int, str]:
    """Native thread id -> Python thread name (Python does not name its threads in /proc)."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def _children() -> list[int]:
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def sample() -> dict[str, float]:
    """Cumulative CPU seconds: the physics thread, the rest of this process, the render processes."""
    total = _cpu_s("/proc/self/stat")
    physics = 0.0
    for tid, name in _threads().items():
        if name == "sim-physics":
            try:
                physics += _cpu_s(f"/proc/self/task/{tid}/stat")
            except OSError:
                pass
    render = 0.0
    for pid in _children():
        try:
            render += _cpu_s(f"/proc/{pid}/stat")
        except OSError:
            pass
    return {"physics": physics, "app (other threads)": total - physics, "render processes": render}


def _renders(rig) -> int:
    return sum(getattr(camera, "renders", 0) for camera in rig.cameras.values())


def measure(seconds: float, rig) -> dict[str, float]:
    """Percent of one core used by each part over ``seconds``, and the renders drawn per second."""
    before, renders, t0 = sample(), _renders(rig), time.monotonic()
    time.sleep(seconds)
    after, t1 = sample(), time.monotonic()
    shares = {k: 100.0 * (after[k] - before[k]) / (t1 - t0) for k in before}
    shares["total"] = sum(shares.values())
    shares["renders/s"] = (_renders(rig) - renders) / (t1 - t0)
    return shares


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measurements per state (the median is printed)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measurement (s)")
    parser.add_argument("--settle", type=float, default=2.0, help="wait before measuring a state (s)")
    parser.add_argument("--image-size", type=int, default=128, help="camera image size (the app's is 128)")
    args = parser.parse_args()

    sup = Supervisor(lambda: (make_rig("sim", clock="realtime", image_size=args.image_size), None))
    results: dict[str, list[dict[str, float]]] = {"idle": [], "halted": []}
    try:
        if not sup.connect_rig().wait(120) or not wait_until(lambda: sup.mode == TELEOP, 60):
            sys.exit("the simulated rig did not connect")
        if sup.reset_scene(0, training_index=0).refused:
            sys.exit("the scene reset was refused")
        time.sleep(args.settle)
        for _ in range(args.runs):
            results["idle"].append(measure(args.seconds, sup.rig))
        sup.emergency_stop()
        if not wait_until(lambda: sup.mode == HALTED, 10):
            sys.exit("STOP did not halt the rig")
        time.sleep(args.settle)
        for _ in range(args.runs):
            results["halted"].append(measure(args.seconds, sup.rig))
    finally:
        sup.shutdown()

    load = os.getloadavg()[0]
    print(f"CPU of the real-time simulated rig, % of one core (median of {args.runs} x {args.seconds:g} s; "
          f"{os.cpu_count()} cores, load average {load:.1f})")
    keys = list(results["idle"][0])
    print(f"{'state':8s}" + "".join(f"{k:>22s}" for k in keys))
    for state, runs in results.items():
        print(f"{state:8s}" + "".join(f"{statistics.median(r[k] for r in runs):22.1f}" for k in keys))


if __name__ == "__main__":
    main()
