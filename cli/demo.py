"""Records 30 scripted demonstrations on a simulated rig (--robot, default sim), trains the ALT policy, builds the
aligned method on the same encoder, evaluates both in every scenario of the rig and prints their tables side by side,
then runs the correction loop. About 30 minutes on 2 CPU cores; --quick takes about 8."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from cli.options import from_args, positive_int, robot_help, robot_name


@dataclass(frozen=True)
class DemoConfig:
    out: str = "runs/demo"
    quick: bool = False
    episodes: int = 31  # evaluation episodes per scenario
    seed: int = 0
    corrections: bool = False  # only the correction loop
    method: str = "alt"  # with corrections: the policy method the loop runs
    scenario: str = "interpolate"  # with corrections: where the placements come from (one of the rig's scenarios)
    robot: str = "sim"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="the main job: record 30 sim demos, train, evaluate every scenario",
                              description=__doc__)
    p.add_argument("--out", default="runs/demo", help="folder for the dataset, policy and report (default runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs, training frames and evaluation episodes (5): a smoke run")
    p.add_argument("--episodes", type=positive_int, default=31, help="evaluation episodes per scenario")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the recording and the training; evaluation scenes use their own seeds (default 0)")
    p.add_argument("--corrections", action="store_true",
                   help="only the correction loop (after recording and training, reused when already in --out): "
                        "the policy on --episodes interpolate placements, the scripted operator correcting each "
                        "stop, the corrections added at once, then --episodes other placements")
    p.add_argument("--method", choices=("alt", "aligned"), default="alt",
                   help="with --corrections: the policy method the loop runs (both share the trained encoder)")
    p.add_argument("--scenario", default="interpolate", metavar="NAME",
                   help="with --corrections: where the placements of both sets come from, one of the rig's "
                        "scenarios (default interpolate; an unknown name lists them)")
    p.add_argument("--robot", type=robot_name, default="sim", metavar="ROBOT", help=robot_help())
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return from_args(DemoConfig, args)


def run(config: DemoConfig) -> int:
    from evaluation.demo import run_demo

    return run_demo(**asdict(config))
