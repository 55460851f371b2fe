"""For each held-out episode and frame, retrieves from the other episodes and compares the retrieved action chunk with
what the operator did next (error per horizon step, in the dataset's units), next to baselines that ignore the
images; plus how many held-out frames the OOD gate would stop. Given a policy, its encoder is reused and only the
lookup table changes per fold (fast; the encoder saw the held-out episodes); given a dataset, or with --retrain, the
encoder is retrained per fold without them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from cli.options import (LerobotOptions, PolicyOptions, add_lerobot_options, add_policy_options, from_args,
                         positive_int)


@dataclass(frozen=True)
class EvalOfflineConfig:
    source: str | None = None  # a policy or dataset folder, or None with lerobot.lerobot
    folds: int = 5
    retrain: bool = False
    json: str | None = None  # also write the full report here
    device: str | None = None
    lerobot: LerobotOptions = field(default_factory=LerobotOptions)
    policy: PolicyOptions = field(default_factory=PolicyOptions)  # the settings when a dataset is retrained on
    progress: str = "bars"  # of a LeRobot import: bars or none


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval-offline", help="leave-episodes-out evaluation of retrieval on recorded data",
                              description=__doc__)
    p.add_argument("source", metavar="POLICY_OR_DATASET", nargs="?",
                   help="a policy folder, an ALT Studio dataset folder (or use --lerobot)")
    p.add_argument("--folds", type=positive_int, default=5, help="folds over episodes (default 5)")
    p.add_argument("--retrain", action="store_true", help="retrain the encoder per fold (a policy's settings)")
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--device", default=None, help="torch device for retraining (default: cuda if available)")
    add_lerobot_options(p)
    add_policy_options(p)
    p.add_argument("--progress", choices=("bars", "none"), default="bars",
                   help="progress of a --lerobot import as bars on stderr (default) or none")
    return p


def config_from_args(args: argparse.Namespace) -> EvalOfflineConfig:
    return from_args(EvalOfflineConfig, args, lerobot=LerobotOptions.from_args(args),
                     policy=PolicyOptions.from_args(args))


def run(config: EvalOfflineConfig) -> int:
    import json
    import sys
    from pathlib import Path

    from evaluation.offline_eval import evaluate_dataset_offline, evaluate_policy_offline, format_report

    config.lerobot.check(config.source, "a POLICY or DATASET folder")
    source = config.source
    is_policy = source is not None and (Path(source) / "manifest.json").is_file()
    if config.lerobot.lerobot is not None:
        source, _ = config.lerobot.import_source(config.progress)
    elif not is_policy and not (Path(source) / "dataset.json").is_file():
        raise ValueError(f"{source} is neither a policy folder (manifest.json) nor a dataset folder (dataset.json)")

    def say(message):
        print(message, file=sys.stderr, flush=True)

    if is_policy and not config.retrain:
        report = evaluate_policy_offline(source, config.folds)
    else:
        if is_policy:  # retrain with the policy's own settings on its dataset
            from policy.policy import ALTPolicy

            policy = ALTPolicy.load(source)
            policy_config, source = policy.config, policy.info["dataset"]
        else:
            policy_config = config.policy.policy_config()
        report = evaluate_dataset_offline(source, policy_config, config.folds, device=config.device, progress=say)
    print(format_report(report))
    if config.json:
        Path(config.json).write_text(json.dumps(report, indent=1))
        print(f"report written to {config.json}")
    return 0
