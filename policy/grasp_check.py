"""The grasp check: before the gripper closes, the live hand view must line up with the demonstration's.

ALT replays the retrieved demonstration's absolute poses, so it grasps where that demonstration grasped.
When the object stands a couple of centimetres from where the demonstration had it, the fused embedding
still matches (the encoder is trained to ignore small shifts: random crops) and the arm descends and closes
on the object's rim or on air. The hand camera sees the mistake long before the fingers close: the object
is off-centre between the fingers where the demonstration had it centred.

The signal is a plain image comparison a user can check by eye: the normalised correlation of the edge maps
(grey, 64x64, Gaussian blur sigma 1 px, Sobel magnitude) of the live hand view and of the retrieved frame's
hand view. It applies to the frames of each demonstration from its start until its gripper first closes
(found from the gripper channel). Masking the gripper's own parts (pixels that barely change) was tried
and made no difference on the simulated rig's data, so every pixel counts.

Its threshold is calibrated on the demonstrations themselves: every pre-grasp frame is matched (by embedding)
to the nearest pre-grasp frame of *another* demonstration, whose object stood elsewhere but whose hand was
also aligned with it; the threshold is a low quantile of those values. A live replay at a training placement
lines up far better than two different demonstrations do, so the false-stop rate in distribution is well
below that quantile.

Assumptions (stated in the README): the hand camera sees the object before the grasp; the gripper's channel
says when the grasp happens (0 closed, 1 open); the gripper is open until the grasp.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 64
BLUR_SIGMA = 1.0
GRIPPER_OPEN = 0.5


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The grey SIZE x SIZE thumbnail the check compares (uint8) of an RGB hand image."""
    if image.shape[:2] != (SIZE, SIZE):
        image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def table_thumbnails(table, rows: np.ndarray) -> np.ndarray:
    """[len(rows), SIZE, SIZE] thumbnails of a frame table's hand views (policy.data.FrameTable)."""
    return np.stack([thumbnail(table.hand[int(r)].numpy()) for r in rows]) if len(rows) else \
        np.zeros((0, SIZE, SIZE), np.uint8)


def edge_map(thumb: np.ndarray) -> np.ndarray:
    g = cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), BLUR_SIGMA)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two maps (1.0: identical up to gain and offset)."""
    a, b = a.ravel(), b.ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / denom) if denom > 1e-9 else 0.0


def commands_close(chunk: np.ndarray | None) -> bool:
    """Whether a chunk of actions (end-effector pose + gripper, 8 values each) commands the gripper closed."""
    chunk = None if chunk is None else np.asarray(chunk)
    return bool(chunk is not None and chunk.ndim == 2 and chunk.shape[1] == 8 and np.any(chunk[:, 7] < GRIPPER_OPEN))


def pre_grasp_frames(actions: np.ndarray) -> int:
    """How many leading frames of an episode come before (and include) its gripper's first close command;
    0 when the gripper starts closed (nothing to check), all frames when it never closes."""
    grip = np.asarray(actions)[:, 7]
    if len(grip) == 0 or grip[0] < GRIPPER_OPEN:
        return 0
    closed = np.flatnonzero(grip < GRIPPER_OPEN)
    return int(closed[0]) + 1 if len(closed) else len(grip)


@dataclass
class GraspCheck:
    """Thumbnails of the table's pre-grasp frames and the threshold."""

    rows: np.ndarray  # [M] table rows the check applies to, ascending
    thumbs: np.ndarray  # [M, SIZE, SIZE] uint8
    threshold: float

    def __post_init__(self):
        self.rows = np.asarray(self.rows, np.int64)
        self._slot = {int(r): i for i, r in enumerate(self.rows)}
        self._edges: dict[int, np.ndarray] = {}

    def applies(self, row: int) -> bool:
        return int(row) in self._slot

    def reference_edges(self, row: int) -> np.ndarray:
        i = self._slot[int(row)]
        if i not in self._edges:
            self._edges[i] = edge_map(self.thumbs[i])
        return self._edges[i]

    def alignment(self, live_thumb: np.ndarray, row: int) -> float | None:
        """How well the live hand view lines up with table row ``row``'s (None: not a pre-grasp row)."""
        if not self.applies(row):
            return None
        return correlation(edge_map(live_thumb), self.reference_edges(row))

    def extended(self, rows: np.ndarray, thumbs: np.ndarray) -> "GraspCheck":
        """The same check with more pre-grasp rows (episodes added to the table); the threshold is kept."""
        return GraspCheck(np.concatenate([self.rows, rows]), np.concatenate([self.thumbs, thumbs]), self.threshold)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"grasp_rows": self.rows, "grasp_thumbs": self.thumbs}

    @classmethod
    def from_arrays(cls, arrays: dict, threshold: float | None) -> "GraspCheck | None":
        if threshold is None or "grasp_rows" not in arrays:
            return None
        return cls(arrays["grasp_rows"], arrays["grasp_thumbs"], float(threshold))


def grasp_frame(actions: np.ndarray) -> int | None:
    """The frame of an episode's first gripper close command (None: it never closes from open)."""
    n = pre_grasp_frames(actions)
    if n == 0 or actions[n - 1, 7] >= GRIPPER_OPEN:
        return None
    return n - 1


def pre_grasp_rows(episodes: np.ndarray, frames: np.ndarray, actions: dict[int, np.ndarray],
                   first_row: int = 0) -> np.ndarray:
    """Rows (offset by ``first_row``) of the frames before each episode's first grasp, for pose + gripper
    actions; empty for other action layouts."""
    if not actions or next(iter(actions.values())).shape[1] != 8:
        return np.zeros(0, np.int64)
    limit = {int(e): pre_grasp_frames(a) for e, a in actions.items()}
    keep = np.array([f < limit[int(e)] for e, f in zip(episodes, frames)], bool)
    return np.flatnonzero(keep) + first_row


def cross_demo_alignment(rows: np.ndarray, thumbs: np.ndarray, episodes: np.ndarray,
                         embeddings: np.ndarray) -> np.ndarray:
    """For every pre-grasp row, the alignment with the most similar (by embedding) pre-grasp row of another
    demonstration: how well two correct approaches to objects in different places line up."""
    eps = episodes[rows]
    z = embeddings[rows]
    sims = z @ z.T
    sims[eps[:, None] == eps[None, :]] = -2.0
    best = np.argmax(sims, axis=1)
    out = np.full(len(rows), np.nan)
    edges = [edge_map(t) for t in thumbs]
    for i, j in enumerate(best):
        if sims[i, j] > -2.0:
            out[i] = correlation(edges[i], edges[j])
    return out[~np.isnan(out)]
