"""A trial is one attempt at the task: from Start to success, failure or the operator's verdict. The halts inside it
(OOD and stall stops, the operator's pause or STOP, a device halt) and its resumes are events of that trial, not
trials of their own; the ledger, ``trials`` and the window's label count attempts, and older ledgers read as written.
"""

from __future__ import annotations

import csv
import json
import tempfile
import threading
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PyQt6.QtCore import Qt

from robot_drivers.scene import SceneControl
from evaluation.trials import FORMAT_VERSION, LedgerError, StopEvidence, TrialLedger, format_marks, format_summary
from supervisor import AUTONOMOUS, HALTED, TELEOP, Events, Supervisor
from supervisor.trial_log import TrialRecording
from supervisor_helpers import rig_factory, steady_policy, tiny_policy, wait_until

pytestmark = pytest.mark.timeout(180)


def _evidence(seed: int) -> StopEvidence:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=8).astype(np.float32)
    frames = {name: rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for name in ("hand", "third")}
    return StopEvidence(z / np.linalg.norm(z), 0.4 + seed / 100, frames, np.arange(7.0), (0, seed))


# -- the ledger --------------------------------------------------------------------------------------------------
def test_an_attempt_with_stops_and_resumes_reads_back_as_one_trial(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    t = ledger.start("pol", 1, "alt", 0.8)
    ledger.event(t, "ood_stop", "similarity 0.41 < gamma 0.80", ticks=12, evidence=_evidence(1))
    ledger.event(t, "resume", "the operator resumed")
    ledger.event(t, "gamma", "gamma 0.800 -> 0.700 by operator", extra={"from": 0.8, "to": 0.7, "by": "operator"})
    ledger.event(t, "ood_stop", "similarity 0.52 < gamma 0.70", ticks=5, evidence=_evidence(2))
    ledger.event(t, "resume", "the operator resumed")
    ledger.event(t, "operator_stop", "cancelled", ticks=3)  # a pause
    ledger.event(t, "resume", "the operator resumed")
    trajectory = np.arange(40, dtype=np.float32).reshape(5, 8)
    ledger.finish(t, "success", "done", extra={"ticks": 30, "ended_by": "task check"}, task_check=True,
                  trajectory=trajectory)
    with pytest.raises(ValueError, match="already ended"):
        ledger.event(t, "resume")
    with pytest.raises(ValueError, match="not one of"):
        ledger.event(ledger.start("pol", 1, "alt", 0.8), "coffee_break")

    back = TrialLedger(path).trials()[0]  # a restart of the app
    assert back.status == "success" and back.task_check is True and back.end_extra["ended_by"] == "task check"
    assert [e["kind"] for e in back.events] == ["ood_stop", "resume", "gamma", "ood_stop", "resume",
                                                "operator_stop", "resume"]
    assert (back.stops, back.resumes, back.halted) == (3, 3, False)
    assert back.events[0]["ticks"] == 12 and back.events[2]["extra"]["to"] == 0.7
    stops = back.ood_stops()
    assert [i for i, _ in stops] == [0, 3]
    assert stops[1][1]["frames"]["hand"] == f"trials-evidence/{t.id}/stop-3/hand.png"
    assert np.array_equal(ledger.stop_frames(back, stops[0][1])["third"], _evidence(1).frames["third"])
    assert np.allclose(stops[1][1]["embedding"], _evidence(2).embedding)
    assert np.array_equal(ledger.trajectory(back), trajectory)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["v"] for r in records} == {FORMAT_VERSION} == {3}
    assert [r["type"] for r in records[:9]] == ["start", *["event"] * 7, "end"]

    rows = TrialLedger(path).summary()
    assert [(r.trials, r.decided, r.successes, r.stops, r.resumes) for r in rows] == [(2, 1, 1, 3, 3)]
    table = format_summary(rows)
    assert "1/1" in table and "stops inside" in table and "100%" in table
    out = tmp_path / "t.csv"
    assert ledger.write_csv(out) == 2
    first = next(csv.DictReader(out.open()))
    assert (first["stops"], first["resumes"]) == ("3", "3")
    assert first["events"] == "ood_stop resume gamma ood_stop resume operator_stop resume"


