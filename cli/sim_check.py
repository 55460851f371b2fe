"""Runs a simulated rig's scripted operator in lock-step and prints the success rate and the per-tick physics and
render time, per scenario."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cli.options import add_camera_size, from_args, positive_int, robot_help, robot_name


@dataclass(frozen=True)
class SimCheckConfig:
    robot: str = "sim"
    episodes: int = 10
    seed: int = 0
    scenario: str = "in_distribution"  # one of the rig's scenarios, or "all"
    camera_size: int = 128
    no_cameras: bool = False
    min_success: float = 0.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sim-check", help="run a simulated rig's scripted operator and time it",
                              description=__doc__)
    p.add_argument("--robot", type=robot_name, default="sim", metavar="ROBOT", help=robot_help())
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes per scenario (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--scenario", default="in_distribution", metavar="NAME",
                   help="one of the rig's scenarios (default in_distribution; an unknown name lists them) or all: "
                        "every scenario of the rig in turn")
    add_camera_size(p, "camera image side in pixels (default 128)")
    p.add_argument("--no-cameras", action="store_true", help="skip rendering (physics only)")
    p.add_argument("--min-success", type=float, default=0.0,
                   help="exit with status 1 if any scenario's success rate is below this fraction")
    return p


def config_from_args(args: argparse.Namespace) -> SimCheckConfig:
    return from_args(SimCheckConfig, args)


def run(config: SimCheckConfig) -> int:
    from tqdm import tqdm

    from evaluation.expert_check import make_check_rig, run_expert_check
    from evaluation.scenes import pick_scenarios, scene_control_of

    rig = make_check_rig(config.robot, config.camera_size, cameras=not config.no_cameras)
    worst = 1.0
    try:
        scenarios = pick_scenarios(scene_control_of(rig, "sim-check").scenarios, config.scenario)
        cameras = len(rig.cameras)
        with rig:
            for scenario in scenarios:
                with tqdm(total=config.episodes, desc=f"sim-check {scenario}", unit="ep", file=sys.stderr) as bar:
                    def progress(done, total, successes):
                        bar.update(1)
                        bar.set_postfix(success=f"{successes}/{done}")

                    report = run_expert_check(rig, config.episodes, seed=config.seed, scenario=scenario,
                                              progress=progress)
                print(report.summary(cameras=cameras, image_size=config.camera_size))
                print()
                worst = min(worst, report.success_rate)
    finally:
        rig.close()
    return 0 if worst >= config.min_success else 1
