"""The operator's mark on a trial: on a real rig nothing else tells whether the arm did the task.

The ledger keeps the mark beside the automatic outcome (a later mark replaces an earlier one), the supervisor marks
the attempt that ended last (or ends the halted one with the verdict), the window asks after each attempt (not after a
halt inside one) and takes S / F, and `main.py trials --mark` does it from the command line.
"""

from __future__ import annotations

import csv
import json

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

from evaluation.trials import FORMAT_VERSION, LedgerError, TrialLedger, format_marks, format_summary, wilson_interval
from supervisor import AUTONOMOUS, HALTED, TELEOP, Events, Supervisor
from supervisor_helpers import rig_factory, steady_policy, wait_until

pytestmark = pytest.mark.timeout(120)


def _real_rig_run(ledger: TrialLedger, policy="pol", version=1, outcome="operator_stop", reason="cancelled"):
    """A run on a rig without a task check, ended by the operator's STOP."""
    return ledger.finish(ledger.start(policy, version, "alt", 0.8), outcome, reason, task_check=False)


# -- the ledger ------------------------------------------------------------------------------------------------
def test_a_mark_becomes_the_outcome_a_later_one_replaces_it_and_both_survive_a_restart(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    trial = _real_rig_run(ledger)
    assert trial.awaiting_mark and trial.status == "operator_stop"
    ledger.mark(trial, "failure")
    assert trial.marked == "failure" and trial.status == "failure"
    corrected = ledger.mark(trial.id, "success")  # the operator corrects a wrong key press (by id: as read back)
    assert corrected.id == trial.id and corrected.status == "success"

    (back,) = TrialLedger(path).trials()  # a restart of the app
    assert back.status == "success" and back.marked == "success" and back.marked_by == "operator"
    assert back.outcome == "operator_stop" and back.reason == "cancelled" and back.automatic_status == "operator_stop"
    assert back.task_check is False and not back.awaiting_mark
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "end", "mark", "mark"]
    mark = records[-1]
    assert {k: mark[k] for k in ("type", "trial", "outcome", "by", "v")} == {
        "type": "mark", "trial": trial.id, "outcome": "success", "by": "operator", "v": FORMAT_VERSION}
    assert mark["time"] >= records[1]["time"] and mark["monotonic"] >= records[1]["monotonic"]


def test_only_an_ended_trial_can_be_marked(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    running = ledger.start("pol", 1, "alt", 0.8)
    with pytest.raises(ValueError, match="has not ended"):
        ledger.mark(running, "success")
    with pytest.raises(ValueError, match="has not ended"):
        TrialLedger(path).mark(running.id, "success")  # read back: started by this live process, so running
    with pytest.raises(ValueError, match="no trial 'nope'"):
        ledger.mark("nope", "success")
    ended = _real_rig_run(ledger)
    with pytest.raises(ValueError, match="marked success or failure, not 'ood_stop'"):
        ledger.mark(ended, "ood_stop")
    # A start from a process of an earlier boot that never ended: the app was killed mid-run.
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["boot"] = "an earlier boot"
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="was interrupted"):
        TrialLedger(path).mark(running.id, "failure")
    assert [t.marked for t in TrialLedger(path).trials()] == [None, None]  # nothing was written


def test_summary_wilson_and_csv_count_the_mark_and_keep_the_automatic_outcome(tmp_path):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    trials = [_real_rig_run(ledger) for _ in range(5)]
    for trial, verdict in zip(trials, ("success", "success", "failure", "success")):
        ledger.mark(trial, verdict)  # the fifth is not marked yet
    sim = ledger.finish(ledger.start("pol", 1, "alt", 0.8), "success", "done", task_check=True)
    ledger.mark(sim, "failure")  # the operator overrules the simulator's check

    (row,) = TrialLedger(path).summary()
    assert (row.trials, row.decided, row.successes, row.marked, row.awaiting_mark) == (6, 6, 3, 5, 1)
    assert row.counts["success"] == 3 and row.counts["failure"] == 2 and row.counts["operator_stop"] == 1
    assert row.rate == pytest.approx(0.5) and row.interval == pytest.approx(wilson_interval(3, 6))
    table = format_summary([row])
    assert "3/6" in table and "marked" in table and "to mark" in table

    out = tmp_path / "t.csv"
    assert ledger.write_csv(out) == 6
    rows = list(csv.DictReader(out.open()))
    assert [(r["outcome"], r["automatic_outcome"], r["marked_by"]) for r in rows] == [
        ("success", "operator_stop", "operator"), ("success", "operator_stop", "operator"),
        ("failure", "operator_stop", "operator"), ("success", "operator_stop", "operator"),
        ("operator_stop", "operator_stop", ""), ("failure", "success", "operator")]
    assert rows[0]["reason"] == "cancelled" and rows[5]["reason"] == "done"


