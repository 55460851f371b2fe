"""The gate judged as a failure detector from shadow runs: exact figures on constructed episodes, the threshold
sweep against a brute-force Mann-Whitney count, the report as JSON, and its text and picture."""

from __future__ import annotations

import json
import math

import cv2
import pytest
from hypothesis import given, settings, strategies as st

from evaluation.detection import (detector_figures, detector_report, format_pooled_line, format_table,
                                  group_by_scenario, roc, which_catches, write_roc_png)
from evaluation.trials import wilson_interval


def ep(outcome: str, alarms: dict | None = None, ticks: int = 100, close: int | None = None,
       extremes: dict | None = None, seed: int = 0, scenario: str | None = None,
       thresholds: dict | None = None) -> dict:
    e = {"seed": seed, "shadow_outcome": outcome, "ticks": ticks, "first_alarm": dict(alarms or {}),
         "first_close_tick": close, "signal_extremes": dict(extremes or {})}
    if scenario is not None:
        e["scenario"] = scenario
    if thresholds is not None:
        e["thresholds_in_force"] = thresholds
    return e


def nine_of_ten() -> list[dict]:
    """10 failures, 9 of them caught by the gate; 20 successes, 1 false alarm."""
    failures = [ep("failure", {"gate": 10, "any": 10, "similarity": 10}, seed=i) for i in range(9)]
    failures.append(ep("failure", {}, seed=9))
    successes = [ep("success", {}, seed=100 + i) for i in range(19)]
    successes.append(ep("success", {"gate": 50, "any": 50, "hand_view": 50}, seed=200))
    return failures + successes


def as_list(ci):
    return None if ci is None else list(ci)


# ---------------------------------------------------------------- figures


def test_rates_intervals_and_balanced_accuracy_are_exact():
    f = detector_figures(nine_of_ten(), "gate")
    assert (f["failures"], f["successes"], f["excluded"], f["episodes"]) == (10, 20, 0, 30)
    assert (f["true_alarms"], f["false_alarms"]) == (9, 1)
    assert f["true_alarm_rate"] == pytest.approx(0.9)
    assert f["false_alarm_rate"] == pytest.approx(0.05)
    assert f["balanced_accuracy"] == pytest.approx(0.925)
    assert f["true_alarm_interval"] == as_list(wilson_interval(9, 10))
    assert f["false_alarm_interval"] == as_list(wilson_interval(1, 20))
    t_lo, t_hi = wilson_interval(9, 10)
    f_lo, f_hi = wilson_interval(1, 20)
    assert f["balanced_accuracy_interval"] == pytest.approx([(t_lo + 1 - f_hi) / 2, (t_hi + 1 - f_lo) / 2])


def test_a_signal_that_never_fired_and_one_side_missing():
    f = detector_figures(nine_of_ten(), "third_view")
    assert (f["true_alarms"], f["false_alarms"], f["true_alarm_rate"], f["false_alarm_rate"]) == (0, 0, 0.0, 0.0)
    assert f["balanced_accuracy"] == pytest.approx(0.5)
    assert f["lead_ticks_median"] is None and f["lead_ticks_min"] is None
    only_failures = detector_figures([ep("failure", {"gate": 3})], "gate")
    assert only_failures["false_alarm_rate"] is None and only_failures["false_alarm_interval"] is None
    assert only_failures["balanced_accuracy"] is None and only_failures["balanced_accuracy_interval"] is None
    only_successes = detector_figures([ep("success")], "gate")
    assert only_successes["true_alarm_rate"] is None and only_successes["true_alarm_interval"] is None
    assert only_successes["balanced_accuracy"] is None
    empty = detector_figures([], "gate")
    assert empty["episodes"] == 0 and empty["before_first_close"] == {"count": 0, "of": 0, "rate": None,
                                                                     "interval": None}


def test_device_stops_are_left_out_and_counted():
    base = nine_of_ten()
    stops = [ep("device_stop", {"gate": 1, "any": 1}, seed=900 + i) for i in range(4)]
    with_stops = detector_figures(base + stops, "gate")
    without = detector_figures(base, "gate")
    assert with_stops["excluded"] == 4
    assert {k: v for k, v in with_stops.items() if k != "excluded"} == {k: v for k, v in without.items()
                                                                         if k != "excluded"}
    assert roc(base + stops, "gate") == roc(base, "gate")


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="shadow_outcome"):
        detector_figures([ep("ood_stop")], "gate")


