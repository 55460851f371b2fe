#!/usr/bin/env python3
"""ALT Studio command line. `python main.py --help` lists the verbs."""

from __future__ import annotations

import argparse
import logging
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def cmd_sim_check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from robot_drivers.sim.check import run_sim_check

    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    worst = 1.0
    for scenario in scenarios:
        with tqdm(total=args.episodes, desc=f"sim-check {scenario}", unit="ep", file=sys.stderr) as bar:
            def progress(done, total, successes):
                bar.update(1)
                bar.set_postfix(success=f"{successes}/{done}")

            report = run_sim_check(args.episodes, seed=args.seed, scenario=scenario,
                                   image_size=args.image_size, cameras=not args.no_cameras, progress=progress)
        print(report.summary(cameras=0 if args.no_cameras else 2, image_size=args.image_size))
        print()
        worst = min(worst, report.success_rate)
    return 0 if worst >= args.min_success else 1


from robot_drivers.factory import ROBOTS, TELEOPS  # noqa: E402 - light imports, needed for --help choices
from robot_drivers.sim.task import SCENARIOS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="ALT Studio: record demonstrations, train an Action Lookup Table policy, supervise the arm.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("sim-check", help="run the scripted expert on the simulated rig and time it",
                         description="Runs the scripted expert in lock-step on the simulated rig and prints the "
                                     "success rate and the per-tick physics and render time.")
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes per scenario (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="in_distribution",
                   help="mug placement scenario (default in_distribution)")
    p.add_argument("--image-size", type=_positive_int, default=128, help="camera image side in pixels (default 128)")
    p.add_argument("--no-cameras", action="store_true", help="skip rendering (physics only)")
    p.add_argument("--min-success", type=float, default=0.0,
                   help="exit with status 1 if any scenario's success rate is below this fraction")
    p.set_defaults(func=cmd_sim_check)

    p = verbs.add_parser("record", help="record demonstrations into a dataset",
                         description="Records demonstrations. With --teleop scripted on the simulated rig the "
                                     "scripted operator demonstrates at the training placements in lock-step; with "
                                     "a teleop device the operator presses start/stop on it. Recording into an "
                                     "existing dataset appends (settings must match).")
    p.add_argument("--robot", choices=ROBOTS, default="sim")
    p.add_argument("--teleop", choices=TELEOPS, default="scripted")
    p.add_argument("--episodes", type=_positive_int, default=30, help="episodes to keep (default 30)")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="grasp the mug", help="task text stored with each episode")
    p.add_argument("--rate", type=float, default=10.0, help="control rate in Hz (default 10, up to 30)")
    p.add_argument("--image-size", type=_positive_int, default=128, help="camera image side in pixels")
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep",
                   help="sim only: lock-step (fast, repeatable) or real time")
    p.add_argument("--codec", choices=("jpeg", "png"), default="jpeg", help="image codec (png is lossless)")
    p.set_defaults(func=_lazy("recorder.commands", "cmd_record"))

    p = verbs.add_parser("dataset", help="inspect or edit a dataset")
    dverbs = p.add_subparsers(dest="dataset_verb", metavar="ACTION", required=True)
    q = dverbs.add_parser("info", help="episodes, lengths, durations, sizes and timing health")
    q.add_argument("dir")
    q.set_defaults(func=_lazy("recorder.commands", "cmd_dataset_info"))
    q = dverbs.add_parser("delete", help="delete an episode (or the interrupted ones)")
    q.add_argument("dir")
    q.add_argument("episode", type=int, nargs="?")
    q.add_argument("--interrupted", action="store_true", help="remove episodes whose recording never finished")
    q.set_defaults(func=_lazy("recorder.commands", "cmd_dataset_delete"))

    p = verbs.add_parser("replay", help="drive the arm through a recorded episode")
    p.add_argument("dir")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("--robot", choices=ROBOTS, default="sim")
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep")
    p.set_defaults(func=_lazy("recorder.commands", "cmd_replay"))
    return parser


def _lazy(module: str, name: str):
    """Import a verb's implementation only when it runs, so --help stays fast."""

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from recorder.dataset import DatasetError
    from robot_drivers.errors import DeviceError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DeviceError, DatasetError, ValueError, OSError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
