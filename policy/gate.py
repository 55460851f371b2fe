"""The OOD gate's evidence: held-out demonstrations, negatives made from them, and the thresholds.

The gate has three signals, each a cosine similarity a user can read:

* ``similarity``: the best match's similarity to the live observation (the paper's gamma test);
* ``hand_view`` / ``third_view``: how well each live view agrees with the same view of the retrieved
  training frame (unit per-view features of the shared backbone). One view replaced by something
  else (a photo, a covered lens, another scene) barely moves the fused similarity but breaks its view's
  agreement.

Each threshold is the quantile of the held-out demonstrations' values at the stated false-stop rate, split
evenly over the three signals, so the rate of false stops on frames the encoder never trained on is what the
user asked for; where there are too few held-out frames to show that quantile, it is read from the values'
modelled tail (``calibrated_threshold``). The negatives are only *measured* against the thresholds and
reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SIGNALS = ("similarity", "hand_view", "third_view")
#: The signals the gate's persistence may hold back (``Persistence``): the three above and the grasp check's
#: alignment (policy/grasp_check.py), which, like a view's agreement, dips for a lookup or two where the live
#: frame falls between two recorded ones (under other light the edges of the hand's own parts change too) and
#: stays down where the object is not where the demonstration had it. The grasp check is held back only while the
#: frame it compares with is more than a chunk (``chunk_length``) before its demonstration's close
#: (``ALTPolicy.retrieve``); nearer, the hand descends beside the object, and its fingers can knock it over before a
#: held-back doubt would stop them.
GRASP_SIGNAL = "grasp_alignment"
PERSISTENT_SIGNALS = SIGNALS + (GRASP_SIGNAL,)
#: Of those, the ones that judge the approach to a grasp rather than the scene: held back on a run's first lookup
#: too (the scene is judged there by the others at once; the approach starts when the arm moves, and a failure
#: that lasts still stops it before the close). A relit scene's first hand view, the hand high above the table,
#: has edges the demonstrations' lacked for a lookup or two.
APPROACH_SIGNALS = frozenset({GRASP_SIGNAL})

#: Near-OOD negatives made from the held-out demonstrations (one view altered) and far ones (both views).
NEGATIVE_KINDS = ("blank_view", "swapped_view", "occluded_view", "shifted_view", "recoloured_view",
                  "texture_in_view", "texture_both", "synthetic_both")


@dataclass
class GateEvidence:
    """The three signal values for a set of observations, [N] each."""

    similarity: np.ndarray
    hand_view: np.ndarray
    third_view: np.ndarray

    def signal(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def stopped(self, thresholds: dict[str, float]) -> np.ndarray:
        """Which observations at least one signal stops."""
        out = np.zeros(len(self.similarity), bool)
        for name, value in thresholds.items():
            out |= self.signal(name) < value
        return out

    def take(self, mask: np.ndarray) -> "GateEvidence":
        return GateEvidence(self.similarity[mask], self.hand_view[mask], self.third_view[mask])


def quantile_threshold(values: np.ndarray, rate: float) -> float:
    """The largest threshold that stops at most ``rate`` of ``values`` (stop when value < threshold)."""
    values = np.sort(np.asarray(values, np.float64))
    allowed = int(np.floor(rate * len(values)))  # how many may fall below
    return float(values[min(allowed, len(values) - 1)])


#: Fewer held-out values than this and the tail is not modelled (the sample's lowest value serves).
TAIL_MIN_VALUES = 10


def _tail_model(values: np.ndarray) -> tuple[float, float, int, float]:
    """The distance from a perfect match, ``1 - value``, above its median: (median, sum of the excesses over it,
    how many exceed it, the share that does). Its tail is modelled as exponential (peaks over a threshold)."""
    d = 1.0 - values
    m = float(np.median(d))
    excess = d[d > m] - m
    return m, float(excess.sum()), int(len(excess)), len(excess) / len(d)


def calibrated_threshold(values, rate: float) -> float:
    """The threshold that stops ``rate`` of new values like ``values`` (stop when value < threshold).

    Where the sample shows that quantile (``rate * n >= 1``) it is the sample's (``quantile_threshold``). A
    smaller sample cannot: its lowest value is only about its ``1/(n+1)`` quantile, so a threshold there stops
    far more than ``rate`` of new values (55 held-out frames of 5 demonstrations: ~2% of frames per signal
    instead of the 0.07% asked). There the tail is modelled: the distance from a perfect match, ``1 - value``,
    beyond its median is taken as exponential (peaks over a threshold), and the threshold is the prediction
    bound at ``rate`` with its scale estimated from the k values beyond the median (excess sum S: a new excess
    exceeds y with probability ``(1 + y / S) ** -k``), so the estimation from few values is accounted for;
    never above the sample's lowest value."""
    v = np.sort(np.asarray(values, np.float64))
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    empirical = quantile_threshold(v, rate)
    if rate * len(v) >= 1 or len(v) < TAIL_MIN_VALUES:
        return empirical
    m, total, k, beyond = _tail_model(v)
    if k == 0 or total <= 0:
        return empirical
    distance = m + total * ((beyond / rate) ** (1.0 / k) - 1.0)
    return float(max(-1.0, min(empirical, 1.0 - distance)))


