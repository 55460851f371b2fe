"""Runs the scripted expert in lock-step on the simulated rig and prints the success rate and the per-tick physics and
render time."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from robot_drivers.sim.task import SCENARIOS

from cli.options import add_camera_size, from_args, positive_int


@dataclass(frozen=True)
class SimCheckConfig:
    episodes: int = 10
    seed: int = 0
    scenario: str = "in_distribution"  # or "all"
    camera_size: int = 128
    no_cameras: bool = False
    min_success: float = 0.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sim-check", help="run the scripted expert on the simulated rig and time it",
                              description=__doc__)
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes per scenario (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="in_distribution",
                   help="mug placement scenario (default in_distribution)")
    add_camera_size(p, "camera image side in pixels (default 128)")
    p.add_argument("--no-cameras", action="store_true", help="skip rendering (physics only)")
    p.add_argument("--min-success", type=float, default=0.0,
                   help="exit with status 1 if any scenario's success rate is below this fraction")
    return p


def config_from_args(args: argparse.Namespace) -> SimCheckConfig:
    return from_args(SimCheckConfig, args)


def run(config: SimCheckConfig) -> int:
    from tqdm import tqdm

    from robot_drivers.sim.check import run_sim_check

    scenarios = list(SCENARIOS) if config.scenario == "all" else [config.scenario]
    worst = 1.0
    for scenario in scenarios:
        with tqdm(total=config.episodes, desc=f"sim-check {scenario}", unit="ep", file=sys.stderr) as bar:
            def progress(done, total, successes):
                bar.update(1)
                bar.set_postfix(success=f"{successes}/{done}")

            report = run_sim_check(config.episodes, seed=config.seed, scenario=scenario,
                                   image_size=config.camera_size, cameras=not config.no_cameras, progress=progress)
        print(report.summary(cameras=0 if config.no_cameras else 2, image_size=config.camera_size))
        print()
        worst = min(worst, report.success_rate)
    return 0 if worst >= config.min_success else 1