def test_a_halted_attempt_of_a_killed_app_reads_as_interrupted_with_its_stops(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    t = ledger.start("pol", 1, "alt", 0.8)
    ledger.event(t, "stall_stop", "no progress", ticks=40)
    (live,) = TrialLedger(path).trials()
    assert live.status == "running" and live.halted  # its process (this one) lives: halted, waiting for Resume
    lines = path.read_text().splitlines()
    start = json.loads(lines[0])
    start["boot"] = "an earlier boot"  # the app that ran it is gone
    path.write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")
    (back,) = TrialLedger(path).trials()
    assert back.status == "interrupted" and back.stops == 1 and not back.halted
    (row,) = TrialLedger(path).summary()
    assert (row.trials, row.decided, row.counts["interrupted"], row.stops) == (1, 0, 1, 1)


def test_a_format_2_ledger_reads_as_before_each_start_and_end_one_trial(tmp_path):
    """Written before attempts: every run from Start or Resume to its halt was a trial; they stay as written."""
    path = tmp_path / "trials.jsonl"
    base = {"v": 2, "policy": "/p", "version": 1, "encoder": None, "method": "alt", "gamma": 0.8,
            "thresholds": {}, "pid": 0, "boot": "", "extra": {}}
    frames = {"hand": "trials-evidence/a/hand.png", "third": "trials-evidence/a/third.png"}
    records = [
        {"type": "start", "trial": "a", "time": "2025-01-01T00:00:00.000+00:00", "monotonic": 1.0, **base},
        {"type": "end", "v": 2, "trial": "a", "time": "2025-01-01T00:00:05.000+00:00", "monotonic": 6.0,
         "outcome": "ood_stop", "reason": "ood", "extra": {"ticks": 50}, "task_check": True,
         "evidence": {"embedding": [1.0, 0.0], "similarity": 0.4, "frames": frames, "pose": None,
                      "best_match": [0, 3]}},
        {"type": "start", "trial": "b", "time": "2025-01-01T00:00:09.000+00:00", "monotonic": 10.0, **base},
        {"type": "end", "v": 2, "trial": "b", "time": "2025-01-01T00:00:19.000+00:00", "monotonic": 20.0,
         "outcome": "operator_stop", "reason": "cancelled", "extra": {}, "evidence": None, "task_check": False},
        {"type": "mark", "v": 2, "trial": "b", "outcome": "success", "time": "2025-01-01T00:00:30.000+00:00",
         "monotonic": 31.0, "by": "operator"},
        {"type": "start", "trial": "c", "time": "2025-01-01T00:01:00.000+00:00", "monotonic": 70.0, **base},
        {"type": "end", "v": 2, "trial": "c", "time": "2025-01-01T00:01:09.000+00:00", "monotonic": 79.0,
         "outcome": "success", "reason": "done", "extra": {}, "evidence": None, "task_check": True},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    trials = TrialLedger(path).trials()
    assert [(t.id, t.status, t.automatic_status, t.stops, t.resumes, t.events) for t in trials] == [
        ("a", "ood_stop", "ood_stop", 0, 0, []), ("b", "success", "operator_stop", 0, 0, []),
        ("c", "success", "success", 0, 0, [])]
    assert trials[0].ood_stops() == [(None, records[1]["evidence"])]
    assert trials[0].duration_s == pytest.approx(5.0) and not trials[1].awaiting_mark
    (row,) = TrialLedger(path).summary()
    assert (row.trials, row.decided, row.successes, row.marked, row.stops, row.resumes) == (3, 3, 2, 1, 0, 0)
    assert "stops inside" not in format_summary([row]) and "[" not in format_marks(trials)

    # A new attempt appended to the old ledger (format 3) reads beside them.
    ledger = TrialLedger(path)
    t = ledger.start("/p", 1, "alt", 0.8)
    ledger.event(t, "operator_stop", "cancelled")
    ledger.finish(t, "operator_stop", "cancelled", task_check=False, extra={"ended_by": "home"})
    assert [(x.stops, x.status) for x in TrialLedger(path).trials()] == [
        (0, "ood_stop"), (0, "success"), (0, "success"), (1, "operator_stop")]

    # Refused: a record of a newer format, an event outside an attempt.
    newer = dict(records[0], v=FORMAT_VERSION + 1, trial="d")
    path.write_text(path.read_text() + json.dumps(newer) + "\n")
    with pytest.raises(LedgerError, match="written by a newer version .*ledger format 4; this one reads up to 3"):
        TrialLedger(path).trials()
    stray = {"type": "event", "v": 3, "trial": "a", "kind": "resume", "time": "t", "monotonic": 0.0}
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:2]) + json.dumps(stray) + "\n")
    with pytest.raises(LedgerError, match="line 3 is not a valid trial record .*an event outside the attempt"):
        TrialLedger(path).trials()


