"""The gate's persistence: a view signal (similarity, hand view, third view) or the grasp check stops a run once
``gate_persistence`` lookups in a row have had one of them failing; the run's first lookup, made before the arm
moves (unless only the grasp check, which judges the approach, fails there), every lookup while the gripper is
closed on what it closed on in this run, and every lookup with a close due within the ticks a stop could be held
back for (in the executing chunk, or in the chunk the lookup brings when it replaces that one), and, for the grasp
check, every lookup whose compared frame is within a chunk of its demonstration's close, stop at once;
every other signal (the grip check, the watchdog, a method's own) is not held back. Searched over failure
patterns on the simulated mug rig, through the control loop, in ordinary and shadow runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.config import PolicyConfig
from policy.grasp_check import SIZE, GraspCheck
from policy.runner import PolicySource, run_autonomous

from core.types import Action
from recording_helpers import connected_sim_rig, reset_in_distribution, tiny_sim_policy

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return tiny_sim_policy(tmp_path_factory.mktemp("persist") / "ds")


@pytest.fixture(scope="module")
def sim_rig():
    yield from connected_sim_rig(32)


def expected_stop(hand: list[bool], grasp: list[bool], persistence: int, closed_at: int | None = None,
                  closing: list[bool] | None = None, near: list[bool] | None = None) -> tuple[int, str] | None:
    """The lookup the gate stops on and the signal it names: the first, if the hand view (which judges the scene)
    fails there; one after the close command (sent on lookup ``closed_at``), or one the source saw a close coming
    on (``closing``, per lookup), if either fails; one whose grasp check fails while the frame it compared with is
    within a chunk of its demonstration's close (``near``, per lookup); else the first that ends ``persistence``
    lookups in a row with either failing (None: none does). The hand view is named before the grasp check."""
    doubted = [h or g for h, g in zip(hand, grasp)]
    for i in range(len(hand)):
        held = closed_at is not None and i > closed_at or bool(closing and i < len(closing) and closing[i])
        lasting = i + 1 >= persistence and all(doubted[i + 1 - persistence:i + 1])
        if hand[i] and (i == 0 or held or lasting):
            return i, "hand_view"
        if grasp[i] and (held or lasting or bool(near and near[i])):
            return i, "grasp_alignment"
    return None


def _closes(chunk) -> bool:
    """Whether a retrieved chunk commands the gripper closed (0 closed, 1 open)."""
    return bool(np.any(np.asarray(chunk)[:, 7] < 0.5))


def _logging_closing(monkeypatch) -> list[bool]:
    """Each lookup's answer of the source to "is a close due?" (PolicySource._closing), in order."""
    log: list[bool] = []
    real = PolicySource._closing

    def closing(self):
        log.append(real(self))
        return log[-1]

    monkeypatch.setattr(PolicySource, "_closing", closing)
    return log


def _scripted(policy, monkeypatch, failing: list[bool], grasp: list[bool] | None = None):
    """The hand view's agreement scripted per lookup (0 where ``failing``, else 0.99) against a threshold of 0.5,
    and, given ``grasp``, the grasp check's alignment too (0 where it fails, else 0.99; threshold 0.5); nothing
    else of the gate can stop the run."""
    calls = {"hand": 0, "grasp": 0}

    def scripted(which: str, pattern: list[bool]) -> float:
        i = calls[which]
        calls[which] += 1
        return 0.0 if i < len(pattern) and pattern[i] else 0.99

    monkeypatch.setattr(policy, "_view_agreement",
                        lambda best, hv, tv, executing_row: ((scripted("hand", failing), 0.99), None))
    if grasp is None:
        monkeypatch.setattr(policy, "grasp_check", None)
    else:
        monkeypatch.setattr(policy, "_grasp_signal",
                            lambda hand, best, executing_row, check: (scripted("grasp", grasp), False))
        monkeypatch.setattr(policy, "grasp_check",
                            GraspCheck(np.zeros(0, np.int64), np.zeros((0, SIZE, SIZE), np.uint8), 0.5))
    monkeypatch.setattr(policy, "gamma", -1.0)
    monkeypatch.setattr(policy, "grip_check", None)
    monkeypatch.setattr(policy, "view_thresholds", {"hand_view": 0.5, "third_view": -1.0})
    return calls


