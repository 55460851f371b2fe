"""Training data for ALT: every frame of the kept episodes, resized once, held in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from recorder.dataset import Dataset, DatasetError
from robot_drivers.types import ACTION_NAMES

from .config import PolicyConfig
from .encoder import VIEWS, resize_view

log = logging.getLogger(__name__)

#: "lerobot_import": an episode read from a LeRobotDataset (policy/lerobot_source.py); LeRobot keeps only
#: finished episodes.
COMPLETE_END_REASONS = ("stop_button", "lerobot_import")


@dataclass
class FrameTable:
    """All frames of the chosen episodes, in episode order."""

    hand: torch.Tensor  # [N, H, W, 3] uint8
    third: torch.Tensor  # [N, H, W, 3] uint8 (with one view, both names hold that view; the encoder reads one)
    pose: torch.Tensor  # [N, 7] float32 (x y z qx qy qz qw of the measured end-effector; zeros when not stored)
    episode: np.ndarray  # [N] dataset episode index
    frame: np.ndarray  # [N] step index within the episode
    actions: dict[int, np.ndarray]  # episode -> [T, D] actions actually sent (D = 8 for pose + gripper)

    def __len__(self) -> int:
        return len(self.episode)


def choose_episodes(dataset: Dataset, config: PolicyConfig) -> list[int]:
    chosen, skipped = [], []
    for info in dataset.episodes():
        if config.include_incomplete or info.end_reason in COMPLETE_END_REASONS:
            chosen.append(info.index)
        else:
            skipped.append((info.index, info.end_reason))
    if skipped:
        log.warning("leaving out %d incomplete episode(s): %s (include them with include_incomplete)",
                    len(skipped), ", ".join(f"{i} ({r})" for i, r in skipped))
    if not chosen:
        raise DatasetError(f"{dataset.root} has no complete episodes to train on")
    return chosen


def dataset_views(dataset: Dataset) -> tuple[str, ...]:
    """The camera roles a dataset has, in the encoder's order: ("hand", "third"), ("hand",) or ("third",)."""
    cams = {c.name for c in dataset.spec.cameras}
    views = tuple(v for v in VIEWS if v in cams)
    if not views:
        raise DatasetError(f"{dataset.root} has cameras {sorted(cams)}; ALT needs a view named 'hand' or 'third'")
    return views


def stores_ee_pose(names) -> bool:
    """Whether a state or action layout starts with the end-effector pose x y z qx qy qz qw."""
    return tuple(names[:7]) == ACTION_NAMES[:7]


def load_frames(dataset: Dataset, config: PolicyConfig, episodes: list[int] | None = None,
                progress=None) -> FrameTable:
    cams = {c.name for c in dataset.spec.cameras}
    missing = [v for v in config.views if v not in cams]
    if missing:
        raise DatasetError(f"{dataset.root} has cameras {sorted(cams)}; this policy needs views named "
                           f"{list(config.views)} (missing {missing})")
    has_pose = stores_ee_pose(dataset.spec.state_names)
    if config.use_pose and not has_pose:
        raise DatasetError(f"{dataset.root} stores no end-effector pose in its state "
                           f"({list(dataset.spec.state_names)}); train without --pose")
    episodes = choose_episodes(dataset, config) if episodes is None else episodes
    views: dict[str, list[np.ndarray]] = {v: [] for v in config.views}
    poses, ep_ids, frame_ids, actions = [], [], [], {}
    total = sum(dataset.episode(i).length for i in episodes)
    done = 0
    for e in episodes:
        data = dataset.load_episode(e)
        n = data.info.length
        actions[e] = data.actions.astype(np.float32)
        poses.append(data.states[:, :7] if has_pose else np.zeros((n, 7), np.float32))
        ep_ids.append(np.full(n, e, np.int64))
        frame_ids.append(np.arange(n, dtype=np.int64))
        for i in range(n):
            for v in config.views:
                views[v].append(resize_view(dataset.frame(e, v, i), config))
        done += n
        if progress is not None:
            progress(done, total)
    stacked = {v: torch.from_numpy(np.stack(views[v])) for v in config.views}
    first = stacked[config.views[0]]
    return FrameTable(hand=stacked.get("hand", first), third=stacked.get("third", first),
                      pose=torch.from_numpy(np.concatenate(poses).astype(np.float32)),
                      episode=np.concatenate(ep_ids), frame=np.concatenate(frame_ids), actions=actions)


def action_chunks(table: FrameTable, chunk_length: int) -> np.ndarray:
    """For every frame, the actions from that frame on, padded with the episode's last action. [N, L, D]"""
    dim = next(iter(table.actions.values())).shape[1]
    out = np.empty((len(table), chunk_length, dim), np.float32)
    for row, (e, f) in enumerate(zip(table.episode, table.frame)):
        acts = table.actions[int(e)]
        idx = np.minimum(np.arange(f, f + chunk_length), len(acts) - 1)
        out[row] = acts[idx]
    return out
