#!/usr/bin/env python3
"""ALT Studio command line. `python main.py --help` lists the verbs; each verb is a module of cli/."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from cli import VERBS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="ALT Studio: record demonstrations, train an Action Lookup Table policy, supervise the arm.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERBS:  # light modules: a verb's implementation is imported only when it runs
        module = f"cli.{name}"
        importlib.import_module(module).add_parser(verbs).set_defaults(command=module)
    return parser


def _known_errors(verb: str) -> tuple[type[BaseException], ...]:
    """The exceptions a user can act on: printed as one `error:` line (status 2), not a traceback."""
    from recorder.dataset import DatasetError
    from core.errors import DeviceError

    known = (DeviceError, DatasetError, ValueError, OSError)
    if verb == "export":
        from lerobot_bridge.export import ExportError

        known = known + (ExportError,)
    if verb in ("train", "eval", "ood", "demo", "eval-offline"):
        from policy.artifact import PolicyArtifactError
        from policy.train import TrainingCancelled

        known = known + (PolicyArtifactError, TrainingCancelled)
    if verb in ("policy", "trials", "coverage"):
        from policy.artifact import PolicyArtifactError
        from evaluation.trials import LedgerError

        known = known + (PolicyArtifactError, LedgerError)
    return known


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not [a for a in argv if not a.startswith("-")] and not {"-h", "--help"} & set(argv):
        argv = [*argv, "gui"]  # no verb: open the app
    args = build_parser().parse_args(argv)
    if getattr(args, "rig", None) and hasattr(args, "robot"):  # --rig FILE overrides --robot
        args.robot = args.rig
        if getattr(args, "teleop", None) == "scripted":
            args.teleop = "config"  # the scripted operator needs the simulator: use the rig file's device
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    known = _known_errors(args.verb)
    try:
        verb = importlib.import_module(args.command)
        return verb.run(verb.config_from_args(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dataset info DIR | head`): nothing is wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed
        return 0
    except known as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