def test_the_setting_is_checked_and_old_policies_keep_a_single_failing_lookup():
    with pytest.raises(ValueError, match="gate_persistence"):
        PolicyConfig(gate_persistence=0)
    doc = {k: v for k, v in PolicyConfig().to_json().items() if k != "gate_persistence"}
    old = PolicyConfig.from_json(doc, saved_at="2026-12-06T22:00:00+00:00")
    assert old.gate_persistence == 1


@settings(max_examples=16, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lookups=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=14),
       persistence=st.integers(1, 4))
def test_a_view_signal_stops_the_run_exactly_when_it_has_failed_long_enough(policy, sim_rig, monkeypatch,
                                                                           lookups, persistence):
    """... and so does the grasp check (it dips for a lookup or two as the views do; it judges the approach, so
    it is held back on the first lookup too); two signals that take turns failing count as one doubt lasting that
    many lookups."""
    hand, grasp = [h for h, _ in lookups], [g for _, g in lookups]
    with monkeypatch.context() as m:
        m.setattr(policy, "config", policy.config.with_overrides(gate_persistence=persistence))
        ticks = len(lookups)
        closing = _logging_closing(m)
        _scripted(policy, m, hand, grasp)
        reset_in_distribution(sim_rig)
        shadow = run_autonomous(sim_rig, policy, max_ticks=ticks, shadow=True)
        assert shadow.reason != "ood"  # a shadow run logs, and goes on
        near = [_closes(r.chunk) for r in shadow.retrievals]  # alt compares with the frame its chunk starts on
        want = expected_stop(hand, grasp, persistence, shadow.shadow.first_close_tick, list(closing), near)
        assert shadow.shadow.first_alarm.get("gate") == (None if want is None else want[0])
        closing.clear()
        _scripted(policy, m, hand, grasp)
        reset_in_distribution(sim_rig)
        ordinary = run_autonomous(sim_rig, policy, max_ticks=ticks)
        if want is None:
            assert ordinary.reason != "ood", ordinary.message
        else:
            assert ordinary.reason == "ood", ordinary.message
            assert ordinary.stop_signal == want[1], ordinary.message
            assert len(ordinary.retrievals) == want[0] + 1
        # each reading itself is logged on the first lookup it fails, held back or not
        for name, pattern in (("hand_view", hand), ("grasp_alignment", grasp)):
            assert shadow.shadow.first_alarm.get(name) == (pattern.index(True) if any(pattern) else None)


def test_persistence_holds_back_only_the_view_signals(policy, sim_rig, monkeypatch):
    """A hand view failing on every lookup but the first, with persistence 3, stops on the third lookup; the
    similarity failing at once on the first lookup stops there."""
    with monkeypatch.context() as m:
        m.setattr(policy, "config", policy.config.with_overrides(gate_persistence=3))
        _scripted(policy, m, [False] + [True] * 9)
        reset_in_distribution(sim_rig)
        run = run_autonomous(sim_rig, policy, max_ticks=10)
        assert run.stop_signal == "hand_view" and len(run.retrievals) == 4
        _scripted(policy, m, [False] * 10)
        m.setattr(policy, "gamma", 1.01)  # nothing matches that well: the first lookup fails
        reset_in_distribution(sim_rig)
        run = run_autonomous(sim_rig, policy, max_ticks=10)
        assert run.stop_signal == "similarity" and len(run.retrievals) == 1