def test_a_mark_torn_by_kill_9_is_skipped_and_the_earlier_mark_stands(tmp_path, caplog):
    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    trial = _real_rig_run(ledger)
    ledger.mark(trial, "success")
    torn = f'{{"type":"mark","v":2,"trial":"{trial.id}","outc'.encode()
    path.write_bytes(path.read_bytes() + torn)  # killed while writing a second mark

    reader = TrialLedger(path)
    with caplog.at_level("WARNING"):
        (back,) = reader.trials()
    assert back.status == "success" and any("cut off mid-write" in w for w in reader.warnings)
    writer = TrialLedger(path)
    writer.mark(trial.id, "failure")  # the torn line is set aside first
    assert (tmp_path / "trials.jsonl.torn").read_bytes() == torn + b"\n"
    (back,) = TrialLedger(path).trials()
    assert back.status == "failure" and back.outcome == "operator_stop"


def test_format_1_ledgers_still_read_and_a_newer_format_or_a_stray_mark_is_refused(tmp_path):
    path = tmp_path / "trials.jsonl"
    start = {"type": "start", "v": 1, "trial": "old", "time": "2024-01-01T00:00:00.000+00:00", "monotonic": 1.0,
             "policy": "/p", "version": 1, "encoder": None, "method": "alt", "gamma": 0.8, "thresholds": {},
             "pid": 0, "boot": "", "extra": {}}
    end = {"type": "end", "v": 1, "trial": "old", "time": "2024-01-01T00:00:09.000+00:00", "monotonic": 10.0,
           "outcome": "operator_stop", "reason": "cancelled", "extra": {}, "evidence": None}
    path.write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
    (old,) = TrialLedger(path).trials()
    assert old.status == "operator_stop" and old.task_check is None and not old.awaiting_mark
    TrialLedger(path).mark("old", "success")  # an old trial can still be judged
    assert TrialLedger(path).trials()[0].status == "success"

    newer = dict(end, v=FORMAT_VERSION + 1, trial="old")
    path.write_text(path.read_text() + json.dumps(newer) + "\n")
    with pytest.raises(LedgerError, match="line 4 was written by a newer version"):
        TrialLedger(path).trials()
    stray = {"type": "mark", "v": 2, "trial": "old", "outcome": "success", "time": "t", "monotonic": 0.0}
    path.write_text(json.dumps(start) + "\n" + json.dumps(stray) + "\n")
    with pytest.raises(LedgerError, match="line 2 is not a valid trial record .*a mark before the end"):
        TrialLedger(path).trials()


def test_trials_cli_marks_a_trial_and_lists_marked_and_awaiting_ones(tmp_path, capsys):
    from main import main

    path = tmp_path / "trials.jsonl"
    ledger = TrialLedger(path)
    first, second = _real_rig_run(ledger), _real_rig_run(ledger)
    running = ledger.start("pol", 1, "alt", 0.8)

    assert main(["trials", "--ledger", str(path), "--mark", first.id, "success"]) == 0
    out = capsys.readouterr().out
    assert f"trial {first.id} marked success by the operator (the run itself ended operator_stop" in out
    assert "1/2" in out
    marked, awaiting = out.split("marked by the operator (")[1], out.split("awaiting the operator's mark")[1]
    assert f"{first.id}  pol v1" in marked and "success, the run itself ended operator_stop (cancelled)" in marked
    assert second.id in awaiting and first.id not in awaiting and "--mark TRIAL_ID success|failure" in awaiting
    assert format_marks(ledger.trials()) in out

    assert main(["trials", "--ledger", str(path), "--mark", running.id, "failure"]) == 2
    assert "has not ended" in capsys.readouterr().err
    assert main(["trials", "--ledger", str(path), "--mark", second.id, "maybe"]) == 2
    assert "not 'maybe'" in capsys.readouterr().err
    assert [t.status for t in TrialLedger(path).trials()] == ["success", "operator_stop", "running"]


# -- the supervisor -----------------------------------------------------------------------------------------------
class _Events(Events):
    def __init__(self):
        self.ended, self.marked, self.errors = [], [], []

    def trial_ended(self, trial):
        self.ended.append(trial)

    def trial_marked(self, trial):
        self.marked.append(trial.marked)

    def error(self, text):
        self.errors.append(text)


