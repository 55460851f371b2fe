"""Exact feature statistics in LeRobot's layout: per-dimension vector statistics, and per-channel image statistics from histograms."""

from __future__ import annotations

from typing import Callable

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count") + QUANTILE_KEYS



def _quantiles_from_sorted_ranks(value_at_rank: Callable[[int], np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Quantiles with linear interpolation between order statistics (numpy's default method)."""
    out = {}
    for q, key in zip(QUANTILES, QUANTILE_KEYS):
        r = q * (n - 1)
        lo, hi = int(np.floor(r)), int(np.ceil(r))
        a, b = value_at_rank(lo), value_at_rank(hi)
        out[key] = a + (r - lo) * (b - a)
    return out


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension statistics of an (N,) or (N, D) array; (N,) gives shape-(1,) results."""
    x = np.asarray(x)
    flat = x.reshape(len(x), -1)
    xf = flat.astype(np.float64)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": xf.mean(0), "std": xf.std(0),
           "count": np.array([len(x)], np.int64)}
    for key, value in zip(QUANTILE_KEYS, np.quantile(xf, QUANTILES, axis=0)):
        out[key] = value
    return out


class ImageStats:
    """Exact per-channel statistics of uint8 RGB frames, kept as 256-bin histograms per channel."""

    _OFFSETS = np.array([0, 256, 512])

    def __init__(self):
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        counts = np.bincount((image.reshape(-1, 3) + self._OFFSETS).ravel(), minlength=768)
        self.hist += counts.reshape(3, 256)
        self.frames += 1

    def merge(self, other: "ImageStats") -> None:
        self.hist += other.hist
        self.frames += other.frames

    def result(self) -> dict[str, np.ndarray]:
        """LeRobot's layout: values in [0, 1], each statistic shaped (3, 1, 1), count = frames."""
        values = np.arange(256, dtype=np.float64)
        n = self.hist.sum(1)[0]
        cum = np.cumsum(self.hist, axis=1)
        mean = (self.hist * values).sum(1) / n
        var = (self.hist * values ** 2).sum(1) / n - mean ** 2
        nonzero = self.hist > 0
        out = {"min": nonzero.argmax(1).astype(np.float64),
               "max": 255 - nonzero[:, ::-1].argmax(1).astype(np.float64),
               "mean": mean, "std": np.sqrt(np.maximum(var, 0.0))}
        out.update(_quantiles_from_sorted_ranks(
            lambda rank: np.array([np.searchsorted(cum[c], rank, side="right") for c in range(3)], np.float64), n))
        out = {k: (v / 255.0).reshape(3, 1, 1) for k, v in out.items()}
        out["count"] = np.array([self.frames], np.int64)
        return {k: out[k] for k in STAT_KEYS}


def _stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}