def test_the_coverage_map_draws_every_ood_stop_of_an_attempt_and_a_correction_covers_the_one_it_names(tmp_path):
    from evaluation.coverage import build_coverage

    policy = tiny_policy()
    policy.gamma = 1.01  # nothing in the table covers a stop: only a correction can
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    table = policy.database.embeddings
    t = ledger.start("pol", 1, "alt", policy.gamma)
    ledger.event(t, "ood_stop", "first", evidence=StopEvidence(-table[0], 0.1, {}))
    ledger.event(t, "resume")
    ledger.event(t, "ood_stop", "second", evidence=StopEvidence(-table[1], 0.2, {}))
    ledger.finish(t, "ood_stop", "second", task_check=False, extra={"ended_by": "take_over_record"})
    # the correction recorded after the second stop names the trial and that halt (its event index)
    policy.info["additions"] = [{"interventions": {"7": {"run": t.id, "event": 2, "halt_reason": "ood"}}}]
    cov = build_coverage(policy, None, ledger)
    assert [(s.trial, s.event, s.covered_by) for s in cov.stops] == [(t.id, 0, ""), (t.id, 2, "correction 7")]
    assert [s.event for s in cov.suggestions] == [0]
    assert [s.similarity_then for s in cov.stops] == [pytest.approx(0.1), pytest.approx(0.2)]


def test_trials_help_prints_a_single_percent_sign(capsys):
    from main import main

    with pytest.raises(SystemExit):
        main(["trials", "--help"])
    out = capsys.readouterr().out
    assert "95% interval" in " ".join(out.split()) and "%%" not in out


# -- every Start..end is one trial, whatever happens inside (the supervisor's bookkeeping) --------------------------
class _Recorder(Events):
    def __init__(self):
        self.ended, self.errors = [], []

    def trial_ended(self, trial):
        self.ended.append(trial)

    def error(self, text):
        self.errors.append(text)


class _Bookkeeping(TrialRecording):
    """The Supervisor's trial bookkeeping on its own: the state it reads, no control thread."""

    def __init__(self, ledger):
        self.ledger, self.events, self.last_trial, self._attempt = ledger, _Recorder(), None, None
        self.policy = SimpleNamespace(info={"path": "pol", "version": 1}, gamma=0.8, thresholds=lambda: {},
                                      gamma_changes=[])
        self.rig = SimpleNamespace(name="fake", arm=SimpleNamespace(stopped=False))
        self._pending_lock, self._pending = threading.Lock(), deque()
        self.halt = None  # no STOP or pause of the operator's is being handled


def _result(reason: str):
    return SimpleNamespace(reason=reason, loop=SimpleNamespace(ticks=3, error=None), message="", stop_signal=None,
                           retrievals=[SimpleNamespace(embedding=np.ones(4, np.float32))], ood_observation=None,
                           ood_evidence=None)


#: How a run (from Start or Resume) can end: its result's reason, and whether the arm was latched then (a pause or
#: STOP latches it before the run ends; another command does not).
_ENDINGS = [("done", False), ("ood", False), ("stall", False), ("camera_lost", False), ("estop", False),
            ("cancelled", True), ("cancelled", False), ("arm_stopped", True), ("error", False)]
_HALT = {"ood": "ood_stop", "stall": "stall_stop", "camera_lost": "device_stop", "estop": "operator_stop",
         "cancelled": "operator_stop", "arm_stopped": "device_stop"}  # no STOP pending: the arm's own stop
