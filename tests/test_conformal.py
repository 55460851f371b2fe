"""Run-level conformal calibration of the gate (policy.conformal): exact small cases, the API's edges, and the
guarantee checked by simulation over families of score distributions."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.conformal import (ConformalError, RunCalibration, ThresholdFamily, calibrate_runs, implied_run_rate,
                              needed_episodes, rank_for, run_minima, run_stopped)
from policy.gate import calibrated_threshold

SIGNALS = ("similarity", "hand_view", "third_view")


# ------------------------------------------------------------------------------------------------ simulation

def _sample_frames(rng: np.random.Generator, dist: dict, episodes: int, frames: int) -> np.ndarray:
    """Per-frame values [episodes, frames, signals] in (0.5, 1), continuous (no atoms, so no ties but the grid's).

    ``beta``: 1 - X / 2 with X a convex mix of a per-signal and a shared Beta(a, b) (correlated signals) and a
    per-episode shift of the mix; ``logit``: 1 - sigmoid(mu_s + episode effect + correlated normal noise) / 2;
    ``heavy``: ``logit`` whose frames, with probability w, get a Student-t noise pushed down (a heavy lower tail).
    """
    s = len(SIGNALS)
    shape = (episodes, frames, s)
    if dist["kind"] == "beta":
        a, b, lam = dist["a"], dist["b"], dist["mix"]
        own = rng.beta(a, b, shape)
        shared = rng.beta(a, b, (episodes, frames, 1))
        x = (1 - lam) * own + lam * shared
        # an episode effect: some episodes run closer to the lower end than others
        w = dist["tau"] * rng.random((episodes, 1, 1))
        x = (1 - w) * x + w * rng.beta(a + 1.0, 1.0, (episodes, 1, 1))
        return 1.0 - 0.5 * x
    mu = np.asarray(dist["mu"])[None, None, :]
    rho = dist["rho"]
    common = rng.standard_normal((episodes, frames, 1))
    noise = rho * common + math.sqrt(1 - rho ** 2) * rng.standard_normal(shape)
    logits = mu + dist["tau"] * rng.standard_normal((episodes, 1, 1)) + dist["sd"] * noise
    if dist["kind"] == "heavy":
        bad = rng.random((episodes, frames, 1)) < dist["w"]
        logits = logits + bad * (dist["shift"] + np.abs(rng.standard_t(dist["df"], shape)))
    return 1.0 - 0.5 / (1.0 + np.exp(-logits))


def _minima(frames: np.ndarray) -> np.ndarray:
    return frames.min(axis=1)


def _as_dicts(m: np.ndarray) -> dict[int, dict[str, float]]:
    return {i: {s: float(m[i, j]) for j, s in enumerate(SIGNALS)} for i in range(len(m))}


distributions = st.one_of(
    st.fixed_dictionaries({"kind": st.just("beta"), "a": st.floats(0.5, 5), "b": st.floats(0.5, 5),
                           "mix": st.floats(0, 0.9), "tau": st.floats(0, 0.6)}),
    st.fixed_dictionaries({"kind": st.just("logit"), "mu": st.lists(st.floats(-4, 1), min_size=3, max_size=3),
                           "rho": st.floats(0, 0.95), "tau": st.floats(0, 1.5), "sd": st.floats(0.2, 1.5)}),
    st.fixed_dictionaries({"kind": st.just("heavy"), "mu": st.lists(st.floats(-4, 0), min_size=3, max_size=3),
                           "rho": st.floats(0, 0.95), "tau": st.floats(0, 1.0), "sd": st.floats(0.2, 1.0),
                           "w": st.floats(0.005, 0.2), "shift": st.floats(0.5, 3), "df": st.integers(2, 5)}),
)


def _stop_rate(fresh: np.ndarray, thresholds: dict[str, float]) -> float:
    th = np.array([thresholds[s] for s in SIGNALS])
    return float(np.mean(np.any(fresh < th[None, :], axis=1)))


@pytest.mark.parametrize("reference_episodes", [20, 300])
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(dist=distributions, n=st.sampled_from([19, 39, 59]), alpha=st.sampled_from([0.05, 0.1, 0.2]),
       frames=st.integers(5, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_the_guarantee_holds_by_simulation(reference_episodes, dist, n, alpha, frames, seed):
    """The guarantee is marginal over the calibration set, so it is checked as such: over R fresh calibration
    sets, the mean share of M fresh runs from the same distribution that the chosen thresholds stop is at most
    k/(n+1) <= alpha (+3 standard errors), whatever the family.

    And the procedure is not vacuous: the family's thresholds one grid level above the chosen one stop at least
    k/(n+1) of runs (P(S <= q*) >= k/(n+1) holds with ties too), and where the family is fine-grained (a large
    reference: 300 episodes) the chosen thresholds themselves stop at least about (k-1)/(n+1). With a small
    reference (20 episodes) the family is coarse where it matters: below 1/N the thresholds follow the modelled
    tail capped at the sample's lowest value (``calibrated_threshold``), a flat stretch, so many episodes tie and
    the procedure may only be able to stop far fewer runs than alpha (or none): safe, and not asserted."""
    rng = np.random.default_rng(seed)
    # the family: from other episodes' frames (the training demonstrations), fixed across calibrations
    reference = _sample_frames(rng, dist, reference_episodes, frames).reshape(-1, len(SIGNALS))
    family = ThresholdFamily.from_reference({s: reference[:, j] for j, s in enumerate(SIGNALS)})
    R, M = 40, 2000
    rates, above = np.empty(R), np.empty(R)
    k = rank_for(alpha, n)
    for r in range(R):
        cal = calibrate_runs(_as_dicts(_minima(_sample_frames(rng, dist, n, frames))), family, alpha)
        assert cal.k == k and cal.held_out_stopped <= k - 1
        fresh = _minima(_sample_frames(rng, dist, M, frames))
        rates[r] = _stop_rate(fresh, cal.thresholds)
        nxt = 0 if cal.stops_nothing else family.index(cal.level) + 1
        above[r] = 1.0 if nxt >= len(family.levels) else _stop_rate(
            fresh, {s: float(family.thresholds[s][nxt]) for s in SIGNALS})
    se = rates.std(ddof=1) / math.sqrt(R) + 1e-4
    se_above = above.std(ddof=1) / math.sqrt(R) + 1e-4
    mean = rates.mean()
    assert k / (n + 1) <= alpha + 1e-12
    assert mean <= k / (n + 1) + 3 * se, (mean, se, k, n)
    assert mean <= alpha + 3 * se
    assert above.mean() >= k / (n + 1) - 3 * se_above, (above.mean(), se_above, k, n)
    if reference_episodes >= 300:
        assert mean >= (k - 1) / (n + 1) - 3 * se, (mean, se, k, n)


# ------------------------------------------------------------------------------------------------ exact cases

def _family(levels=None) -> ThresholdFamily:
    rng = np.random.default_rng(0)
    ref = {s: 1.0 - 0.5 * rng.beta(1.0, 8.0, 3000) for s in SIGNALS}
    return ThresholdFamily.from_reference(ref, levels)


def _episodes(n: int, seed: int = 1) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(seed)
    frames = 1.0 - 0.5 * rng.beta(1.0, 8.0, (n, 12, len(SIGNALS)))
    return _as_dicts(_minima(frames))


def test_nineteen_episodes_at_five_percent_take_the_lowest_score():
    fam = _family()
    minima = _episodes(19)
    cal = calibrate_runs(minima, fam, 0.05)
    assert cal.k == 1 and cal.bound == pytest.approx(1 / 20)
    assert cal.level == min(fam.score(m) for m in minima.values()) == cal.scores[0]
    assert cal.level > 0
    assert cal.held_out_stopped == 0
    assert cal.thresholds == fam.at(cal.level)
    assert cal.episodes == list(range(19)) and cal.scores == sorted(cal.scores)
    assert "19 held-out demonstrations" in cal.procedure and "k/(n+1) = 0.05" in cal.procedure


def test_chosen_level_is_the_kth_score_and_stops_those_below_it():
    fam = _family()
    minima = _episodes(59, seed=3)
    cal = calibrate_runs(minima, fam, 0.1)  # k = 6
    assert cal.k == 6
    scores = sorted(fam.score(m) for m in minima.values())
    assert cal.level == scores[5]
    below = sum(s < cal.level for s in scores)
    assert cal.held_out_stopped == below <= cal.k - 1
    # a run is stopped at the chosen thresholds iff its score is below the chosen level
    for m in minima.values():
        assert run_stopped(m, cal.thresholds) == (fam.score(m) < cal.level)


def test_too_few_episodes_name_how_many_are_needed():
    with pytest.raises(ConformalError, match=r"19 held-out demonstrations.*there are 6"):
        calibrate_runs(_episodes(6), _family(), 0.05)
    assert issubclass(ConformalError, ValueError)
    assert needed_episodes(0.05) == 19 and needed_episodes(0.1) == 9 and needed_episodes(0.3) == 3
    for alpha in (0.01, 0.02, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.9):
        n = needed_episodes(alpha)
        assert rank_for(alpha, n) >= 1 and (n == 1 or rank_for(alpha, n - 1) == 0), alpha
    calibrate_runs(_episodes(19), _family(), 0.05)  # exactly enough


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), "x"])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="must be"):
        calibrate_runs(_episodes(19), _family(), alpha)


def test_input_validation():
    fam = _family()
    with pytest.raises(ValueError, match="no calibration episodes"):
        calibrate_runs({}, fam, 0.1)
    bad = _episodes(19)
    bad[3]["correction"] = 0.1
    with pytest.raises(ValueError, match="correction"):
        calibrate_runs(bad, fam, 0.1)
    bad = _episodes(19)
    bad[4]["extra"] = 0.9
    with pytest.raises(ValueError, match="'extra' not in the threshold family"):
        calibrate_runs(bad, fam, 0.1)
    bad = _episodes(19)
    del bad[5]["hand_view"]
    with pytest.raises(ValueError, match="episode 5: no minimum for signal.*'hand_view'"):
        calibrate_runs(bad, fam, 0.1)
    with pytest.raises(ValueError, match="'hand_view' has no reference"):
        ThresholdFamily.from_reference({"similarity": [0.9, 0.95], "hand_view": [np.nan]})
    with pytest.raises(ValueError, match="no reference"):
        ThresholdFamily.from_reference({})
    with pytest.raises(ValueError, match="increasing"):
        ThresholdFamily.from_reference({"similarity": np.linspace(0.5, 1, 50)}, levels=[0.1, 0.05])
    with pytest.raises(ValueError, match="non-decreasing"):
        ThresholdFamily(np.array([0.01, 0.1]), {"similarity": np.array([0.9, 0.8])})
    with pytest.raises(ValueError, match="above its threshold"):
        run_minima({0: {"correction": [0.1, 0.2]}})


# ------------------------------------------------------------------------------------------------ the pieces

def test_run_minima_ignores_nan():
    out = run_minima({2: {"similarity": np.array([0.9, np.nan, 0.7, 0.8]), "hand_view": np.array([np.nan] * 3),
                          "third_view": np.array([])}})
    assert out[2]["similarity"] == 0.7
    assert math.isnan(out[2]["hand_view"]) and math.isnan(out[2]["third_view"])


def test_family_is_monotone_and_follows_the_reference():
    fam = _family()
    assert len(fam.levels) == 400 and fam.levels[0] == pytest.approx(1e-6) and fam.levels[-1] == pytest.approx(0.5)
    assert np.all(np.diff(fam.levels) > 0)
    rng = np.random.default_rng(0)
    ref = 1.0 - 0.5 * rng.beta(1.0, 8.0, 3000)
    for s in SIGNALS:
        assert np.all(np.diff(fam.thresholds[s]) >= 0)
    raw = np.array([calibrated_threshold(ref, q) for q in fam.levels])
    np.testing.assert_allclose(fam.thresholds["similarity"], np.maximum.accumulate(raw))
    # a reference whose calibrated threshold dips along the grid is made monotone by the running maximum
    fam2 = ThresholdFamily.from_reference({"similarity": np.r_[np.full(30, 0.99), 0.5]}, levels=[0.001, 0.01, 0.1])
    assert np.all(np.diff(fam2.thresholds["similarity"]) >= 0)
    # at(): the largest grid level <= the level asked, the lowest below the grid
    assert fam.at(0.0) == fam.at(1e-9) == {s: float(fam.thresholds[s][0]) for s in SIGNALS}
    assert fam.at(fam.levels[10] * 1.001) == {s: float(fam.thresholds[s][10]) for s in SIGNALS}
    assert fam.at(0.9) == {s: float(fam.thresholds[s][-1]) for s in SIGNALS}


def test_scores_edges():
    fam = _family()
    never = {s: 1.0 for s in SIGNALS}
    assert fam.score(never) == fam.levels[-1]
    always = {s: 0.0 for s in SIGNALS}
    assert fam.score(always) == 0.0
    nan = {s: float("nan") for s in SIGNALS}
    assert fam.score(nan) == fam.levels[-1]
    # exactly at a threshold: not stopped there (value < threshold stops)
    m = {s: float(fam.thresholds[s][200]) for s in SIGNALS}
    m["similarity"] = float(fam.thresholds["similarity"][100])
    s100 = fam.score(m)
    assert s100 >= fam.levels[100] and not run_stopped(m, fam.at(s100))
    # and stopped at the next level up (the score is the largest level that does not stop it)
    assert run_stopped(m, {k: float(v[fam.index(s100) + 1]) for k, v in fam.thresholds.items()})


def test_below_the_grid_stops_nothing():
    fam = _family()
    minima = {e: {s: 0.0 for s in SIGNALS} for e in range(19)}
    cal = calibrate_runs(minima, fam, 0.05)
    assert cal.level == 0 and cal.stops_nothing and cal.held_out_stopped == 0
    assert not any(run_stopped(m, cal.thresholds) for m in minima.values())
    back = RunCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.thresholds == cal.thresholds and back.stops_nothing


def test_run_stopped_nan_semantics():
    th = {"similarity": 0.8, "hand_view": 0.7}
    assert not run_stopped({"similarity": float("nan"), "hand_view": float("nan")}, th)
    assert not run_stopped({"similarity": 0.9}, th)  # a missing signal never stops
    assert run_stopped({"similarity": 0.79, "hand_view": float("nan")}, th)
    assert not run_stopped({"similarity": 0.8, "hand_view": 0.7}, th)  # at the threshold: not stopped
    assert not run_stopped({"similarity": 0.1}, {"similarity": float("nan")})
    assert not run_stopped({"similarity": 0.1}, {"similarity": None})
    assert not run_stopped({"similarity": 0.1}, {"similarity": float("-inf")})
    with pytest.raises(ValueError, match="above its threshold"):
        run_stopped({"correction": 0.1}, {"correction": 0.05})


def test_implied_run_rate_on_a_constructed_set():
    minima = {
        0: {"similarity": 0.95, "hand_view": 0.90},
        1: {"similarity": 0.70, "hand_view": 0.90},  # similarity stops
        2: {"similarity": 0.95, "hand_view": 0.60},  # hand stops
        3: {"similarity": 0.70, "hand_view": 0.60},  # both
        4: {"similarity": 0.85, "hand_view": float("nan")},  # nan never stops
    }
    out = implied_run_rate(minima, {"similarity": 0.8, "hand_view": 0.75})
    assert out == {"stopped": 3, "episodes": 5, "share": 0.6, "conformal_bound": pytest.approx(4 / 6),
                   "by_signal": {"similarity": 2, "hand_view": 2}}
    assert implied_run_rate(minima, {"similarity": 0.99})["conformal_bound"] == 1.0
    none = implied_run_rate(minima, {"similarity": 0.1, "hand_view": 0.1})
    assert none["stopped"] == 0 and none["conformal_bound"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="'third_view' has a threshold but no minimum"):
        implied_run_rate(minima, {"third_view": 0.5})
    with pytest.raises(ValueError, match="no calibration episodes"):
        implied_run_rate({}, {"similarity": 0.5})
    # at the calibrated thresholds it agrees with the calibration
    fam, eps = _family(), _episodes(39)
    cal = calibrate_runs(eps, fam, 0.1)
    rate = implied_run_rate(eps, cal.thresholds)
    assert rate["stopped"] == cal.held_out_stopped and rate["conformal_bound"] <= cal.bound + 1e-12


def test_round_trips_through_json():
    fam = _family()
    fam2 = ThresholdFamily.from_dict(json.loads(json.dumps(fam.to_dict())))
    assert len(fam2.levels) == len(np.unique(fam2.levels)) == 400
    np.testing.assert_allclose(fam2.levels, fam.levels, rtol=1e-5)
    for s in SIGNALS:
        np.testing.assert_allclose(fam2.thresholds[s], fam.thresholds[s], atol=1e-6)
    assert fam2.to_dict() == fam.to_dict()
    eps = _episodes(39)
    eps[7]["hand_view"] = float("nan")
    cal = calibrate_runs(eps, fam2, 0.1)
    d = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    back = RunCalibration.from_dict(d)
    assert back.to_dict() == d
    assert back.k == cal.k and back.episodes == cal.episodes and back.thresholds == cal.thresholds
    assert back.level == cal.level and back.held_out_stopped == cal.held_out_stopped
    assert math.isnan(back.minima["7"]["hand_view"])
    # the level read back is still a level of the family read back
    assert fam2.at(back.level) == back.thresholds
    with pytest.raises(ValueError, match="not a run calibration"):
        RunCalibration.from_dict({"alpha": 0.1})
    with pytest.raises(ValueError, match="not a threshold family"):
        ThresholdFamily.from_dict({"levels": [0.1]})