def test_with_the_gripper_closed_a_single_failing_lookup_stops_the_run(policy, sim_rig, monkeypatch):
    """What the gripper may hold is not risked on persistence: after the close command a view signal failing once
    stops the arm on that lookup, and the message says nothing of lookups in a row."""
    with monkeypatch.context() as m:
        m.setattr(policy, "config", policy.config.with_overrides(gate_persistence=3))
        _scripted(policy, m, [])
        reset_in_distribution(sim_rig)
        clean = run_autonomous(sim_rig, policy, max_ticks=160, shadow=True)
        close = clean.shadow.first_close_tick
        assert close is not None, "the run never closed the gripper: nothing to judge"
        failing = [False] * (close + 3) + [True]
        _scripted(policy, m, failing)
        reset_in_distribution(sim_rig)
        run = run_autonomous(sim_rig, policy, max_ticks=160)
        assert run.stop_signal == "hand_view" and len(run.retrievals) == close + 4
        assert "in a row" not in run.message
        # the same single failing lookup well before the close is held back
        assert close >= 6
        early = [False] * (close - 5) + [True] + [False] * 8
        _scripted(policy, m, early)
        reset_in_distribution(sim_rig)
        run = run_autonomous(sim_rig, policy, max_ticks=close + 3)
        assert run.reason != "ood", run.message
        # and stops the run on the lookup before the close: the grasp is not made under a doubted view
        just_before = [False] * (close - 1) + [True] + [False] * 8
        _scripted(policy, m, just_before)
        reset_in_distribution(sim_rig)
        run = run_autonomous(sim_rig, policy, max_ticks=close + 3)
        assert run.stop_signal == "hand_view" and len(run.retrievals) == close, run.message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grippers=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12), at=st.integers(0, 11),
       persistence=st.integers(1, 4), closed_now=st.booleans())
def test_a_close_due_soon_ends_the_holding_back(policy, monkeypatch, grippers, at, persistence, closed_now):
    """Searched over executing chunks: with the gripper open, a view signal is not held back when the chunk
    commands a close within the next ``gate_persistence`` ticks; otherwise (no close that soon, or the gripper
    closed from the start) it is."""
    from types import SimpleNamespace

    import numpy as np

    monkeypatch.setattr(policy, "config", policy.config.with_overrides(gate_persistence=persistence))
    source = PolicySource(policy)
    source._persistence.count({})  # past the run's first lookup (one that failed nothing)
    source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0 if closed_now else 1.0]))
    chunk = np.zeros((len(grippers), 8))
    chunk[:, 6] = 1.0
    chunk[:, 7] = grippers
    source.current = SimpleNamespace(chunk=chunk)  # the executing chunk is all the question reads
    source.last_step = min(at, len(grippers) - 1)
    upcoming = grippers[source.last_step + 1:source.last_step + 1 + persistence]
    closes_soon = not closed_now and persistence > 1 and any(g < 0.5 for g in upcoming)
    held_back = persistence > 1 and not closes_soon
    assert (source.deferred() != frozenset()) == held_back


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grippers=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12), persistence=st.integers(1, 4),
       ticks_on_chunk=st.integers(0, 7), held=st.booleans(), closed_now=st.booleans())
