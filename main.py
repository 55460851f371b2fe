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


from robot_drivers.sim.task import SCENARIOS  # noqa: E402 - light import, needed for --help choices


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from robot_drivers.errors import DeviceError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DeviceError, ValueError, OSError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
