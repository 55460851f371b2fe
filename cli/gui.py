"""Opens ALT Studio's window: rig panel with live previews and keyboard teleop, Record, Train and Autonomous tabs. A
built-in simulated rig in real time (--robot: the PyBullet Panda, or a Meta-World task), or the rig a rig file
describes (--rig). The window's rig picker switches between them while disconnected."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_camera_size, add_rate_option, from_args, robot_help, robot_name


@dataclass(frozen=True)
class GuiConfig:
    robot: str = "sim"  # a built-in simulated rig: "sim" or "metaworld:<task>"
    rig: str | None = None  # a rig file (a real rig's, or one naming a simulated rig); overrides robot
    camera_size: int = 128
    rate: float | None = None
    data_dir: str = "data"
    runs_dir: str = "runs"
    task: str | None = None  # None: the rig's own task name
    no_connect: bool = False
    verbose: bool = False  # debug logging (the window logs at info level otherwise)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gui", help="the desktop app (the default when no verb is given)", description=__doc__)
    p.add_argument("--robot", type=robot_name, default="sim", metavar="ROBOT", help=robot_help())
    p.add_argument("--rig", metavar="FILE",
                   help="a rig file (TOML): a real rig's (configs/*.toml) or one naming a simulated rig "
                        "(configs/simulated/: its own rate and camera size); overrides --robot")
    add_camera_size(p, "camera side in pixels of a built-in simulated rig (default 128; a rig file sets its own)")
    add_rate_option(p)
    p.add_argument("--data-dir", default="data", help="where datasets go (default data/)")
    p.add_argument("--runs-dir", default="runs", help="where policies go and are looked for (default runs/)")
    p.add_argument("--task", default=None,
                   help="task description stored with each episode (default: the simulated rig's own task name; "
                        "'teleoperated demonstration' on a real rig)")
    p.add_argument("--no-connect", action="store_true", help="open the window without connecting the rig")
    return p


def config_from_args(args: argparse.Namespace) -> GuiConfig:
    return from_args(GuiConfig, args)


def run(config: GuiConfig) -> int:
    from gui.app import run_app  # Qt stays in gui/

    return run_app(rig=config.rig, camera_size=config.camera_size, rate=config.rate, data_dir=config.data_dir,
                   runs_dir=config.runs_dir, task=config.task, connect=not config.no_connect,
                   verbose=config.verbose, robot=config.robot)
