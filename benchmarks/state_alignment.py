#!/usr/bin/env python3
"""State at capture time: how far the stored arm state is from where the arm was when the frames were taken.

Runs the real-time simulated rig under a teleop drawing circles (0.05 m/s) and,
per control tick, compares three arm positions at the frames' capture time:
the truth (a separate 500 Hz sampler, interpolated), the observation's state
(the rig's 50 Hz history, interpolated) and the state read after the frames
(what was stored before alignment). Prints the capture lag and both errors
(p50 / p95 / max, mm).

    .venv/bin/python benchmarks/state_alignment.py --seconds 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_drivers.control import ControlLoop, TeleopSource  # noqa: E402
from robot_drivers.fake import CircleTeleop  # noqa: E402
from robot_drivers.sim.rig import SimRig, SimRigConfig  # noqa: E402
from robot_drivers.state_history import StateHistory, StatePoller  # noqa: E402


def percentiles(values_mm) -> str:
    v = np.asarray(values_mm)
    return f"p50 {np.percentile(v, 50):6.2f}  p95 {np.percentile(v, 95):6.2f}  max {v.max():6.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=10.0, help="control rate (Hz)")
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    rig = SimRig(SimRigConfig(clock="realtime", rate_hz=args.rate).with_image_size(args.image_size, args.image_size))
    truth = StateHistory(size=100_000)
    sampler = StatePoller(rig.arm.get_state, truth, 500.0, "truth")
    rows = []

    def on_tick(record):
        obs = record.observation
        if obs.state_skew != 0.0:
            rows.append((obs.capture_time, None, None, obs.latest_state.host_time))
            return
        rows.append((obs.capture_time, obs.state.ee_pose.position, obs.latest_state.ee_pose.position,
                     obs.latest_state.host_time))

    try:
        with rig:
            rig.reset(seed=0)
            sampler.start()
            ControlLoop(rig).run(TeleopSource(CircleTeleop(radius=0.04, period=5.0)), max_ticks=int(args.seconds * args.rate),
                                 on_tick=on_tick)
            sampler.stop()
    finally:
        rig.close()
    lag, aligned, unaligned, skewed = [], [], [], 0
    for capture, state, latest, read in rows:
        if state is None:
            skewed += 1
            continue
        true_state, skew = truth.at(capture)
        if skew != 0.0:
            continue  # outside the truth sampler's history
        lag.append((read - capture) * 1000)
        aligned.append(np.linalg.norm(state - true_state.ee_pose.position) * 1000)
        unaligned.append(np.linalg.norm(latest - true_state.ee_pose.position) * 1000)
    print(f"{len(rows)} ticks at {args.rate:g} Hz on the real-time sim rig, {len(lag)} compared, "
          f"{skewed} outside the state history; truth: {len(truth)} samples")
    print(f"  capture lag (ms)                        {percentiles(lag)}")
    print(f"  state read after the frames: error (mm) {percentiles(unaligned)}")
    print(f"  state at capture time:       error (mm) {percentiles(aligned)}")


if __name__ == "__main__":
    main()