def tail_rate(values, threshold: float) -> float:
    """The share of new values like ``values`` that ``threshold`` stops (value < threshold), read as
    ``calibrated_threshold`` reads it: from the sample where it shows it, from the modelled tail below."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0 or threshold is None:
        return 0.0
    share = float(np.mean(v < threshold))
    if share * len(v) >= 1 or len(v) < TAIL_MIN_VALUES:
        return share
    m, total, k, beyond = _tail_model(v)
    excess = (1.0 - float(threshold)) - m
    if k == 0 or total <= 0 or excess <= 0:
        return share
    return float(beyond * (1.0 + excess / total) ** -k)


@dataclass
class GateThresholds:
    similarity: float
    hand_view: float | None = None
    third_view: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("similarity", self.similarity), ("hand_view", self.hand_view),
                                  ("third_view", self.third_view)) if v is not None}


def thresholds_for_rate(held_out: GateEvidence, false_stop_rate: float, views: bool = True) -> GateThresholds:
    """Each signal's threshold at ``false_stop_rate / signals`` on the held-out evidence (union bound)."""
    names = SIGNALS if views else SIGNALS[:1]
    th = thresholds_from_scores({s: held_out.signal(s) for s in names}, false_stop_rate)
    return GateThresholds(th["similarity"], th.get("hand_view"), th.get("third_view"))


#: Signals that stop the arm when their value is *above* the threshold (the aligned and landmark methods'
#: correction, in m; the landmark method's coverage, a share of the demonstrations' range; the grip check's distance
#: outside the demonstrations' band); every other signal stops it when below.
UPPER_BOUND_SIGNALS = frozenset({"correction", "coverage", "grip"})


def fails(name: str, value: float, threshold: float | None) -> bool:
    """Whether ``value`` of signal ``name`` is on the stopping side of ``threshold`` (nan or no threshold: no)."""
    if threshold is None or value is None or not np.isfinite(value) or not np.isfinite(threshold):
        return False
    return value > threshold if name in UPPER_BOUND_SIGNALS else value < threshold


class Persistence:
    """The gate's persistence over one run (``gate_persistence``): how many lookups in a row have had a signal it
    may hold back (``PERSISTENT_SIGNALS``: the views' and the grasp check's) failing, and whether those signals
    may not stop the next lookup though they fail. Nothing but the grasp check (``APPROACH_SIGNALS``) is held back
    at the run's first lookup (the arm has not moved), and nothing while ``holding`` (the gripper holds what it
    closed on in this run, or is about to close: a late stop can drop or jam what it holds, and a grasp is not
    undone by stopping after it); otherwise the signals are held back until a failure would make ``lookups``
    failing lookups in a row, whichever of them failed on each (signals that take turns failing are one lasting
    doubt, not several brief ones). Every other signal is never held back. The runner and
    ``benchmarks/gate_persistence.py`` both judge by it."""

    def __init__(self, lookups: int):
        self.lookups = max(1, int(lookups))
        self.streaks = dict.fromkeys(PERSISTENT_SIGNALS, 0)  # per signal: its failing lookups in a row
        self.doubted = 0  # lookups in a row on which at least one of them failed
        self.seen = 0  # lookups counted so far in this run

    def deferred(self, holding: bool) -> frozenset[str]:
        """The signals that may not stop the next lookup though they fail."""
        if self.lookups <= 1 or holding or self.doubted + 1 >= self.lookups:
            return frozenset()
        if not self.seen:
            return APPROACH_SIGNALS
        return frozenset(PERSISTENT_SIGNALS)

    def count(self, readings: dict) -> None:
        """Count a lookup's readings (signal -> (value, threshold)) into the streaks."""
        for name in self.streaks:
            value, threshold = readings.get(name, (float("nan"), None))
            self.streaks[name] = self.streaks[name] + 1 if fails(name, value, threshold) else 0
        self.doubted = self.doubted + 1 if any(self.streaks.values()) else 0
        self.seen += 1


def score_record(values, keep: int = 2000) -> list[float]:
    """A signal's held-out values as kept in the policy folder: sorted, 5 decimals, at most ``keep`` of them
    (evenly spaced in rank, the lowest always kept: the thresholds come from the low end)."""
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    if len(v) > keep:
        v = v[np.unique(np.round(np.linspace(0, len(v) - 1, keep)).astype(int))]
    return [round(float(x), 5) for x in v]


def thresholds_from_scores(scores: dict, false_stop_rate: float) -> dict[str, float]:
    """The gate as a whole at ``false_stop_rate``: each signal's threshold at ``false_stop_rate / signals`` of
    its held-out values (so, by the union bound, together they stop at most that share of held-out frames).
    ``scores``: signal -> held-out values (a calibration's ``scores``)."""
    if not 0 < false_stop_rate < 1:
        raise ValueError(f"false-stop rate {false_stop_rate} must be in (0, 1)")
    scores = {k: v for k, v in scores.items() if len(v)}
    if not scores:
        raise ValueError("no held-out values to read thresholds from")
    share = false_stop_rate / len(scores)
    return {name: calibrated_threshold(values, share) for name, values in scores.items()}


