"""benchmarks/metaworld_suite.py end to end on one Meta-World task at tiny settings: every row is there, the counts
add up, and a second run resumes without doing any stage again."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("metaworld_suite", ROOT / "benchmarks" / "metaworld_suite.py")
suite = importlib.util.module_from_spec(_spec)
sys.modules["metaworld_suite"] = suite
_spec.loader.exec_module(suite)  # imports Meta-World through the rig: installed by scripts/setup.sh, never skipped

EPISODES = 2
ARGS = ["--tasks", "reach-v3", "--demos", "6", "--camera-size", "48", "--epochs", "1", "--episodes", str(EPISODES),
        "--scenarios", "in_distribution"]
#: a small encoder input (the preset's 96 px would upscale the 48 px cameras and take nine times as long)
SMALL = {"image_width": 32, "image_height": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    t0 = time.perf_counter()
    assert suite.main(ARGS + ["--out", str(out)], training_extra=SMALL) == 0
    return out, time.perf_counter() - t0


def _stage_files(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "reach-v3" / "stages").glob("*.json"))}


def test_summary_has_every_method_and_the_oracle(first_run):
    out, _ = first_run
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert {r["method"] for r in rows} == {"alt", "aligned", "landmarks", "oracle"}
    # reach-v3 never grasps: the aligned method does not apply, and its row says why instead of failing
    aligned = [r for r in rows if r["method"] == "aligned"]
    assert len(aligned) == 1 and not aligned[0]["served"] and "grasp" in aligned[0]["reason"]
    served = [r for r in rows if r["served"]]
    # the landmark method follows the goal marker the reach demonstrations went to: it is served
    assert sorted((r["method"], r["scenario"]) for r in served) == [("alt", "in_distribution"),
                                                                     ("landmarks", "in_distribution"),
                                                                     ("oracle", "in_distribution")]
    for r in served:
        assert r["episodes"] == EPISODES and sum(r["counts"].values()) == EPISODES
        assert set(r["counts"]) == set(suite.OUTCOMES)
        low, high = r["intervals_95"]["success"]
        assert 0.0 <= low <= r["counts"]["success"] / EPISODES <= high <= 1.0
        assert r["counts"]["device_stop"] == 0
    oracle = next(r for r in served if r["method"] == "oracle")
    assert oracle["counts"]["ood_stop"] == oracle["counts"]["stall_stop"] == 0  # open loop: it never stops
    # the same scenes for the policy and the oracle
    stages = out / "reach-v3" / "stages"
    alt = json.loads((stages / "eval-alt-in_distribution.json").read_text())["detail"]["results"]
    oracle_seeds = [e["seed"] for e in json.loads((stages / "eval-oracle-in_distribution.json").read_text())["results"]]
    alt_seeds = [e["seed"] for e in alt]
    assert alt_seeds == oracle_seeds == [1000, 1001]
    # the context and the timings
    assert summary["git"]["commit"] and summary["machine"]["cpu_count"] >= 1 and summary["machine"]["cpu_model"]
    assert "--tasks reach-v3" in summary["command"] and summary["started_at"]
    timings = summary["tasks"][0]["timings"]
    assert {"record_s", "train_alt_s", "build_aligned_s", "build_landmarks_s", "eval_alt_s", "eval_landmarks_s",
            "eval_oracle_s"} <= set(timings)
    md = (out / "summary.md").read_text()
    assert "| reach-v3 | alt | in_distribution | " in md and "| reach-v3 | aligned | all | not served: " in md
    assert "oracle (nearest demo, open loop)" in md and summary["git"]["commit"] in md


def test_a_second_run_resumes_without_redoing_a_stage(first_run, capsys):
    out, first_seconds = first_run
    before = _stage_files(out)
    assert set(before) == {f"reach-v3/stages/{n}.json" for n in ("record", "train-alt", "build-aligned",
                                                                  "build-landmarks", "eval-alt-in_distribution",
                                                                  "eval-landmarks-in_distribution",
                                                                  "eval-oracle-in_distribution")}
    rows = json.loads((out / "summary.json").read_text())["rows"]
    capsys.readouterr()
    t0 = time.perf_counter()
    assert suite.main(ARGS + ["--out", str(out)], training_extra=SMALL) == 0
    seconds = time.perf_counter() - t0
    printed = capsys.readouterr().out
    for stage in ("record", "train alt", "aligned", "landmarks", "eval alt / in_distribution",
                  "eval landmarks / in_distribution", "oracle / in_distribution"):
        assert f"[reach-v3] {stage}: skipped" in printed
    assert _stage_files(out) == before  # nothing written again
    again = json.loads((out / "summary.json").read_text())["rows"]
    # the not-served row, alt, landmarks, oracle
    assert [r.pop("this_run", None) for r in rows] == [None, True, True, True]
    assert [r.pop("this_run", None) for r in again] == [None, False, False, False]
    assert again == rows
    assert seconds < max(15.0, first_seconds / 3), (seconds, first_seconds)


def test_changed_settings_redo_only_the_stages_they_touch(first_run, tmp_path, capsys):
    """More episodes: the evaluations run again, the recording and the training are reused; a dataset recorded
    with other settings is refused rather than mixed."""
    src, _ = first_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    args = [a if a != str(EPISODES) else "1" for a in ARGS] + ["--out", str(out), "--methods", "oracle"]
    assert suite.main(args, training_extra=SMALL) == 0
    printed = capsys.readouterr().out
    assert "[reach-v3] record: skipped" in printed and "made with other settings" in printed
    row = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["method"], r["episodes"]) for r in row] == [("oracle", 1)]
    with pytest.raises(SystemExit, match="was recorded with"):
        suite.main([a if a != "6" else "7" for a in ARGS] + ["--out", str(out)], training_extra=SMALL)


def test_an_aligned_method_that_is_built_is_evaluated(first_run, tmp_path, monkeypatch):
    """The aligned method when its build succeeds (stood in for by the ALT policy: the Meta-World recordings here
    break its assumptions) and when the build hands back another method (a fallback)."""
    src, _ = first_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    (out / "reach-v3" / "stages" / "build-aligned.json").unlink()
    import policy.aligned.build

    class Built:  # the aligned method as the build returns it: saved like any policy
        config = type("Config", (), {"method": "aligned"})()
        info: dict = {}

        def save(self, path, overwrite=False):
            shutil.copytree(out / "reach-v3" / "policy-alt", path, dirs_exist_ok=overwrite)

    monkeypatch.setattr(policy.aligned.build, "aligned_from", lambda policy, ds: Built())
    args = [a if a != str(EPISODES) else "1" for a in ARGS] + ["--out", str(out), "--methods", "aligned"]
    assert suite.main(args, training_extra=SMALL) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["method"], r["served"], r["episodes"], sum(r["counts"].values())) for r in rows] == \
        [("aligned", True, 1, 1)]

    fallback = Built()
    fallback.config = type("Config", (), {"method": "alt"})()
    assert suite._fallback_reason(fallback) == "the aligned build gave the alt method"
    fallback.info = {"method_fallback": {"reason": "no grasp in the demonstrations"}}
    assert suite._fallback_reason(fallback) == "no grasp in the demonstrations"
    assert suite._fallback_reason(Built()) is None


def test_an_evaluation_that_fails_is_a_row_and_is_tried_again(first_run, tmp_path, monkeypatch, capsys):
    src, _ = first_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    stage = out / "reach-v3" / "stages" / "eval-oracle-in_distribution.json"
    stage.unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("no in_distribution variation accepted in 200 draws")

    monkeypatch.setattr(suite, "replay_episode", broken)
    assert suite.main(ARGS + ["--out", str(out), "--methods", "oracle"], training_extra=SMALL) == 1
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["method"], r["served"], r["error"]) for r in rows] == [("oracle", False, True)]
    assert "no in_distribution variation" in rows[0]["reason"] and not stage.exists()
    assert "| reach-v3 | oracle | in_distribution | failed: RuntimeError" in (out / "summary.md").read_text()
    monkeypatch.undo()
    assert suite.main(ARGS + ["--out", str(out), "--methods", "oracle"], training_extra=SMALL) == 0
    assert stage.exists()


def test_bad_names_are_refused_before_any_work(tmp_path, capsys):
    assert suite.main(["--tasks", "reach-v9", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'reach-v3'" in capsys.readouterr().err
    assert suite.main(["--tasks", "reach-v3", "--scenarios", "distractors", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_shadow_runs_judge_the_gate_on_the_task_and_resume(first_run, tmp_path, capsys):
    """--shadow: each method's shadow runs on the same seeds (a stage file per scenario, resumed like the others),
    and the gate's detector figures per task in the summary."""
    src, _ = first_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    args = ARGS + ["--out", str(out), "--methods", "alt", "--shadow"]
    assert suite.main(args, training_extra=SMALL) == 0
    stage = out / "reach-v3" / "stages" / "shadow-alt-in_distribution.json"
    row = json.loads(stage.read_text())["row"]
    assert row["shadow"] and row["episodes"] == EPISODES and sum(row["counts"].values()) == EPISODES
    assert [e["seed"] for e in row["results"]] == [1000, 1001]
    assert all(e["shadow_outcome"] in ("success", "failure") and e["reason"] not in ("ood", "stall")
               for e in row["results"])
    summary = json.loads((out / "summary.json").read_text())
    detector = summary["tasks"][0]["detectors"]["alt"]
    assert detector["pooled"]["counts"]["episodes"] == EPISODES
    assert "shadow_alt_s" in summary["tasks"][0]["timings"]
    assert [r["method"] for r in summary["rows"]] == ["alt"]  # shadow rows stay out of the outcome table
    md = (out / "summary.md").read_text()
    assert "## The gate as a failure detector" in md and "gate as a failure detector (2 shadow episodes" in md
    before = stage.stat().st_mtime_ns
    capsys.readouterr()
    assert suite.main(args, training_extra=SMALL) == 0
    assert "[reach-v3] shadow alt / in_distribution: skipped" in capsys.readouterr().out
    assert stage.stat().st_mtime_ns == before


