"""The ALT policy: encoder + lookup database + OOD threshold, built from a dataset, saved as one folder."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recorder.dataset import Dataset

from .artifact import (PolicyArtifactError, check_artifact, load_database_arrays, save_database, write_artifact)
from .config import PolicyConfig
from .data import action_chunks, load_frames
from .database import LookupDatabase, Match, probe_queries
from .encoder import ALTEncoder, resize_view
from .probes import synthetic_probes
from .train import TrainProgress, embed_table, train_encoder

log = logging.getLogger(__name__)


#: Frames of one demonstration that look identical (the arm waiting, the gripper closing) have equal
#: similarity; of those, the latest is taken so that execution moves on instead of replaying the wait.
TIE_CANDIDATES = 8
TIE_TOLERANCE = 1e-4


def _latest_of_ties(matches: list[Match]) -> Match:
    best = matches[0]
    ties = [m for m in matches if m.episode == best.episode and m.similarity >= best.similarity - TIE_TOLERANCE]
    return max(ties, key=lambda m: m.frame)


@dataclass(frozen=True)
class Retrieval:
    """One lookup: the best matches, whether it is out of distribution, and the chunk to execute."""

    matches: list[Match]  # best first
    similarity: float  # of the best match
    ood: bool
    chunk: np.ndarray  # [L, 8] absolute actions from the matched frame on
    embed_ms: float
    search_ms: float


@dataclass
class Calibration:
    """How gamma was chosen, kept in the artefact so the choice can be audited."""

    gamma: float
    method: str
    in_distribution: dict = field(default_factory=dict)  # percentiles of held-out-episode similarity
    unrelated: dict = field(default_factory=dict)  # percentiles of synthetic unrelated images' similarity


def _percentiles(x: np.ndarray) -> dict:
    return {f"p{q}": float(np.percentile(x, q)) for q in (0, 1, 5, 50, 95, 99, 100)}


def calibrate_gamma(embeddings: np.ndarray, episodes: np.ndarray, unrelated: np.ndarray) -> Calibration:
    """Choose gamma between what a new demonstration looks like and what unrelated images look like.

    In-distribution evidence: each frame's best similarity to the frames of the
    *other* episodes (leave one episode out: a new demonstration near the
    training placements, the hardest in-distribution case). Out-of-distribution
    evidence: the best similarity of synthetic unrelated images. gamma is the
    midpoint between the 1st percentile of the former and the maximum of the
    latter; if they overlap, the threshold that best separates them.
    """
    sims = embeddings @ embeddings.T
    sims[episodes[:, None] == episodes[None, :]] = -2.0
    loeo = sims.max(axis=1)
    if np.all(loeo <= -2.0):  # a single episode: no held-out evidence; use the frames against themselves
        loeo = np.ones(len(embeddings))
    ood = (unrelated @ embeddings.T).max(axis=1)
    lo_id, hi_ood = float(np.percentile(loeo, 1)), float(ood.max())
    if hi_ood < lo_id:
        gamma, method = (lo_id + hi_ood) / 2, "midpoint: 1st percentile of held-out-episode similarity and max of unrelated images"
    else:
        candidates = np.unique(np.concatenate([loeo, ood]))
        scores = [(np.mean(loeo >= c) + np.mean(ood < c)) / 2 for c in candidates]
        gamma = float(candidates[int(np.argmax(scores))])
        method = "best balanced accuracy (in-distribution and unrelated similarities overlap)"
        log.warning("OOD calibration: unrelated images reach similarity %.3f, above the 1st percentile %.3f of "
                    "held-out demonstrations; gamma %.3f is a compromise", hi_ood, lo_id, gamma)
    return Calibration(float(gamma), method, _percentiles(loeo), _percentiles(ood))


class ALTPolicy:
    def __init__(self, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                 calibration: Calibration | None = None, info: dict | None = None):
        self.config = config
        self.encoder = encoder.eval()
        self.database = database
        self.calibration = calibration
        self.info = dict(info or {})
        self.gamma = calibration.gamma if calibration is not None else config.gamma
        self._device = next(encoder.parameters()).device

    # -- run time ---------------------------------------------------------
    @torch.inference_mode()
    def embed(self, hand: np.ndarray, third: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """Unit embedding of one observation (RGB uint8 frames of any size; None for a view the policy does not
        use)."""
        h, t = (None if x is None else torch.from_numpy(np.ascontiguousarray(resize_view(x, self.config)))[None]
                .to(self._device) for x in (hand, third))
        p = None
        if self.encoder.pose is not None:
            if pose is None:
                raise ValueError("this policy uses the end-effector pose; pass it")
            p = torch.as_tensor(np.asarray(pose, np.float32)[:7])[None].to(self._device)
        return self.encoder(h, t, p)[0].cpu().numpy()

    def retrieve(self, hand: np.ndarray, third: np.ndarray, pose: np.ndarray | None = None,
                 k: int | None = None, prefer_episode: int | None = None) -> Retrieval:
        """Look the observation up. ``prefer_episode``: the demonstration being executed; it is kept unless
        another one matches better by more than ``config.episode_hysteresis`` (no flip-flopping between two
        neighbouring demonstrations mid-motion)."""
        t0 = time.perf_counter()
        z = self.embed(hand, third, pose)
        t1 = time.perf_counter()
        k = k or self.config.top_k
        matches = self.database.search(z, k + TIE_CANDIDATES)
        best = _latest_of_ties(matches)
        if prefer_episode is not None and best.episode != prefer_episode:
            own = self.database.best_in_episode(z, prefer_episode)
            if own is not None and own.similarity >= best.similarity - self.config.episode_hysteresis:
                best = own
        t2 = time.perf_counter()
        matches = [best] + [m for m in matches if m.row != best.row][:k - 1]
        return Retrieval(matches, best.similarity, best.similarity < self.gamma, self.database.chunks[best.row],
                         (t1 - t0) * 1000, (t2 - t1) * 1000)

    # -- building ---------------------------------------------------------
    @classmethod
    def build(cls, dataset: Dataset, config: PolicyConfig, *,
              progress: Callable[[str, TrainProgress | tuple[int, int]], None] | None = None,
              cancel: threading.Event | None = None, device: str | None = None) -> "ALTPolicy":
        """Load frames, train the encoder, embed every frame, build the index, calibrate gamma."""
        report = (lambda stage, value: progress(stage, value)) if progress else (lambda *a: None)
        t0 = time.perf_counter()
        table = load_frames(dataset, config, progress=lambda d, n: report("load", (d, n)))
        trained = train_encoder(table, config, progress=lambda p: report("train", p), cancel=cancel, device=device)
        embeddings = embed_table(trained.encoder, table, progress=lambda d, n: report("embed", (d, n)))
        database = LookupDatabase(embeddings, table.episode, table.frame, action_chunks(table, config.chunk_length))
        database.build_annoy(config.annoy_trees, seed=config.seed)
        queries = probe_queries(embeddings, table.episode, min(2000, 4 * len(embeddings)), seed=config.seed)
        search_k, recall = database.tune_search_k(queries)
        probes = synthetic_probes(48, (config.image_width, config.image_height), seed=config.seed + 1)
        unrelated = embed_images(trained.encoder, probes, probes, pose=table.pose.mean(0).numpy())
        calibration = calibrate_gamma(embeddings, table.episode, unrelated)
        info = {
            "dataset": str(Path(dataset.root).resolve()),
            "episodes": sorted(int(e) for e in table.actions),
            "frames": len(table), "train_frames": trained.train_frames, "device": trained.device,
            "init": trained.encoder.init, "train_seconds": trained.seconds,
            "build_seconds": time.perf_counter() - t0, "epoch_losses": trained.epoch_losses,
            "annoy": {"trees": config.annoy_trees, "search_k": search_k, "recall_at_1": recall,
                      "probe_queries": len(queries)},
            "fps": dataset.spec.fps, "cameras": [c.name for c in dataset.spec.cameras],
            # where each demonstration's object was (simulated datasets), for retrieval-accuracy reports
            "episode_scenes": {str(e): dataset.episode(int(e)).extra.get("scene") for e in sorted(table.actions)},
        }
        return cls(config, trained.encoder, database, calibration, info)

    # -- persistence ------------------------------------------------------
    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        def write(tmp: Path) -> None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            save_file(state, str(tmp / "encoder.safetensors"))
            db = self.database
            save_database(tmp / "database.npz", db.embeddings, db.episodes, db.frames, db.chunks)
            if not db.has_annoy:
                db.build_annoy(self.config.annoy_trees, seed=self.config.seed)
            db.save_annoy(tmp / "index.ann")
            doc = {"config": self.config.to_json(), "gamma": self.gamma,
                   "calibration": None if self.calibration is None else self.calibration.__dict__,
                   "info": self.info, "annoy_search_k": db.search_k}
            (tmp / "config.json").write_text(json.dumps(doc, indent=1))

        return write_artifact(Path(out), write, overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "ALTPolicy":
        path = Path(path)
        check_artifact(path)
        try:
            doc = json.loads((path / "config.json").read_text())
            config = PolicyConfig.from_json(doc["config"])
            encoder = ALTEncoder(config, pretrained="none")
            encoder.load_state_dict(load_file(str(path / "encoder.safetensors")))
            arrays = load_database_arrays(path / "database.npz")
            database = LookupDatabase(arrays["embeddings"], arrays["episodes"], arrays["frames"], arrays["chunks"])
            database.load_annoy(path / "index.ann", config.annoy_trees, int(doc["annoy_search_k"]))
        except (KeyError, ValueError, RuntimeError, OSError) as exc:
            raise PolicyArtifactError(f"{path}: the policy files are inconsistent ({exc}); retrain it") from exc
        cal = doc.get("calibration")
        calibration = Calibration(**cal) if cal else None
        policy = cls(config, encoder.to(device or "cpu"), database, calibration, doc.get("info"))
        policy.gamma = float(doc["gamma"])
        return policy


@torch.inference_mode()
def embed_images(encoder: ALTEncoder, hands: list[np.ndarray], thirds: list[np.ndarray],
                 pose: np.ndarray | None = None) -> np.ndarray:
    """Embeddings of image pairs (any size), [N, D]; ``pose`` (7,) is used for every pair if the encoder wants one."""
    encoder.eval()
    dev = next(encoder.parameters()).device
    h = torch.from_numpy(np.stack([resize_view(x, encoder.config) for x in hands])).to(dev)
    t = torch.from_numpy(np.stack([resize_view(x, encoder.config) for x in thirds])).to(dev)
    p = None
    if encoder.pose is not None:
        if pose is None:
            raise ValueError("this encoder uses the end-effector pose; pass one")
        p = torch.as_tensor(np.asarray(pose, np.float32)[:7]).expand(len(h), 7).to(dev)
    return encoder(h, t, p).cpu().numpy()