def test_lead_ticks_are_from_the_alarm_to_the_episode_end():
    eps = [ep("failure", {"gate": 10}, ticks=100), ep("failure", {"gate": 70}, ticks=80),
           ep("failure", {"gate": 0}, ticks=50), ep("failure", {}, ticks=5),  # missed: no lead time
           ep("success", {"gate": 1}, ticks=300)]  # a false alarm: no lead time either
    f = detector_figures(eps, "gate")
    assert f["lead_ticks_min"] == 10
    assert f["lead_ticks_median"] == 50.0  # leads 90, 10, 50
    two = detector_figures(eps[:2], "gate")
    assert two["lead_ticks_median"] == 50.0 and isinstance(two["lead_ticks_median"], float)  # (90 + 10) / 2


def test_before_first_close_and_the_never_closed_case():
    eps = [ep("failure", {"gate": 5}, close=20),  # before the close
           ep("failure", {"gate": 30}, close=20),  # after it
           ep("failure", {"gate": 20}, close=20),  # on the same tick: not before
           ep("failure", {"gate": 7}, close=None),  # never closed: counted apart
           ep("failure", {"gate": 9}),  # no gripper: also apart
           ep("failure", {}, close=3),  # not caught: not counted at all
           ep("success", {"gate": 1}, close=50)]  # a false alarm: not counted at all
    f = detector_figures(eps, "gate")
    assert f["true_alarms"] == 5
    b = f["before_first_close"]
    assert (b["count"], b["of"]) == (1, 3)
    assert b["rate"] == pytest.approx(1 / 3)
    assert b["interval"] == as_list(wilson_interval(1, 3))
    assert f["caught_without_close"] == 2


def test_thresholds_in_force_are_reported():
    eps = [ep("failure", {"similarity": 1}, thresholds={"similarity": 0.8}),
           ep("success", thresholds={"similarity": 0.8}), ep("success", thresholds={"similarity": 0.75}),
           ep("success")]
    assert detector_figures(eps, "similarity")["thresholds"] == [0.75, 0.8]
    assert detector_figures(eps, "gate")["thresholds"] == []


# ---------------------------------------------------------------- which signal catches which failure


def test_which_catches_counts_first_alarms_with_ties_and_misses():
    eps = [ep("failure", {"similarity": 5, "hand_view": 9, "gate": 5, "any": 5}),
           ep("failure", {"similarity": 4, "hand_view": 4, "gate": 4, "any": 4}),  # a tie: both counted
           ep("failure", {"stall": 30, "any": 30}),
           ep("failure", {"third_view": 12, "similarity": 2, "gate": 2, "any": 2}),
           ep("failure", {}),  # missed
           ep("failure", {"gate": 3, "any": 3}),  # only aggregates: no signal caught it
           ep("success", {"correction": 0, "gate": 0, "any": 0}),  # successes do not count
           ep("device_stop", {"hand_view": 0})]
    w = which_catches(eps)
    assert w == {"similarity": 3, "hand_view": 1, "stall": 1, "third_view": 0, "missed": 2}
    assert list(w)[-1] == "missed"
    assert "gate" not in w and "any" not in w and "correction" not in w
    assert which_catches([]) == {"missed": 0}


# ---------------------------------------------------------------- the threshold sweep


def sweep_set(fail_values, success_values, signal="similarity"):
    return ([ep("failure", extremes={signal: v}) for v in fail_values]
            + [ep("success", extremes={signal: v}) for v in success_values])


def trapezoid(r: dict) -> float:
    x, y = r["fpr"], r["tpr"]
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


def check_curve(r: dict) -> None:
    assert (r["fpr"][0], r["tpr"][0]) == (0.0, 0.0)
    assert (r["fpr"][-1], r["tpr"][-1]) == (1.0, 1.0)
    assert len(r["fpr"]) == len(r["tpr"]) == len(r["thresholds"])
    assert r["thresholds"][0] is None and r["thresholds"][-1] is None
    assert all(a <= b for a, b in zip(r["fpr"], r["fpr"][1:]))
    assert all(a <= b for a, b in zip(r["tpr"], r["tpr"][1:]))
    assert all(0.0 <= v <= 1.0 for v in r["fpr"] + r["tpr"])
    assert trapezoid(r) == pytest.approx(r["auroc"])


