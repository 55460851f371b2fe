"""The evaluation's tables as text: outcomes per scenario, two methods side by side, and the OOD gate's figures
(what `eval` and `demo` print)."""

from __future__ import annotations


def _pct(k: int, n: int, interval: tuple[float, float]) -> str:
    return f"{k}/{n} [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}%]"


def scenario_table(rows: list[dict]) -> str:
    """Outcome counts per scenario (95% Wilson intervals); silent failures, the safety figure, first."""
    lines = [f"{'scenario':<16} {'clock':<9} {'silent failures':>17} {'success':>15} {'OOD stops':>9} "
             f"{'stall stops':>11} {'device':>6} {'retrieval':>9} {'p50 / p99 ms':>13}"]
    for r in rows:
        n, c, ci = r["episodes"], r["counts"], r["intervals_95"]
        acc = "-" if r["retrieval_accuracy"] is None else f"{100 * r['retrieval_accuracy']:.0f}%"
        lat = "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f}"
        lines.append(f"{r['scenario']:<16} {r['clock']:<9} {_pct(c['silent_failure'], n, ci['silent_failure']):>17} "
                     f"{_pct(c['success'], n, ci['success']):>15} {c['ood_stop']:>9} {c['stall_stop']:>11} "
                     f"{c['device_stop']:>6} {acc:>9} {lat:>13}")
    after = [f"{r['scenario']} {r['stopped_after_done']}" for r in rows if r.get("stopped_after_done")]
    if after:
        lines.append("success includes runs stopped after the task was done (and it stayed done with the arm halted): "
                     + ", ".join(after))
    return "\n".join(lines)


def side_by_side(methods: dict[str, list[dict]]) -> str:
    """Per scenario and clock, each method's success / OOD stops / silent failures (of the episodes)."""
    names = list(methods)
    head = f"{'scenario':<16} {'clock':<9} " + " ".join(f"{m + ': success / OOD / silent':>30}" for m in names)
    lines = [head]
    for i, row in enumerate(methods[names[0]]):
        cells = []
        for m in names:
            r = methods[m][i]
            c = r["counts"]
            cells.append(f"{c['success']:>2}/{r['episodes']} / {c['ood_stop'] + c['stall_stop']:>2} / "
                         f"{c['silent_failure']:>2}")
        lines.append(f"{row['scenario']:<16} {row['clock']:<9} " + " ".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def ood_lines(payload: dict) -> list[str]:
    lines = []
    for group, feeds in payload["unrelated_images"].items():
        if feeds is None:
            lines.append(f"unrelated {group}: not available (install scikit-image and matplotlib for their sample "
                         "photos)")
            continue
        for feed, r in feeds.items():
            signals = ", ".join(f"{k} {v}" for k, v in sorted(r["by_signal"].items()))
            lines.append(f"unrelated {group}, {feed}: {r['flagged_ood']}/{r['images']} flagged OOD "
                         f"(max similarity {r['max_similarity']:.3f}; by {signals or 'none'})")
    idf = payload.get("in_distribution_frames")
    if idf:
        lines.append(f"demo frames not in the table ({idf['dataset']}): {idf['flagged_ood']}/{idf['frames']} "
                     f"flagged OOD (min similarity {idf['min_similarity']:.3f})")
    th = payload["thresholds"]
    views = ", ".join(f"{k} {th[k]:.3f}" for k in ("hand_view", "third_view") if th.get(k) is not None)
    grasp = th.get("grasp_alignment")
    grip = th.get("grip")
    limit = th.get("time_limit_s")
    lines.append(f"gate: gamma {th['gamma']:.3f} (calibrated {th['calibrated_gamma']:.3f})"
                 + (f", view agreement {views}" if views else "")
                 + (f", grasp alignment {grasp:.3f}" if grasp is not None else "")
                 + (f", grip margin {grip:.3f}" if grip is not None else "")
                 + f"; watchdog {th['stall_seconds']:g} s / {1000 * th['stall_distance_m']:.0f} mm"
                 + (f", time limit {limit:.1f} s" if limit else ""))
    return lines