_STEPS = st.one_of(
    st.tuples(st.just("run"), st.booleans(), st.sampled_from(_ENDINGS)),  # (Start or Resume, how it ended)
    st.tuples(st.just("command"), st.sampled_from(["take_over", "take_over_record", "home", "reset_scene",
                                                   "disconnect"])),
    st.tuples(st.just("gamma"), st.floats(0.1, 0.9)),
    st.tuples(st.just("mark"), st.sampled_from(["success", "failure"])),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEPS, max_size=14))
def test_each_start_to_its_end_is_exactly_one_trial_whatever_happens_inside(steps):
    with tempfile.TemporaryDirectory() as folder:
        ledger = TrialLedger(Path(folder) / "trials.jsonl")
        sup = _Bookkeeping(ledger)
        model: list[dict] = []  # the attempts as the operator would count them
        open_ = None
        for step in steps:
            if step[0] == "run":
                _, resume, (reason, latched) = step
                if not (resume and open_ is not None):
                    if open_ is not None:
                        open_["outcome"] = open_["halt"]
                    open_ = {"stops": 0, "resumes": 0, "gammas": 0, "outcome": None, "halt": None}
                    model.append(open_)
                else:
                    open_["resumes"] += 1
                sup.rig.arm.stopped = latched
                attempt = sup._begin_attempt(None, resume)
                sup._run_ended(attempt, None if reason == "error" else _result(reason))
                if reason == "done":
                    open_["outcome"], open_ = "success", None
                elif reason == "error":
                    open_["outcome"], open_ = "failure", None
                elif reason == "cancelled" and not latched:  # another command ended the run, and the attempt
                    open_["outcome"], open_ = "operator_stop", None
                else:
                    open_["stops"] += 1
                    open_["halt"] = _HALT[reason]
            elif step[0] == "command":
                sup._end_attempt(step[1])
                if open_ is not None:
                    open_["outcome"], open_ = open_["halt"], None
            elif step[0] == "gamma":
                sup.policy.gamma_changes.append({"from": sup.policy.gamma, "to": step[1], "by": "test"})
                sup._gate_changed()  # as the supervisor's set_gamma handler does
                if open_ is not None:
                    open_["gammas"] += 1
            else:  # the verdict: on a halted attempt it ends it; on the last ended one it marks it
                if sup._attempt is not None:
                    sup._end_attempt("mark")
                if open_ is not None:
                    open_["outcome"], open_ = open_["halt"], None
                if sup.last_trial is not None:
                    ledger.mark(sup.last_trial, step[1])
        assert sup.events.errors == []
        trials = TrialLedger(ledger.path).trials()
        assert len(trials) == len(model)
        for trial, attempt in zip(trials, model):
            assert (trial.stops, trial.resumes) == (attempt["stops"], attempt["resumes"])
            assert trial.outcome == attempt["outcome"]
            assert sum(e["kind"] == "gamma" for e in trial.events) == attempt["gammas"]
            assert (trial.status == "running") == (attempt["outcome"] is None)
        assert [t.id for t in sup.events.ended] == [t.id for t in trials if t.outcome is not None]
        rows = TrialLedger(ledger.path).summary()
        assert sum(r.trials for r in rows) == len(model)
        assert sum(r.decided for r in rows) == sum(a["outcome"] is not None for a in model)
        assert sum(r.stops for r in rows) == sum(a["stops"] for a in model)


# -- the supervisor on the fake rig --------------------------------------------------------------------------------
class _TaskCheck(SceneControl):
    """A simulated rig's scene control as a run uses it: its task check is done once the test says so."""

    def __init__(self):
        self.done = False

    def reset(self, seed, scenario=None, training_index=None):
        return self.record()

    def restore(self, record):
        pass

    def record(self):
        return {"seed": 0}

    def task_succeeded(self):
        return self.done

    def cover_camera(self, name, image):
        raise NotImplementedError("no drill on this rig")


@pytest.fixture
def supervised(tmp_path):
    events = _Recorder()
    rigs = []
    sup = Supervisor(rig_factory(rigs=rigs), events=events, ledger=TrialLedger(tmp_path / "trials.jsonl"))
    try:
        assert sup.connect_rig().wait(10)
        assert wait_until(lambda: sup.mode == TELEOP)
        policy = steady_policy(tmp_path)
        sup.set_policy(policy)
        yield sup, rigs[-1], events, policy
    finally:
        sup.shutdown()


