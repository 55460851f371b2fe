"""A false-stop rate per *run*, with a conformal guarantee.

The gate's per-frame calibration (``policy.calibration``) sets each signal's threshold so that a stated share of
held-out *frames* is stopped. An operator asks something else: "a run like the demonstrations is stopped with
probability at most ALPHA". This module answers that question by split conformal prediction over *episodes*.

Reduction to one number per episode and signal
    Every gate signal handled here stops the arm when its value is *below* its threshold (signals in
    ``policy.gate.UPPER_BOUND_SIGNALS`` are refused). A run is stopped at thresholds ``{t_s}`` iff some frame has
    some ``v_s < t_s``, i.e. iff for some signal ``s`` the run's minimum ``m_s = min_t v_s(t) < t_s``
    (``run_minima``; nan values are ignored, and a signal with no value, nan, never stops, as in
    ``policy.gate.fails``).

A fixed, monotone family of thresholds (``ThresholdFamily``)
    ``t_s(q) = policy.gate.calibrated_threshold(reference_s, q)`` for a level ``q`` on a fixed grid (by default
    400 log-spaced points from 1e-6 to 0.5). ``reference_s`` are per-frame values of signal ``s`` from data that
    is NOT in the calibration set: the frames of the episodes the encoder trained on, each looked up among the
    other training episodes. ``calibrated_threshold`` is not guaranteed to be non-decreasing in ``q`` where it switches
    from the modelled tail to the sample's quantile, so the family is made monotone by a running maximum along
    the grid: ``t_s(q_i) = max_{j <= i} calibrated_threshold(reference_s, q_j)``. A higher threshold stops more,
    so the family is nested: a run stopped at level ``q`` is stopped at every higher level. There is no fallback
    to the calibration values when a signal has no reference (a ``ValueError`` names it): the family must not
    depend on the calibration episodes, or the guarantee below does not hold.

Episode score
    ``S_e`` = the largest grid level at which episode ``e`` is not stopped (every ``m_s(e) >= t_s(q)``); 0 (below
    the grid) when it is stopped even at the lowest level; the highest level when it is never stopped. Larger is
    more in-distribution. Because the family is nested, a run is stopped at the thresholds ``t(q)`` of a grid level
    ``q`` iff its score ``S < q``; a run whose score equals ``q`` is not stopped (ties resolve toward not stopping).

Calibration (``calibrate_runs``)
    With ``n`` calibration episodes (the held-out demonstrations, which the encoder never trained on) and a
    target ``ALPHA``: ``k = floor(ALPHA (n + 1))``. If ``k < 1`` no threshold in the family has a finite
    guarantee at ``ALPHA`` with ``n`` episodes and ``ConformalError`` says how many are needed
    (``needed_episodes(ALPHA) = ceil(1 / ALPHA) - 1``). Otherwise ``q* = `` the ``k``-th smallest ``S_e`` and the
    thresholds are ``t_s(q*)`` for every signal.

Guarantee
    For a new run whose per-signal minima are exchangeable with the ``n`` calibration episodes' (and with the
    family fixed independently of them): ``P(stopped) = P(S_new < q*) <= k / (n + 1) <= ALPHA``, the
    probability taken over the calibration episodes and the new run together (it is marginal: one particular
    calibration set may stop more or fewer runs than that). The event bounded is exactly the gate's stop,
    because on the discrete grid a run is stopped at ``t(q*)`` iff ``S < q*``. Ties among scores (from the
    grid) only lower the probability. On the lower side, were the scores free of ties,
    ``P(stopped) >= (k - 1) / (n + 1)``; with the discrete grid this is approximate (runs in the same grid cell
    tie), so the procedure stops runs near its stated rate, not never.

    Exchangeability means "like the demonstrations": the same task, the same length, the same path. A live run
    longer than the demonstrations has more frames to fall below a threshold, so its minimum is lower and it is
    stopped more often; live runs that deviate from the demonstrations are not covered either. How often live
    runs are stopped is measured separately (shadow runs).

    The gate's persistence (``gate_persistence``: once the arm moves, a view signal stops a run only after failing
    that many lookups in a row) stops a run only where a single failing frame would have: the minima above, which
    count one failing frame as a stop, overstate its stops, so the bound holds for it too (conservatively).

``implied_run_rate`` reports, for any thresholds (the operator moving gamma in the window), how many calibration
episodes they stop and the conformal bound ``(stopped + 1) / (n + 1)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from policy.gate import UPPER_BOUND_SIGNALS, calibrated_threshold, fails

log = logging.getLogger(__name__)

#: The default grid of levels: 400 log-spaced points from 1e-6 to 0.5.
DEFAULT_LEVELS = (1e-6, 0.5, 400)

# floor(alpha * (n + 1)) and ceil(1 / alpha) in floating point: 0.1 * 30 is 3.0000000000000004 and 1 / 0.1 is
# exact, but other rates land a hair off an integer; this slack keeps "k" and "needed_episodes" consistent.
_SLACK = 1e-9


class ConformalError(ValueError):
    """The procedure cannot give a finite guarantee: too few calibration episodes for the rate asked."""


def default_levels() -> np.ndarray:
    lo, hi, count = DEFAULT_LEVELS
    return np.geomspace(lo, hi, count)


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"false-stop rate per run {alpha!r} must be a number in (0, 1)") from None
    if not (0.0 < a < 1.0):
        raise ValueError(f"false-stop rate per run {alpha!r} must be in (0, 1)")
    return a


def _check_signal(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"signal name {name!r} must be a non-empty string")
    if name in UPPER_BOUND_SIGNALS:
        raise ValueError(f"signal {name!r} stops when its value is above its threshold; run-level calibration "
                         "handles only signals that stop below (their run minimum decides)")


def rank_for(alpha: float, n: int) -> int:
    """``k = floor(alpha (n + 1))``: the rank of the calibration score whose level is chosen."""
    return int(math.floor(_check_alpha(alpha) * (n + 1) + _SLACK))


def needed_episodes(alpha: float) -> int:
    """The fewest calibration episodes with which ``alpha`` per run has a finite guarantee
    (``ceil(1 / alpha) - 1``: the smallest n with ``floor(alpha (n + 1)) >= 1``)."""
    a = _check_alpha(alpha)
    return max(1, int(math.ceil(1.0 / a - _SLACK)) - 1)


def run_minima(per_episode_values: dict[int, dict[str, np.ndarray]]) -> dict[int, dict[str, float]]:
    """Each episode's lowest value of each signal (nan values ignored; a signal with no value: nan, which never
    stops). ``per_episode_values``: episode -> signal -> per-frame values."""
    if not isinstance(per_episode_values, dict):
        raise ValueError("per-episode values must be a dict: episode -> signal -> per-frame values")
    out: dict[int, dict[str, float]] = {}
    for episode, signals in per_episode_values.items():
        if not isinstance(signals, dict):
            raise ValueError(f"episode {episode}: values must be a dict signal -> per-frame values")
        row = {}
        for name, values in signals.items():
            _check_signal(name)
            v = np.asarray(values, np.float64).ravel()
            v = v[~np.isnan(v)]
            row[name] = float(v.min()) if len(v) else float("nan")
        out[int(episode)] = row
    return out


def _round_sig(x: float, digits: int = 6) -> float:
    return float(f"{float(x):.{digits}g}")


@dataclass
class ThresholdFamily:
    """Per-signal thresholds on a fixed grid of levels, non-decreasing in the level (see the module docstring)."""

    levels: np.ndarray
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        levels = np.asarray(self.levels, np.float64)
        if levels.ndim != 1 or len(levels) == 0:
            raise ValueError("a threshold family needs a 1-D grid of at least one level")
        if not np.all(np.isfinite(levels)) or levels[0] <= 0 or levels[-1] >= 1:
            raise ValueError("the family's levels must be finite and in (0, 1)")
        if np.any(np.diff(levels) <= 0):
            raise ValueError("the family's levels must be strictly increasing")
        if not self.thresholds:
            raise ValueError("a threshold family needs at least one signal")
        th = {}
        for name, values in self.thresholds.items():
            _check_signal(name)
            t = np.asarray(values, np.float64)
            if t.shape != levels.shape:
                raise ValueError(f"signal {name!r}: {t.shape} thresholds for {len(levels)} levels")
            if not np.all(np.isfinite(t)):
                raise ValueError(f"signal {name!r}: thresholds must be finite")
            if np.any(np.diff(t) < 0):
                raise ValueError(f"signal {name!r}: thresholds must be non-decreasing in the level")
            th[name] = t
        self.levels, self.thresholds = levels, th

    @classmethod
    def from_reference(cls, reference: dict[str, np.ndarray], levels=None) -> "ThresholdFamily":
        """``t_s(q) = calibrated_threshold(reference_s, q)`` on ``levels`` (default: 400 log-spaced from 1e-6 to
        0.5), made non-decreasing by a running maximum along the grid. ``reference``: signal -> per-frame values
        NOT in the calibration set (training episodes' frames, each looked up among the other training episodes);
        a signal without finite reference values is an error (no fallback to the calibration values)."""
        if not isinstance(reference, dict) or not reference:
            raise ValueError("no reference values: give each gate signal's per-frame values from the training "
                             "episodes (not the calibration episodes)")
        grid = default_levels() if levels is None else np.asarray(levels, np.float64)
        th = {}
        for name, values in reference.items():
            _check_signal(name)
            v = np.asarray([] if values is None else values, np.float64).ravel()
            v = v[np.isfinite(v)]
            if len(v) == 0:
                raise ValueError(f"signal {name!r} has no reference values; give its per-frame values from the "
                                 "training episodes (the calibration episodes cannot serve: the family must not "
                                 "depend on them)")
            raw = np.array([calibrated_threshold(v, float(q)) for q in grid], np.float64)
            th[name] = np.maximum.accumulate(raw)
        return cls(grid, th)

    @property
    def signals(self) -> list[str]:
        return list(self.thresholds)

    def index(self, level: float) -> int:
        """The index of the largest grid level <= ``level`` (0 below the grid)."""
        return max(0, int(np.searchsorted(self.levels, float(level), side="right")) - 1)

    def at(self, level: float) -> dict[str, float]:
        """Thresholds at the largest grid level <= ``level`` (or the smallest grid level)."""
        i = self.index(level)
        return {name: float(t[i]) for name, t in self.thresholds.items()}

    def _check_minima(self, minima: dict[str, float], episode=None) -> None:
        where = "" if episode is None else f"episode {episode}: "
        extra = [s for s in minima if s not in self.thresholds]
        if extra:
            raise ValueError(f"{where}signal(s) {', '.join(map(repr, extra))} not in the threshold family (give a "
                             "reference for them)")
        missing = [s for s in self.thresholds if s not in minima]
        if missing:
            raise ValueError(f"{where}no minimum for signal(s) {', '.join(map(repr, missing))} (nan if it has no "
                             "value)")

    def passed_levels(self, minima: dict[str, float]) -> int:
        """How many grid levels (from the lowest) do not stop an episode with these minima."""
        self._check_minima(minima)
        count = len(self.levels)
        for name, t in self.thresholds.items():
            m = minima[name]
            if m is None or np.isnan(m):
                continue  # no value never stops
            # not stopped at level i iff m >= t[i]; t is non-decreasing, so that holds for a prefix of the grid
            count = min(count, int(np.searchsorted(t, float(m), side="right")))
        return count

    def score(self, minima: dict[str, float]) -> float:
        """``S``: the largest grid level at which the episode is not stopped; 0 when it is stopped at every one."""
        count = self.passed_levels(minima)
        return 0.0 if count == 0 else float(self.levels[count - 1])

    def to_dict(self) -> dict:
        """JSON-serialisable: levels to 6 significant digits (6 decimals would merge the levels below 1e-5),
        thresholds to 6 decimals (rounding keeps them non-decreasing)."""
        return {"levels": [_round_sig(q) for q in self.levels],
                "thresholds": {name: [round(float(x), 6) for x in t] for name, t in self.thresholds.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "ThresholdFamily":
        try:
            return cls(np.asarray(d["levels"], np.float64),
                       {name: np.asarray(t, np.float64) for name, t in d["thresholds"].items()})
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a threshold family: {e}") from None


def _threshold_to_json(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def _threshold_from_json(x) -> float:
    return float("-inf") if x is None else float(x)


@dataclass
class RunCalibration:
    """The run-level calibration, kept in the policy folder as JSON (``to_dict``)."""

    alpha: float
    episodes: list[int]
    level: float  # q*: the family's level the thresholds are read at (0: below the grid, nothing is stopped)
    k: int
    thresholds: dict[str, float]  # -inf (None in JSON) for "stops nothing", as policy.gate.fails reads it
    bound: float  # k / (n + 1)
    held_out_stopped: int  # calibration episodes the chosen thresholds stop (<= k - 1)
    scores: list[float] = field(default_factory=list)  # S_e of each calibration episode, sorted
    minima: dict = field(default_factory=dict)  # str(episode) -> {signal: min}
    procedure: str = ""

    @property
    def stops_nothing(self) -> bool:
        """Whether the chosen level is below the family's grid (the thresholds stop no run)."""
        return self.level <= 0

    def to_dict(self) -> dict:
        return {
            "alpha": float(self.alpha), "episodes": [int(e) for e in self.episodes], "level": _round_sig(self.level),
            "k": int(self.k), "thresholds": {s: _threshold_to_json(v) for s, v in self.thresholds.items()},
            "bound": float(self.bound), "held_out_stopped": int(self.held_out_stopped),
            "scores": [_round_sig(s) for s in self.scores],
            "minima": {str(e): {s: (None if v is None or not np.isfinite(v) else round(float(v), 6))
                                for s, v in row.items()} for e, row in self.minima.items()},
            "procedure": self.procedure}

    @classmethod
    def from_dict(cls, d: dict) -> "RunCalibration":
        try:
            return cls(
                float(d["alpha"]), [int(e) for e in d["episodes"]], float(d["level"]), int(d["k"]),
                {s: _threshold_from_json(v) for s, v in d["thresholds"].items()}, float(d["bound"]),
                int(d["held_out_stopped"]), [float(s) for s in d.get("scores", [])],
                {str(e): {s: (float("nan") if v is None else float(v)) for s, v in row.items()}
                 for e, row in d.get("minima", {}).items()},
                str(d.get("procedure", "")))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a run calibration: {e}") from None


def _check_minima_set(minima: dict[int, dict[str, float]]) -> None:
    if not isinstance(minima, dict) or not minima:
        raise ValueError("no calibration episodes: the held-out demonstrations' run minima are needed")
    for e, row in minima.items():
        if not isinstance(row, dict):
            raise ValueError(f"episode {e}: minima must be a dict signal -> run minimum")


def procedure_text(n: int, alpha: float, k: int, level: float, bound: float, stopped: int,
                   family: ThresholdFamily) -> str:
    """The procedure and its guarantee in words (``RunCalibration.procedure``)."""
    grid = (f"{len(family.levels)} log-spaced levels from {family.levels[0]:.3g} to {family.levels[-1]:.3g}"
            if len(family.levels) > 1 else f"the level {family.levels[0]:.3g}")
    chosen = ("below the grid, so the thresholds stop no run" if level <= 0
              else f"q* = {level:.3g}")
    return (
        f"Run-level split conformal calibration over {n} held-out demonstrations (episodes the encoder never "
        f"trained on): each is reduced to its lowest value of each gate signal ({', '.join(family.signals)}); "
        "the thresholds come from a fixed family t_s(q), each signal's per-frame threshold at level q on the "
        "training demonstrations' frames (each looked up among the other training demonstrations), on "
        f"{grid}, made non-decreasing in q; each held-out demonstration's score is the largest q at which it is "
        f"not stopped, and the thresholds are the family's at the k-th lowest score (k = floor(alpha (n + 1)) = "
        f"{k}): {chosen}. Guarantee: a new run exchangeable with the held-out demonstrations (the same task, "
        f"length and path) is stopped with probability at most k/(n+1) = {bound:.3g} <= alpha = {alpha:.3g}, "
        "over the choice of held-out demonstrations and the run together; with scores free of ties, at least "
        f"about (k-1)/(n+1) = {(k - 1) / (n + 1):.3g}. These thresholds stop {stopped} of the {n} held-out "
        "demonstrations. Longer live runs, or runs that leave the demonstrated path, are stopped more often: "
        "shadow runs measure that.")


def calibrate_runs(minima: dict[int, dict[str, float]], family: ThresholdFamily, alpha: float) -> RunCalibration:
    """Thresholds that stop a run like the demonstrations with probability at most ``alpha`` (split conformal
    over episodes; see the module docstring). ``minima``: calibration episode -> signal -> run minimum, every
    signal of ``family`` present (nan where it has no value)."""
    alpha = _check_alpha(alpha)
    if not isinstance(family, ThresholdFamily):
        raise ValueError("family must be a ThresholdFamily")
    _check_minima_set(minima)
    n = len(minima)
    k = rank_for(alpha, n)
    if k < 1:
        raise ConformalError(
            f"a false-stop rate of {alpha:.3g} per run needs at least {needed_episodes(alpha)} held-out "
            f"demonstrations for a conformal guarantee; there are {n}: record more demonstrations or ask for a "
            f"rate of at least {1 / (n + 1):.3g}")
    episodes = sorted(int(e) for e in minima)
    counts = {}
    for e in episodes:
        family._check_minima(minima[e], e)
        counts[e] = family.passed_levels(minima[e])
    # the k-th smallest score, as a grid index (count - 1; -1 is below the grid)
    ranked = sorted(counts.values())
    chosen = ranked[k - 1] - 1
    scores = sorted(0.0 if c == 0 else float(family.levels[c - 1]) for c in counts.values())
    if chosen < 0:
        level = 0.0
        thresholds = {s: float("-inf") for s in family.signals}
        log.warning("run calibration: %d of %d held-out demonstrations are stopped even at the family's lowest "
                    "level (%.3g); at a false-stop rate of %.3g per run the gate stops nothing", ranked.count(0),
                    n, family.levels[0], alpha)
    else:
        level = float(family.levels[chosen])
        thresholds = {s: float(t[chosen]) for s, t in family.thresholds.items()}
    stopped = sum(run_stopped(minima[e], thresholds) for e in episodes)
    bound = k / (n + 1)
    return RunCalibration(
        alpha, episodes, level, k, thresholds, bound, int(stopped), scores,
        {str(e): {s: float(v) for s, v in minima[e].items()} for e in episodes},
        procedure_text(n, alpha, k, level, bound, int(stopped), family))


def run_stopped(minima_one_episode: dict[str, float], thresholds: dict[str, float]) -> bool:
    """Whether thresholds stop a run with these per-signal minima (``policy.gate.fails``: below the threshold;
    a nan or missing minimum, or a None / non-finite threshold, never stops)."""
    for name, t in thresholds.items():
        _check_signal(name)
        if fails(name, minima_one_episode.get(name), t):
            return True
    return False


def implied_run_rate(minima: dict[int, dict[str, float]], thresholds: dict[str, float]) -> dict:
    """What ``thresholds`` (any: the operator moving gamma) do to the calibration episodes.

    ``stopped``: how many calibration episodes they stop; ``episodes``: n; ``share``: stopped / n;
    ``conformal_bound``: ``(stopped + 1) / (n + 1)`` capped at 1, the conformal upper bound on a new run's stop
    probability (exact for thresholds of a family fixed in advance, chosen at a level that stops ``stopped`` of
    the episodes; for other thresholds chosen independently of the calibration episodes, a bound that holds in
    expectation over them); ``by_signal``: how many episodes each signal alone stops."""
    _check_minima_set(minima)
    if not isinstance(thresholds, dict) or not thresholds:
        raise ValueError("no thresholds to measure")
    for name in thresholds:
        _check_signal(name)
        missing = [e for e, row in minima.items() if name not in row]
        if missing:
            raise ValueError(f"signal {name!r} has a threshold but no minimum in episode(s) "
                             f"{', '.join(map(str, sorted(missing)[:5]))} (nan if it has no value)")
    n = len(minima)
    stopped = sum(run_stopped(row, thresholds) for row in minima.values())
    by_signal = {name: int(sum(fails(name, row[name], t) for row in minima.values()))
                 for name, t in thresholds.items()}
    return {"stopped": int(stopped), "episodes": n, "share": stopped / n,
            "conformal_bound": min(1.0, (stopped + 1) / (n + 1)), "by_signal": by_signal}


def describe_run_rate(run: dict | None, implied: dict | None = None) -> str:
    """The gate's false-stop rate per run in one line, for the training summary and the window: what was asked
    (a rate per run, or the per-frame rule) and what the held-out demonstrations, replayed as runs, showed.
    ``run``: a calibration's ``run`` record; ``implied``: the held-out figures of other thresholds (the gate as
    the operator has set it) instead of the record's own. "" without a record."""
    if not run:
        return ""
    now = implied or run.get("implied") or {}
    n, stopped = now.get("episodes", len(run.get("episodes", []))), now.get("stopped")
    held = "" if stopped is None else (f"{stopped} of {n} held-out demonstrations replayed as runs stopped; a new "
                                       f"run's stop probability <= {100 * now['conformal_bound']:.3g}% (conformal)")
    if run.get("alpha") is None:
        return f"false stops per run (the per-frame rule): {held}"
    if run.get("refused"):
        return f"false stops per run: asked {100 * run['alpha']:.3g}%, NOT applied: {run['refused']}; {held}"
    line = (f"false stops per run: asked {100 * run['alpha']:.3g}%, calibrated conformally on {n} held-out "
            f"demonstrations (bound k/(n+1) = {100 * run['bound']:.3g}%); {held}")
    before, now_at = run.get("per_frame_thresholds") or {}, run.get("thresholds") or {}
    lower = [f"{k} {max(-1.0, v if v is not None else -1.0):.3f} (per frame: {before[k]:.3f})"
             for k, v in now_at.items() if k in before and (v is None or v < before[k])]
    if lower:  # looser than the per-frame rule: unrelated views it stops may pass (eval reports them)
        line += f"; looser than the per-frame rule: {', '.join(lower)}"
    return line
