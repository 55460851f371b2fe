"""The simulated rig: determinism, cameras, scenarios, task success."""

import numpy as np
import pytest

from core.types import Action, Pose
from robot_drivers.control import ControlLoop, TeleopSource
from robot_drivers.sim.expert import ScriptedExpert
from robot_drivers.sim.rig import SimRig, SimRigConfig
from robot_drivers.sim.task import (SCENARIOS, TaskConfig, make_scene, nearest_training_index, training_placements,
                                    training_scene)
from robot_drivers.sim.camera import SimCameraConfig


def small_rig(clock="lockstep", size=48):
    return SimRig(SimRigConfig(clock=clock).with_image_size(size, size))


def run_expert(rig, seed, ticks, scenario="in_distribution"):
    rig.reset(seed, scenario)
    expert = ScriptedExpert(rig.world)
    expert.reset(seed)
    records = []
    ControlLoop(rig).run(TeleopSource(expert), max_ticks=ticks, on_tick=records.append)
    return records


def test_same_seed_gives_bit_identical_images_and_states():
    runs = []
    for _ in range(2):
        rig = small_rig()
        with rig:
            runs.append(run_expert(rig, seed=3, ticks=25))
        rig.close()
    a, b = runs
    assert len(a) == len(b) == 25
    for ra, rb in zip(a, b):
        for name in ("hand", "third"):
            assert np.array_equal(ra.observation.frames[name].image, rb.observation.frames[name].image)
        assert np.array_equal(ra.observation.state.joint_positions, rb.observation.state.joint_positions)
        assert np.array_equal(ra.sent.as_array(), rb.sent.as_array())
    # The arm really moved and the images really changed over the episode.
    assert not np.array_equal(a[0].observation.frames["hand"].image, a[-1].observation.frames["hand"].image)


def test_different_seeds_differ():
    rig = small_rig()
    with rig:
        a = run_expert(rig, seed=1, ticks=2)[0].observation.frames["third"].image
        b = run_expert(rig, seed=2, ticks=2)[0].observation.frames["third"].image
    rig.close()
    assert not np.array_equal(a, b)


def test_lockstep_frames_have_monotonic_timestamps_and_sequences():
    rig = small_rig()
    with rig:
        records = run_expert(rig, seed=0, ticks=10)
    rig.close()
    for name in ("hand", "third"):
        frames = [r.observation.frames[name] for r in records]
        assert [f.sequence for f in frames] == list(range(frames[0].sequence, frames[0].sequence + 10))
        assert all(b.host_time > a.host_time for a, b in zip(frames, frames[1:]))
        assert all(b.device_time > a.device_time for a, b in zip(frames, frames[1:]))
        assert frames[0].image.shape == (48, 48, 3)
    dts = np.diff([r.observation.frames["hand"].host_time for r in records])
    np.testing.assert_allclose(dts, 0.1, atol=1e-9)


def test_realtime_clock_runs_physics_and_cameras_in_background():
    config = SimRigConfig(clock="realtime").with_image_size(32, 32)
    for cam in config.cameras:
        cam.fps = 15.0
    rig = SimRig(config)
    with rig:
        rig.reset(0)
        t_sim = rig.world.time
        first = rig.cameras["third"].wait_for_frame(-1, timeout=2.0)
        last = first
        for _ in range(5):
            last = rig.cameras["third"].wait_for_frame(last.sequence, timeout=2.0)
        assert last.sequence > first.sequence
        assert last.host_time > first.host_time and last.device_time > first.device_time
        assert rig.world.time > t_sim  # the physics thread advanced the world
        rig.observe()
    rig.close()


def test_render_process_draws_exactly_what_the_in_process_renderer_draws():
    from robot_drivers.sim.camera import hand_camera, render_camera
    from robot_drivers.sim.render_process import RenderProcess
    from robot_drivers.sim.world import SimWorld

    world = SimWorld()
    scene = make_scene(TaskConfig(), "distractors", 3)  # extra bodies and changed lights travel too
    world.reset((scene.mug.x, scene.mug.y, scene.mug.yaw), scene.distractors, scene.lighting)
    world.command_joints([0.1, -0.2, 0.1, -2.0, 0.1, 2.1, 0.7], 0.02)
    world.step(40)
    camera = SimCameraConfig(**{**hand_camera().__dict__, "width": 48, "height": 40})
    renderer = RenderProcess(world.config, camera)
    try:
        np.testing.assert_array_equal(renderer.render(world.snapshot()), render_camera(world, camera))
        world.reset((0.45, 0.05, 0.3))  # the distractors are gone in the copy too
        np.testing.assert_array_equal(renderer.render(world.snapshot()), render_camera(world, camera))
    finally:
        renderer.close()
        world.close()


