"""Shadow runs: every signal of the gate and the watchdog logged with the tick it first fired, none obeyed; refused
on a real rig; the evaluation's shadow episodes carry what the detector figures are computed from."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation.evaluate import SHADOW_OUTCOMES, evaluate_policy, evaluate_scenario
from policy.database import LookupDatabase
from policy.policy import ALTPolicy
from policy.runner import PolicySource, ProgressWatchdog, run_autonomous
from core.clock import RealTimeClock
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm

from recording_helpers import connected_sim_rig, reset_in_distribution as _reset, tiny_sim_policy

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("shadow") / "ds"
    return out, tiny_sim_policy(out)


@pytest.fixture(scope="module")
def dataset_dir(built):
    return built[0]


@pytest.fixture(scope="module")
def policy(built):
    return built[1]


@pytest.fixture(scope="module")
def sim_rig():
    yield from connected_sim_rig(32)


def test_a_shadow_run_is_refused_on_a_real_rig(policy):
    rig = Rig(arm=SafeArm(KinematicArm()), cameras={"hand": SyntheticCamera("hand", 32, 32, fps=30.0),
                                                     "third": SyntheticCamera("third", 32, 32, fps=30.0, seed=1)},
              clock=RealTimeClock(10.0))
    with rig:
        with pytest.raises(ValueError, match="simulated rig only"):
            run_autonomous(rig, policy, max_ticks=5, shadow=True)
        assert not rig.arm.stopped


def test_a_shadow_run_needs_an_end(policy, sim_rig):
    with pytest.raises(ValueError, match="needs an end"):
        run_autonomous(sim_rig, policy, shadow=True)


def test_everything_out_of_distribution_stops_an_ordinary_run_and_not_a_shadow_one(policy, sim_rig):
    saved = policy.gamma
    try:
        policy.gamma = 1.01  # every lookup is out of distribution
        _reset(sim_rig)
        ordinary = run_autonomous(sim_rig, policy, max_ticks=12)
        assert ordinary.reason == "ood" and ordinary.loop.ticks == 1 and ordinary.shadow is None
        _reset(sim_rig)
        start = sim_rig.arm.get_state().ee_array()[:3]
        shadow = run_autonomous(sim_rig, policy, max_ticks=12, shadow=True)
        assert shadow.reason == "max_ticks" and shadow.loop.ticks == 12 and not sim_rig.arm.stopped
        log = shadow.shadow
        assert log.first_alarm["similarity"] == 0 and log.first_alarm["gate"] == 0 and log.first_alarm["any"] == 0
        assert log.thresholds["similarity"] == pytest.approx(1.01)
        assert log.extremes["similarity"] == pytest.approx(min(r.similarity for r in shadow.retrievals))
        assert len(shadow.retrievals) == 12 and shadow.stop_signal is None
        moved = np.linalg.norm(sim_rig.arm.get_state().ee_array()[:3] - start)
        assert moved > 0.005, "the arm went on executing the retrieved chunks"
    finally:
        policy.gamma = saved


def test_the_watchdog_fires_in_a_shadow_run_without_stopping_it(policy, sim_rig):
    home = sim_rig.arm.get_state()
    db = policy.database
    hold = np.concatenate([home.ee_array()[:7], [1.0]]).astype(np.float32)
    still = LookupDatabase(db.embeddings, db.episodes, db.frames, np.broadcast_to(hold, db.chunks.shape).copy(),
                           db.view_embeddings)
    p = ALTPolicy(policy.config.with_overrides(stall_seconds=0.5, stall_distance=0.01), policy.encoder, still,
                  policy.calibration, policy.info)
    p.gamma, p.view_thresholds, p.grasp_check = -1.0, {}, None
    _reset(sim_rig)
    ordinary = run_autonomous(sim_rig, p, max_ticks=30)
    assert ordinary.reason == "stall"
    _reset(sim_rig)
    shadow = run_autonomous(sim_rig, p, max_ticks=30, shadow=True)
    assert shadow.reason == "max_ticks" and not sim_rig.arm.stopped
    alarms = shadow.shadow.first_alarm
    assert "stall" in alarms and alarms["any"] == alarms["stall"] and "gate" not in alarms
    assert "no progress" in shadow.shadow.messages["stall"]


def test_a_shadow_run_notes_the_first_close_after_the_gripper_was_open(policy):
    source = PolicySource(policy, shadow=True)
    source.begin(None)
    from core.types import Action

    def send(gripper):
        source.retrievals.append(None)  # one tick
        source.sent(Action.from_array([0.4, 0, 0.3, 1, 0, 0, 0, gripper]))

    send(0.0)  # closed from the start: not a close
    assert source.shadow_log.first_close_tick is None
    send(1.0)
    send(1.0)
    send(0.2)
    send(1.0)
    send(0.0)
    assert source.shadow_log.first_close_tick == 3
    # a halt in a shadow run is logged, not obeyed
    assert source._halt("ood", "alignment", "no object", 0.0) is None
    assert source.shadow_log.first_alarm == {"alignment": 5, "gate": 5, "any": 5}


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(gamma=st.floats(-1.0, 1.01), hand=st.floats(-1.0, 1.01), ticks=st.integers(2, 10))
def test_no_threshold_makes_a_shadow_run_stop_the_arm(policy, sim_rig, gamma, hand, ticks):
    saved = policy.gamma, dict(policy.view_thresholds)
    try:
        policy.gamma = gamma
        policy.view_thresholds["hand_view"] = hand
        _reset(sim_rig, seed=ticks)
        result = run_autonomous(sim_rig, policy, max_ticks=ticks, shadow=True,
                                watchdog=ProgressWatchdog(0.1, 10.0))  # fires every tick once 0.1 s passed
        assert result.reason == "max_ticks" and result.loop.ticks == ticks and not sim_rig.arm.stopped
        assert result.stop_signal is None and result.ood_evidence is None
        if ticks >= 3:
            assert "stall" in result.shadow.first_alarm
    finally:
        policy.gamma, policy.view_thresholds = saved[0], saved[1]


def test_shadow_episodes_carry_what_the_detector_needs(policy, sim_rig):
    saved = policy.gamma
    try:
        policy.gamma = 1.01
        report = evaluate_scenario(policy, sim_rig, "in_distribution", 2, seed=5, max_ticks=8, shadow=True)
    finally:
        policy.gamma = saved
    s = report.summary()
    assert s["shadow"] and set(s["counts"]) == set(SHADOW_OUTCOMES) and sum(s["counts"].values()) == 2
    for e in s["results"]:
        assert e["shadow_outcome"] in SHADOW_OUTCOMES and e["outcome"] == e["shadow_outcome"]
        assert e["reason"] != "ood" and e["first_alarm"]["gate"] == 0
        assert e["signal_extremes"]["similarity"] < 1.01 and e["failed_before_stop"] is False
        json.dumps(e, allow_nan=True)


def test_eval_shadow_writes_the_detector_report_and_the_roc(policy, dataset_dir, tmp_path):
    policy.save(tmp_path / "p")
    payload = evaluate_policy(str(tmp_path / "p"), ["in_distribution"], 2, 7, max_ticks=8, quiet=True,
                              json_path=str(tmp_path / "r.json"), shadow=True)
    assert payload["shadow"] and payload["complete"] and "pooled" in payload["detector"]
    assert (tmp_path / "r-roc.png").stat().st_size > 0 and payload["roc_png"] == str(tmp_path / "r-roc.png")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["detector"]["pooled"] == payload["detector"]["pooled"]


def test_a_shadow_run_ends_where_the_policy_s_time_limit_would_have_asked(policy):
    from evaluation.evaluate import SUCCESS_HOLD_TICKS, shadow_ticks

    limit, fps = policy.time_limit_seconds(), policy.info["fps"]
    own = int(np.ceil(limit * fps)) + SUCCESS_HOLD_TICKS + 1
    assert shadow_ticks(policy, 10_000) == own and shadow_ticks(policy, 7) == 7


def test_a_device_stop_in_an_evaluation_says_what_the_device_said(policy, sim_rig, monkeypatch):
    """An arm fault ends the episode as a device stop whose message carries the fault's own words (where the
    arm was, what to do), not only the word "arm_error"."""
    from core.errors import LimitViolationError
    from evaluation.evaluate import run_episode

    send = sim_rig.arm.send_action
    sent = [0]

    def faulty(action):
        sent[0] += 1
        if sent[0] == 3:
            raise LimitViolationError("end-effector at [0.1, 0.35, 0.2] m is outside the safe workspace")
        return send(action)

    monkeypatch.setattr(sim_rig.arm, "send_action", faulty)
    ep, _ = run_episode(policy, sim_rig, "in_distribution", 3, max_ticks=20)
    assert ep.outcome == "device_stop" and ep.reason == "arm_error"
    assert ep.message.startswith("arm_error: ") and "outside the safe workspace" in ep.message
