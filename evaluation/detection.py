"""The gate as a failure detector: how well the signals that would stop the arm tell failing runs from good ones.

An ordinary evaluation cannot answer this: a run the gate stops never shows
whether it would have failed. A *shadow run* can. It computes every signal on
every tick, as the gate would, but lets nothing stop the arm, and runs the
episode to its end, so each episode has both an outcome and a record of when
each signal would have fired. Each shadow episode is a dict (the JSON of an
``EpisodeResult``) with:

- ``shadow_outcome``: ``"success"``, ``"failure"`` or ``"device_stop"``. A
  device stop says nothing about the policy; those episodes are left out of
  every figure and only counted (``excluded``).
- ``ticks``: how many ticks the episode ran (its end).
- ``first_alarm``: signal name -> the first tick (0-based) at which it fired;
  a signal that is absent never fired. Besides the gate's own signals and the
  watchdog's (``stall``, ``time_limit``) there are two aggregates: ``gate``
  (any OOD signal) and ``any`` (gate or watchdog: what an ordinary run would
  have stopped on).
- ``first_close_tick``: the first tick the gripper closed, or None (it never
  closed, or the rig has no gripper).
- ``signal_extremes``: signal name -> the episode's worst value of it (the
  lowest, or the highest for signals that stop when *above* their threshold,
  such as ``correction``). Missing or not finite: the signal never applied.
- ``thresholds_in_force``: signal name -> the threshold that ``first_alarm``
  was computed with (optional).

A failure is the positive class: an alarm on a failed run is a *true alarm*,
one on a successful run a *false alarm*. Every interval is the 95% Wilson
interval of :func:`evaluation.trials.wilson_interval`.

:func:`detector_figures` gives one signal's figures at the thresholds in force;
:func:`roc` sweeps the threshold over the episodes' extremes to show what other
thresholds would have done; :func:`detector_report` gathers both per scenario
and pooled, as plain JSON; :func:`which_catches` says which signal fired first
on each failure. :func:`format_pooled_line`, :func:`format_table` and
:func:`write_roc_png` present a report (the picture is drawn with OpenCV).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from bisect import bisect_left, bisect_right
from pathlib import Path

from evaluation.trials import wilson_interval
from policy.gate import UPPER_BOUND_SIGNALS

#: The aggregate alarms: not signals of their own, but "any OOD signal" and "anything that would have stopped the run".
AGGREGATES = ("any", "gate")
#: What a shadow episode can end as; ``device_stop`` episodes are only counted.
SHADOW_OUTCOMES = ("success", "failure", "device_stop")
POOLED = "pooled"
#: The false-alarm rate of the ROC's operating point (``roc()["at_5pct_false_alarms"]``).
OPERATING_FALSE_ALARMS = 0.05


# ---------------------------------------------------------------------------------------------------------------
# reading episodes


def _outcome(episode: dict) -> str:
    outcome = episode.get("shadow_outcome")
    if outcome not in SHADOW_OUTCOMES:
        raise ValueError(f"shadow episode (seed {episode.get('seed')!r}) has shadow_outcome {outcome!r}; "
                         f"expected one of {', '.join(SHADOW_OUTCOMES)}")
    return outcome


def _split(episodes: list[dict]) -> tuple[list[dict], list[dict], int]:
    """Failed episodes, successful episodes, and how many device stops were left out."""
    failures, successes, excluded = [], [], 0
    for e in episodes:
        outcome = _outcome(e)
        if outcome == "failure":
            failures.append(e)
        elif outcome == "success":
            successes.append(e)
        else:
            excluded += 1
    return failures, successes, excluded


def _alarm_tick(episode: dict, signal: str) -> int | None:
    """The tick at which ``signal`` first fired in the episode, or None where it never fired."""
    tick = (episode.get("first_alarm") or {}).get(signal)
    return None if tick is None else int(tick)


def _extreme(episode: dict, signal: str) -> float | None:
    """The episode's worst value of ``signal``; None where it never applied (missing, NaN or infinite, which the
    gate never stops on either)."""
    value = (episode.get("signal_extremes") or {}).get(signal)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def stops_above(signal: str) -> bool:
    """Whether ``signal`` stops the arm when its value is above its threshold (``correction``); every other signal
    stops it when below."""
    return signal in UPPER_BOUND_SIGNALS


def group_by_scenario(episodes: list[dict], scenario: str | None = None) -> dict[str, list[dict]]:
    """Episodes grouped by their ``scenario`` key, in first-seen order, ready for :func:`detector_report`. An
    episode without one goes under ``scenario``; where that is not given either, it is an error."""
    groups: dict[str, list[dict]] = {}
    for e in episodes:
        name = e.get("scenario") or scenario
        if not name:
            raise ValueError(f"shadow episode (seed {e.get('seed')!r}) names no scenario; pass scenario=")
        groups.setdefault(str(name), []).append(e)
    return groups


def _interval(k: int, n: int) -> list[float] | None:
    ci = wilson_interval(k, n)
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


# ---------------------------------------------------------------------------------------------------------------
# figures at the thresholds in force


def detector_figures(episodes: list[dict], signal: str) -> dict:
    """How ``signal`` (a gate or watchdog signal, or an aggregate) did as a failure detector on these episodes,
    at the thresholds that were in force.

    - ``true_alarms`` of ``failures``: failed episodes on which the signal fired at all (``true_alarm_rate``,
      ``true_alarm_interval``; None without failures).
    - ``false_alarms`` of ``successes``: successful episodes on which it fired (``false_alarm_rate``,
      ``false_alarm_interval``; None without successes).
    - ``balanced_accuracy``: the mean of the true-alarm rate and one minus the false-alarm rate, so that a
      detector is not flattered by whichever outcome is more common (None unless both are known). Its interval
      is the conservative combination of the two Wilson intervals: the low end takes the low true-alarm rate and
      the high false-alarm rate at once, the high end the other two. That is wider than an interval for the
      average itself would be; where both rates lie inside their own intervals, the balanced accuracy lies
      inside this one.
    - Lead time on the caught failures: ``lead_ticks_median`` and ``lead_ticks_min``, the ticks between the
      alarm and the episode's end (``ticks - first_alarm``): how long a stop would have come before the failure
      was final (None when nothing was caught).
    - ``before_first_close``: of the caught failures on which the gripper closed, how many were alarmed before
      that first close (``count`` of ``of``, ``rate``, ``interval``): a stop then comes before the grasp,
      while the scene is still as it was. A caught failure on which the gripper never closed is counted apart as
      ``caught_without_close``: its alarm trivially precedes a close that never came, so it says nothing here.
    - ``excluded``: device stops, left out of everything above. ``thresholds``: the distinct thresholds the
      episodes record for the signal (usually one; empty for aggregates and where none was recorded).
    """
    failures, successes, excluded = _split(episodes)
    caught = [e for e in failures if _alarm_tick(e, signal) is not None]
    false_alarms = sum(_alarm_tick(e, signal) is not None for e in successes)
    n_fail, n_succ, tar_n = len(failures), len(successes), len(caught)

    tar, far = _rate(tar_n, n_fail), _rate(false_alarms, n_succ)
    tar_ci, far_ci = _interval(tar_n, n_fail), _interval(false_alarms, n_succ)
    ba = ba_ci = None
    if tar is not None and far is not None:
        ba = (tar + (1.0 - far)) / 2
        ba_ci = [(tar_ci[0] + 1.0 - far_ci[1]) / 2, (tar_ci[1] + 1.0 - far_ci[0]) / 2]

    leads = [int(e["ticks"]) - _alarm_tick(e, signal) for e in caught]
    closing = [e for e in caught if e.get("first_close_tick") is not None]
    before = sum(_alarm_tick(e, signal) < int(e["first_close_tick"]) for e in closing)

    thresholds = set()
    for e in failures + successes:
        th = (e.get("thresholds_in_force") or {}).get(signal)
        if th is not None and math.isfinite(float(th)):
            thresholds.add(float(th))

    return {
        "signal": signal,
        "episodes": n_fail + n_succ,
        "failures": n_fail,
        "successes": n_succ,
        "excluded": excluded,
        "true_alarms": tar_n,
        "true_alarm_rate": tar,
        "true_alarm_interval": tar_ci,
        "false_alarms": false_alarms,
        "false_alarm_rate": far,
        "false_alarm_interval": far_ci,
        "balanced_accuracy": ba,
        "balanced_accuracy_interval": ba_ci,
        "lead_ticks_median": float(statistics.median(leads)) if leads else None,
        "lead_ticks_min": min(leads) if leads else None,
        "before_first_close": {"count": before, "of": len(closing), "rate": _rate(before, len(closing)),
                               "interval": _interval(before, len(closing))},
        "caught_without_close": tar_n - len(closing),
        "thresholds": sorted(thresholds),
    }


# ---------------------------------------------------------------------------------------------------------------
# the threshold sweep


def _scores(episodes: list[dict], signal: str) -> list[float]:
    """Each episode's extreme as an alarm score, higher meaning nearer to stopping: the value for a signal that
    stops above its threshold, minus it otherwise; ``-inf`` where the signal never applied (it never fires)."""
    sign = 1.0 if stops_above(signal) else -1.0
    out = []
    for e in episodes:
        v = _extreme(e, signal)
        out.append(-math.inf if v is None else sign * v)
    return out


def mann_whitney_auroc(failure_scores: list[float], success_scores: list[float]) -> float | None:
    """The probability that a failed episode's score is above a successful one's, ties counting one half (the
    area under the ROC curve, computed exactly from counts). None when either side is empty."""
    if not failure_scores or not success_scores:
        return None
    ordered = sorted(success_scores)
    above = ties = 0
    for s in failure_scores:
        lo, hi = bisect_left(ordered, s), bisect_right(ordered, s)
        above += lo
        ties += hi - lo
    return (2 * above + ties) / (2 * len(failure_scores) * len(ordered))


def roc(episodes: list[dict], signal: str) -> dict | None:
    """What every other threshold of ``signal`` would have done, swept over the episodes' extremes.

    An episode is alarmed at threshold ``t`` when its extreme is at ``t`` or on the stopping side of it (below,
    or above for ``correction``); an episode where the signal never applied is never alarmed. The candidate
    thresholds are the distinct extremes, in order from the threshold that stops fewest runs to the one that
    stops most, with the two ends: a first point where nothing fires, (0, 0), and a last that stops every run,
    (1, 1), the runs where the signal never applied included. The ends have no finite threshold and are
    written as None (JSON has no infinity), so ``thresholds`` lines up with ``fpr`` and ``tpr``. The curve is
    sorted by false-alarm rate and never falls.

    ``auroc`` is the Mann-Whitney probability that a failed run's extreme is on the stopping side of a
    successful run's, ties counting one half, and a missing extreme counting as the safest value (it never
    fires; two missing ones tie). It equals the area under the curve with straight segments between the points.
    ``not_applied`` counts the episodes where the signal never applied, per outcome.

    None when there are no failures or no successes, or when the signal has no extreme in any episode (the
    aggregates ``gate`` and ``any`` and the watchdog's signals have none: they have no value to sweep).
    """
    failures, successes, _ = _split(episodes)
    if not failures or not successes:
        return None
    f_scores, s_scores = _scores(failures, signal), _scores(successes, signal)
    finite = sorted({s for s in f_scores + s_scores if s != -math.inf}, reverse=True)
    if not finite:
        return None
    sign = 1.0 if stops_above(signal) else -1.0
    f_sorted, s_sorted = sorted(f_scores), sorted(s_scores)
    n_f, n_s = len(f_scores), len(s_scores)
    fpr, tpr, thresholds = [0.0], [0.0], [None]
    for t in finite:  # strictest score first: the sweep goes from nothing alarmed towards everything alarmed
        fpr.append((n_s - bisect_left(s_sorted, t)) / n_s)
        tpr.append((n_f - bisect_left(f_sorted, t)) / n_f)
        thresholds.append(sign * t + 0.0)  # + 0.0: no -0.0 in the output
    fpr.append(1.0)
    tpr.append(1.0)
    thresholds.append(None)
    best = max((i for i in range(len(fpr)) if fpr[i] <= OPERATING_FALSE_ALARMS), key=lambda i: (tpr[i], -fpr[i]))
    return {
        "signal": signal,
        "direction": "above" if stops_above(signal) else "below",
        "fpr": fpr,
        "tpr": tpr,
        "thresholds": thresholds,
        "auroc": mann_whitney_auroc(f_scores, s_scores),
        "failures": n_f,
        "successes": n_s,
        "not_applied": {"failures": sum(s == -math.inf for s in f_scores),
                        "successes": sum(s == -math.inf for s in s_scores)},
        # the threshold that would have caught the most failures while alarming on at most 5% of the successful
        # runs (an episode alarms at its worst value or beyond): what this signal alone could do at that rate
        "at_5pct_false_alarms": {"threshold": thresholds[best], "false_alarm_rate": fpr[best],
                                 "true_alarm_rate": tpr[best]},
    }


# ---------------------------------------------------------------------------------------------------------------
# which signal catches which failure


def which_catches(episodes: list[dict]) -> dict:
    """For the failed episodes: each signal -> on how many of them it was the first to fire (where signals fired
    on the same first tick, each of them is counted), and ``missed``: failures on which no signal fired. The
    aggregates ``gate`` and ``any`` are left out (they fire with the signals that make them up); the watchdog's
    signals are counted like the gate's. Every signal that fired on some failure is listed, most first-catches
    first, even where it was never first (0); ``missed`` comes last."""
    failures, _, _ = _split(episodes)
    first: dict[str, int] = {}
    missed = 0
    for e in failures:
        fired = {s: int(t) for s, t in (e.get("first_alarm") or {}).items() if t is not None and s not in AGGREGATES}
        if not fired:
            missed += 1
            continue
        earliest = min(fired.values())
        for s, t in fired.items():
            first[s] = first.get(s, 0) + (t == earliest)
    out = dict(sorted(first.items(), key=lambda kv: (-kv[1], kv[0])))
    out["missed"] = missed
    return out


# ---------------------------------------------------------------------------------------------------------------
# the report


def _default_signals(episodes: list[dict]) -> list[str]:
    names = set(AGGREGATES)
    for e in episodes:
        names.update(s for s, t in (e.get("first_alarm") or {}).items() if t is not None)
        names.update((e.get("signal_extremes") or {}).keys())
    return list(AGGREGATES) + sorted(names - set(AGGREGATES))


def _block(episodes: list[dict], signals: list[str]) -> dict:
    failures, successes, excluded = _split(episodes)
    return {
        "counts": {"episodes": len(episodes), "success": len(successes), "failure": len(failures),
                   "device_stop": excluded},
        "signals": {s: {"figures": detector_figures(episodes, s), "roc": roc(episodes, s)} for s in signals},
        "first_to_fire": which_catches(episodes),
    }


def detector_report(by_scenario: dict[str, list[dict]], signals: list[str] | None = None) -> dict:
    """Every signal's figures and ROC, per scenario and pooled over all of them, as plain JSON.

    ``signals`` defaults to every signal that fired or has an extreme in any episode, with the aggregates
    ``any`` and ``gate`` first and the rest in name order. The result::

        {"signals": [...],
         "scenarios": {name: block, ...},
         "pooled": block}

    where a block is ``{"counts": {"episodes", "success", "failure", "device_stop"}, "signals": {signal:
    {"figures": detector_figures(...), "roc": roc(...)}}, "first_to_fire": which_catches(...)}``. A scenario's
    name is its key in ``by_scenario`` (an episode's own ``scenario`` key is not consulted; see
    :func:`group_by_scenario`); ``pooled`` is reserved.
    """
    if POOLED in by_scenario:
        raise ValueError(f"{POOLED!r} names all scenarios together; rename that scenario")
    everything = [e for eps in by_scenario.values() for e in eps]
    names = list(signals) if signals is not None else _default_signals(everything)
    return {
        "signals": names,
        "scenarios": {str(name): _block(list(eps), names) for name, eps in by_scenario.items()},
        POOLED: _block(everything, names),
    }


def _scenario_block(report: dict, scenario: str) -> dict:
    if scenario == POOLED:
        return report[POOLED]
    try:
        return report["scenarios"][scenario]
    except KeyError:
        raise KeyError(f"no scenario {scenario!r} in the report (it has {', '.join(report['scenarios'])})") from None


# ---------------------------------------------------------------------------------------------------------------
# text


def _pct(x: float) -> str:
    """A share as a percentage: one decimal below 10%, where a whole number would hide the difference."""
    p = 100 * x
    if p == 0:
        return "0"
    return f"{p:.1f}" if p < 9.95 else f"{p:.0f}"


def _rate_text(k: int, n: int, rate: float | None, ci: list[float] | None) -> str:
    if not n:
        return "-"
    return f"{k}/{n} ({_pct(rate)}%, {_pct(ci[0])}-{_pct(ci[1])}%)"


def format_pooled_line(report: dict, signal: str = "gate") -> str:
    """One line for the console: how ``signal`` did as a failure detector over all scenarios together, e.g.
    ``gate as a failure detector (155 shadow episodes, 40 failed): true alarms 39/40 (98%, 87-100%), false alarms
    3/115 (2.6%, 0.9-7.4%), balanced accuracy 0.97 (0.91-0.99), before the first close 30/33``."""
    f = report[POOLED]["signals"][signal]["figures"]
    head = f"{signal} as a failure detector ({f['episodes']} shadow episodes, {f['failures']} failed"
    if f["excluded"]:
        head += f", {f['excluded']} device stop{'s' if f['excluded'] != 1 else ''} left out"
    head += ")"
    tar = _rate_text(f["true_alarms"], f["failures"], f["true_alarm_rate"], f["true_alarm_interval"])
    far = _rate_text(f["false_alarms"], f["successes"], f["false_alarm_rate"], f["false_alarm_interval"])
    parts = [f"true alarms {tar}", f"false alarms {far}"]
    if f["balanced_accuracy"] is None:
        parts.append("balanced accuracy -")
    else:
        lo, hi = f["balanced_accuracy_interval"]
        parts.append(f"balanced accuracy {f['balanced_accuracy']:.2f} ({lo:.2f}-{hi:.2f})")
    b = f["before_first_close"]
    close = f"before the first close {b['count']}/{b['of']}"
    if f["caught_without_close"]:
        close += f" ({f['caught_without_close']} more caught with the gripper never closed)"
    parts.append(close)
    return head + ": " + ", ".join(parts)


def _cell_rate(k: int, n: int, ci: list[float] | None) -> str:
    return "-" if not n else f"{k}/{n} ({_pct(ci[0])}-{_pct(ci[1])}%)"


def _operating_cell(point: dict) -> str:
    t = point["threshold"]
    return f"{100 * point['true_alarm_rate']:.0f}% ({'-' if t is None else f'{t:.3f}'})"


def format_table(report: dict, signals: tuple[str, ...] | list[str] = ("any", "gate")) -> str:
    """A Markdown table, one row per scenario (then pooled) and signal: episodes, failed, true and false alarms
    with their 95% intervals, balanced accuracy, AUROC, the share of failures the signal alone would catch at the
    threshold that alarms on at most 5% of the successful runs, the median lead in ticks, and how many caught failures
    were alarmed before the gripper first closed (of those on which it closed). ``-``: no figure (no failures,
    no successes, or no value to sweep)."""
    head = ["scenario", "signal", "episodes", "failed", "true alarms", "false alarms", "balanced accuracy", "AUROC",
            "true alarms at <= 5% false (threshold)", "median lead ticks", "before first close"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    blocks = list(report["scenarios"].items()) + [(POOLED, report[POOLED])]
    for name, block in blocks:
        for s in signals:
            entry = block["signals"].get(s)
            if entry is None:
                continue
            f, r = entry["figures"], entry["roc"]
            b = f["before_first_close"]
            row = [name, s, str(f["episodes"]), str(f["failures"]),
                   _cell_rate(f["true_alarms"], f["failures"], f["true_alarm_interval"]),
                   _cell_rate(f["false_alarms"], f["successes"], f["false_alarm_interval"]),
                   "-" if f["balanced_accuracy"] is None else f"{f['balanced_accuracy']:.2f}",
                   "-" if r is None else f"{r['auroc']:.2f}",
                   "-" if r is None else _operating_cell(r["at_5pct_false_alarms"]),
                   "-" if f["lead_ticks_median"] is None else f"{f['lead_ticks_median']:g}",
                   f"{b['count']}/{b['of']}" if b["of"] else "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the picture

_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
            (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]  # BGR
_INK = (40, 40, 40)


def write_roc_png(report: dict, path: str | Path, scenario: str = POOLED, signals: list[str] | None = None) -> Path:
    """Draw the ROC curves of ``scenario`` (``pooled``: all together) into a PNG of 640x640 pixels: one coloured
    line per signal, its AUROC in the legend, the chance diagonal, both axes from 0 to 1. ``signals`` defaults to
    every signal of the report that has a curve there. The file is written whole or not at all (a temporary file
    in the same folder, then renamed over ``path``). Returns the path."""
    import cv2
    import numpy as np

    block = _scenario_block(report, scenario)
    names = [s for s in (signals if signals is not None else report["signals"])
             if (block["signals"].get(s) or {}).get("roc") is not None]
    size = 640
    x0, y0, x1, y1 = 80, 60, size - 30, size - 80  # the plot's corners: (0, 1) at top left, (1, 0) at bottom right
    img = np.full((size, size, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def px(fpr: float, tpr: float) -> tuple[int, int]:
        return round(x0 + fpr * (x1 - x0)), round(y1 - tpr * (y1 - y0))

    for i in range(11):  # the grid and the tick labels
        g = i / 10
        cv2.line(img, px(g, 0), px(g, 1), (235, 235, 235), 1)
        cv2.line(img, px(0, g), px(1, g), (235, 235, 235), 1)
        if i % 2 == 0:
            label = f"{g:.1f}"
            cv2.putText(img, label, (px(g, 0)[0] - 12, y1 + 18), font, 0.4, _INK, 1, cv2.LINE_AA)
            cv2.putText(img, label, (x0 - 32, px(0, g)[1] + 4), font, 0.4, _INK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), (160, 160, 160), 1)
    cv2.line(img, px(0, 0), px(1, 1), (190, 190, 190), 1, cv2.LINE_AA)

    counts = block["counts"]
    title = f"ROC, {scenario}: {counts['success'] + counts['failure']} shadow episodes, {counts['failure']} failed"
    cv2.putText(img, title, (x0, 35), font, 0.55, _INK, 1, cv2.LINE_AA)
    xlabel = "false-alarm rate (successful runs)"
    (w, _), _ = cv2.getTextSize(xlabel, font, 0.5, 1)
    cv2.putText(img, xlabel, ((x0 + x1 - w) // 2, size - 35), font, 0.5, _INK, 1, cv2.LINE_AA)
    ylabel = "true-alarm rate (failed runs)"
    (w, h), base = cv2.getTextSize(ylabel, font, 0.5, 1)
    strip = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(strip, ylabel, (2, h + 2), font, 0.5, _INK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top = max(0, (y0 + y1 - strip.shape[0]) // 2)
    img[top:top + strip.shape[0], 12:12 + strip.shape[1]] = strip

    for i, s in enumerate(names):
        r = block["signals"][s]["roc"]
        points = np.array([px(f, t) for f, t in zip(r["fpr"], r["tpr"])], np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [points], False, _COLOURS[i % len(_COLOURS)], 2, cv2.LINE_AA)
    labels = [f"{s}  AUROC {block['signals'][s]['roc']['auroc']:.2f}" for s in names]
    if names:  # the legend, bottom right, inside the plot, on white so that no curve hides it
        text_w = max(cv2.getTextSize(label, font, 0.45, 1)[0][0] for label in labels)
        lx = x1 - 14 - text_w - 40
        corner = (lx - 8, y1 - 26 - 20 * (len(names) - 1) - 8)
        cv2.rectangle(img, corner, (x1 - 6, y1 - 6), (255, 255, 255), -1)
        cv2.rectangle(img, corner, (x1 - 6, y1 - 6), (200, 200, 200), 1)
        for i, label in enumerate(labels):
            ly = y1 - 12 - 20 * (len(names) - 1 - i)
            cv2.line(img, (lx, ly - 4), (lx + 25, ly - 4), _COLOURS[i % len(_COLOURS)], 2, cv2.LINE_AA)
            cv2.putText(img, label, (lx + 32, ly), font, 0.45, _INK, 1, cv2.LINE_AA)
    if not names:
        cv2.putText(img, "no curve: needs failed and successful runs", (x0 + 20, (y0 + y1) // 2), font, 0.5, _INK,
                    1, cv2.LINE_AA)

    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise OSError("could not encode the ROC picture as PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