def test_perfectly_separated_extremes_give_auroc_one():
    r = roc(sweep_set([0.1, 0.2, 0.3], [0.7, 0.8, 0.9, 0.95]), "similarity")
    assert r["auroc"] == 1.0
    assert (r["failures"], r["successes"], r["direction"]) == (3, 4, "below")
    check_curve(r)
    # below: the thresholds grow, each point alarming the episodes at or below it
    assert r["thresholds"][1:-1] == [0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.95]
    assert r["tpr"][3] == 1.0 and r["fpr"][3] == 0.0  # at 0.3 every failure and no success is alarmed


def test_identical_extremes_give_one_half():
    r = roc(sweep_set([0.5] * 4, [0.5] * 6), "similarity")
    assert r["auroc"] == 0.5
    check_curve(r)
    assert r["fpr"] == [0.0, 1.0, 1.0] and r["tpr"] == [0.0, 1.0, 1.0]


def test_correction_stops_above_so_its_direction_is_reversed():
    fails_low, succ_high = [0.1, 0.2, 0.3], [0.7, 0.8, 0.9]
    assert roc(sweep_set(fails_low, succ_high, "similarity"), "similarity")["auroc"] == 1.0
    r = roc(sweep_set(fails_low, succ_high, "correction"), "correction")
    assert r["auroc"] == 0.0 and r["direction"] == "above"
    check_curve(r)
    assert r["thresholds"][1:-1] == [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]  # above: the thresholds fall
    assert roc(sweep_set(succ_high, fails_low, "correction"), "correction")["auroc"] == 1.0


def test_missing_extremes_never_fire_and_count_as_safest():
    # failures: 0.1 and never applied; successes: 0.9 and NaN
    eps = [ep("failure", extremes={"similarity": 0.1}), ep("failure", extremes={}),
           ep("success", extremes={"similarity": 0.9}), ep("success", extremes={"similarity": float("nan")})]
    r = roc(eps, "similarity")
    # pairs: (0.1, 0.9) failure on the stopping side: 1; (0.1, nan): 1; (missing, 0.9): 0; (missing, nan): 1/2
    assert r["auroc"] == pytest.approx(2.5 / 4)
    assert r["not_applied"] == {"failures": 1, "successes": 1}
    check_curve(r)
    assert (r["fpr"][-2], r["tpr"][-2]) == (0.5, 0.5)  # every applied extreme alarmed; the missing ones only at the end


def test_no_roc_without_both_outcomes_or_without_values():
    assert roc(sweep_set([0.1], []), "similarity") is None
    assert roc(sweep_set([], [0.1]), "similarity") is None
    assert roc(nine_of_ten(), "gate") is None  # aggregates have no value to sweep
    assert roc(sweep_set([float("nan")], [None]), "similarity") is None


def brute_force_auroc(fail_values, success_values, above: bool) -> float:
    def score(v):
        if v is None or not math.isfinite(v):
            return -math.inf
        return v if above else -v

    total = 0.0
    for f in fail_values:
        for s in success_values:
            a, b = score(f), score(s)
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(fail_values) * len(success_values))


values = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(-2, 2, allow_nan=False),
                   st.just(float("nan")), st.none())


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=12), st.lists(values, min_size=1, max_size=12),
       st.sampled_from(["similarity", "correction"]))
def test_auroc_equals_a_brute_force_mann_whitney_count(fail_values, success_values, signal):
    eps = ([ep("failure", extremes={} if v is None else {signal: v}) for v in fail_values]
           + [ep("success", extremes={} if v is None else {signal: v}) for v in success_values])
    r = roc(eps, signal)
    if all(v is None or math.isnan(v) for v in fail_values + success_values):
        assert r is None
        return
    assert r["auroc"] == pytest.approx(brute_force_auroc(fail_values, success_values, signal == "correction"),
                                       abs=1e-12)
    check_curve(r)


