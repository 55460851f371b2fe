"""The trial ledger: append-only records that survive a restart, kill -9 and a torn last line; Wilson intervals."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evaluation.trials import LedgerError, StopEvidence, TrialLedger, format_summary, wilson_interval

ROOT = Path(__file__).resolve().parents[1]


def test_wilson_interval_matches_published_values():
    # Reference values (Wilson 1927; e.g. Brown, Cai & DasGupta 2001, Newcombe 1998 table I)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="impossible"):
        wilson_interval(4, 3)


def test_trials_read_back_after_reopening_with_counts_and_rates(tmp_path):
    path = tmp_path / "runs" / "trials.jsonl"
    ledger = TrialLedger(path)
    outcomes = ["success", "success", "ood_stop", "failure", "success"]
    for i, outcome in enumerate(outcomes):
        t = ledger.start(tmp_path / "pol", 1, "alt", 0.8, thresholds={"stall_s": 3.0}, extra={"seed": i})
        ledger.finish(t, outcome, f"because {i}", extra={"ticks": 10 + i})
    t = ledger.start(tmp_path / "pol-v2", 2, "alt", 0.8)
    ledger.finish(t, "success")
    running = ledger.start(tmp_path / "pol-v2", 2, "alt", 0.8)

    reopened = TrialLedger(path)  # a restart of the app
    trials = reopened.trials()
    assert [t.status for t in trials[:5]] == outcomes
    first = trials[0]
    assert first.policy == str((tmp_path / "pol").resolve()) and first.version == 1 and first.method == "alt"
    assert first.gamma == 0.8 and first.thresholds == {"stall_s": 3.0} and first.extra == {"seed": 0}
    assert first.reason == "because 0" and first.end_extra == {"ticks": 10}
    assert first.duration_s is not None and first.duration_s >= 0 and first.ended_at >= first.started_at
    # The open trial belongs to this (live) process: it is running, not interrupted, and not counted.
    assert trials[-1].id == running.id and trials[-1].status == "running"
    rows = reopened.summary()
    assert [(r.version, r.trials, r.successes, r.decided) for r in rows] == [(1, 5, 3, 5), (2, 2, 1, 1)]
    assert rows[0].rate == pytest.approx(0.6) and rows[0].interval == pytest.approx(wilson_interval(3, 5))
    assert rows[0].counts["ood_stop"] == 1 and rows[1].counts["running"] == 1
    assert [t.version for t in reopened.trials(policy=tmp_path / "pol-v2")] == [2, 2]
    table = format_summary(rows)
    assert "3/5" in table and "60%" in table and "23-88%" in table  # Wilson 95% of 3/5: 0.231-0.882


def test_a_trial_cut_short_by_kill_9_reads_back_as_interrupted(tmp_path):
    path = tmp_path / "trials.jsonl"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from evaluation.trials import TrialLedger
        ledger = TrialLedger({str(path)!r})
        done = ledger.start("pol", 1, "alt", 0.7)
        ledger.finish(done, "success", "task done")
        ledger.start("pol", 1, "alt", 0.7, extra={{"scene": 3}})
        print("started", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    trials = TrialLedger(path).trials()
    assert [t.status for t in trials] == ["success", "interrupted"]
    assert trials[1].extra == {"scene": 3} and trials[1].ended_at is None
    (row,) = TrialLedger(path).summary()
    assert row.counts["interrupted"] == 1 and row.decided == 1 and row.successes == 1


def test_a_torn_last_line_is_skipped_with_a_warning_and_set_aside_before_appending(tmp_path, caplog):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    t = ledger.start("pol", 1, "alt", 0.7)
    ledger.finish(t, "failure", "dropped the mug")
    ledger.start("pol", 1, "alt", 0.7)
    intact = path.read_bytes()
    torn = b'{"type":"end","v":1,"trial":"abc","ti'
    path.write_bytes(intact + torn)

    reader = TrialLedger(path)
    with caplog.at_level("WARNING"):
        trials = reader.trials()
    assert [t.status for t in trials] == ["failure", "running"]  # started by this live process
    assert any("line 4 was cut off mid-write" in w for w in reader.warnings)
    assert "cut off mid-write" in caplog.text

    writer = TrialLedger(path)
    t2 = writer.start("pol", 1, "alt", 0.7)
    writer.finish(t2, "success")
    assert (tmp_path / "trials.jsonl.torn").read_bytes() == torn + b"\n"
    assert any("moved to" in w for w in writer.warnings)
    again = TrialLedger(path)
    assert [t.status for t in again.trials()] == ["failure", "running", "success"] and again.warnings == []
    assert path.read_bytes().startswith(intact)


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    ledger.finish(ledger.start("pol", 1, "alt", 0.7), "success")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", lines[1]]) + "\n")
    with pytest.raises(LedgerError, match="line 2 is not a trial record"):
        TrialLedger(path).trials()


def test_outcomes_are_checked_and_a_trial_ends_once(tmp_path):
    ledger = TrialLedger(tmp_path / "t.jsonl")
    t = ledger.start("pol", 1, "alt", 0.7)
    with pytest.raises(ValueError, match="not one of"):
        ledger.finish(t, "interrupted")
    ledger.finish(t, "operator_stop", "STOP pressed")
    with pytest.raises(ValueError, match="already ended"):
        ledger.finish(t, "success")


def test_ood_stop_evidence_and_trajectory_are_kept_next_to_the_ledger(tmp_path):
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    rng = np.random.default_rng(0)
    hand = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    third = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    z = rng.normal(size=16).astype(np.float32)
    z /= np.linalg.norm(z)
    trajectory = rng.normal(size=(7, 16)).astype(np.float32)
    t = ledger.start("pol", 1, "alt", 0.7)
    ledger.finish(t, "ood_stop", "similarity 0.41 < gamma 0.70",
                  evidence=StopEvidence(z, 0.41, {"hand": hand, "third": third}, np.arange(7.0), (3, 12)),
                  trajectory=trajectory)
    (back,) = TrialLedger(tmp_path / "trials.jsonl").trials()
    assert back.evidence["frames"] == {"hand": f"trials-evidence/{t.id}/hand.png",
                                       "third": f"trials-evidence/{t.id}/third.png"}
    assert np.allclose(back.evidence["embedding"], z) and back.evidence["similarity"] == pytest.approx(0.41)
    assert back.evidence["best_match"] == [3, 12] and back.evidence["pose"] == list(np.arange(7.0))
    frames = ledger.stop_frames(back)
    assert np.array_equal(frames["hand"], hand) and np.array_equal(frames["third"], third)  # PNG: lossless
    assert np.array_equal(ledger.trajectory(back), trajectory)


def test_trials_cli_prints_the_table_and_writes_csv(tmp_path, capsys):
    from main import main

    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    for outcome in ("success", "ood_stop", "success", "success"):
        ledger.finish(ledger.start(tmp_path / "p", 3, "alt", 0.75), outcome, "r")
    out_csv = tmp_path / "t.csv"
    assert main(["trials", "--ledger", str(path), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "3/4" in out and "75%" in out and "30-95%" in out  # Wilson 95% of 3/4: 0.301-0.954
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["outcome"] for r in rows] == ["success", "ood_stop", "success", "success"]
    assert rows[0]["version"] == "3" and json.loads(rows[0]["thresholds"]) == {}
    assert main(["trials", "--ledger", str(tmp_path / "missing.jsonl")]) == 2
    assert "no trial ledger at" in capsys.readouterr().err
