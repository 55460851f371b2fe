"""Training data for ALT: every frame of the kept episodes, resized once, held in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from recorder.dataset import Dataset, DatasetError
from robot_drivers.transforms import POSE_QUAT, sign_continuous_poses

from .config import PolicyConfig
from .encoder import VIEWS, resize_view

log = logging.getLogger(__name__)

COMPLETE_END_REASONS = ("stop_button",)


@dataclass
class FrameTable:
    """All frames of the chosen episodes, in episode order."""

    hand: torch.Tensor  # [N, H, W, 3] uint8
    third: torch.Tensor  # [N, H, W, 3] uint8
    pose: torch.Tensor  # [N, 7] float32 (x y z qx qy qz qw of the measured end-effector)
    episode: np.ndarray  # [N] dataset episode index
    frame: np.ndarray  # [N] step index within the episode
    actions: dict[int, np.ndarray]  # episode -> [T, 8] actions actually sent
    pose_reference: np.ndarray | None = None  # (4,) every pose's quaternion is in its hemisphere (load_frames)
    fingerprints: dict[int, str] = field(default_factory=dict)  # episode -> Dataset.episode_fingerprint when loaded

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


def load_frames(dataset: Dataset, config: PolicyConfig, episodes: list[int] | None = None,
                progress=None) -> FrameTable:
    cams = {c.name for c in dataset.spec.cameras}
    missing = [v for v in VIEWS if v not in cams]
    if missing:
        raise DatasetError(f"{dataset.root} has cameras {sorted(cams)}; ALT needs views named {list(VIEWS)} "
                           f"(missing {missing})")
    episodes = choose_episodes(dataset, config) if episodes is None else episodes
    views: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    poses, ep_ids, frame_ids, actions, fingerprints = [], [], [], {}, {}
    reference = None
    total = sum(dataset.episode(i).length for i in episodes)
    done = 0
    for e in episodes:
        fingerprints[e] = dataset.episode_fingerprint(e)
        data = dataset.load_episode(e)
        n = data.info.length
        actions[e] = data.actions.astype(np.float32)  # sign-continuous quaternions (Dataset.load_episode)
        # Each episode's poses are continuous; all start in the first episode's hemisphere, which the
        # policy also puts run-time poses in (ALTPolicy.embed), so q and -q never reach the encoder as
        # two different inputs.
        reference = data.states[0, POSE_QUAT] if reference is None else reference
        poses.append(sign_continuous_poses(data.states[:, :7], reference))
        ep_ids.append(np.full(n, e, np.int64))
        frame_ids.append(np.arange(n, dtype=np.int64))
        for i in range(n):
            for v in VIEWS:
                views[v].append(resize_view(dataset.frame(e, v, i), config))
        done += n
        if progress is not None:
            progress(done, total)
    return FrameTable(hand=torch.from_numpy(np.stack(views["hand"])), third=torch.from_numpy(np.stack(views["third"])),
                      pose=torch.from_numpy(np.concatenate(poses).astype(np.float32)),
                      pose_reference=np.asarray(reference, np.float64), fingerprints=fingerprints,
                      episode=np.concatenate(ep_ids), frame=np.concatenate(frame_ids), actions=actions)


def action_chunks(table: FrameTable, chunk_length: int) -> np.ndarray:
    """For every frame, the actions from that frame on, padded with the episode's last action. [N, L, 8]"""
    out = np.empty((len(table), chunk_length, 8), np.float32)
    for row, (e, f) in enumerate(zip(table.episode, table.frame)):
        acts = table.actions[int(e)]
        idx = np.minimum(np.arange(f, f + chunk_length), len(acts) - 1)
        out[row] = acts[idx]
    return out