def test_a_false_stop_rate_per_run_reaches_the_training_and_its_fingerprint():
    """--false-stop-rate trains the gate per run (main.py train --false-stop-rate); without it the training's
    settings, hence a resumed run's stages, are as before."""
    plain = suite.parse_args(ARGS)
    assert "run_false_stop_rate" not in suite.training_overrides(plain, None)
    per_run = suite.parse_args(ARGS + ["--false-stop-rate", "0.05"])
    overrides = suite.training_overrides(per_run, SMALL)
    assert overrides["run_false_stop_rate"] == 0.05
    assert suite.PRESETS[suite.PRESET].with_overrides(**overrides).run_false_stop_rate == 0.05
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            suite.parse_args(ARGS + ["--false-stop-rate", bad])


def test_the_lines_say_how_many_successes_were_stopped_after_the_task_was_done():
    from evaluation.tables import scenario_table

    counts = {"success": 2, "ood_stop": 1, "stall_stop": 0, "silent_failure": 0, "device_stop": 0}
    results = [{"done_before_stop": True}, {"done_before_stop": False}, {}]
    row = {"counts": counts, "episodes": 3, "results": results}
    assert suite._counts_line(row).startswith("success 2/3 (1 stopped after the task was done), OOD stops 1")
    assert "stopped after" not in suite._counts_line({**row, "results": results[1:]})
    summary = {"scenario": "interpolate", "clock": "lockstep", "episodes": 3, "counts": counts,
               "intervals_95": dict.fromkeys(counts, (0.0, 1.0)), "retrieval_accuracy": None,
               "latency_p50_ms": None, "latency_p99_ms": None, "stopped_after_done": 1}
    assert scenario_table([summary]).splitlines()[-1].endswith("stopped after the task was done (and it stayed "
                                                                "done with the arm halted): interpolate 1")
    assert "stopped after" not in scenario_table([{**summary, "stopped_after_done": 0}])
