"""`trials`: success rate per policy version from the trial ledger (one trial per attempt)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_ledger_option, from_args


@dataclass(frozen=True)
class TrialsConfig:
    ledger: str | None = None  # default runs/trials.jsonl
    policy: str | None = None  # only trials of this policy folder
    csv: str | None = None
    mark: tuple[str, str] | None = None  # (trial id, "success" or "failure"), recorded first


def add_parser(subparsers) -> argparse.ArgumentParser:
    # description and epilog are printed as written (only help= strings are %-formatted): a plain "95%" here
    p = subparsers.add_parser("trials", help="success rate per policy version from the trial ledger",
                              description="Reads the trial ledger (every attempt at the task, from Start to success, "
                                          "failure or the operator's verdict: policy version, method, gamma, "
                                          "times, outcome, reason, and the halts and resumes inside it) and prints "
                                          "counts and the success rate with a Wilson 95% interval per policy "
                                          "version, one trial per attempt, then the trials the operator marked and "
                                          "those awaiting a mark (a real rig has no task check).")
    add_ledger_option(p)
    p.add_argument("--policy", default=None, help="only trials of this policy folder")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write one row per trial to FILE")
    p.add_argument("--mark", nargs=2, default=None, metavar=("TRIAL_ID", "{success,failure}"),
                   help="first record the operator's verdict on an ended trial (replaces an earlier mark; the "
                        "automatic outcome stays recorded)")
    return p


def config_from_args(args: argparse.Namespace) -> TrialsConfig:
    return from_args(TrialsConfig, args)


def run(config: TrialsConfig) -> int:
    from pathlib import Path

    from evaluation.trials import TrialLedger, default_ledger_path, format_marks, format_summary

    path = Path(config.ledger) if config.ledger else default_ledger_path()
    if not path.exists():
        raise FileNotFoundError(f"no trial ledger at {path}; autonomous runs write it (pass --ledger FILE)")
    ledger = TrialLedger(path)
    if config.mark:
        trial_id, outcome = config.mark
        trial = ledger.mark(trial_id, outcome)
        print(f"trial {trial.id} marked {outcome} by the operator (the run itself ended {trial.outcome}"
              + (f": {trial.reason})" if trial.reason else ")"))
    rows = ledger.summary(config.policy)
    print(f"trials in {ledger.path} (one per attempt, from Start to its end: halts and resumes inside it are not "
          "trials of their own; success rate over decided trials, Wilson 95% interval; a trial the operator marked "
          "counts by the mark)")
    print(format_summary(rows))
    marks = format_marks(ledger.trials(config.policy))
    if marks:
        print(marks)
    if config.csv:
        n = ledger.write_csv(config.csv, config.policy)
        print(f"{n} trial(s) written to {config.csv}")
    return 0
