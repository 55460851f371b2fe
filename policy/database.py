"""The lookup table: one unit embedding per training frame, its key and the action chunk that follows it.

Retrieval is by cosine similarity (the dot product of unit vectors), either
exact (one matrix-vector product) or through an annoy index (angular metric)
whose candidates are re-ranked exactly, so a returned similarity is always the
true cosine similarity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.transforms import sign_continuous_poses

log = logging.getLogger(__name__)

#: Below this many entries exact search is faster than any index.
EXACT_UP_TO = 200_000


@dataclass(frozen=True)
class Match:
    row: int
    episode: int
    frame: int
    similarity: float


class LookupDatabase:
    def __init__(self, embeddings: np.ndarray, episodes: np.ndarray, frames: np.ndarray, chunks: np.ndarray,
                 view_embeddings: np.ndarray | None = None, pose_actions: bool = True):
        """``view_embeddings`` [N, 2, V]: each frame's per-view unit features (hand, third), for the gate's
        per-view agreement check; None for policies built before it existed. ``pose_actions``: the chunks
        are end-effector poses + gripper (their quaternions are made sign-continuous); False for other action
        spaces (joint positions)."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        n = len(embeddings)
        if not (len(episodes) == len(frames) == len(chunks) == n):
            raise ValueError(f"database columns disagree: {n} embeddings, {len(episodes)} episode ids, "
                             f"{len(frames)} frame ids, {len(chunks)} chunks")
        if n == 0:
            raise ValueError("an empty database cannot retrieve anything")
        norms = np.linalg.norm(embeddings, axis=1)
        if np.any(np.abs(norms - 1) > 1e-3):
            raise ValueError("database embeddings must be unit vectors")
        self.embeddings = embeddings
        self.episodes = np.asarray(episodes, np.int64)
        self.frames = np.asarray(frames, np.int64)
        # Sign-continuous quaternions along each chunk (policies built before the dataset ensured it may
        # hold chunks in which q jumps to -q).
        chunks = np.asarray(chunks, np.float32)
        self.chunks = sign_continuous_poses(chunks) if pose_actions else chunks
        if view_embeddings is not None and (view_embeddings.ndim != 3 or len(view_embeddings) != n):
            raise ValueError(f"view embeddings of shape {view_embeddings.shape} do not fit {n} frames")
        self.view_embeddings = None if view_embeddings is None else np.asarray(view_embeddings, np.float32)
        self._annoy = None
        self._rows: dict[tuple[int, int], int] | None = None
        self.search_k = -1
        self.annoy_trees = 0

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    # -- exact ------------------------------------------------------------
    def search_exact(self, query: np.ndarray, k: int = 1) -> list[Match]:
        sims = self.embeddings @ np.asarray(query, np.float32)
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return [self._match(int(i), float(sims[i])) for i in top]

    def best_in_episode(self, query: np.ndarray, episode: int, count: int = 1,
                        allowed: np.ndarray | None = None) -> list[Match]:
        """The ``count`` best matches within one episode, best first (empty if it has no frames); ``allowed``: a
        mask over all rows the matches must lie in."""
        mask = self.episodes == episode
        rows = np.flatnonzero(mask if allowed is None else mask & allowed)
        if len(rows) == 0:
            return []
        sims = self.embeddings[rows] @ np.asarray(query, np.float32)
        order = np.argsort(-sims, kind="stable")[:count]
        return [self._match(int(rows[i]), float(sims[i])) for i in order]

    def row_of(self, episode: int, frame: int) -> int | None:
        """The row holding ``frame`` of ``episode`` (None if the table does not have it)."""
        if self._rows is None:
            self._rows = {(int(e), int(f)): i for i, (e, f) in enumerate(zip(self.episodes, self.frames))}
        return self._rows.get((int(episode), int(frame)))

    def lowest_similarity_to_other_demonstrations(self, block: int = 2048) -> float:
        """The lowest, over the table's frames, of each frame's best similarity to a frame of another
        demonstration: how unlike the others one demonstration can be (nan with fewer than two). In blocks of rows,
        so a large table needs no N x N matrix."""
        episodes = np.asarray(self.episodes)
        if len(np.unique(episodes)) < 2:
            return float("nan")
        z = np.asarray(self.embeddings, np.float32)
        lowest = np.inf
        for start in range(0, len(z), block):
            s = z[start:start + block] @ z.T
            s[episodes[start:start + block, None] == episodes[None, :]] = -np.inf
            lowest = min(lowest, float(s.max(axis=1).min()))
        return lowest

    def _match(self, row: int, sim: float) -> Match:
        return Match(row, int(self.episodes[row]), int(self.frames[row]), sim)

    # -- annoy ------------------------------------------------------------
    def build_annoy(self, trees: int = 16, seed: int = 0) -> None:
        from annoy import AnnoyIndex

        index = AnnoyIndex(self.dim, "angular")
        index.set_seed(seed)
        for i, v in enumerate(self.embeddings):
            index.add_item(i, v)
        index.build(trees, n_jobs=1)
        self._annoy = index
        self.annoy_trees = trees

    def load_annoy(self, path: Path, trees: int, search_k: int) -> None:
        from annoy import AnnoyIndex

        index = AnnoyIndex(self.dim, "angular")
        if not index.load(str(path)):
            raise OSError(f"could not load the annoy index {path}")
        if index.get_n_items() != len(self):
            raise ValueError(f"{path} indexes {index.get_n_items()} items, the database has {len(self)}")
        self._annoy, self.annoy_trees, self.search_k = index, trees, search_k

    def save_annoy(self, path: Path) -> None:
        if self._annoy is None:
            raise ValueError("no annoy index was built")
        self._annoy.save(str(path))
        # AnnoyIndex.save leaves the index mmap'ed from the file, which is what we want.

    @property
    def has_annoy(self) -> bool:
        return self._annoy is not None

    def search_annoy(self, query: np.ndarray, k: int = 1, search_k: int | None = None,
                     candidates: int = 10) -> list[Match]:
        """annoy's nearest candidates, re-ranked by exact cosine similarity."""
        if self._annoy is None:
            raise ValueError("no annoy index; build or load one first")
        sk = self.search_k if search_k is None else search_k
        rows = self._annoy.get_nns_by_vector(np.asarray(query, np.float32).tolist(), max(k, candidates),
                                             search_k=sk)
        rows = np.asarray(rows, np.int64)
        sims = self.embeddings[rows] @ np.asarray(query, np.float32)
        order = np.argsort(-sims, kind="stable")[:k]
        return [self._match(int(rows[i]), float(sims[i])) for i in order]

    def search(self, query: np.ndarray, k: int = 1) -> list[Match]:
        """Exact below EXACT_UP_TO entries (it is faster there); annoy above, when an index exists."""
        if self._annoy is not None and len(self) > EXACT_UP_TO:
            return self.search_annoy(query, k)
        return self.search_exact(query, k)

    def tune_search_k(self, queries: np.ndarray, target_recall: float = 1.0) -> tuple[int, float]:
        """Smallest search_k whose top-1 equals exact search on ``queries``; returns (search_k, recall@1)."""
        best = np.max(queries @ self.embeddings.T, axis=1)  # ties (identical frames) count as found
        n = len(self)
        ladder = sorted({min(n * self.annoy_trees, self.annoy_trees * m) for m in
                         (10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000, 30000, 100000)})
        recall = 0.0
        for sk in ladder:
            got = np.array([self.search_annoy(q, 1, search_k=sk)[0].similarity for q in queries])
            recall = float(np.mean(got >= best - 1e-6))
            if recall >= target_recall:
                self.search_k = sk
                return sk, recall
        self.search_k = ladder[-1]
        return self.search_k, recall


def probe_queries(embeddings: np.ndarray, episodes: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Queries that look like run-time observations: points between neighbouring frames of a demonstration,
    nudged off the trajectory, normalised to unit length."""
    rng = np.random.default_rng(seed)
    n = len(embeddings)
    i = rng.integers(0, n - 1, size=count)
    same = episodes[i] == episodes[np.minimum(i + 1, n - 1)]
    j = np.where(same, i + 1, i)
    t = rng.uniform(0, 1, size=(count, 1))
    q = embeddings[i] * (1 - t) + embeddings[j] * t
    spread = np.median(np.linalg.norm(embeddings[1:] - embeddings[:-1], axis=1))
    q = q + rng.normal(0, spread / np.sqrt(embeddings.shape[1]), size=q.shape)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