@pytest.fixture
def supervised(tmp_path):
    """A supervisor on the fake rig (no task check, like a real rig) with a ledger."""
    events = _Events()
    rigs = []
    sup = Supervisor(rig_factory(rigs=rigs), events=events, ledger=TrialLedger(tmp_path / "trials.jsonl"))
    try:
        assert sup.connect_rig().wait(10)
        assert wait_until(lambda: sup.mode == TELEOP)
        sup.set_policy(steady_policy(tmp_path))
        yield sup, rigs[-1], events
    finally:
        sup.shutdown()


def test_the_operator_marks_the_last_run_of_a_rig_without_a_task_check(supervised):
    sup, rig, events = supervised
    sup.start_autonomy()
    assert wait_until(lambda: sup.mode == AUTONOMOUS and sup.last_trial is not None)
    early = sup.mark_last_trial("success")
    assert early.wait(5) and early.refused and "has not ended" in early.refusal
    assert any("has not ended" in e for e in events.errors)
    ticks = rig.arm.counters.commands
    assert wait_until(lambda: rig.arm.counters.commands > ticks + 5), "the refused mark ended the run"
    assert sup.mode == AUTONOMOUS

    sup.pause()  # a halt inside the attempt: its event, not its end
    assert wait_until(lambda: sup.mode == HALTED and sup.last_trial.halted)
    assert events.ended == [] and sup.last_trial.outcome is None
    for verdict in ("failure", "success"):  # a wrong key, then the right one; the first ends the halted attempt
        ticket = sup.mark_last_trial(verdict)
        assert ticket.wait(5) and not ticket.refused
    assert wait_until(lambda: events.marked == ["failure", "success"])
    (ended,) = events.ended
    assert ended is sup.last_trial and ended.outcome == "operator_stop" and ended.end_extra["ended_by"] == "mark"
    assert sup.mode == HALTED and rig.arm.stopped  # a mark moves nothing
    (back,) = sup.ledger.trials()
    assert back.status == "success" and back.outcome == "operator_stop" and back.marked_by == "operator"
    assert [e["kind"] for e in back.events] == ["operator_stop"] and back.task_check is False


class _TaskCheck:
    """What a run uses of the simulator's scene control, with a task check that says done on its fifth call: the
    fake rig with it stands for the simulated rig."""

    success_text = "the fake task is done"

    def __init__(self):
        self.calls = 0

    def record(self):
        return {"seed": 0}

    def task_succeeded(self):
        self.calls += 1
        return self.calls >= 5


def test_a_mark_overrules_the_simulators_task_check(supervised):
    sup, rig, events = supervised
    check = _TaskCheck()
    rig.scene_control = lambda: check
    sup.start_autonomy()
    assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "done" and len(events.ended) == 1)
    (ended,) = events.ended
    assert ended.outcome == "success" and ended.task_check is True and not ended.awaiting_mark
    ticket = sup.mark_last_trial("failure")
    assert ticket.wait(5) and not ticket.refused
    assert wait_until(lambda: events.marked == ["failure"])
    (back,) = sup.ledger.trials()
    assert back.status == "failure" and back.automatic_status == "success"


def test_a_mark_without_a_ledger_or_a_run_is_refused_with_a_message(tmp_path):
    events = _Events()
    sup = Supervisor(rig_factory(), events=events)
    try:
        ticket = sup.mark_last_trial("success")
        assert ticket.wait(5) and "no trial ledger" in ticket.refusal
        sup.ledger = TrialLedger(tmp_path / "trials.jsonl")
        ticket = sup.mark_last_trial("success")
        assert ticket.wait(5) and "no run to mark" in ticket.refusal
        assert len(events.errors) == 2
    finally:
        sup.shutdown()


# -- the window ----------------------------------------------------------------------------------------------------
@pytest.fixture
def make_window(qtbot, tmp_path):
    """The app on the fake rig, on the Autonomous tab with the steady policy loaded; ``task_check``: give the
    connected rig the simulator's task check (the runs see it; the rest of the window does not)."""
    from gui.app import create_window, dispose

    made = []

    def make(task_check: bool = False):
        controller, window = create_window(rig_factory(), tmp_path / "data", tmp_path / "runs")
        made.append((controller, window))
        window.show()
        window.activateWindow()
        auto = window.autonomy_panel
        qtbot.waitUntil(lambda: controller.mode == TELEOP and auto.rig is not None, timeout=10_000)  # panels told
        if task_check:
            check = _TaskCheck()
            controller.rig.scene_control = lambda: check
        window.tabs.setCurrentWidget(auto)
        auto._on_loaded(steady_policy(tmp_path))
        return controller, window, auto

    yield make
    for controller, window in made:
        dispose(controller, window)


