"""Records demonstrations. With --teleop scripted on a simulated rig (--robot) its scripted operator demonstrates at
the rig's training placements in lock-step; with a teleop device the operator presses start/stop on it. Recording into
an existing dataset appends (settings must match)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from robot_drivers.factory import TELEOPS

from cli.options import (add_camera_size, add_clock_option, add_rate_option, add_rig_options, from_args,
                         positive_int)


@dataclass(frozen=True)
class RecordConfig:
    out: str
    robot: str = "sim"  # a robot name or a rig file (main.py puts --rig here)
    teleop: str = "scripted"
    episodes: int = 30
    seed: int = 0
    task: str | None = None  # None: the rig's own task name
    rate: float | None = None
    camera_size: int = 128
    clock: str = "lockstep"
    codec: str = "jpeg"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("record", help="record demonstrations into a dataset", description=__doc__)
    add_rig_options(p)
    p.add_argument("--teleop", choices=TELEOPS, default="scripted",
                   help="scripted (a simulated rig's scripted operator, at its training placements), config (the "
                        "rig file's [teleop]; the default with --rig), spacemouse, gamepad")
    p.add_argument("--episodes", type=positive_int, default=30, help="episodes to keep (default 30)")
    p.add_argument("--out", required=True,
                   help="dataset folder (created, or appended to; a policy, a LeRobot export, a folder of other "
                        "files, '.' or the project folder is refused before the rig connects)")
    p.add_argument("--seed", type=int, default=0,
                   help="simulated rig: seed of the scripted operator and the scenes (default 0)")
    p.add_argument("--task", default=None,
                   help="task text stored with each episode (default: a simulated rig's own task name; "
                        "'teleoperated demonstration' on a real rig)")
    add_rate_option(p)
    add_camera_size(p, "camera image side in pixels")
    add_clock_option(p, "sim only: lock-step (fast, repeatable) or real time")
    p.add_argument("--codec", choices=("jpeg", "png"), default="jpeg", help="image codec (png is lossless)")
    return p


def config_from_args(args: argparse.Namespace) -> RecordConfig:
    return from_args(RecordConfig, args)


def run(config: RecordConfig) -> int:
    from recorder.recording import record_episodes

    fields = asdict(config)
    return record_episodes(fields.pop("out"), **fields)