def test_realtime_reset_hands_out_frames_of_the_new_scene_only():
    rig = SimRig(SimRigConfig(clock="realtime").with_image_size(32, 32))
    with rig:
        for seed in range(3):
            before = rig.world.time
            rig.reset(seed)  # teleports the arm and mug, then settles for 0.25 s of simulated time
            observation = rig.observe()
            assert all(f.device_time >= before + 0.25 for f in observation.frames.values())
            # nothing of the old scene is kept, not even as the nearest frame to a time long past (renders that
            # bunch up on a loaded machine can put an old frame nearer observe()'s alignment time than a new one)
            for camera in rig.cameras.values():
                assert camera.read_nearest(0.0, max_age=None).device_time >= before + 0.25
    rig.close()


def _frames(camera, n, after=None):
    """The next ``n`` frames of ``camera`` (after frame ``after``, default its newest)."""
    last = after or camera.read_latest(max_age=None)
    frames = []
    for _ in range(n):
        last = camera.wait_for_frame(last.sequence, timeout=10.0)
        frames.append(last)
    return frames


def _until_nothing_is_drawn(camera, frames=6, tries=40):
    """Wait (frame by frame, no clock) until ``frames`` frames in a row come without a render; False if the
    camera never stops drawing (an unchanged scene drawn again and again)."""
    for _ in range(tries):
        renders = camera.renders
        _frames(camera, frames)
        if camera.renders == renders:
            return True
    return False


def test_realtime_cameras_draw_only_when_the_picture_changes():
    rig = SimRig(SimRigConfig(clock="realtime").with_image_size(32, 32))
    hand, third = rig.cameras["hand"], rig.cameras["third"]
    with rig:
        rig.reset(0)
        rig.arm.stop()  # halted: the arm holds its joints
        assert _until_nothing_is_drawn(third) and _until_nothing_is_drawn(hand)
        # At rest: frames keep coming, fresh and in order, showing the last render again.
        renders = {name: cam.renders for name, cam in rig.cameras.items()}
        frames = _frames(third, 10)
        assert {name: cam.renders for name, cam in rig.cameras.items()} == renders
        assert all(b.host_time > a.host_time and b.device_time > a.device_time for a, b in zip(frames, frames[1:]))
        assert all(np.array_equal(f.image, frames[0].image) for f in frames)
        rig.observe()  # not stale
        still = frames[-1].image

        # Covered: the cover is delivered and nothing is drawn; uncovered: the scene again.
        cover = np.full((8, 8, 3), 200, np.uint8)
        third.cover(cover)
        covered = _frames(third, 4)[-1]
        assert (covered.image == 200).all() and third.renders == renders["third"]
        third.cover(None)
        np.testing.assert_array_equal(_frames(third, 2)[-1].image, still)

        # The arm moves: both cameras draw, and the picture changes.
        rig.arm.release()
        state = rig.arm.get_state()
        rig.arm.inner.send_action(Action(Pose(state.ee_pose.position + [0.0, 0.08, -0.05], state.ee_pose.orientation),
                                         1.0))
        moved = None
        for frame in _frames(third, 60):
            if not np.array_equal(frame.image, still):
                moved = frame
                break
        assert moved is not None and third.renders > renders["third"] and hand.renders > renders["hand"]

        # A scene reset draws the new scene, even where the world looks as before (the same scene again).
        rig.reset(0)
        rig.arm.stop()
        assert _until_nothing_is_drawn(third)
        renders = third.renders
        rig.arm.release()
        rig.reset(0)
        assert third.renders > renders
    rig.close()


def test_camera_config_is_validated():
    with pytest.raises(ValueError, match="mount"):
        SimCameraConfig(name="x", mount="ceiling")
    with pytest.raises(ValueError, match="out of range"):
        SimCameraConfig(name="x", mount="hand", width=4)


def test_training_placements_are_a_fixed_list_inside_the_region():
    config = TaskConfig()
    a, b = training_placements(config), training_placements(config)
    assert a == b and len(a) == config.n_training_placements == 30
    pts = np.array([p.as_array() for p in a])
    assert np.all(pts[:, :2] >= config.region_min) and np.all(pts[:, :2] <= config.region_max)
    assert training_placements(TaskConfig(placement_seed=1)) != a