def test_start_pause_resume_ood_stop_resume_success_is_one_trial(supervised):
    sup, rig, events, policy = supervised
    check = _TaskCheck()
    rig.scene_control = lambda: check
    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and sup.last_trial is not None)
    trial = sup.last_trial
    sup.pause()
    assert wait_until(lambda: sup.mode == HALTED and trial.halted)
    assert sup.set_gamma(-0.5, "test").wait(5)  # a gamma change while halted: an event of the attempt
    assert sup.resume().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and not trial.halted)
    policy.gamma = 1.01  # nothing is that similar: the next lookup stops out of distribution
    assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "ood" and trial.halted)
    policy.gamma = -0.5
    assert events.ended == []  # no halt ended the attempt
    assert sup.resume().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and not trial.halted)
    check.done = True
    assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "done" and len(events.ended) == 1)
    assert events.ended[0] is trial and sup.last_trial is trial

    (back,) = TrialLedger(sup.ledger.path).trials()  # read back as after a restart
    assert back.id == trial.id and back.status == "success" and back.task_check is True
    assert [e["kind"] for e in back.events] == ["operator_stop", "gamma", "resume", "ood_stop", "resume"]
    assert (back.stops, back.resumes) == (2, 2) and back.events[1]["extra"]["to"] == -0.5
    ((index, evidence),) = back.ood_stops()
    assert index == 3 and set(sup.ledger.stop_frames(back, evidence)) == {"hand", "third"}
    assert sup.ledger.trajectory(back) is not None and back.end_extra["ticks"] > 0
    (row,) = sup.ledger.summary()
    assert (row.trials, row.decided, row.successes, row.stops, row.resumes) == (1, 1, 1, 2, 2)
    assert row.rate == 1.0 and events.errors == []


def test_what_the_operator_does_after_a_halt_other_than_resume_ends_the_attempt(supervised):
    sup, rig, events, policy = supervised
    policy.gamma = 1.01
    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "ood")
    first = sup.last_trial
    assert events.ended == [] and first.halted
    assert sup.take_over().wait(5)
    assert wait_until(lambda: sup.mode == TELEOP and len(events.ended) == 1)
    assert events.ended[0] is first and first.outcome == "ood_stop" and first.end_extra["ended_by"] == "take_over"
    assert first.task_check is False and first.awaiting_mark  # no task check on this rig: the operator judges

    policy.gamma = -1.0
    assert sup.start_autonomy().wait(5)  # a new attempt
    assert wait_until(lambda: sup.mode == AUTONOMOUS and sup.last_trial not in (None, first))
    second = sup.last_trial
    assert sup.home().wait(5)  # Home while it runs ends it (no halt inside it: ended by the operator)
    assert wait_until(lambda: len(events.ended) == 2 and sup.mode == TELEOP)
    assert second.outcome == "operator_stop" and second.end_extra["ended_by"] == "home" and second.stops == 0

    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and sup.last_trial not in (None, second))
    third = sup.last_trial
    sup.emergency_stop()
    assert wait_until(lambda: sup.mode == HALTED and third.halted)
    sup.shutdown()  # closing the app ends the halted attempt
    assert third.outcome == "operator_stop" and third.end_extra["ended_by"] == "disconnect"
    assert [t.stops for t in TrialLedger(sup.ledger.path).trials()] == [1, 0, 1]
    assert events.errors == []


def test_a_second_resume_carries_on_the_same_attempt_and_a_mark_must_name_the_last_one(supervised):
    sup, rig, events, policy = supervised
    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and sup.last_trial is not None)
    trial = sup.last_trial
    sup.pause()
    assert wait_until(lambda: sup.mode == HALTED and trial.halted)
    assert sup.resume().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS and not trial.halted)
    again = sup.resume()  # a double click: it reaches the supervisor while the policy already runs
    assert again.wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS)
    assert events.ended == [] and sup.last_trial is trial  # still the one attempt
    sup.pause()
    assert wait_until(lambda: sup.mode == HALTED and trial.halted)
    stale = sup.mark_last_trial("success", "some-earlier-trial")  # the prompt was about another attempt
    assert stale.wait(5) and stale.refused and "no longer the last one" in stale.refusal
    assert trial.outcome is None and trial.marked is None  # neither ended nor marked by the stale verdict
    verdict = sup.mark_last_trial("failure", trial.id)
    assert verdict.wait(5) and not verdict.refused
    assert trial.marked == "failure" and len(events.ended) == 1
    assert [t.id for t in TrialLedger(sup.ledger.path).trials()] == [trial.id]


