"""`export`: convert a dataset to another format (LeRobotDataset v3.0)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_skip_damaged, from_args


@dataclass(frozen=True)
class ExportConfig:
    dir: str
    out: str
    format: str = "lerobot"
    overwrite: bool = False
    episodes: tuple[int, ...] | None = None  # source episode indices (None: all)
    codec: str | None = None
    allow_gaps: bool = False
    skip_damaged: bool = False


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="convert a dataset to another format (LeRobotDataset v3.0)")
    p.add_argument("dir", help="dataset folder to export")
    p.add_argument("--format", choices=("lerobot",), default="lerobot", help="export format (default lerobot)")
    p.add_argument("--out", required=True, help="folder to create (must not exist or be empty; see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing LeRobot export at --out (atomically)")
    p.add_argument("--episodes", type=int, nargs="+", help="source episode indices (default: all)")
    p.add_argument("--codec", default=None, help="video encoder (default: libsvtav1, else libx264, else mpeg4; "
                   "`lossless`: H.264 in RGB at quantiser 0, every pixel as recorded)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="also export episodes whose control rate was not held (timestamps will have gaps)")
    add_skip_damaged(p, "leave out episodes that fail the integrity check, listing them (default: refuse, naming "
                        "them)")
    return p


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return from_args(ExportConfig, args)


def run(config: ExportConfig) -> int:
    from lerobot_bridge.export import export_lerobot
    from recorder.dataset import Dataset
    from recorder.outputs import LEROBOT, check_output
    from recorder.progress import LazyProgress

    if config.format != "lerobot":
        raise ValueError(f"unknown export format {config.format!r}; the supported one is 'lerobot'")
    out = check_output(config.out, LEROBOT, overwrite=config.overwrite, inputs=(config.dir,))
    # The bar starts with the first frame written: a refusal before that (damaged episodes, nothing to
    # export) is one line on stderr.
    with LazyProgress("export", "frame") as progress:
        with Dataset.open(config.dir) as dataset:
            report = export_lerobot(dataset, out, episodes=None if config.episodes is None else list(config.episodes),
                                    video_codec=config.codec, allow_gaps=config.allow_gaps, progress=progress,
                                    skip_damaged=config.skip_damaged, overwrite=config.overwrite)
    print(report.summary())
    return 0
