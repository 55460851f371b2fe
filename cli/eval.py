"""`eval`: evaluate a policy on a simulated rig: by default the one its demonstrations were recorded on."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_clock_option, from_args, positive_int, robot_help, robot_name


@dataclass(frozen=True)
class EvalConfig:
    policy: str
    robot: str | None = None  # None: the rig the policy's demonstrations were recorded on
    scenario: str = "in_distribution"  # one of the rig's scenarios, or "all"
    episodes: int = 31
    seed: int = 1000
    clock: str = "lockstep"
    json: str | None = None  # also write the full report here
    check_data: str | None = None  # a dataset of demonstrations not used for the policy
    shadow: bool = False  # shadow runs: every signal logged, none stops the arm; the gate judged as a detector
    roc: str | None = None  # where a shadow evaluation draws its ROC curves


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a policy on a simulated rig")
    p.add_argument("policy", help="policy folder to evaluate")
    p.add_argument("--robot", type=robot_name, default=None, metavar="ROBOT",
                   help=robot_help(None) + " (default: the rig the policy's demonstrations were recorded on; "
                                          "another one is refused)")
    p.add_argument("--scenario", default="in_distribution", metavar="NAME",
                   help="where the scenes come from: one of the rig's scenarios (default in_distribution; an "
                        "unknown name lists them) or all: every scenario of the rig in turn")
    p.add_argument("--episodes", type=positive_int, default=31, help="episodes per scenario (default 31)")
    p.add_argument("--seed", type=int, default=1000,
                   help="seed of the first episode's scene; episode k uses seed+k (default 1000)")
    add_clock_option(p)
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--check-data", default=None, metavar="DATASET",
                   help="demonstrations NOT used for the policy (e.g. `record --out data/check --seed 9001`): "
                        "report how many of their frames the gate flags")
    p.add_argument("--shadow", action="store_true",
                   help="shadow runs (simulated rigs only): the gate, the watchdog and every signal are computed and "
                        "logged each tick, but nothing stops the arm; each episode runs to its end, so the report can "
                        "say which stops were needed: the gate and each signal judged as a failure detector (true "
                        "and false alarms, balanced accuracy, how early, ROC)")
    p.add_argument("--roc", default=None, metavar="PNG",
                   help="with --shadow: where to draw the ROC curves (default: beside --json, else "
                        "runs/shadow-roc.png)")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return from_args(EvalConfig, args)


def run(config: EvalConfig) -> int:
    from evaluation.evaluate import evaluate_policy
    from evaluation.tables import ood_lines, scenario_table

    if config.roc and not config.shadow:
        raise ValueError("--roc draws a shadow evaluation's ROC curves: give --shadow too")
    payload = evaluate_policy(config.policy, [config.scenario], config.episodes, config.seed, config.clock,
                              config.json, check_data=config.check_data, robot=config.robot, shadow=config.shadow,
                              roc_path=config.roc)
    if config.shadow:
        from evaluation.detection import format_pooled_line, format_table

        print(format_table(payload["detector"]))
        print(format_pooled_line(payload["detector"], "gate"))
        print(format_pooled_line(payload["detector"], "any"))
        print(f"ROC curves drawn to {payload['roc_png']}")
    else:
        print(scenario_table(payload["scenarios"]))
    print("\n".join(ood_lines(payload)))
    if config.json:
        print(f"report written to {config.json}")
    return 0
