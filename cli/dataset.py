"""`dataset info` and `dataset delete`: inspect or edit a dataset."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cli.options import add_actions, from_args


@dataclass(frozen=True)
class DatasetInfoConfig:
    dir: str
    full: bool = False


@dataclass(frozen=True)
class DatasetDeleteConfig:
    dir: str
    episode: int | None = None
    interrupted: bool = False


def add_parser(subparsers) -> argparse.ArgumentParser:
    p, actions = add_actions(subparsers, "dataset", "inspect or edit a dataset")
    q = actions.add_parser("info", help="episodes, sizes, timing health and an integrity check (exit 1 when damaged)",
                           description=info.__doc__)
    q.add_argument("dir", help="dataset folder")
    q.add_argument("--full", action="store_true", help="also decode every frame (reads and decodes everything)")
    q = actions.add_parser("delete", help="delete an episode (or the interrupted ones)", description=delete.__doc__)
    q.add_argument("dir", help="dataset folder")
    q.add_argument("episode", type=int, nargs="?", help="index of the episode to delete (or --interrupted)")
    q.add_argument("--interrupted", action="store_true", help="remove episodes whose recording never finished")
    return p


def config_from_args(args: argparse.Namespace) -> DatasetInfoConfig | DatasetDeleteConfig:
    return from_args(DatasetInfoConfig if args.dataset_verb == "info" else DatasetDeleteConfig, args)


def run(config: DatasetInfoConfig | DatasetDeleteConfig) -> int:
    return info(config) if isinstance(config, DatasetInfoConfig) else delete(config)


def info(config: DatasetInfoConfig) -> int:
    """Lists the episodes and checks them: every file's size and checksum against what was recorded when the episode
    was kept, the step arrays, the first frame of each camera, and episodes whose folder is missing. Says 'healthy'
    only when nothing is found; otherwise names each damaged episode and file and exits with status 1 (2 when the
    dataset cannot be opened at all)."""
    from recorder.dataset import Dataset
    from recorder.progress import LazyProgress

    with Dataset.open(config.dir) as dataset:
        with LazyProgress("check", "ep", sys.stderr.isatty()) as progress:
            report = dataset.check(full=config.full, progress=progress)
        print(format_info(dataset, report))
    if not report.healthy:
        bad = sorted(report.damaged)
        what = (f"episode {bad[0]} is" if len(bad) == 1 else f"episodes {', '.join(map(str, bad))} are") + \
            " damaged or missing" if bad else "some of its files are damaged"
        print(f"error: {config.dir}: {what} (listed above)", file=sys.stderr)
        return 1
    return 0


def delete(config: DatasetDeleteConfig) -> int:
    """Deletes an episode for good (its index is never given out again), or the folders of recordings that never
    finished (--interrupted). Naming an episode whose folder is missing makes the dataset stop expecting it. Works
    on a full disk."""
    from recorder.dataset import Dataset

    with Dataset.open(config.dir, writable=True) as dataset:
        if config.interrupted:
            removed = dataset.delete_interrupted()
            print(f"removed {len(removed)} interrupted episode folder(s)")
        if config.episode is not None:
            if dataset.delete_episode(config.episode):
                print(f"deleted episode {config.episode}")
            else:
                print(f"episode {config.episode}'s folder was already gone; it is no longer expected")
        if config.episode is None and not config.interrupted:
            print("error: name an EPISODE or --interrupted", file=sys.stderr)
            return 2
    return 0


def format_info(dataset, report=None) -> str:
    """The episode table of a ``recorder.dataset.Dataset``; with ``report`` (``Dataset.check``), the damaged and
    missing episodes and a verdict."""
    from recorder.dataset import DatasetError
    from recorder.outputs import format_bytes

    spec = dataset.spec
    cams = ", ".join(f"{c.name} {c.width}x{c.height}" for c in spec.cameras)
    lines = [f"dataset   {dataset.root}",
             f"robot     {spec.robot}, {spec.fps:g} Hz, cameras: {cams}, images: {spec.codec}"]
    names = [c.name for c in spec.cameras]
    header = f"{'ep':>4} {'steps':>5} {'dur s':>6} {'size':>9} {'late':>4} {'skip':>4} " + " ".join(
        f"{'drop/rep ' + n:>16}" for n in names) + f" {'rate':>6}  end"
    lines += ["", header]
    total_steps = total_bytes = count = 0
    total_dur = 0.0
    damaged = report.damaged if report is not None else {}
    for index in dataset.episode_indices():
        try:
            e = dataset.episode(index)
        except DatasetError:
            if report is None:
                raise
            lines.append(f"{index:>4} {'?':>5} {'?':>6} {'?':>9}  (meta.json unreadable: see below)")
            continue
        count += 1
        s = e.stats
        drops = s.get("dropped_frames", {})
        reps = s.get("repeated_frames", {})
        rate = s.get("achieved_rate_hz")
        flag = "" if s.get("rate_held", True) else " (rate not held)"
        flag += " DAMAGED" if index in damaged else ""
        drops = drops if isinstance(drops, dict) else {}
        reps = reps if isinstance(reps, dict) else {}
        rate = rate if isinstance(rate, (int, float)) else None
        lines.append(f"{e.index:>4} {e.length:>5} {e.duration_s:>6.1f} {format_bytes(e.size_bytes):>9} "
                     f"{s.get('late_ticks', 0):>4} {s.get('skipped_ticks', 0):>4} "
                     + " ".join(f"{str(drops.get(n, 0)) + '/' + str(reps.get(n, 0)):>16}" for n in names)
                     + f" {str(rate if rate is None else round(rate, 2)):>6}  {e.end_reason}{flag}")
        total_steps += e.length
        total_bytes += e.size_bytes
        total_dur += e.duration_s
    lines.append(f"total: {count} episodes, {total_steps} steps, {total_dur:.1f} s, {format_bytes(total_bytes)}")
    for path in dataset.interrupted():
        lines.append(f"interrupted: {path.name} (recording never finished; "
                     f"`dataset delete {dataset.root} --interrupted` removes it)")
    if report is not None:
        lines += [f"problem: {p}" for p in report.problems]
        for i in sorted(report.damaged):
            kind = "missing" if i in report.missing else "damaged"
            lines.append(f"{kind}: episode {i}: {report.damaged[i]}")
        checked = ("full check: every file's size and checksum, the step arrays, every frame decoded" if report.full
                   else "quick check: every file's size and checksum, the step arrays, the first frame of each "
                        "camera; `--full` decodes every frame")
        if report.healthy:
            lines.append(f"health: healthy ({checked})")
        else:
            first = min(report.damaged) if report.damaged else None
            fix = (f"`dataset delete {dataset.root} {first}` removes an episode (or forgets a missing one), or "
                   "restore it from a backup; " if first is not None else "")
            lines.append(f"health: DAMAGED: {len(report.damaged)} episode(s) ({checked}). {fix}train and export "
                         "refuse damaged episodes unless --skip-damaged")
    return "\n".join(lines)
