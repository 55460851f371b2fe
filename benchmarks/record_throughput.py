#!/usr/bin/env python3
"""Recording throughput: two synthetic 640x480 30 fps cameras and a kinematic arm at 30 Hz, in real time.

Prints, per run and as medians over runs: late and skipped ticks, camera frame
drops, camera-to-camera timestamp skew (p50 / p99), CPU use, MB per minute and
the time to keep the episode.

    .venv/bin/python benchmarks/record_throughput.py --seconds 60 --runs 3
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.dataset import Dataset  # noqa: E402
from recorder.session import RecorderConfig, RecordingSession, spec_for_rig  # noqa: E402
from core.clock import RealTimeClock  # noqa: E402
from robot_drivers.fake import CircleTeleop, KinematicArm, SyntheticCamera  # noqa: E402
from robot_drivers.rig import Rig  # noqa: E402
from robot_drivers.safety import SafeArm  # noqa: E402


def one_run(seconds: float, rate: float, width: int, height: int, fps: float, codec: str, phase: float) -> dict:
    """``phase``: how far (s) the second camera's frames lag the first's; real cameras free-run."""
    rig = Rig(arm=SafeArm(KinematicArm()),
              cameras={"hand": SyntheticCamera("hand", width, height, fps, seed=0),
                       "third": SyntheticCamera("third", width, height, fps, seed=1, phase=phase)},
              clock=RealTimeClock(rate))
    with tempfile.TemporaryDirectory() as tmp, rig:
        for cam in rig.cameras.values():
            cam.wait_for_frame(timeout=2.0)
        with Dataset.create(Path(tmp) / "ds", spec_for_rig(rig, codec=codec)) as ds:
            session = RecordingSession(rig, ds, CircleTeleop(radius=0.05, period=4.0, gripper=True), RecorderConfig(max_episode_s=seconds))
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            wall0 = time.perf_counter()
            outcome = session.record_episode()
            wall = time.perf_counter() - wall0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            info = outcome.kept
            if info is None:
                raise SystemExit(f"episode was not kept: {outcome.reason} {outcome.error}")
            arrays = ds.load_episode(info.index).arrays
    skew = np.abs(arrays["hand.host_time"] - arrays["third.host_time"]) * 1000
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    s = info.stats
    return {
        "ticks": info.length,
        "late_ticks": s["late_ticks"],
        "skipped_ticks": s["skipped_ticks"],
        "dropped_frames": sum(s["dropped_frames"].values()),
        "repeated_frames": sum(s["repeated_frames"].values()),
        "skew_p50_ms": float(np.percentile(skew, 50)),
        "skew_p99_ms": float(np.percentile(skew, 99)),
        "cpu_percent": 100.0 * cpu / wall,
        "mb_per_min": info.size_bytes / 1e6 / info.duration_s * 60.0,
        "keep_s": info.keep_seconds,
        "achieved_hz": s["achieved_rate_hz"],
        "camera_phase_ms": phase * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rate", type=float, default=30.0, help="control rate (Hz)")
    p.add_argument("--fps", type=float, default=30.0, help="camera fps")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--codec", choices=("jpeg", "png"), default="jpeg")
    args = p.parse_args()
    print(f"recording {args.seconds:g} s at {args.rate:g} Hz, 2 cameras {args.width}x{args.height} "
          f"@ {args.fps:g} fps, {args.codec}; {args.runs} run(s)")
    runs = []
    phases = np.random.default_rng(0).uniform(0, 1 / args.fps, size=args.runs)
    for i in range(args.runs):
        r = one_run(args.seconds, args.rate, args.width, args.height, args.fps, args.codec, float(phases[i]))
        runs.append(r)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in r.items()))
    print("\nmedian over runs")
    half_period_ms = 500.0 / args.fps
    targets = {"late_ticks": (0, "== 0"), "keep_s": (1.0, "<= 1 s"), "skew_p99_ms": (half_period_ms,
                                                                                  f"<= {half_period_ms:.1f} ms")}
    for key in runs[0]:
        med = float(np.median([r[key] for r in runs]))
        target = ""
        if key in targets:
            limit, text = targets[key]
            target = f"  target {text}: {'met' if med <= limit else 'NOT MET'}"
        print(f"  {key:<16} {med:10.3f}{target}")


if __name__ == "__main__":
    main()
