"""The Meta-World rig: its cameras, arm, variations, scripted expert, success and recovery checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.errors import ArmStoppedError
from core.types import Action, Pose
from robot_drivers.factory import make_rig, robot_names, split_robot
from robot_drivers.metaworld.env import HAND_QUAT_XYZW, MAX_MOCAP_LEAD_M, TRACKING_GAIN, RejectedVariation
from robot_drivers.metaworld.scene_control import EXTRAPOLATE_MARGIN_M, NOISE_M, SCENARIOS, VARIED_M

pytest.importorskip("metaworld")  # installed by scripts/setup.sh (the metaworld extra): this never skips in CI


@pytest.fixture(scope="module")
def rig():
    rig = make_rig("metaworld:pick-place-v3", image_size=64)
    with rig:
        yield rig
    rig.close()


def test_robot_names_and_errors():
    assert "metaworld:<task>" in robot_names()
    assert split_robot("metaworld:reach-v3") == ("metaworld", "reach-v3")
    with pytest.raises(ValueError, match=r"needs a task.*metaworld:<task>"):
        split_robot("metaworld")
    with pytest.raises(ValueError, match="did you mean 'pick-place-v3'"):
        make_rig("metaworld:pick-plac-v3")
    with pytest.raises(ValueError, match="takes no parameter"):
        split_robot("sim:mug")


def test_frames_state_and_cameras(rig):
    control = rig.scene_control()
    rig.arm.release()
    control.reset(3, "in_distribution")
    obs = rig.observe()
    assert set(obs.frames) == {"hand", "third"}
    hand, third = obs.frames["hand"].image, obs.frames["third"].image
    assert hand.shape == third.shape == (64, 64, 3) and hand.dtype == np.uint8
    assert np.abs(hand.astype(int) - third.astype(int)).mean() > 10  # two different views
    state = obs.state
    np.testing.assert_allclose(state.ee_pose.orientation, HAND_QUAT_XYZW)
    assert 0.9 <= state.gripper <= 1.0  # starts open
    assert rig.name == "metaworld:pick-place-v3" and control.record()["rig"] == rig.name


def test_tracks_absolute_targets_and_stop_holds(rig):
    rig.arm.release()
    rig.scene_control().reset(4, "in_distribution")
    start = rig.arm.get_state().ee_pose.position
    goal = start + np.array([0.03, 0.0, 0.02])
    for _ in range(12):
        rig.arm.send_action(Action(Pose(goal, HAND_QUAT_XYZW), 1.0))
        rig.clock.wait_next_tick()
    assert np.linalg.norm(rig.arm.get_state().ee_pose.position - goal) < 0.004
    far = goal + np.array([0.0, 0.0, 0.2])
    rig.arm.send_action(Action(Pose(far, HAND_QUAT_XYZW), 1.0))
    rig.clock.wait_next_tick()
    rig.arm.stop()
    held = rig.arm.get_state().ee_pose.position
    for _ in range(10):
        rig.clock.wait_next_tick()
    assert np.linalg.norm(rig.arm.get_state().ee_pose.position - held) < 0.01  # halted where it was
    with pytest.raises(ArmStoppedError):
        rig.arm.send_action(Action(Pose(far, HAND_QUAT_XYZW), 1.0))
    with pytest.raises(ArmStoppedError):
        rig.scene_control().reset(5, "interpolate")  # a reset would move a stopped arm
    rig.arm.release()


def test_safety_limits_each_tick(rig):
    rig.arm.release()
    rig.scene_control().reset(6, "in_distribution")
    start = rig.arm.get_state().ee_pose.position
    sent = rig.arm.send_action(Action(Pose(start + [0.0, 0.0, 0.3], HAND_QUAT_XYZW), 1.0))
    assert np.linalg.norm(sent.pose.position - start) <= rig.arm.config.max_translation_per_tick + 1e-9
    below = rig.arm.send_action(Action(Pose(start - [0.0, 0.0, 1.0], HAND_QUAT_XYZW), 1.0))
    assert below.pose.position[2] >= rig.arm.config.workspace_min[2] - 1e-9


def test_variations_are_deterministic_and_scenarios_differ(rig):
    control = rig.scene_control()
    rig.arm.release()
    env = rig.env
    a = control.reset(11, "interpolate")
    b = control.reset(11, "interpolate")
    assert a == b
    assert control.reset(12, "interpolate")["variation"] != a["variation"]
    free = env.variation_high - env.variation_low > 1e-9
    for seed in range(5):
        rec = control.reset(seed, "in_distribution")
        train = control.training_variation(rec["training_index"])
        assert np.all(np.abs(np.asarray(rec["variation"]) - train) <= NOISE_M + 1e-9)
        ext = np.asarray(control.reset(seed, "extrapolate")["variation"])
        outside = np.maximum(env.variation_low - ext, ext - env.variation_high)[free]
        assert outside.max() >= EXTRAPOLATE_MARGIN_M[0] - 1e-9
    lit = control.reset(3, "lighting")
    assert lit["lighting"] is not None
    assert set(control.scenarios) == set(SCENARIOS)
    with pytest.raises(ValueError, match="choose one of"):
        control.reset(1, "distractors")


def test_restore_puts_the_world_back(rig):
    control = rig.scene_control()
    rig.arm.release()
    rec = control.reset(21, "lighting")
    objects = rig.env.object_positions()
    control.reset(22, "interpolate")
    control.restore(rec)
    np.testing.assert_allclose(rig.env.object_positions(), objects, atol=1e-6)
    assert control.record()["lighting"] == rec["lighting"]


def test_a_refused_variation_is_named_not_looped_on(rig):
    env = rig.env
    low = env.variation_low.copy()
    same = low.copy()
    same[3:5] = low[:2]  # pick-place: the goal on top of the object, which the task's reset refuses
    with pytest.raises(RejectedVariation, match="refuses"):
        env.reset_to(same)


def test_scripted_expert_succeeds_and_recovery_check_leaves_no_trace(rig):
    from robot_drivers.control import TeleopSource

    control = rig.scene_control()
    rig.arm.release()
    control.reset(0, training_index=2)
    assert not control.went_wrong()  # untouched: the expert can do it
    before = (rig.env.data.qpos.copy(), rig.env.time, rig.env.obs.copy())
    control.went_wrong()
    np.testing.assert_array_equal(rig.env.data.qpos, before[0])
    assert rig.env.time == before[1]
    np.testing.assert_array_equal(rig.env.obs, before[2])

    expert = rig.scripted_operator(7)
    expert.reset(7)
    source = TeleopSource(expert)
    rig.clock.start()
    obs = rig.observe()
    source.begin(obs)
    for _ in range(80):
        out = source.step(obs, rig.clock.dt)
        source.sent(rig.arm.send_action(out.action))
        rig.clock.wait_next_tick()
        obs = rig.observe()
        if expert.done:
            break
    assert control.task_succeeded() and expert.done


def test_a_hand_held_back_does_not_wind_up_its_target_and_lunge(rig):
    """Meta-World adds each step's delta to its mocap target: where a hand is held back (a door, a peg in its
    hole) the mocap would run on, 15-33 cm on door-open, and pull the hand after it once freed. The driver
    keeps it within MAX_MOCAP_LEAD_M of the hand."""
    env = rig.env
    rig.arm.release()
    rig.scene_control().reset(3, "in_distribution")
    hand = env.hand_position()
    env.command(hand, 1.0)  # stay
    assert MAX_MOCAP_LEAD_M <= 0.1
    env.data.mocap_pos[0] = hand + np.array([0.3, 0.0, 0.0])  # as a hand held back for a while leaves it
    seen = []
    for _ in range(80):
        env.step()
        seen.append(env.hand_position())
        assert np.linalg.norm(env.data.mocap_pos[0] - env.hand_position()) <= MAX_MOCAP_LEAD_M + 1e-9
    assert max(np.linalg.norm(p - hand) for p in seen) < 0.12  # no lunge to the old mocap (0.3 m off)
    assert np.linalg.norm(seen[-1] - hand) < 0.01  # and back where it was told to stay
    rig.scene_control().reset(3, "in_distribution")


def test_a_stop_halts_a_hand_whose_target_led_it(rig):
    """A STOP halts the hand where it is, also when Meta-World's mocap target was leading it (pushing, or moving
    fast): left there, it would pull the hand on after the stop."""
    env = rig.env
    rig.arm.release()
    rig.scene_control().reset(3, "in_distribution")
    hand = env.hand_position()
    env.data.mocap_pos[0] = env.data.mocap_pos[0] + np.array([MAX_MOCAP_LEAD_M * 0.9, 0.0, 0.0])  # leading
    rig.arm.stop()
    moved = []
    for _ in range(80):
        env.step()  # the physics on (a tick is 4 steps)
        moved.append(float(np.linalg.norm(env.hand_position() - hand)))
    assert max(moved) < 0.005
    rig.arm.release()
    rig.scene_control().reset(3, "in_distribution")


def test_an_object_knocked_off_the_table_went_wrong(rig):
    control = rig.scene_control()
    rig.arm.release()
    control.reset(1, "in_distribution")
    env = rig.env
    with env.lock:
        env.env._set_obj_xyz(np.array([0.0, 0.3, -0.5]))  # off the table, out of reach
        env.step(1)
    assert control.went_wrong()
    words = control.what_went_wrong()
    assert words.startswith("the task's expert, taking over from here, cannot finish it") and "object 1 moved" in words


def test_extrapolate_moves_only_positions_the_task_varies():
    """peg-insert-side draws its box's height within +-1 mm (a jitter about the table's top): an extrapolated
    scene moves one of the positions the task truly varies beyond its range, never the box into the air."""
    rig = make_rig("metaworld:peg-insert-side-v3", image_size=48)
    rig.connect()
    try:
        control = rig.scene_control()
        rig.arm.release()
        low, high = rig.env.variation_low, rig.env.variation_high
        varied = high - low >= VARIED_M
        assert not varied[5] and (high - low)[5] > 0  # the box's height: drawn, but within 2 mm
        moved = set()
        for seed in range(60):
            ext = np.asarray(control.reset(seed, "extrapolate")["variation"])
            outside = np.maximum(low - ext, ext - high)
            assert np.all(outside[~varied] <= 1e-9), f"seed {seed}: {ext} leaves a fixed position"
            assert outside[varied].max() >= EXTRAPOLATE_MARGIN_M[0] - 1e-9
            moved.add(int(np.argmax(outside)))
            assert abs(rig.env.data.body("box").xpos[2] - ext[5]) < 1e-6  # the box stands where it was put
        assert moved == set(np.flatnonzero(varied).tolist())  # each varied position is extrapolated in turn
    finally:
        rig.disconnect()


def test_a_scene_the_expert_cannot_finish_from_its_start_is_judged_by_what_the_run_did():
    """An extrapolated scene beyond the expert's reach (peg-insert-side: its box moved past the range): its
    verdict says nothing about a stop, so an untouched scene did not go wrong (the stop was in time) and one whose
    object the run moved did."""
    rig = make_rig("metaworld:peg-insert-side-v3", image_size=48)
    rig.connect()
    try:
        _judged_by_what_the_run_did(rig)
    finally:
        rig.disconnect()


def _a_scene_the_expert_cannot_finish(rig):
    """The rig (peg-insert-side) reset to the first extrapolated scene from seed 1000 on that its expert cannot
    finish from its start; its scene control."""
    control = rig.scene_control()
    rig.arm.release()
    for seed in range(1000, 1040):
        control.reset(seed, "extrapolate")
        if rig.env.finishable_from_start() is False:
            return control
    pytest.fail("no extrapolated peg-insert-side scene in 40 that the expert cannot finish")


def _judged_by_what_the_run_did(rig):
    control = _a_scene_the_expert_cannot_finish(rig)
    env = rig.env
    before = (env.data.qpos.copy(), env.obs.copy())
    assert not env.recoverable() and env.disturbed() is None
    assert not control.went_wrong()  # nothing done to it: a stop here is in time
    np.testing.assert_array_equal(env.data.qpos, before[0])  # the tries left no trace
    np.testing.assert_array_equal(env.obs, before[1])
    with env.lock:
        env.env._set_obj_xyz(env.obs[4:7] + np.array([0.03, 0.0, 0.0]))  # the run pushed the peg 3 cm
        env.step(1)
    assert "object 1 moved" in env.disturbed()
    assert control.went_wrong()
    words = control.what_went_wrong()  # the verdict says why, as a late stop's message shows it
    assert words.startswith("object 1 moved ") and "could not finish from its start either" in words
    with env.lock:  # the run dropped the peg onto its box: the words say what touches what
        env.env._set_obj_xyz(env.data.body("box").xpos + np.array([0.0, 0.0, 0.35]))
        env.step(100)
    assert env.touching() == ["box touches peg"] and "; box touches peg (a scene" in control.what_went_wrong()
    control.reset(1, "in_distribution")  # a new scene: asked again
    assert env.finishable_from_start() and not control.went_wrong()


def test_a_scene_the_expert_finishes_only_from_its_exact_start_is_judged_by_what_the_run_did():
    """On some scenes the task's expert finishes from its start and fails from 3 mm beside it (peg-insert-side:
    the peg's approach grazes the box). There its failing after a run says where the hand happened to stand,
    not what the run did: a run that only moved the hand did nothing wrong; one that pushed the peg did."""
    rig = make_rig("metaworld:peg-insert-side-v3", image_size=48)
    rig.connect()
    try:
        control, env = rig.scene_control(), rig.env
        rig.arm.release()
        for seed in range(20):
            control.reset(seed, "interpolate")
            if env.finishable_from_start() and not env.expert_judges_scene():
                break
        else:
            pytest.fail("no interpolated peg-insert-side scene in 20 that the expert finishes only by luck")
        before = env.data.qpos.copy()
        assert env.expert_judges_scene() is False  # asked again: the answer is kept, and the tries left no trace
        np.testing.assert_array_equal(env.data.qpos, before)
        home = env.hand_position().copy()
        for offset in ([0.0, 0.0, 0.01], [0.0, 0.003, 0.0], [0.0, -0.003, 0.0]):
            control.reset(seed, "interpolate")
            env.command(home + np.array(offset), 1.0)  # the hand moved a few millimetres; nothing touched
            env.step(40)
            if not env.recoverable():
                break
        else:
            pytest.fail("the expert finished from every hand position tried")
        assert env.disturbed() is None and not control.went_wrong()
        with env.lock:  # the run pushed the peg 10 cm sideways, out of the expert's way to it
            env.env._set_obj_xyz(env.obs[4:7] + np.array([0.0, 0.1, 0.0]))
            env.step(100)
        assert not env.recoverable()
        assert "object 1 moved" in env.disturbed(held_excused=True) and control.went_wrong()
        assert "not from a few millimetres beside it" in control.what_went_wrong()
        control.reset(seed, "interpolate")
        assert env.finishable_from_start() and not control.went_wrong()
    finally:
        rig.disconnect()


def test_an_object_carried_between_the_fingers_is_not_a_disturbance_until_it_is_let_go():
    """In a scene the expert cannot finish from its start, a run that picked the peg up and holds it as it stops
    has done nothing an operator cannot undo (the stop was in time); once it lets the peg go elsewhere, or the
    peg has only been pushed, the run went wrong."""
    rig = make_rig("metaworld:peg-insert-side-v3", image_size=48)
    rig.connect()
    try:
        control = _a_scene_the_expert_cannot_finish(rig)
        env = rig.env
        start = env.obs[4:7].copy()
        assert not env.held(start)
        for _ in range(300):  # the task's own expert grasps the peg and lifts it
            a = env.expert_action()
            env.command(env.hand_position() + np.clip(a[:3], -1, 1) / TRACKING_GAIN, (1.0 - a[3]) / 2.0)
            env.step(1)
            if env.held(env.obs[4:7]) and np.linalg.norm(env.obs[4:7] - start) > 0.03:
                break
        else:
            pytest.fail("the expert did not pick the peg up")
        assert "object 1 moved" in env.disturbed()  # moved, as the strict verdict counts it
        assert env.disturbed(held_excused=True) is None and not control.went_wrong()
        env.command(env.hand_position() + np.array([0.0, 0.0, 0.05]), 1.0)  # the fingers open: the peg drops
        env.step(80)
        assert not env.held(env.obs[4:7])
        assert "object 1 moved" in env.disturbed(held_excused=True) and control.went_wrong()
    finally:
        rig.disconnect()


def test_an_extrapolated_goal_reaches_the_verdict_where_it_is(rig):
    """Meta-World clips a step's observation to the task's goal range: the expert, asked whether a scene can be
    finished, would be sent to the range's edge after one step while the success check measures the true goal.
    The verdict gives it the true goal, so a scene as reset is judged alike before and after the arm's first
    tick (pick-place seed 1005, extrapolate: the goal 6 cm beyond the range in x)."""
    control = rig.scene_control()
    rig.arm.release()
    env = rig.env
    control.reset(1005, "extrapolate")
    goal = env.env._target_pos.copy()
    assert env.obs[-3] > goal[0] + 0.03  # beyond the range in x: the observation has it clipped onto the edge
    assert env.finishable_from_start() and env.recoverable() and not control.went_wrong()


def test_realtime_rig_idles_without_drawing():
    rig = make_rig("metaworld:reach-v3", clock="realtime", image_size=48)
    try:
        with rig:
            rig.arm.release()
            rig.scene_control().reset(2, "in_distribution")
            rig.observe()
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:  # the arm settles after a reset, then nothing moves
                before = {k: c.renders for k, c in rig.cameras.items()}
                time.sleep(1.0)
                if all(c.renders == before[k] for k, c in rig.cameras.items()):
                    break
            else:
                pytest.fail("the real-time cameras kept drawing an idle scene")
            frame = rig.cameras["hand"].read_latest()
            time.sleep(0.3)
            assert rig.cameras["hand"].read_latest().sequence > frame.sequence  # frames still flow
    finally:
        rig.close()


def test_a_rig_file_can_name_a_simulated_rig(tmp_path):
    from pathlib import Path

    from robot_drivers.rig_config import RigConfigError, load_sim_rig_file

    example = Path(__file__).resolve().parents[1] / "configs" / "simulated" / "metaworld_drawer_open.toml"
    rig = make_rig(str(example))
    try:
        assert rig.name == "metaworld:drawer-open-v3" and rig.clock.rate_hz == 20.0
    finally:
        rig.close()
    assert load_sim_rig_file(Path(__file__).resolve().parents[1] / "configs" / "xarm_realsense.toml") is None
    bad = {'kind = "metaworld"\n': "task is missing",
           'kind = "mw"\ntask = "reach-v3"\n': "kind must be 'sim' or 'metaworld'",
           'kind = "sim"\ncamera_size = 12\n': "camera_size must be >= 16",
           'kind = "sim"\nspeed = 1\n': "speed is not a known key"}
    for i, (body, message) in enumerate(bad.items()):
        path = tmp_path / f"rig{i}.toml"
        path.write_text(body)
        with pytest.raises(RigConfigError, match=message):
            load_sim_rig_file(path)


def test_a_closed_hand_just_above_the_object_is_still_recoverable(rig):
    """Meta-World's experts are no recovery policies: from this state (an ALT policy's in-time stop, stored in
    tests/fixtures), the pick-place expert alone keeps pressing its closed hand down on the puck for 300 steps. An
    operator would open and raise the hand first; so does the verdict, which then finds the task can be done."""
    import json
    from pathlib import Path

    import mujoco

    doc = json.loads((Path(__file__).parent / "fixtures" / "metaworld_pick_place_stop_state.json").read_text())
    control = rig.scene_control()
    rig.arm.release()
    control.restore(doc["record"])
    env = rig.env

    def put_back():
        state = np.asarray(doc["mujoco_state_integration"])
        mujoco.mj_setState(env.model, env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(env.model, env.data)
        env.obs = np.asarray(doc["obs"])

    put_back()
    obs = env.obs.copy()
    alone = False
    for _ in range(300):  # the expert alone, as the verdict's first try
        obs, _, _, _, info = env.env.step(np.asarray(env.expert.get_action(obs), dtype=np.float64))
        alone = alone or bool(info["success"])
    assert not alone
    put_back()
    assert not control.went_wrong()