def test_the_arms_own_safety_stop_is_a_device_stop_not_the_operators():
    from supervisor.trial_log import halt_kind

    assert halt_kind(_result("arm_stopped"), halt_pending=False) == "device_stop"
    assert halt_kind(_result("arm_stopped"), halt_pending=True) == "operator_stop"
    assert halt_kind(_result("cancelled"), halt_pending=False) == "operator_stop"


# -- the window ------------------------------------------------------------------------------------------------------
@pytest.fixture
def window_with_check(qtbot, tmp_path):
    """The app on the fake rig with the simulator's task check (never done), on the Autonomous tab, steady policy."""
    from gui.app import create_window, dispose

    controller, window = create_window(rig_factory(), tmp_path / "data", tmp_path / "runs")
    try:
        window.show()
        auto = window.autonomy_panel
        qtbot.waitUntil(lambda: controller.mode == TELEOP and auto.rig is not None, timeout=10_000)
        check = _TaskCheck()
        controller.rig.scene_control = lambda: check
        window.tabs.setCurrentWidget(auto)
        auto._on_loaded(steady_policy(tmp_path))
        yield controller, window, auto
    finally:
        dispose(controller, window)


def test_an_attempt_with_a_pause_a_resume_and_an_ood_stop_is_one_trial_and_asked_about_once(window_with_check, qtbot):
    controller, window, auto = window_with_check
    ledger = controller.supervisor.ledger
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(auto.pause_button.isEnabled, timeout=15000)
    qtbot.mouseClick(auto.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == HALTED and auto.resume_button.isEnabled(), timeout=15000)
    qtbot.waitUntil(lambda: ledger.trials() and ledger.trials()[0].halted, timeout=5000)
    qtbot.wait(300)
    assert not auto.mark_box.isVisible()  # no "The simulator's check said failure. Overrule it?" after a pause

    qtbot.mouseClick(auto.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == AUTONOMOUS and not ledger.trials()[0].halted, timeout=15000)
    auto.policy.gamma = 1.01  # the next lookup stops out of distribution
    qtbot.waitUntil(lambda: controller.mode == HALTED and controller.halt is not None
                    and controller.halt.reason == "ood", timeout=15000)
    qtbot.waitUntil(lambda: ledger.trials()[0].halted, timeout=5000)
    qtbot.wait(300)
    assert not auto.mark_box.isVisible()  # the OOD stop is inside the attempt too
    (trial,) = ledger.trials()
    assert trial.status == "running" and [e["kind"] for e in trial.events] == ["operator_stop", "resume", "ood_stop"]

    qtbot.mouseClick(auto.halt_teleop, Qt.MouseButton.LeftButton)  # the operator takes over: the attempt ends
    qtbot.waitUntil(lambda: controller.mode == TELEOP and auto.mark_box.isVisible(), timeout=15000)
    qtbot.waitUntil(lambda: auto.mark_prompt.text() == (
        "The attempt ended (ood_stop) after 2 stops and 1 resume. The simulator's check said failure. Overrule it? "
        "Mark it with the buttons."), timeout=5000)
    (trial,) = ledger.trials()
    assert trial.outcome == "ood_stop" and trial.end_extra["ended_by"] == "take_over"
    assert trial.end_extra["task_check_says"] == "failure" and (trial.stops, trial.resumes) == (2, 1)
    qtbot.mouseClick(auto.mark_failure, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "0/1 succeeded" in auto.trials_label.text(), timeout=15000)  # one attempt, not three
    (row,) = ledger.summary()
    assert (row.trials, row.decided, row.stops, row.resumes) == (1, 1, 2, 1)
