"""Lists the RealSense cameras (serial, model, firmware, USB type) and V4L2 video devices that are plugged in, and with
--rig the arm, cameras and teleop device the rig file names. --ping checks that the arm answers."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import from_args


@dataclass(frozen=True)
class DevicesConfig:
    rig: str | None = None
    ping: bool = False
    timeout: float = 1.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("devices", help="list connected cameras and the arms of a rig file", description=__doc__)
    p.add_argument("--rig", metavar="FILE", help="rig config file to show")
    p.add_argument("--ping", action="store_true", help="open a TCP connection to the arm (short timeout)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for the arm with --ping (default 1)")
    return p


def config_from_args(args: argparse.Namespace) -> DevicesConfig:
    return from_args(DevicesConfig, args)


def run(config: DevicesConfig) -> int:
    from robot_drivers.devices import realsense_lines, rig_lines, video_lines

    lines = realsense_lines() + video_lines()
    if config.rig:
        lines += rig_lines(config.rig, config.ping, config.timeout)
    elif config.ping:
        lines.append("--ping checks the arm of a rig file: give one with --rig FILE")
    print("\n".join(lines))
    return 0
