"""A STOP ends a gripper motion under way where the fingers are, on the simulated rigs' own physics: nothing
told before the stop (here: a close) goes on after it, and a grip already closed on something keeps its grip.
Hypothesis searches the moment of the stop, from the close's first tick until the fingers have settled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.types import Action
from robot_drivers.control import ControlLoop, TeleopSource
from robot_drivers.factory import make_rig

#: The measured opening may drift this much in the ticks after a stop (contact, the damped fingers settling).
SETTLED_DRIFT = 0.05
TICKS_AFTER = 10


@pytest.fixture(scope="module")
def peg_rig():
    pytest.importorskip("metaworld")  # installed by scripts/setup.sh (the metaworld extra): never skips in CI
    rig = make_rig("metaworld:peg-insert-side-v3", clock="lockstep", image_size=32)
    rig.cameras.clear()  # the fingers, not the frames, are under test
    with rig:
        yield rig
    rig.close()


def _stop_during_the_expert_s_close(rig, seed: int, ticks_into_close: int):
    """The task's expert from the scene of ``seed`` until ``ticks_into_close`` ticks after it first commands a
    close, then a STOP; returns (the close command, the measured opening at the stop, the arm's gripper command
    after it, the opening ``TICKS_AFTER`` ticks later)."""
    rig.arm.release()
    rig.scene_control().reset(seed, "in_distribution")
    expert = rig.scripted_operator(0)
    expert.reset(seed)
    closing = []

    def on_tick(record):
        command = rig.arm.last_gripper_command
        if closing or (command is not None and command < 0.5):
            closing.append(command)
        if len(closing) > ticks_into_close:
            rig.arm.stop()

    ControlLoop(rig).run(TeleopSource(expert), max_ticks=300, on_tick=on_tick)
    assert closing, "the expert never closed the gripper"
    at_stop = rig.arm.get_state().gripper
    held_command = rig.arm.last_gripper_command
    rig.clock.start()
    for _ in range(TICKS_AFTER):
        rig.clock.wait_next_tick()
    return closing[0], at_stop, held_command, rig.arm.get_state().gripper


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 40), ticks_into_close=st.integers(0, 12))
@example(seed=3, ticks_into_close=5)  # the pads reach the peg on this tick: the fingers still move, and grip
def test_metaworld_a_stop_ends_a_close_where_the_fingers_are(peg_rig, seed, ticks_into_close):
    close, at_stop, held_command, after = _stop_during_the_expert_s_close(peg_rig, seed, ticks_into_close)
    assert abs(after - at_stop) <= SETTLED_DRIFT, (
        f"the opening went from {at_stop:.2f} at the stop to {after:.2f} {TICKS_AFTER} ticks later")
    if held_command == close:  # the fingers were at rest: a grip keeps squeezing
        assert at_stop < 0.6, f"a close kept at the stop although the fingers were still open ({at_stop:.2f})"
    if ticks_into_close >= 5:  # the pads are on the peg: it stays between them
        assert held_command == close and peg_rig.env.held(peg_rig.env.obs[4:7])


def test_metaworld_a_grip_at_rest_is_kept_through_a_stop(peg_rig):
    close, at_stop, held_command, after = _stop_during_the_expert_s_close(peg_rig, 3, 12)
    assert held_command == close  # the command, and so the squeeze, unchanged
    assert after == pytest.approx(at_stop, abs=0.01)


def test_metaworld_a_stop_early_in_a_close_leaves_the_fingers_open(peg_rig):
    """Without the freeze the close would run on to the peg (opening about 0.3) after the stop."""
    close, at_stop, held_command, after = _stop_during_the_expert_s_close(peg_rig, 3, 1)
    assert held_command != close and after > 0.8


@pytest.fixture(scope="module")
def mug_rig():
    rig = make_rig("sim", clock="lockstep", image_size=32)
    rig.cameras.clear()
    with rig:
        yield rig
    rig.close()


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(physics_steps=st.integers(0, 60))
def test_sim_a_stop_ends_a_close_where_the_fingers_are(mug_rig, physics_steps):
    """The simulated Panda's close takes about 40 physics steps (a tenth of a second, within one control tick at
    10 Hz): the stop is placed at each physics step of it, below the control loop."""
    rig, world = mug_rig, mug_rig.world
    rig.arm.release()
    rig.scene_control().reset(0, "in_distribution")
    rig.arm.send_action(Action(rig.arm.get_state().ee_pose, 0.0))
    world.step(physics_steps)
    at_stop = rig.arm.get_state().gripper
    rig.arm.stop()
    world.step(200)
    after = rig.arm.get_state().gripper
    assert abs(after - at_stop) <= 0.03, f"the opening went from {at_stop:.3f} at the stop to {after:.3f}"
    if at_stop > 0.1:  # stopped before the fingers had closed: the command is where they stopped
        assert rig.arm.last_gripper_command == pytest.approx(at_stop, abs=0.03)


def test_sim_a_grip_on_the_mug_is_kept_through_a_stop(mug_rig):
    """The scripted operator's close on the mug handle, stopped on the ticks after it: the grip keeps its force.
    (A stop on the close's own tick comes before the physics has run it: the fingers stay open.)"""
    world = mug_rig.world
    close, at_stop, held_command, after = _stop_during_the_expert_s_close(mug_rig, 5, 0)
    assert held_command != close and after > 0.95
    for ticks in (1, 2, 4):
        close, at_stop, held_command, after = _stop_during_the_expert_s_close(mug_rig, 5, ticks)
        assert held_command == close and all(world.fingers_touching(world.mug))
        assert after == pytest.approx(at_stop, abs=0.01)


def test_metaworld_a_puck_carried_into_a_stop_stays_in_the_fingers():
    """A stop while the hand carries the puck at speed: the arm is braked, so the hand does not swing on and shake
    the puck out of the grip (without the brake it fell on these ticks)."""
    pytest.importorskip("metaworld")
    rig = make_rig("metaworld:pick-place-v3", clock="lockstep", image_size=32)
    rig.cameras.clear()
    with rig:
        for ticks in (13, 14, 15):
            close, at_stop, held_command, after = _stop_during_the_expert_s_close(rig, 0, ticks)
            assert held_command == close and rig.env.held(rig.env.obs[4:7]), f"dropped after a stop {ticks} ticks in"
    rig.close()