def test_the_window_asks_after_an_attempt_and_s_marks_it_a_success(make_window, qtbot):
    controller, window, auto = make_window()
    ledger = controller.supervisor.ledger
    assert not auto.mark_box.isVisible()
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(auto.pause_button.isEnabled, timeout=15000)  # the window knows the policy runs
    qtbot.mouseClick(auto.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == HALTED and auto.resume_button.isEnabled(), timeout=15000)
    qtbot.waitUntil(lambda: ledger.trials() and ledger.trials()[0].halted, timeout=5000)
    qtbot.wait(300)
    assert not auto.mark_box.isVisible()  # a pause is inside the attempt: nothing to judge yet

    qtbot.mouseClick(auto.halt_teleop, Qt.MouseButton.LeftButton)  # taking over ends the attempt: now it asks
    qtbot.waitUntil(lambda: controller.mode == TELEOP and auto.mark_box.isVisible(), timeout=15000)
    qtbot.waitUntil(lambda: auto.mark_prompt.text() == "The attempt ended (operator_stop) after 1 stop and 0 resumes. "
                                                       "Did the arm do the task? Mark it with the buttons.",
                    timeout=5000)
    controller.emergency_stop()  # halted, the keyboard cannot move the arm: S and F mark
    qtbot.waitUntil(lambda: controller.mode == HALTED and auto.mark_prompt.text().endswith(
        "Did the arm do the task? Press S for success, F for failure."), timeout=15000)

    QTest.keyClick(window, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: auto.mark_prompt.text().startswith("Marked: success"), timeout=15000)
    assert ledger.trials()[0].status == "success" and ledger.trials()[0].outcome == "operator_stop"
    qtbot.waitUntil(lambda: "1/1 succeeded" in auto.trials_label.text(), timeout=15000)
    assert "1 marked by the operator" in auto.trials_label.text()

    QTest.keyClick(window, Qt.Key.Key_F)  # the operator corrects a wrong key
    qtbot.waitUntil(lambda: "0/1 succeeded" in auto.trials_label.text(), timeout=15000)
    assert auto.mark_prompt.text().startswith("Marked: failure") and ledger.trials()[0].status == "failure"

    window.tabs.setCurrentWidget(window.record_panel)  # the keys belong to the Autonomous tab
    QTest.keyClick(window, Qt.Key.Key_S)
    qtbot.wait(300)
    assert ledger.trials()[0].status == "failure"
    window.tabs.setCurrentWidget(auto)

    qtbot.mouseClick(auto.halt_teleop, Qt.MouseButton.LeftButton)  # teleoperating: S and F move the arm
    qtbot.waitUntil(lambda: controller.mode == TELEOP and auto.mark_prompt.text() == "Marked: failure.",
                    timeout=15000)  # no "S or F changes it" any more
    QTest.keyPress(window, Qt.Key.Key_S)
    assert controller.keyboard.held == frozenset({"s"})
    QTest.keyRelease(window, Qt.Key.Key_S)
    qtbot.wait(300)
    assert ledger.trials()[0].status == "failure"
    qtbot.mouseClick(auto.mark_success, Qt.MouseButton.LeftButton)  # the button marks in any mode
    qtbot.waitUntil(lambda: auto.mark_prompt.text() == "Marked: success.", timeout=15000)
    assert ledger.trials()[0].status == "success" and len(ledger.trials()) == 1


def test_on_the_simulated_rig_the_prompt_gives_the_checks_verdict_to_overrule(make_window, qtbot):
    controller, window, auto = make_window(task_check=True)
    ledger = controller.supervisor.ledger
    qtbot.mouseClick(auto.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == HALTED and auto.mark_box.isVisible(), timeout=15000)
    qtbot.waitUntil(lambda: auto.mark_prompt.text() == ("The simulator's check said success. Overrule it? Press S "
                                                        "for success, F for failure."), timeout=5000)
    qtbot.mouseClick(auto.halt_teleop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.mode == TELEOP and "buttons" in auto.mark_prompt.text(), timeout=15000)
    assert auto.mark_prompt.text() == "The simulator's check said success. Overrule it? Mark it with the buttons."
    qtbot.mouseClick(auto.mark_failure, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: auto.mark_prompt.text() == "Marked: failure.", timeout=15000)
    (trial,) = ledger.trials()
    assert trial.status == "failure" and trial.outcome == "success" and trial.task_check is True