# ---------------------------------------------------------------- the report


def two_scenarios() -> dict[str, list[dict]]:
    a = [ep("failure", {"similarity": 3, "gate": 3, "any": 3}, ticks=40, close=10,
            extremes={"similarity": 0.2, "hand_view": 0.5}, seed=1),
         ep("failure", {"stall": 30, "any": 30}, ticks=60, close=None, extremes={"similarity": 0.7}, seed=2),
         ep("success", {}, ticks=50, close=20, extremes={"similarity": 0.9, "hand_view": float("nan")}, seed=3),
         ep("device_stop", {}, ticks=4, seed=4)]
    b = [ep("failure", {"correction": 8, "gate": 8, "any": 8}, ticks=30, close=12,
            extremes={"correction": 0.05, "similarity": 0.6}, seed=5),
         ep("success", {"hand_view": 2, "gate": 2, "any": 2}, ticks=50, close=25,
            extremes={"similarity": 0.95, "correction": 0.01}, seed=6),
         ep("success", {}, ticks=50, close=25, extremes={"similarity": 0.8, "correction": 0.02}, seed=7)]
    return {"in_distribution": a, "interpolate": b}


def test_report_is_json_and_pools_the_scenarios():
    data = two_scenarios()
    report = detector_report(data)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["signals"] == ["any", "gate", "correction", "hand_view", "similarity", "stall"]
    assert list(report["scenarios"]) == ["in_distribution", "interpolate"]
    assert report["scenarios"]["in_distribution"]["counts"] == {"episodes": 4, "success": 1, "failure": 2,
                                                               "device_stop": 1}
    assert report["pooled"]["counts"] == {"episodes": 7, "success": 3, "failure": 3, "device_stop": 1}
    everything = data["in_distribution"] + data["interpolate"]
    for s in report["signals"]:
        assert report["pooled"]["signals"][s]["figures"] == json.loads(json.dumps(detector_figures(everything, s)))
        assert report["pooled"]["signals"][s]["roc"] == json.loads(json.dumps(roc(everything, s)))
    assert report["pooled"]["signals"]["any"]["figures"]["true_alarms"] == 3
    assert report["pooled"]["signals"]["gate"]["roc"] is None
    assert report["pooled"]["signals"]["similarity"]["roc"]["auroc"] == 1.0
    assert report["pooled"]["first_to_fire"] == {"correction": 1, "similarity": 1, "stall": 1, "missed": 0}
    only = detector_report(data, signals=["similarity"])
    assert only["signals"] == ["similarity"] and list(only["pooled"]["signals"]) == ["similarity"]


def test_report_refuses_a_scenario_called_pooled_and_groups_by_scenario():
    with pytest.raises(ValueError):
        detector_report({"pooled": []})
    eps = [ep("success", scenario="a"), ep("failure", scenario="b"), ep("success")]
    groups = group_by_scenario(eps, scenario="c")
    assert {k: len(v) for k, v in groups.items()} == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(ValueError):
        group_by_scenario([ep("success")])


# ---------------------------------------------------------------- text and picture


def spec_example() -> list[dict]:
    """155 shadow episodes, 40 failed: 39 caught (33 of those with a close, 30 alarmed before it), 3 false alarms
    of 115, and 2 device stops."""
    eps = []
    for i in range(39):
        close = None if i >= 33 else (50 if i < 30 else 5)
        eps.append(ep("failure", {"gate": 10, "any": 10}, ticks=100, close=close, seed=i))
    eps.append(ep("failure", {}, close=40, seed=39))
    eps += [ep("success", {"gate": 70, "any": 70} if i < 3 else {}, seed=100 + i) for i in range(115)]
    eps += [ep("device_stop", seed=900), ep("device_stop", seed=901)]
    return eps


def test_pooled_line_has_the_numbers():
    line = format_pooled_line(detector_report({"in_distribution": spec_example()}), "gate")
    assert line.startswith("gate as a failure detector (155 shadow episodes, 40 failed, 2 device stops left out): ")
    assert "true alarms 39/40 (98%, 87-100%)" in line
    assert "false alarms 3/115 (2.6%, 0.9-7.4%)" in line
    assert "balanced accuracy 0.97 (0.90-0.99)" in line
    assert "before the first close 30/33 (6 more caught with the gripper never closed)" in line
    assert "\n" not in line
    empty = format_pooled_line(detector_report({"a": [ep("success")]}), "gate")
    assert "true alarms -" in empty and "balanced accuracy -" in empty


