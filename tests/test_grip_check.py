"""The grip check: after a close, the fingers' measured opening against the band the demonstrations read at the same
tick after closing; a run whose fingers close further than it by more than the demonstrations' leave-one-out
margin stops ("grip")."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import grip_check
from policy.grip_check import GripCheck, closed_stretches, fit_grip_check, grip_check_from_dataset
from policy.policy import ALTPolicy
from policy.runner import run_autonomous
from recorder.dataset import Dataset

from recording_helpers import connected_sim_rig, reset_in_distribution as _reset, tiny_sim_policy


def _demo(close_at: int, length: int, width: float, rng, release_at: int | None = None):
    """A constructed demonstration: open, closed from ``close_at`` (until ``release_at``), fingers settling on an
    object ``width`` wide (the opening falls over three ticks, then holds with a little noise)."""
    commands = np.ones(length)
    end = length if release_at is None else release_at
    commands[close_at:end] = 0.0
    openings = np.ones(length)
    for i in range(close_at + 1, end + 1 if end < length else length):
        k = i - close_at
        openings[i] = max(width, 1.0 - 0.3 * k) + (rng.normal(0, 0.002) if k > 3 else 0.0)
    return commands, openings


def test_closed_stretches_follow_each_close_in_order():
    commands = np.array([1, 1, 0, 0, 0, 1, 0, 0, 1.0])
    openings = np.array([1, 1, .9, .5, .4, .4, .8, .3, .3])
    first, second = closed_stretches(commands, openings)
    # the states after each closed command (the one at the first open command was still taken closed)
    assert first.tolist() == [.5, .4, .4] and second.tolist() == [.3, .3]
    assert closed_stretches(np.ones(5), np.ones(5)) == []
    (from_start,) = closed_stretches(np.zeros(4), np.array([1, .6, .3, .3]))  # closed from the first tick
    assert from_start.tolist() == [.6, .3, .3]


def test_the_band_holds_every_demonstration_and_a_slip_leaves_it():
    rng = np.random.default_rng(0)
    demos = {e: _demo(int(rng.integers(5, 9)), 30, 0.45, rng) for e in range(10)}
    check, line = fit_grip_check(demos)
    assert check is not None and "1 close(s)" in line
    assert check.margin >= grip_check.MARGIN_FLOOR
    for commands, openings in demos.values():  # every demonstration lies inside its own band
        (stretch,) = closed_stretches(commands, openings)
        for k, v in enumerate(stretch, start=1):
            judged = check.judge(0, k, v)
            assert judged is None or judged[0] == 0.0
    excess, low, high = check.judge(0, 8, 0.40)  # the object slipping: the fingers close further
    assert excess == pytest.approx(low - 0.40) and excess > check.margin
    assert check.judge(0, 8, 0.02)[0] > 0.4  # closed on air
    assert check.judge(0, 8, 0.60)[0] == 0.0  # held wider (another part of the object): no sign of losing it
    assert check.judge(1, 8, 0.45) is None  # no demonstration closed twice
    assert check.judge(0, 0, 0.45) is None and check.judge(0, 10_000, 0.45) is None


def test_too_few_demonstrations_or_none_that_close_give_no_check():
    rng = np.random.default_rng(1)
    check, line = fit_grip_check({e: _demo(5, 20, 0.3, rng) for e in range(3)})
    assert check is None and "fewer than" in line
    check, line = fit_grip_check({e: (np.ones(20), np.ones(20)) for e in range(10)})
    assert check is None and "no demonstration closes" in line


def test_a_second_close_is_judged_against_the_demonstrations_second_closes():
    rng = np.random.default_rng(2)
    demos = {}
    for e in range(8):
        c1, o1 = _demo(4, 14, 0.20, rng, release_at=10)
        c2, o2 = _demo(3, 14, 0.45, rng)
        demos[e] = (np.r_[c1, c2], np.r_[o1, o2])
    check, line = fit_grip_check(demos)
    assert "2 close(s)" in line
    assert check.judge(0, 6, 0.20)[0] == 0.0 and check.judge(1, 6, 0.45)[0] == 0.0
    assert check.judge(1, 6, 0.20)[0] > check.margin  # the first (narrower) object's width at the second close


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.floats(0.05, 0.9), min_size=6, max_size=12),
       noise=st.floats(0.0, 0.02), seed=st.integers(0, 2 ** 16))
def test_the_margin_covers_each_demonstration_left_out(widths, noise, seed):
    """Leave-one-out: every demonstration, judged by a band of the others widened by the margin, passes."""
    rng = np.random.default_rng(seed)
    demos = {}
    for e, w in enumerate(widths):
        commands, openings = _demo(int(rng.integers(3, 7)), 25, w, rng)
        openings = np.clip(openings + rng.normal(0, noise, openings.shape), 0, 1)
        demos[e] = (commands, openings)
    check, _ = fit_grip_check(demos)
    assert check is not None
    for e, (commands, openings) in demos.items():
        others, _ = fit_grip_check({o: d for o, d in demos.items() if o != e})
        if others is None:
            continue
        (stretch,) = closed_stretches(commands, openings)
        for k, v in enumerate(stretch, start=1):
            judged = others.judge(0, k, v)
            if judged is not None:
                assert judged[0] <= check.margin + 1e-12


# -- on the simulated mug rig, through the control loop --------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("grip") / "ds"
    return out, tiny_sim_policy(out)


@pytest.fixture(scope="module")
def sim_rig():
    yield from connected_sim_rig(32)


def _fitted(dataset_dir, monkeypatch) -> GripCheck:
    monkeypatch.setattr(grip_check, "MIN_DEMOS", 1)  # the tiny recording has three demonstrations
    with Dataset.open(dataset_dir) as ds:
        check, line = grip_check_from_dataset(ds, ds.episode_indices())
    assert check is not None, line
    return check


def test_the_policy_folder_keeps_the_grip_check(built, monkeypatch, tmp_path):
    dataset_dir, policy = built
    check = _fitted(dataset_dir, monkeypatch)
    policy.grip_check = check
    try:
        policy.save(tmp_path / "p")
        loaded = ALTPolicy.load(tmp_path / "p")
        assert loaded.grip_check is not None and loaded.grip_check.margin == pytest.approx(check.margin)
        np.testing.assert_allclose(loaded.grip_check.low, check.low, atol=1e-6, equal_nan=True)
        assert loaded.thresholds()["grip"] == pytest.approx(check.margin)
    finally:
        policy.grip_check = None


def test_a_grip_the_demonstrations_never_had_halts_the_arm_one_tick_after_the_close(built, sim_rig, monkeypatch):
    dataset_dir, policy = built
    check = _fitted(dataset_dir, monkeypatch)
    # fingers that cannot read so: the band moved 0.5 above what the demonstrations read
    impossible = GripCheck(check.low + 0.5, check.high + 0.5, check.margin)
    saved = policy.gamma, dict(policy.view_thresholds), policy.grasp_check
    try:
        policy.gamma, policy.grasp_check = -1.0, None  # nothing but the grip check stops this run
        policy.view_thresholds = {k: -1.0 for k in policy.view_thresholds}
        policy.grip_check = impossible
        _reset(sim_rig)
        shadow = run_autonomous(sim_rig, policy, max_ticks=160, shadow=True)
        close = shadow.shadow.first_close_tick
        assert close is not None, "the run never closed the gripper: nothing to judge"
        assert shadow.shadow.first_alarm["grip"] == close + 1 and shadow.reason == "max_ticks"
        _reset(sim_rig)
        ordinary = run_autonomous(sim_rig, policy, max_ticks=160)
        assert ordinary.reason == "ood" and ordinary.stop_signal == "grip"
        assert ordinary.loop.ticks == close + 2  # halted on the first tick the grip is judged
        assert "the fingers closed further than in any demonstration" in ordinary.message
        assert ordinary.retrievals[-1].readings["grip"][1] == pytest.approx(check.margin)
        # before the close the check does not apply: no reading, nothing judged
        assert all("grip" not in r.readings for r in ordinary.retrievals[:close + 1])
    finally:
        policy.gamma, policy.view_thresholds, policy.grasp_check = saved[0], saved[1], saved[2]
        policy.grip_check = None
        sim_rig.arm.release()


@settings(max_examples=60, deadline=None)
@given(sent=st.integers(1, 6), late=st.floats(0.0, 4.0), fps=st.sampled_from([10.0, 20.0]))
def test_a_late_loop_judges_the_fingers_by_the_time_since_the_close(sent, late, fps):
    """In real time a tick can come late (the loop took 250 ms for a 100 ms tick) while the fingers go on closing:
    a measurement is judged at the tick after the close that its time says, or the ticks sent since, whichever
    is more; in lock-step (no lateness) the two agree."""
    from types import SimpleNamespace

    from core.types import Action
    from policy.runner import PolicySource

    policy = SimpleNamespace(info={"fps": fps}, config=SimpleNamespace(gate_persistence=3), grip_check=None)
    source = PolicySource.__new__(PolicySource)  # only the grip bookkeeping is exercised
    source.policy, source.shadow_log = policy, None
    source._closes, source._since_close, source._closed, source._was_open, source._grasping = -1, None, False, True, False
    period, t0 = 1.0 / fps, 100.0
    source._tick_time = t0
    source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0]))  # the close, sent on the tick at t0
    for k in range(1, sent):
        source._tick_time = t0 + k * period
        source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0]))
    measured_at = t0 + (sent + late) * period
    observation = SimpleNamespace(state=SimpleNamespace(host_time=measured_at))
    assert source._ticks_since_close(observation) == max(sent, round(sent + late))
    on_time = SimpleNamespace(state=SimpleNamespace(host_time=t0 + sent * period))
    assert source._ticks_since_close(on_time) == sent  # lock-step: the ticks sent