def test_in_distribution_is_near_a_training_placement():
    config = TaskConfig()
    train = training_placements(config)
    for seed in range(30):
        scene = make_scene(config, "in_distribution", seed)
        base = train[scene.training_index]
        assert np.hypot(scene.mug.x - base.x, scene.mug.y - base.y) <= config.noise_xy + 1e-9
        assert abs(scene.mug.yaw - base.yaw) <= config.noise_yaw + 1e-9


def test_interpolated_placements_lie_between_training_placements():
    config = TaskConfig()
    pts = np.array([p.as_array() for p in training_placements(config)])
    for seed in range(40):
        m = make_scene(config, "interpolate", seed).mug.as_array()
        # on the segment between two training placements, away from both ends
        best = min(_segment_position(pts[i], pts[j], m) for i in range(len(pts)) for j in range(len(pts)) if i != j)
        off_segment, t = best
        assert off_segment < 1e-9 and 0.3 < t < 0.7
        assert np.min(np.linalg.norm(pts[:, :2] - m[:2], axis=1)) > config.interpolate_min_gap == 0.02
        assert np.all(m[:2] > config.region_min) and np.all(m[:2] < config.region_max)


def _segment_position(a, b, p):
    t = float(np.dot(p - a, b - a) / np.dot(b - a, b - a))
    return float(np.linalg.norm(a + t * (b - a) - p)), t


def test_extrapolated_placements_lie_outside_the_training_region():
    config = TaskConfig()
    lo, hi = np.array(config.region_min), np.array(config.region_max)
    sides = set()
    for seed in range(40):
        m = make_scene(config, "extrapolate", seed).mug.as_array()[:2]
        outside = np.maximum(lo - m, m - hi).max()
        assert outside >= config.extrapolate_margin[0] - 1e-9
        sides.add(tuple(np.sign(np.round(np.maximum(lo - m, 0) - np.maximum(m - hi, 0), 6))))
    assert len(sides) == 4  # back, front, left and right all occur


def test_distractor_and_lighting_scenarios_change_the_scene():
    config = TaskConfig()
    for seed in range(10):
        d = make_scene(config, "distractors", seed)
        assert 1 <= len(d.distractors) <= config.max_distractors
        for _, _, (x, y, _) in d.distractors:
            assert np.hypot(x - d.mug.x, y - d.mug.y) >= 0.14
        light = make_scene(config, "lighting", seed).lighting
        assert light != make_scene(config, "in_distribution", seed).lighting
    rig = small_rig(size=64)
    with rig:
        rig.reset(4, "in_distribution")
        rig.clock.start()
        plain = rig.observe().frames["third"].image
        rig.reset(4, "distractors")
        rig.clock.start()
        cluttered = rig.observe().frames["third"].image
        rig.reset(4, "lighting")
        rig.clock.start()
        lit = rig.observe().frames["third"].image
    rig.close()
    assert not np.array_equal(plain, cluttered) and not np.array_equal(plain, lit)


def test_success_needs_the_mug_lifted_and_held():
    rig = SimRig(SimRigConfig(cameras=[]))
    with rig:
        rig.reset(0, scene=training_scene(rig.task, 0))
        assert not rig.success()
        run_expert(rig, seed=0, ticks=300)
        assert rig.success()
        # Opening the gripper drops the mug: no longer a success.
        state = rig.arm.get_state()
        from core.types import Action
        for _ in range(15):
            rig.arm.send_action(Action(state.ee_pose, 1.0))
            rig.clock.wait_next_tick()
        assert not rig.success()
    rig.close()


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        make_scene(TaskConfig(), "moon", 0)


def test_nearest_training_index_of_a_training_placement_is_itself():
    config = TaskConfig()
    for i, p in enumerate(training_placements(config)):
        assert nearest_training_index(config, p) == i


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["in_distribution", "interpolate", "extrapolate", "distractors"])
def test_scripted_expert_succeeds_on_at_least_95_percent(scenario):
    rig = SimRig(SimRigConfig(cameras=[]))
    successes = 0
    seeds = range(100, 140)
    with rig:
        for seed in seeds:
            run_expert(rig, seed, ticks=300, scenario=scenario)
            successes += rig.success()
    rig.close()
    assert successes >= 0.95 * len(seeds), f"{successes}/{len(seeds)}"
