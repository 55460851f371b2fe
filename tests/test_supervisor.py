"""The supervisor without Qt: STOP ordering, recordings that are never lost, handovers from the arm as it is."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recorder.dataset import Dataset
from core.errors import LimitViolationError
from core.types import Action, Pose
from supervisor import AUTONOMOUS, HALTED, RECORDING, TELEOP, Events, Supervisor
from supervisor_helpers import rig_factory, tiny_policy, wait_until

pytestmark = pytest.mark.timeout(300)


class Recorder(Events):
    def __init__(self):
        self.outcomes = []
        self.halts = []
        self.cleared = 0
        self.infos = []
        self.errors = []
        self.recorded_steps = 0

    def record_event(self, event):
        if event.phase == "recording":
            self.recorded_steps = event.steps

    def episode_finished(self, outcome):
        self.outcomes.append(outcome)

    def halted(self, halt):
        self.halts.append(halt)

    def halt_cleared(self):
        self.cleared += 1

    def info(self, text):
        self.infos.append(text)

    def error(self, text):
        self.errors.append(text)


@pytest.fixture
def make_supervisor():
    made = []

    def make(home_s: float = 0.0):
        rigs = []
        events = Recorder()
        sup = Supervisor(rig_factory(home_s, rigs), events=events)
        made.append(sup)
        assert sup.connect_rig().wait(10)
        assert wait_until(lambda: sup.mode == TELEOP)
        return sup, rigs[-1], events

    yield make
    for sup in made:
        sup.shutdown()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_home_then_stop_10ms_later_stays_latched_and_not_homed(make_supervisor):
    """The reproduction of the issue: a queued Home must not release a STOP pressed after it, 20 of 20."""
    sup, rig, _ = make_supervisor(home_s=0.3)
    driver = rig.arm.inner
    for attempt in range(20):
        driver.place(Pose(np.array([0.55, 0.1, 0.25]), driver._home.orientation))
        done_before = driver.homes_completed
        home = sup.home()
        time.sleep(0.01)
        stop = sup.emergency_stop()
        assert home.wait(5) and stop.wait(5)
        assert sup.wait_stopped(2)
        time.sleep(0.35)  # longer than the homing would take
        assert rig.arm.stopped, f"attempt {attempt}: the STOP was undone"
        assert driver.homes_completed == done_before, f"attempt {attempt}: the arm was homed after the STOP"
        assert sup.mode == HALTED
        mark = driver.mark()
        time.sleep(0.1)
        assert driver.motion_since(mark) == []
        assert sup.take_over().wait(5)  # released by a command issued after the STOP
        assert wait_until(lambda: sup.mode == TELEOP and not rig.arm.stopped)


def test_a_release_issued_before_the_stop_is_refused(make_supervisor):
    """Take over clicked while the control thread is busy homing, then STOP: the click is stale."""
    sup, rig, events = make_supervisor(home_s=0.3)
    driver = rig.arm.inner
    driver.place(Pose(np.array([0.55, 0.1, 0.25]), driver._home.orientation))
    sup.home()
    time.sleep(0.05)  # homing is under way on the control thread
    stale = sup.take_over()  # queued behind it
    sup.emergency_stop()
    assert stale.wait(5) and stale.refused
    assert "before the latest halt" in stale.refusal
    mark = driver.mark()
    time.sleep(0.2)
    assert rig.arm.stopped and driver.motion_since(mark) == []
    fresh = sup.take_over()  # issued after the STOP: released
    assert fresh.wait(5) and not fresh.refused
    assert wait_until(lambda: not rig.arm.stopped and sup.mode == TELEOP)


def test_loading_a_policy_during_a_recording_keeps_the_episode_going(make_supervisor, policy, tmp_path):
    sup, rig, events = make_supervisor()
    sup.open_dataset(str(tmp_path / "demos")).wait(10)
    sup.keyboard.press("w")
    assert sup.start_episode().wait(5)
    assert wait_until(lambda: sup.mode == RECORDING)
    time.sleep(0.2)
    assert sup.set_policy(policy).wait(5)  # what the window does when training finishes
    at_load = events.recorded_steps
    assert wait_until(lambda: events.recorded_steps >= at_load + 5), "the recording did not go on after the load"
    assert sup.mode == RECORDING, "loading a policy ended the recording"
    sup.keyboard.release("w")
    assert sup.stop_episode()
    assert wait_until(lambda: len(events.outcomes) == 1)
    outcome = events.outcomes[0]
    assert outcome.kept is not None and outcome.reason == "stop_button"
    assert outcome.steps >= at_load + 5  # one episode, through the load
    with Dataset.open(tmp_path / "demos") as ds:
        assert [e.index for e in ds.episodes()] == [0]


def test_a_key_pressed_as_the_recording_starts_is_kept(make_supervisor, tmp_path, monkeypatch):
    """The teleop forgets keys held from before a new episode before the mode says RECORDING, not after: a key the
    operator presses the moment the window shows RECORDING moves the arm (it was cleared by the episode's start
    on a loaded machine, and the arm stayed put while the key was held)."""
    sup, rig, events = make_supervisor()
    assert sup.open_dataset(str(tmp_path / "demos")).wait(10)
    announce = sup._set_mode

    def set_mode(mode):
        changes = mode != sup.mode  # only a change is announced: the window shows RECORDING once
        announce(mode)
        if mode == RECORDING and changes:
            sup.keyboard.press("w")  # the operator, the instant the window says RECORDING

    monkeypatch.setattr(sup, "_set_mode", set_mode)
    start = np.array(rig.arm.get_state().ee_pose.position)
    assert sup.start_episode().wait(5)
    assert wait_until(lambda: np.linalg.norm(np.array(rig.arm.get_state().ee_pose.position) - start) > 0.02,
                      timeout=10), "the key pressed as the recording started did not move the arm"
    sup.keyboard.release("w")
    assert sup.stop_episode()
    assert wait_until(lambda: len(events.outcomes) == 1)


@pytest.mark.parametrize("command", ["home", "disconnect", "autonomy", "stop"])
def test_commands_that_end_a_recording_keep_it(make_supervisor, policy, tmp_path, command):
    sup, rig, events = make_supervisor()
    sup.set_policy(policy)
    sup.open_dataset(str(tmp_path / "demos")).wait(10)
    sup.start_episode().wait(5)
    assert wait_until(lambda: sup.mode == RECORDING)
    time.sleep(0.3)
    {"home": sup.home, "disconnect": sup.disconnect_rig, "autonomy": sup.start_autonomy,
     "stop": sup.emergency_stop}[command]().wait(10)
    assert wait_until(lambda: len(events.outcomes) == 1)
    outcome = events.outcomes[0]
    assert outcome.kept is not None, f"{command} threw the recording away ({outcome.reason})"
    with Dataset.open(tmp_path / "demos") as ds:
        assert ds.episode(outcome.kept.index).length == outcome.kept.length > 0


def test_start_recording_is_refused_while_the_policy_runs(make_supervisor, policy, tmp_path):
    sup, rig, events = make_supervisor()
    sup.open_dataset(str(tmp_path / "demos")).wait(10)
    sup.set_policy(policy)
    sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS)
    ticket = sup.start_episode()  # Enter pressed on the Autonomous tab
    assert ticket.wait(5) and ticket.refused
    time.sleep(0.2)
    assert sup.mode == AUTONOMOUS and events.outcomes == []


def test_take_over_keeps_a_closed_gripper_closed_and_forgets_old_keys(make_supervisor):
    sup, rig, events = make_supervisor()
    sup.keyboard.toggle_gripper()  # close
    assert wait_until(lambda: rig.arm.last_gripper_command == 0.0)
    sup.keyboard.toggle_gripper()  # a toggle pending from before the STOP ...
    sup.keyboard.press("w")  # ... and a held key
    sup.emergency_stop()
    assert sup.wait_stopped(2)
    # closed, unless a control tick took the toggle in before the STOP (a loaded machine): then it was applied
    # before the STOP, and what is checked is that nothing from before it is applied after
    at_stop = rig.arm.last_gripper_command
    assert sup.take_over().wait(5)
    assert wait_until(lambda: sup.mode == TELEOP and not rig.arm.stopped)
    start = rig.arm.get_state().ee_pose.position.copy()
    time.sleep(0.5)
    assert rig.arm.last_gripper_command == at_stop, "take over re-applied a gripper toggle from before the STOP"
    assert np.linalg.norm(rig.arm.get_state().ee_pose.position - start) < 0.002, "a key held before the STOP moved it"


def test_halt_is_cleared_when_the_operator_takes_over(make_supervisor):
    sup, rig, events = make_supervisor()
    sup.emergency_stop().wait(5)
    assert wait_until(lambda: sup.halt is not None and sup.mode == HALTED)
    sup.take_over().wait(5)
    assert wait_until(lambda: sup.halt is None and events.cleared == 1)


def test_a_reconnect_does_not_release_a_stop(make_supervisor):
    sup, rig, events = make_supervisor()
    sup.emergency_stop().wait(5)
    sup.disconnect_rig().wait(10)
    sup.connect_rig().wait(10)
    assert wait_until(lambda: sup.rig is not None and sup.mode == HALTED)
    assert sup.rig.arm.stopped
    mark = sup.rig.arm.inner.mark()
    time.sleep(0.2)
    assert sup.rig.arm.inner.motion_since(mark) == []


def test_the_arm_pushed_out_of_the_box_while_streaming_is_stopped(make_supervisor):
    sup, rig, events = make_supervisor()
    time.sleep(0.2)  # teleop streams a hold command every tick
    driver = rig.arm.inner
    driver._tracking = 0.0  # held there by whatever pushed it: the hold commands do not bring it back
    driver.place(Pose(np.array([0.45, 0.0, -0.2]), driver._home.orientation))  # 20 cm below the box floor
    assert wait_until(lambda: rig.arm.stopped and sup.mode == HALTED)
    assert rig.arm.counters.violations >= 1


def test_safe_arm_checks_the_measured_pose_on_every_command():
    from supervisor_helpers import fake_rig

    rig = fake_rig()
    rig.arm.connect()
    try:
        home = rig.arm.get_state().ee_pose
        for _ in range(3):
            rig.arm.send_action(Action(home, 1.0))
        rig.arm.inner.place(Pose(np.array([0.45, 0.0, -0.2]), home.orientation))
        rig.arm.get_state()  # the control loop reads the state every tick before it sends
        with pytest.raises(LimitViolationError):
            rig.arm.send_action(Action(home, 1.0))
        assert rig.arm.stopped
    finally:
        rig.arm.disconnect()


def test_every_autonomous_attempt_is_a_trial_in_the_ledger(policy, tmp_path):
    """A STOP and the resume after it are inside the attempt: one trial, its halts events of it."""
    from evaluation.trials import TrialLedger

    from supervisor_helpers import rig_factory as factory

    ledger_path = tmp_path / "trials.jsonl"
    events = Recorder()
    sup = Supervisor(factory(), events=events, ledger=TrialLedger(ledger_path))
    try:
        sup.connect_rig().wait(10)
        assert wait_until(lambda: sup.mode == TELEOP)
        policy.gamma = -1.0
        sup.set_policy(policy)
        sup.start_autonomy().wait(5)
        assert wait_until(lambda: sup.mode == AUTONOMOUS)
        time.sleep(0.2)
        sup.emergency_stop()
        assert wait_until(lambda: sup.mode == HALTED and sup.halt is not None)
        policy.gamma = 1.01  # nothing is that similar: the resumed run stops out of distribution at once
        sup.resume().wait(5)
        assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "ood")
        sup.home().wait(5)  # anything but Resume after a halt ends the attempt
        assert wait_until(lambda: all(t.outcome for t in TrialLedger(ledger_path).trials()))
    finally:
        sup.shutdown()
        policy.gamma = -1.0
    (trial,) = TrialLedger(ledger_path).trials()  # read back as after a restart of the app
    assert trial.outcome == "ood_stop" and trial.end_extra["ended_by"] == "home"
    assert [e["kind"] for e in trial.events] == ["operator_stop", "resume", "ood_stop"]
    assert trial.gamma == pytest.approx(-1.0)  # as it started (gamma set directly: no gamma event)
    ((_, evidence),) = trial.ood_stops()
    assert set(TrialLedger(ledger_path).stop_frames(trial, evidence)) == {"hand", "third"}


def test_take_over_and_record_keeps_a_correction_tagged_with_the_halt(make_supervisor, policy, tmp_path):
    from evaluation.trials import TrialLedger

    sup, rig, events = make_supervisor()
    sup.ledger = TrialLedger(tmp_path / "trials.jsonl")
    sup.open_dataset(str(tmp_path / "demos")).wait(10)
    policy.gamma = 1.01
    try:
        sup.set_policy(policy)
        sup.start_autonomy().wait(5)
        assert wait_until(lambda: sup.halt is not None and sup.halt.reason == "ood")
        trial = sup.last_trial
        held = rig.arm.get_state().ee_pose.position.copy()
        ticket = sup.take_over_and_record()
        assert ticket.wait(5) and not ticket.refused
        assert wait_until(lambda: sup.mode == RECORDING and not rig.arm.stopped)
        assert np.linalg.norm(rig.arm.get_state().ee_pose.position - held) < 0.002  # from where it stood
        sup.keyboard.press("r")
        time.sleep(0.3)
        sup.keyboard.release("r")
        assert sup.stop_episode()
        assert wait_until(lambda: len(events.outcomes) == 1)
    finally:
        policy.gamma = -1.0
    kept = events.outcomes[0].kept
    assert kept is not None
    with Dataset.open(tmp_path / "demos") as ds:
        tag = ds.episode(kept.index).extra["intervention"]
    assert tag["run"] == trial.id and tag["halt_reason"] == "ood" and tag["event"] == 0  # the attempt's first halt