def test_a_held_back_lookup_whose_own_chunk_closes_soon_stops(policy, monkeypatch, grippers, persistence,
                                                              ticks_on_chunk, held, closed_now):
    """Searched over lookups: one that failed on a held-back signal stops after all when its chunk takes over
    now (the executing one has served ``requery_every`` ticks) and commands the open gripper closed within
    ``gate_persistence`` entries: a close that comes with the new chunk, which the holding back (judged on the
    executing chunk) could not see."""
    from types import SimpleNamespace

    import numpy as np

    from policy.database import Match
    from policy.policy import Retrieval

    monkeypatch.setattr(policy, "config", policy.config.with_overrides(gate_persistence=persistence))
    source = PolicySource(policy)
    source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0 if closed_now else 1.0]))
    source.current = SimpleNamespace(chunk=np.ones((10, 8)), matches=[Match(0, 0, 0, 1.0)])
    source._ticks_on_chunk = ticks_on_chunk
    chunk = np.zeros((len(grippers), 8))
    chunk[:, 6], chunk[:, 7] = 1.0, grippers
    source.latest = Retrieval([Match(1, 1, 0, 1.0)], 1.0, False, chunk, 0.0, 0.0,
                              held_back=("hand_view", "the hand view disagrees") if held else None)
    closes = any(g < 0.5 for g in grippers[:persistence])
    expected = held and not closed_now and ticks_on_chunk >= source.requery_every and closes
    assert source._held_back_before_a_close(0.0, 0.1) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_grasp_check_is_held_back_only_more_than_a_chunk_before_the_close(policy, monkeypatch, data):
    """Searched over the table's frames: a failing grasp check compared with a frame whose chunk commands the
    gripper closed (its demonstration within a chunk of the close: the hand descends beside the object, and its
    fingers can knock it over before a held-back doubt would stop them) stops the lookup though the source holds
    the grasp check back; compared with an earlier frame it is held back (and kept as what the gate would have
    stopped on)."""
    from policy.gate import PERSISTENT_SIGNALS

    db = policy.database
    near = [_closes(chunk) for chunk in db.chunks]
    assert any(near) and not all(near), "the table needs frames on both sides of a chunk before the close"
    row = data.draw(st.integers(0, len(near) - 1), label="compared row")
    monkeypatch.setattr(policy, "_grasp_row", lambda best, executing_row, check: row)
    monkeypatch.setattr(policy, "_grasp_signal", lambda hand, best, executing_row, check: (0.0, False))
    monkeypatch.setattr(policy, "grasp_check",
                        GraspCheck(np.zeros(0, np.int64), np.zeros((0, SIZE, SIZE), np.uint8), 0.5))
    monkeypatch.setattr(policy, "gamma", -1.0)
    monkeypatch.setattr(policy, "grip_check", None)
    monkeypatch.setattr(policy, "view_thresholds", {"hand_view": -1.0, "third_view": -1.0})
    view = np.full((32, 32, 3), 90, np.uint8)
    looked = policy.retrieve(view, view, deferred=frozenset(PERSISTENT_SIGNALS))
    if near[row]:
        assert looked.ood and looked.ood_signal == "grasp_alignment" and looked.held_back is None
    else:
        assert not looked.ood and looked.held_back is not None and looked.held_back[0] == "grasp_alignment"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grippers=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12), at=st.integers(0, 11),
       closed_now=st.booleans())
def test_the_executing_demonstration_is_held_while_its_chunk_closes_the_gripper(policy, monkeypatch, grippers,
                                                                                at, closed_now):
    """Searched over executing chunks: with the gripper open and a close left in the executing chunk, the
    runner asks the lookup to keep that chunk's demonstration (another's chunk would move the hand sideways
    beside the object it descends on); otherwise it may switch (within the hysteresis)."""
    from types import SimpleNamespace

    source = PolicySource(policy)
    source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0 if closed_now else 1.0]))
    chunk = np.zeros((len(grippers), 8))
    chunk[:, 6], chunk[:, 7] = 1.0, grippers
    source.current = SimpleNamespace(chunk=chunk)
    source.last_step = min(at, len(grippers) - 1)
    left = grippers[source.last_step + 1:source.last_step + 1 + policy.config.chunk_length]  # a chunk at most
    assert source._close_ahead() == (not closed_now and any(g < 0.5 for g in left))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(closed=st.lists(st.booleans(), min_size=1, max_size=12))
def test_only_a_close_after_the_gripper_was_open_in_the_run_ends_the_holding_back(policy, monkeypatch, closed):
    """A gripper closed from the run's start (a press with closed fingers, as the demonstrations started) holds
    nothing the run picked up: the view signals are still held back; after a close that followed an open command
    they are not, until the gripper opens again."""
    monkeypatch.setattr(policy, "config", policy.config.with_overrides(gate_persistence=3))
    source = PolicySource(policy)
    source._persistence.count({})  # past the run's first lookup (one that failed nothing)
    for c in closed:
        source.sent(Action.from_array([0.5, 0, 0.3, 0, 0, 0, 1, 0.0 if c else 1.0]))
    grasping = closed[-1] and False in closed  # closed now, and opened at some time before
    assert (source.deferred() == frozenset()) == grasping


def test_train_takes_the_persistence_and_refuses_nonsense(capsys):
    import main
    from cli.train import config_from_args

    args = main.build_parser().parse_args(["train", "ds", "--out", "p", "--gate-persistence", "1"])
    assert config_from_args(args).policy.policy_config().gate_persistence == 1
    args = main.build_parser().parse_args(["train", "ds", "--out", "p"])
    assert config_from_args(args).policy.policy_config().gate_persistence == 3  # the default
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["train", "ds", "--out", "p", "--gate-persistence", "0"])
    assert "--gate-persistence" in capsys.readouterr().err
