"""Evaluation on the simulated rig: success, OOD stops, retrieval accuracy and latency per scenario."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from robot_drivers.sim.rig import SimRig

from .policy import ALTPolicy
from .probes import photos, synthetic_probes
from .runner import run_autonomous

#: An episode ends early once the task has been achieved for this many consecutive ticks.
SUCCESS_HOLD_TICKS = 5


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    reason: str
    ticks: int
    retrieval_accuracy: float | None  # share of retrievals from the demo at the nearest placement
    first_similarity: float
    min_similarity: float


@dataclass
class ScenarioReport:
    scenario: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def ood_stops(self) -> int:
        return sum(e.reason == "ood" for e in self.episodes)

    def summary(self) -> dict:
        acc = [e.retrieval_accuracy for e in self.episodes if e.retrieval_accuracy is not None]
        lat = np.asarray(self.latencies_ms)
        return {"scenario": self.scenario, "episodes": len(self.episodes), "successes": self.successes,
                "success_rate": self.successes / max(1, len(self.episodes)), "ood_stops": self.ood_stops,
                "retrieval_accuracy": float(np.mean(acc)) if acc else None,
                "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                "first_similarity_median": float(np.median([e.first_similarity for e in self.episodes])),
                "results": [asdict(e) for e in self.episodes]}


def _demo_placements(policy: ALTPolicy) -> dict[int, np.ndarray]:
    scenes = policy.info.get("episode_scenes") or {}
    return {int(e): np.asarray(s["mug"][:2]) for e, s in scenes.items() if s and "mug" in s}


def evaluate_scenario(policy: ALTPolicy, rig: SimRig, scenario: str, episodes: int, seed: int = 0,
                      max_ticks: int = 200, progress: Callable[[EpisodeResult], None] | None = None) -> ScenarioReport:
    placements = _demo_placements(policy)
    report = ScenarioReport(scenario)
    for i in range(episodes):
        scene = rig.reset(seed + i, scenario)
        mug = np.array([scene.mug.x, scene.mug.y])
        nearest_demos: set[int] = set()
        if placements:
            d = {e: float(np.linalg.norm(p - mug)) for e, p in placements.items()}
            best = min(d.values())
            nearest_demos = {e for e, v in d.items() if v <= best + 1e-6}
        held = [0]

        def succeeded() -> bool:
            held[0] = held[0] + 1 if rig.success() else 0
            return held[0] >= SUCCESS_HOLD_TICKS

        result = run_autonomous(rig, policy, max_ticks=max_ticks, stop_when=succeeded)
        sims = [r.similarity for r in result.retrievals]
        acc = None
        if nearest_demos and result.retrievals:
            acc = float(np.mean([r.matches[0].episode in nearest_demos for r in result.retrievals]))
        ep = EpisodeResult(seed + i, result.reason == "done" or rig.success(), result.reason, result.loop.ticks, acc,
                           sims[0] if sims else float("nan"), min(sims) if sims else float("nan"))
        report.episodes.append(ep)
        report.latencies_ms.extend(result.latencies_ms().tolist())
        if progress is not None:
            progress(ep)
    return report


def unrelated_image_report(policy: ALTPolicy, seed: int = 0) -> dict:
    """How often images unrelated to the scene are flagged OOD (both views fed the same image)."""
    size = (policy.config.image_width, policy.config.image_height)
    out = {}
    groups = {"noise and patterns": [(f"synthetic-{i}", im) for i, im in enumerate(synthetic_probes(60, size,
                                                                                                     seed=seed + 99))],
              "photos": photos(size)}
    for group, images in groups.items():
        if not images:
            out[group] = None
            continue
        sims = [policy.retrieve(im, im).similarity for _, im in images]
        out[group] = {"images": len(images), "flagged_ood": int(sum(s < policy.gamma for s in sims)),
                      "max_similarity": float(max(sims)), "median_similarity": float(np.median(sims))}
    return out


def in_distribution_frame_report(policy: ALTPolicy, dataset_root: str | Path, stride: int = 5) -> dict | None:
    """How often recorded in-distribution frames are (wrongly) flagged OOD."""
    from recorder.dataset import Dataset, DatasetError

    try:
        ds = Dataset.open(dataset_root)
    except DatasetError:
        return None
    with ds:
        sims = []
        for e in policy.info.get("episodes", []):
            n = ds.episode(e).length
            for f in range(0, n, stride):
                sims.append(policy.retrieve(ds.frame(e, "hand", f), ds.frame(e, "third", f)).similarity)
    sims = np.asarray(sims)
    return {"frames": len(sims), "flagged_ood": int(np.sum(sims < policy.gamma)),
            "min_similarity": float(sims.min()), "median_similarity": float(np.median(sims))}


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))

