"""Idle stretches in a demonstration: found while recording, cut from a copy afterwards.

An operator's first episode is often mostly waiting (finding the keys, looking
at the previews). Those steps teach the policy nothing but still cost training
time, and a lookup table full of "hover here" frames retrieves hovering. A
stretch is *idle* when the end-effector stays within ``motion_m`` of where the
stretch began and the gripper opening changes by less than ``gripper_delta``.

Trimming never changes the recorded episode: :func:`trim_episode` writes a copy
without the idle stretches (a short ``margin_s`` of each is kept, so the demo
keeps a natural pause) as a new episode, then moves the original out of the
training set into ``DATASET/trimmed-originals/`` where it stays intact
(moving it back into ``episodes/`` restores it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.types import Frame

from recorder.dataset import Dataset, DatasetError, EpisodeInfo, StepRecord, fsync_dir

ORIGINALS_DIR = "trimmed-originals"


@dataclass(frozen=True)
class IdleConfig:
    motion_m: float = 0.002  # the hand moved less than this (2 mm) ...
    gripper_delta: float = 0.05  # ... and the gripper opening changed less than this (5 % of its range)
    min_stretch_s: float = 4.0  # an idle stretch this long is worth a warning and a trim (a pause to look is shorter)
    share_warning: float = 0.4  # warn at the end of an episode that was idle this share of its time
    margin_s: float = 0.5  # a trim keeps this much of each stretch at either end


class IdleMonitor:
    """Fed one measured state per step (position xyz, gripper) with its time; says how long the hand has
    been still and how much of the episode was idle in stretches of at least ``min_stretch_s``."""

    def __init__(self, config: IdleConfig | None = None):
        self.config = config or IdleConfig()
        self.reset()

    def reset(self) -> None:
        self._anchor: tuple[np.ndarray, float, float] | None = None  # position, gripper, start time
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._idle_closed_s = 0.0  # idle time of finished stretches that were long enough

    def add(self, position: np.ndarray, gripper: float, t: float) -> None:
        position = np.asarray(position, dtype=np.float64)
        if self._first_t is None:
            self._first_t = t
        self._last_t = t
        if self._anchor is None:
            self._anchor = (position, gripper, t)
            return
        anchor, grip, since = self._anchor
        if np.linalg.norm(position - anchor) > self.config.motion_m or \
                abs(gripper - grip) > self.config.gripper_delta:
            stretch = t - since
            if stretch >= self.config.min_stretch_s:
                self._idle_closed_s += stretch
            self._anchor = (position, gripper, t)

    @property
    def still_for_s(self) -> float:
        """How long the hand has been still, up to the newest step."""
        if self._anchor is None or self._last_t is None:
            return 0.0
        return self._last_t - self._anchor[2]

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._first_t is None else self._last_t - self._first_t

    @property
    def idle_s(self) -> float:
        """Time spent in idle stretches of at least ``min_stretch_s`` (the current one included)."""
        current = self.still_for_s
        return self._idle_closed_s + (current if current >= self.config.min_stretch_s else 0.0)

    @property
    def idle_share(self) -> float:
        return self.idle_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def worth_trimming(self) -> bool:
        """A stretch long enough to warn about, or an episode idle for a large share of its time."""
        return self.idle_s > 0 and (self.idle_share >= self.config.share_warning
                                    or self.idle_s >= self.config.min_stretch_s)


def idle_stretches(states: np.ndarray, times: np.ndarray, config: IdleConfig | None = None) -> list[tuple[int, int]]:
    """Idle stretches of a recorded episode as step ranges [start, end) of at least ``min_stretch_s``.

    ``states``: [T, 8] x y z qx qy qz qw gripper; ``times``: [T] seconds."""
    config = config or IdleConfig()
    states = np.asarray(states, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    stretches = []
    start = 0
    for i in range(1, len(states) + 1):
        moved = i == len(states) or \
            np.linalg.norm(states[i, :3] - states[start, :3]) > config.motion_m or \
            abs(states[i, 7] - states[start, 7]) > config.gripper_delta
        if moved:
            end_t = times[i - 1] if i == len(states) else times[i]
            if end_t - times[start] >= config.min_stretch_s:
                stretches.append((start, i))
            start = i
    return stretches


def steps_to_keep(length: int, stretches: list[tuple[int, int]], margin_steps: int) -> np.ndarray:
    """The step indices left after cutting each stretch but ``margin_steps`` at either end of it."""
    keep = np.ones(length, dtype=bool)
    for start, end in stretches:
        keep[start + margin_steps:max(end - margin_steps, start + margin_steps)] = False
    return np.flatnonzero(keep)


def trim_episode(dataset: Dataset, index: int, config: IdleConfig | None = None) -> tuple[EpisodeInfo, int]:
    """Write a copy of episode ``index`` without its idle stretches; set the original aside, intact.

    Returns the new episode and the number of steps cut. The copy is continuous: its ticks are renumbered
    and the times after each cut are moved back by the time cut, so it reads as one recording at the
    dataset's rate (the steps cut are ones where nothing moved). Frames are decoded and stored again with
    the dataset's codec."""
    config = config or IdleConfig()
    data = dataset.load_episode(index)
    arrays = data.arrays
    times = arrays["t_actual"]
    stretches = idle_stretches(arrays["state"], times, config)
    period = 1.0 / dataset.spec.fps
    keep = steps_to_keep(len(times), stretches, int(np.ceil(config.margin_s / period - 1e-6)))
    cut = len(times) - len(keep)
    if not stretches or cut == 0:
        raise DatasetError(f"episode {index} has no idle stretch of {config.min_stretch_s:g} s or more; "
                           "nothing to trim")
    # Time removed before each kept step: the gaps the cuts opened, less one period per gap.
    gaps = np.diff(times[keep], prepend=times[keep[0]])
    gaps[1:] = np.where(np.diff(keep) > 1, gaps[1:] - period, 0.0)
    shift = np.cumsum(gaps)
    cameras = [c.name for c in dataset.spec.cameras]
    info = data.info
    extra = dict(info.extra)
    aside = aside_path(dataset, info.path)
    extra["trimmed_from"] = {"episode": index, "cut_steps": [[int(a), int(b)] for a, b in stretches],
                             "steps_removed": int(cut), "original": str(aside.relative_to(dataset.root))}
    writer = dataset.new_episode(info.task, note=(info.note + " " if info.note else "")
                                 + f"(episode {index} without its idle stretches)", extra=extra)
    try:
        for n, i in enumerate(keep):
            frames = {}
            for cam in cameras:
                device = float(arrays[f"{cam}.device_time"][i])
                frames[cam] = Frame(dataset.frame(index, cam, int(i)),
                                    None if np.isnan(device) else device - float(shift[n]),
                                    float(arrays[f"{cam}.host_time"][i]) - float(shift[n]),
                                    int(arrays[f"{cam}.sequence"][i]), cam)
            writer.add(StepRecord(tick=n, t_scheduled=float(arrays["t_scheduled"][i]) - float(shift[n]),
                                  t_actual=float(times[i]) - float(shift[n]), state=arrays["state"][i],
                                  joints=arrays["joints"][i], action=arrays["action"][i],
                                  requested=arrays["requested"][i], frames=frames))
        stats = dict(info.stats)
        stats["trimmed_steps"] = int(cut)
        trimmed = writer.keep(end_reason=info.end_reason, stats=stats)
    except BaseException:
        writer.discard()
        raise
    set_aside(dataset, index, aside)
    return trimmed, cut


def aside_path(dataset: Dataset, episode_dir: Path) -> Path:
    """Where an episode set aside goes: ``trimmed-originals/episode-N`` (``.1``, ``.2``... when an index was
    used again after a deletion: every original is kept)."""
    target = dataset.root / ORIGINALS_DIR / episode_dir.name
    n = 1
    while target.exists():
        target = target.with_name(f"{episode_dir.name}.{n}")
        n += 1
    return target


def set_aside(dataset: Dataset, index: int, target: Path | None = None) -> Path:
    """Move kept episode ``index`` out of the training set (one rename); returns where it went."""
    source = dataset.episode(index).path
    target = target or aside_path(dataset, source)
    target.parent.mkdir(exist_ok=True)
    dataset._forget(source)
    os.rename(source, target)
    fsync_dir(dataset.episodes_dir)
    fsync_dir(target.parent)
    return target