def test_table_has_a_row_per_scenario_and_signal():
    report = detector_report(two_scenarios())
    table = format_table(report, signals=("any", "gate", "similarity"))
    lines = table.splitlines()
    assert len(lines) == 2 + 3 * 3
    assert lines[0].startswith("| scenario | signal | episodes | failed | true alarms")
    pooled_any = next(l for l in lines if l.startswith("| pooled | any |"))
    cells = [c.strip() for c in pooled_any.strip("|").split("|")]
    ci = wilson_interval(3, 3)
    assert cells[2:4] == ["6", "3"]
    assert cells[4] == f"3/3 ({100 * ci[0]:.0f}-100%)"
    assert cells[5].startswith("1/3 (")
    assert cells[7] == cells[8] == "-"  # no AUROC and no operating point for an aggregate
    assert cells[9] == "30"  # leads 37, 30, 22
    assert cells[10] == "2/2"
    pooled_sim = next(l for l in lines if l.startswith("| pooled | similarity |"))
    assert "1.00" in pooled_sim and "| 100% (" in pooled_sim


def test_roc_png_is_written_whole_with_the_expected_size(tmp_path):
    report = detector_report(two_scenarios())
    out = write_roc_png(report, tmp_path / "plots" / "roc.png")
    assert out == tmp_path / "plots" / "roc.png"
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (640, 640, 3)
    assert (img != 255).any(axis=2).sum() > 1000  # something was drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["roc.png"]  # no temporary file left behind
    again = write_roc_png(report, out, scenario="interpolate", signals=["similarity", "correction", "gate"])
    assert cv2.imread(str(again)).shape == (640, 640, 3)
    nothing = write_roc_png(detector_report({"a": [ep("success")]}), tmp_path / "empty.png")
    assert cv2.imread(str(nothing)).shape == (640, 640, 3)
    with pytest.raises(KeyError):
        write_roc_png(report, tmp_path / "x.png", scenario="nowhere")


def test_the_roc_names_the_threshold_that_catches_most_at_five_percent_false_alarms():
    from evaluation.detection import roc

    def ep(outcome, value):
        return {"seed": 0, "shadow_outcome": outcome, "ticks": 10, "first_alarm": {}, "first_close_tick": None,
                "signal_extremes": {"similarity": value}}

    # 20 successes at 0.90..0.99 (one of them, 0.90, lower than a failure), failures at 0.50..0.95
    episodes = [ep("success", 0.90 + 0.005 * i) for i in range(20)] + \
        [ep("failure", v) for v in (0.50, 0.60, 0.70, 0.80, 0.95)]
    point = roc(episodes, "similarity")["at_5pct_false_alarms"]
    # four failures lie at or below 0.80, where no success alarms; 0.90 would catch no more and alarm on one
    # success in 20 (5%): of equal catches the one with fewer false alarms
    assert point == {"threshold": pytest.approx(0.80), "false_alarm_rate": 0.0, "true_alarm_rate": 0.8}
    more = episodes + [ep("failure", 0.902)]  # caught at 0.902, which alarms on one success (0.90): 5%
    assert roc(more, "similarity")["at_5pct_false_alarms"] == {
        "threshold": pytest.approx(0.902), "false_alarm_rate": 0.05, "true_alarm_rate": pytest.approx(5 / 6)}
    most = episodes + [ep("failure", 0.906)]  # caught only at 0.906, which alarms on two successes: 10%
    assert roc(most, "similarity")["at_5pct_false_alarms"]["true_alarm_rate"] == pytest.approx(4 / 6)
    looser = [ep("success", 0.90 + 0.005 * i) for i in range(20)] + [ep("failure", 0.899), ep("failure", 0.5)]
    assert roc(looser, "similarity")["at_5pct_false_alarms"] == {
        "threshold": pytest.approx(0.899), "false_alarm_rate": 0.0, "true_alarm_rate": 1.0}
