"""Training data for ALT: every frame of the kept episodes, resized once, held in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from recorder.dataset import Dataset, DatasetError
from core.transforms import POSE_QUAT, sign_continuous_poses
from core.types import ACTION_NAMES

from policy.config import PolicyConfig
from policy.encoder import VIEWS, resize_view

log = logging.getLogger(__name__)

#: "lerobot_import": an episode read from a LeRobotDataset (lerobot_bridge/source.py); LeRobot keeps only
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
    pose_reference: np.ndarray | None = None  # (4,) every pose's quaternion is in its hemisphere (load_frames)
    fingerprints: dict[int, str] = field(default_factory=dict)  # episode -> Dataset.episode_fingerprint when loaded
    # episode -> its first third-person frame at the camera's own size (the landmark method finds things in it)
    first_thirds: dict[int, np.ndarray] = field(default_factory=dict)
    # how the dataset stored its images: (codec, JPEG quality) (the landmark method looks at live frames so)
    image_codec: tuple[str, int] | None = None

    def __len__(self) -> int:
        return len(self.episode)


def choose_episodes(dataset: Dataset, config: PolicyConfig, among: list[int] | None = None) -> list[int]:
    """The complete episodes (unless ``config.include_incomplete``) of ``among`` (default: all)."""
    chosen, skipped = [], []
    for info in dataset.episodes() if among is None else [dataset.episode(i) for i in among]:
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
    poses, ep_ids, frame_ids, actions, fingerprints, first_thirds = [], [], [], {}, {}, {}
    reference = None
    total = sum(dataset.episode(i).length for i in episodes)
    done = 0
    for e in episodes:
        fingerprints[e] = dataset.episode_fingerprint(e)
        data = dataset.load_episode(e)
        n = data.info.length
        actions[e] = data.actions.astype(np.float32)  # sign-continuous quaternions (Dataset.load_episode)
        if has_pose:
            # Each episode's poses are continuous; all start in the first episode's hemisphere, which the
            # policy also puts run-time poses in (ALTPolicy.embed), so q and -q never reach the encoder as
            # two different inputs.
            reference = data.states[0, POSE_QUAT] if reference is None else reference
            poses.append(sign_continuous_poses(data.states[:, :7], reference))
        else:
            poses.append(np.zeros((n, 7), np.float32))
        ep_ids.append(np.full(n, e, np.int64))
        frame_ids.append(np.arange(n, dtype=np.int64))
        for i in range(n):
            for v in config.views:
                raw = dataset.frame(e, v, i)
                if i == 0 and v == "third":
                    first_thirds[e] = np.asarray(raw)
                views[v].append(resize_view(raw, config))
        done += n
        if progress is not None:
            progress(done, total)
    stacked = {v: torch.from_numpy(np.stack(views[v])) for v in config.views}
    first = stacked[config.views[0]]
    return FrameTable(hand=stacked.get("hand", first), third=stacked.get("third", first),
                      pose=torch.from_numpy(np.concatenate(poses).astype(np.float32)),
                      pose_reference=None if reference is None else np.asarray(reference, np.float64),
                      fingerprints=fingerprints, first_thirds=first_thirds,
                      image_codec=(dataset.spec.codec, int(dataset.spec.jpeg_quality)),
                      episode=np.concatenate(ep_ids), frame=np.concatenate(frame_ids), actions=actions)


#: An "idle" tick: the commanded position moved less than this (m) and the gripper command did not change.
IDLE_MOTION_M = 1e-3
IDLE_GRIPPER = 0.05


def resume_index(actions: np.ndarray) -> np.ndarray:
    """For every step, where its chunk starts: itself, or, inside an idle stretch with the gripper open (the
    operator waiting before moving), the stretch's last step, where motion resumes.

    A retrieved idle frame then commands the motion that followed the wait instead of the wait itself, so
    the arm cannot sit at a demonstration's still start forever. Stretches with the gripper closed (the
    grasp settling) are kept as recorded.
    """
    actions = np.asarray(actions)
    n = len(actions)
    moved = np.linalg.norm(np.diff(actions[:, :3], axis=0), axis=1) >= IDLE_MOTION_M
    gripper_changed = np.abs(np.diff(actions[:, 7])) >= IDLE_GRIPPER
    # idle_next[i]: step i and step i+1 command the same open-gripper target
    idle_next = ~moved & ~gripper_changed & (actions[:-1, 7] >= 0.5)
    out = np.arange(n)
    for i in range(n - 2, -1, -1):
        if idle_next[i]:
            out[i] = out[i + 1]
    return out


def action_chunks(table: FrameTable, chunk_length: int) -> np.ndarray:
    """For every frame, the actions from that frame on (from where motion resumes, for a frame in an idle
    stretch of an end-effector pose + gripper layout: see :func:`resume_index`), padded with the episode's last
    action. [N, L, D]"""
    dim = next(iter(table.actions.values())).shape[1]
    out = np.empty((len(table), chunk_length, dim), np.float32)
    starts = {e: resume_index(a) if dim == 8 else np.arange(len(a)) for e, a in table.actions.items()}
    for row, (e, f) in enumerate(zip(table.episode, table.frame)):
        acts = table.actions[int(e)]
        start = starts[int(e)][f]
        idx = np.minimum(np.arange(start, start + chunk_length), len(acts) - 1)
        out[row] = acts[idx]
    return out