def implied_rates(scores: dict, thresholds: dict) -> dict[str, float]:
    """The share of held-out values each threshold stops (``tail_rate``: below the sample, from its modelled
    tail), and ``"gate"``: their sum capped at 1 (the union bound: the values are kept per signal, not per
    frame)."""
    out = {}
    for name, values in scores.items():
        if name in thresholds and thresholds[name] is not None and len(values) and name not in UPPER_BOUND_SIGNALS:
            out[name] = tail_rate(values, thresholds[name])
    out["gate"] = min(1.0, sum(out.values()))
    return out


@dataclass
class NegativeSet:
    kind: str
    hands: list[np.ndarray] = field(default_factory=list)
    thirds: list[np.ndarray] = field(default_factory=list)


def procedural_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A photograph-like RGB image made from scratch (no sample photos: those are the held-out test set):
    multi-octave value noise coloured through a random palette, with random waves and cells on top."""
    w, h = size
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(int(rng.integers(2, 6))):
        cells = 2 ** (octave + 1)
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        acc += amp * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= float(rng.uniform(0.4, 0.7))
    acc /= total
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # waves (wood grain, water, fabric)
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.5)
        acc = 0.6 * acc + 0.4 * (0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + 6 * acc))
    if rng.random() < 0.5:  # cells (stones, leaves, tiles)
        seeds = rng.random((int(rng.integers(5, 30)), 2)) * [w, h]
        d = np.min(np.hypot(xx[..., None] - seeds[:, 0], yy[..., None] - seeds[:, 1]), axis=2)
        acc = 0.5 * acc + 0.5 * (d / max(1e-6, d.max()))
    acc = (acc - acc.min()) / max(1e-6, float(acc.max() - acc.min()))
    palette = rng.integers(0, 256, (int(rng.integers(2, 5)), 3)).astype(np.float32)
    pos = acc * (len(palette) - 1)
    i = np.clip(pos.astype(int), 0, len(palette) - 2)
    t = (pos - i)[..., None]
    img = palette[i] * (1 - t) + palette[i + 1] * t
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


def _alter_view(kind: str, image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    if kind == "blank_view":
        return np.full_like(image, int(rng.choice([0, 128, 255])))
    if kind == "swapped_view":
        return other.copy()
    if kind == "occluded_view":  # a hand, a sheet of paper or a sticker over half the lens
        out = image.copy()
        bw, bh = int(w * rng.uniform(0.5, 0.8)), int(h * rng.uniform(0.5, 0.8))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        out[y0:y0 + bh, x0:x0 + bw] = procedural_texture(rng, (bw, bh)) if rng.random() < 0.5 else rng.integers(
            0, 256, 3)
        return out
    if kind == "shifted_view":  # the camera knocked
        dx, dy = (rng.uniform(0.2, 0.35, 2) * [w, h] * rng.choice([-1, 1], 2)).astype(np.float32)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if kind == "recoloured_view":  # a coloured gel, a wrong white balance: channels swapped and inverted
        out = image[..., rng.permutation(3)]
        return np.ascontiguousarray(255 - out if rng.random() < 0.5 else out)
    if kind == "texture_in_view":
        return procedural_texture(rng, (w, h))
    raise ValueError(f"unknown negative kind {kind!r}")


def make_negatives(hands: list[np.ndarray], thirds: list[np.ndarray], episodes: np.ndarray, per_kind: int,
                   seed: int = 0) -> list[NegativeSet]:
    """Negatives built from held-out frames: per kind, ``per_kind`` observations with one view altered
    (alternating hand and third) or, for the far kinds, both views replaced."""
    from policy.probes import synthetic_probes

    rng = np.random.default_rng(seed)
    n = len(hands)
    size = (hands[0].shape[1], hands[0].shape[0])
    out = []
    for kind in NEGATIVE_KINDS:
        neg = NegativeSet(kind)
        if kind == "synthetic_both":
            probes = synthetic_probes(per_kind, size, seed=seed + 11)
            neg.hands, neg.thirds = probes, probes[::-1]
        for j in range(per_kind if kind != "synthetic_both" else 0):
            i = int(rng.integers(n))
            if kind == "texture_both":
                neg.hands.append(procedural_texture(rng, size))
                neg.thirds.append(procedural_texture(rng, size))
                continue
            others = np.flatnonzero(episodes != episodes[i])
            o = int(rng.choice(others)) if len(others) else int(rng.integers(n))
            if j % 2 == 0:
                neg.hands.append(_alter_view(kind, hands[i], hands[o], rng))
                neg.thirds.append(thirds[i])
            else:
                neg.hands.append(hands[i])
                neg.thirds.append(_alter_view(kind, thirds[i], thirds[o], rng))
        out.append(neg)
    return out
