"""The aligned method: the third-person object locator, the shifted replay, and the aligned gate."""

from dataclasses import replace

import numpy as np
import pytest

from policy.aligned.alignment import AlignmentError, TargetLocator, bottleneck_frame, fit_locator, grasp_frame
from policy.config import PolicyConfig
from policy.artifact import PolicyArtifactError
from policy.policy import ALTPolicy, make_policy
from policy.runner import run_autonomous
from recorder.dataset import Dataset
from recorder.session import RecorderConfig, RecordingSession, spec_for_rig
from robot_drivers.factory import make_rig, make_teleop
from robot_drivers.sim.task import Placement, Scene, TaskConfig, training_placements, training_scene

BACKGROUND = np.array([200, 180, 150], np.float32)
OBJECT = np.array([200, 40, 40], np.float32)


def _picture(pixels, size=96, colour=OBJECT, extra=(), gain=(1.0, 1.0, 1.0), seed=0):
    """A table (with a little texture) and a disc of ``colour`` at each pixel position."""
    rng = np.random.default_rng(seed)
    img = np.tile(BACKGROUND, (size, size, 1)) + rng.normal(0, 2, (size, size, 3))
    ys, xs = np.indices((size, size))
    for (u, v), c in [(p, colour) for p in pixels] + list(extra):
        img[(xs - u) ** 2 + (ys - v) ** 2 <= 16] = c
    return np.clip(img * np.asarray(gain), 0, 255).astype(np.uint8)


def _table_xy(u, v):
    """The 'true' table position of pixel (u, v): a plane seen in perspective."""
    w = 1 + 0.002 * v
    return np.array([0.3 + 0.004 * v, -0.2 + 0.004 * u]) / w


def _actions(xy, frames=30, close=20):
    """Pose + gripper actions approaching ``xy`` from the side, closing at frame ``close``."""
    a = np.zeros((frames, 8))
    a[:, 6] = 1.0
    start = np.array([0.4, 0.0])
    for f in range(frames):
        a[f, :2] = start + (xy - start) * min(1.0, f / 12)
        a[f, 2] = 0.3 if f < 12 else 0.1
    a[:, 7] = 1.0
    a[close:, 7] = 0.0
    return a


@pytest.fixture(scope="module")
def demo_pixels():
    rng = np.random.default_rng(3)
    return {e: rng.uniform(20, 76, 2) for e in range(12)}


@pytest.fixture(scope="module")
def locator(demo_pixels):
    firsts = {e: _picture([p], seed=e) for e, p in demo_pixels.items()}
    actions = {e: _actions(_table_xy(*p)) for e, p in demo_pixels.items()}
    return fit_locator(firsts, actions, radius=0.01, margin=0.05)


def test_grasp_and_bottleneck_frames_come_from_the_actions():
    a = _actions(np.array([0.5, 0.1]))
    assert grasp_frame(a) == 20
    assert bottleneck_frame(a, 20, 0.01) == 12  # the hand arrives above the grasp point at frame 12
    never = a.copy()
    never[:, 7] = 1.0
    assert grasp_frame(never) is None


def test_the_locator_calibrates_its_table_map_from_the_demonstrations(locator, demo_pixels):
    assert locator.report["map_error_loo_m"]["max"] < 0.003
    for e, p in demo_pixels.items():
        assert np.linalg.norm(locator.demo_targets[e] - _table_xy(*p)) < 0.002


@pytest.mark.parametrize("pixel", [(30.3, 41.7), (60.0, 25.5), (47.2, 70.1)])
def test_a_new_placement_is_found_where_it_is(locator, pixel):
    found = locator.locate(_picture([pixel], seed=99))
    assert found is not None
    assert np.linalg.norm(found.xy - _table_xy(*pixel)) < 0.003


def test_distractors_shadows_and_other_light_do_not_fool_it(locator):
    blue, grey = np.array([40, 60, 200], np.float32), np.array([90, 90, 90], np.float32)
    image = _picture([(40.0, 50.0)], extra=[((70, 30), blue), ((20, 75), grey)], gain=(0.8, 0.9, 1.1), seed=5)
    found = locator.locate(image)
    assert found is not None and np.linalg.norm(found.xy - _table_xy(40.0, 50.0)) < 0.003
    assert locator.locate(_picture([])) is None  # no object
    assert locator.locate(_picture([], extra=[((40, 50), blue)])) is None  # only something else
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert locator.locate(noise) is None  # not the scene at all


def test_correction_ramp_and_round_trip(locator, demo_pixels):
    e = next(iter(demo_pixels))
    target = locator.demo_targets[e] + np.array([0.02, -0.01])
    assert np.allclose(locator.correction(target, e), [0.02, -0.01])
    b = locator.bottlenecks[e]
    assert b > 2 and locator.ramp(e, 0) == 0.0 and locator.ramp(e, b - 1) < 1.0 and locator.ramp(e, b) == 1.0
    assert locator.ramp(e, 2 * b) == 1.0
    again = TargetLocator.from_json(locator.to_json(), locator.arrays())
    found, back = locator.locate(_picture([(33.0, 44.0)])), again.locate(_picture([(33.0, 44.0)]))
    assert np.allclose(found.xy, back.xy) and again.max_correction == locator.max_correction


def _mug(u, v, handle_side, size=96, seed=0):
    """A red disc with a handle sticking out to the left (-1) or the right (+1)."""
    img = _picture([(u, v)], size=size, seed=seed)
    x0 = int(round(u + handle_side * 5))
    img[int(v) - 1:int(v) + 2, min(x0, x0 + 2 * handle_side):max(x0, x0 + 2 * handle_side) + 1] = OBJECT
    return img


def test_of_the_nearest_demonstrations_the_one_turned_the_same_way_is_replayed():
    rng = np.random.default_rng(7)
    pixels = {e: rng.uniform(20, 76, 2) for e in range(10)}
    pixels[10] = pixels[0] + [1.0, 0.5]  # two demonstrations side by side, handles on opposite sides
    sides = {e: (-1 if e == 10 else 1) for e in pixels}
    firsts = {e: _mug(*p, sides[e], seed=e) for e, p in pixels.items()}
    locator = fit_locator(firsts, {e: _actions(_table_xy(*p)) for e, p in pixels.items()}, 0.01, 0.05)
    here = pixels[0] + [0.5, 0.3]
    assert locator.choose_demo(locator.locate(_mug(*here, -1, seed=42))) == 10  # the only one turned this way
    chosen = locator.choose_demo(locator.locate(_mug(*here, 1, seed=42)))
    assert sides[chosen] == 1  # one turned the other way, among the nearest
    near = sorted(pixels, key=lambda e: np.linalg.norm(locator.demo_targets[e] - locator.demo_targets[0]))
    assert chosen in near[:5]


def test_too_few_or_unmoving_demonstrations_are_refused(demo_pixels):
    firsts = {e: _picture([p]) for e, p in list(demo_pixels.items())[:4]}
    actions = {e: _actions(_table_xy(*p)) for e, p in list(demo_pixels.items())[:4]}
    with pytest.raises(AlignmentError, match="at least 5"):
        fit_locator(firsts, actions, 0.01, 0.05)
    same = {e: _picture([]) for e in range(6)}
    with pytest.raises(AlignmentError, match="differs"):
        fit_locator(same, {e: _actions(np.array([0.5, 0.0])) for e in range(6)}, 0.01, 0.05)


# -- on the simulated rig ---------------------------------------------------------------------------------------

#: Training placements spread over the demonstrated area: the corners and the middle of the 5 x 6 grid.
SPREAD = (0, 5, 14, 15, 24, 29)


@pytest.fixture(scope="module")
def sim_policies(tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned") / "ds"
    rig = make_rig("sim", image_size=64)
    teleop = make_teleop("scripted", rig, seed=0)
    with rig, Dataset.open_or_create(out, spec_for_rig(rig)) as dataset:
        session = RecordingSession(rig, dataset, teleop, RecorderConfig())
        for index in SPREAD:
            scene = training_scene(rig.task, index)
            rig.reset(index, scene=scene)
            teleop.reset(index)
            kept = session.record_episode(extra={"scene": {"mug": [scene.mug.x, scene.mug.y, scene.mug.yaw]}},
                                          accept=rig.success).kept
            assert kept is not None
    rig.close()
    config = PolicyConfig(image_width=64, image_height=64, batch_size=16, epochs=2, frame_stride=2,
                          learning_rate=1e-3, pretrained="none", annoy_trees=4)
    with Dataset.open(out) as ds:
        aligned = ALTPolicy.build(ds, config.with_overrides(method="aligned"))
    return aligned


def _run(policy, scene, rig=None):
    rig = rig or make_rig("sim", image_size=64)
    held = [0]

    def succeeded():
        held[0] = held[0] + 1 if rig.success() else 0
        return held[0] >= 3

    with rig:
        rig.reset(0, scene=scene)
        result = run_autonomous(rig, policy, max_ticks=150, stop_when=succeeded)
        done = result.reason == "done" and rig.success()
    rig.close()
    return result, done


def test_the_aligned_method_grasps_a_mug_between_its_demonstrations(sim_policies, tmp_path):
    policy = sim_policies
    assert policy.method == "aligned" and policy.locator is not None
    assert policy.locator.report["map_error_loo_m"]["max"] < 0.015
    place = training_placements(TaskConfig())
    a, b = place[14], place[15]  # two neighbouring demonstrations; the mug halfway between them
    mug = Placement((a.x + b.x) / 2, (a.y + b.y) / 2, a.yaw)
    result, done = _run(policy, Scene("interpolate", 0, mug))
    assert done, (result.reason, result.message)
    # the paper's method, with the same encoder, table and gate, replays a demonstration as recorded: it misses
    # the mug or stops, but does not lift it
    alt = ALTPolicy(replace(policy.config, method="alt"), policy.encoder, policy.database, policy.calibration,
                    policy.info, policy.grasp_check)
    assert alt.locator is None
    assert not _run(alt, Scene("interpolate", 0, mug))[1]
    # it replayed one demonstration, shifted onto the mug: the correction is the mug's offset from it
    first = result.retrievals[0]
    assert first.target is not None and np.linalg.norm(first.target.xy - [mug.x, mug.y]) < 0.01
    # saved and loaded, it is the same policy
    policy.save(tmp_path / "p")
    again = ALTPolicy.load(tmp_path / "p")
    assert again.method == "aligned" and again.thresholds() == policy.thresholds()


def test_the_replay_waits_for_an_arm_that_trails_it_and_closes_only_at_the_grasp_pose(sim_policies):
    """In real time on a loaded machine the arm trails the replayed frames (late ticks skip frames). The replay
    runs at most REPLAY_LEAD_FRAMES ahead of the frame whose shifted target the hand has reached, and holds the
    frame before the grasp until the hand is at the shifted grasp pose."""
    from types import SimpleNamespace

    from policy.aligned.alignment import grasp_frame
    from policy.aligned.source import GRASP_ARRIVAL_M, REPLAY_LEAD_FRAMES
    from robot_drivers.rig import Observation
    from core.types import Pose, RobotState

    policy = sim_policies
    db, locator = policy.database, policy.locator
    episode = int(db.episodes[0])
    offset = np.array([0.01, -0.015])
    source = policy.make_source()
    source.current = SimpleNamespace(target=SimpleNamespace(xy=locator.demo_targets[episode] + offset))

    def shifted(frame):
        action = np.array(db.chunks[db.row_of(episode, frame)][0], float)
        action[:2] += locator.ramp(episode, frame) * offset
        return action

    def hand_at(position):
        state = RobotState(0.0, Pose(position, shifted(0)[3:7]), 1.0, np.zeros(7))
        return Observation(state, {})

    rows = np.flatnonzero(db.episodes == episode)
    close = int(db.frames[rows[grasp_frame(db.chunks[rows][np.argsort(db.frames[rows])][:, 0, :])]])
    # the hand is where frame 6 sent it; the time says frame 14: the replay goes on from frame 6 + the lead
    assert source._within_reach(hand_at(shifted(6)[:3]), episode, 14) == 6 + REPLAY_LEAD_FRAMES
    assert source._held == 14 - (6 + REPLAY_LEAD_FRAMES)
    # caught up: no hold; and what was reached stays reached when the hand passes by an earlier target
    assert source._within_reach(hand_at(shifted(12)[:3]), episode, 13) == 13
    assert source._within_reach(hand_at(shifted(6)[:3]), episode, 15) == 15 and source._reached >= 12
    # the grasp: the frame before it is replayed until the hand is within GRASP_ARRIVAL_M of the shifted pose
    above = shifted(close)[:3] + [0.0, 0.0, 2 * GRASP_ARRIVAL_M]
    assert source._wait_for_grasp_pose(hand_at(above), episode, close + 2) == close - 1
    assert source._wait_for_grasp_pose(hand_at(shifted(close)[:3] + [0.005, 0, 0]), episode, close + 2) == close + 2
    assert source._wait_for_grasp_pose(hand_at(above), episode, close + 3) == close + 3  # closed: no going back


def test_a_run_with_the_gripper_open_starts_before_the_grasp(sim_policies):
    """Clutter can make a start view look most like a frame at the mug: the run's first lookup, with the gripper
    open, keeps to frames before each demonstration's grasp (replaying a closing gripper far from the mug is a
    grasp on air)."""
    aligned = sim_policies
    alt = ALTPolicy(replace(aligned.config, method="alt"), aligned.encoder, aligned.database, aligned.calibration,
                    aligned.info, aligned.grasp_check)
    db = aligned.database

    def after_its_grasp(match):
        rows = np.flatnonzero(db.episodes == match.episode)
        commands = db.chunks[rows][:, 0, 7]
        return bool(np.any(commands[db.frames[rows] <= match.frame] < 0.5))

    episode = int(db.episodes[0])
    rows = np.flatnonzero(db.episodes == episode)
    after = int(db.frames[rows][db.chunks[rows][:, 0, 7] < 0.5].min()) + 2  # the gripper closing on the mug
    with Dataset.open(aligned.info["dataset"]) as ds:
        hand, third = ds.frame(episode, "hand", after), ds.frame(episode, "third", after)
    assert after_its_grasp(alt.retrieve(hand, third).matches[0])  # the views are a grasp's
    # holding something, the lookup is not restricted
    assert after_its_grasp(alt.retrieve(hand, third, gripper=0.6).matches[0])
    for policy in (alt, aligned):
        assert not after_its_grasp(policy.retrieve(hand, third, gripper=1.0).matches[0])


def test_the_aligned_gate_stops_a_mug_beyond_the_demonstrations_reach(sim_policies):
    policy = sim_policies
    far = Placement(0.62 + policy.locator.max_correction + 0.05, 0.0, 0.0)  # beyond the reach of any correction
    result, done = _run(policy, Scene("extrapolate", 0, far))
    assert not done and result.reason == "ood"
    assert result.stop_signal in ("correction", "target"), result.message
    assert result.loop.ticks <= 2  # at once, before the arm moved


def test_added_episodes_join_the_aligned_replay(sim_policies, tmp_path):
    """`policy add` on an aligned policy: the new episode's object position is located, so it can be replayed."""
    from policy.versions import add_episodes

    policy = sim_policies
    dataset_dir = policy.info["dataset"]
    rig = make_rig("sim", image_size=64)
    teleop = make_teleop("scripted", rig, seed=0)
    with rig, Dataset.open(dataset_dir, writable=True) as dataset:
        index = dataset.next_index()
        scene = training_scene(rig.task, 9)
        rig.reset(9, scene=scene)
        teleop.reset(9)
        assert RecordingSession(rig, dataset, teleop, RecorderConfig()).record_episode(accept=rig.success).kept
    rig.close()
    policy.save(tmp_path / "v1")
    added = add_episodes(tmp_path / "v1", dataset_dir, [index], tmp_path / "v2")
    new = ALTPolicy.load(tmp_path / "v2")
    assert new.method == "aligned" and index in new.locator.demo_targets
    assert np.linalg.norm(new.locator.demo_targets[index] - [scene.mug.x, scene.mug.y]) < 0.015
    assert added is not None


@pytest.mark.parametrize("turn", [-70.0, -25.0, 0.0, 40.0, 85.0])
def test_the_silhouette_turn_is_measured_and_a_half_turn_counts_as_none(turn):
    """A mug seen from above (disc + handle): the rotation that turns the live silhouette onto the
    demonstration's is found within the search step, and a handle pointing the other way needs no turn."""
    from policy.aligned.alignment import ROTATION_STEP, _rotated, hand_silhouette, silhouette_rotation

    image = np.tile(BACKGROUND, (96, 96, 1)).astype(np.uint8)
    ys, xs = np.indices((96, 96))
    image[(xs - 48) ** 2 + (ys - 40) ** 2 <= 36] = OBJECT
    image[28:34, 47:50] = OBJECT  # the handle, pointing up
    chroma = OBJECT / OBJECT.sum()
    reference = hand_silhouette(image, chroma, 0.1)
    assert reference is not None
    live = _rotated(reference, -turn)
    angle, score = silhouette_rotation(live, reference)
    assert abs(angle - turn) <= ROTATION_STEP and score > 0.95
    flipped = silhouette_rotation(_rotated(reference, 180.0), reference)
    assert abs(flipped[0]) <= ROTATION_STEP and flipped[1] > 0.95
    assert hand_silhouette(np.tile(BACKGROUND, (96, 96, 1)).astype(np.uint8), chroma, 0.1) is None


def test_the_hand_view_object_is_the_region_nearest_where_the_demonstration_had_it():
    """A larger region of a like colour elsewhere (a brown box beside a red mug) is not taken for the object
    once it is known where the object should be; without that, the largest region is."""
    from policy.aligned.alignment import _pixel_chroma, hand_object_place, hand_silhouette

    image = _picture([(30.0, 40.0)])
    ys, xs = np.indices(image.shape[:2])
    image[(np.abs(xs - 70) <= 4) & (np.abs(ys - 50) <= 6)] = (170, 50, 45)  # the box: larger, near in colour
    image[(xs - 10) ** 2 + (ys - 10) ** 2 <= 1] = OBJECT  # a speck of the object's colour
    chroma = _pixel_chroma(OBJECT[None, None, :])[0, 0]
    largest = hand_object_place(image, chroma, 0.1)
    near = hand_object_place(image, chroma, 0.1, near=np.array([12.0, 12.0, 49.0]))
    assert abs(largest[0] - 70) < 1 and abs(largest[1] - 50) < 1
    assert abs(near[0] - 30) < 1 and abs(near[1] - 40) < 1 and near[2] > 20  # the disc, not the speck
    assert hand_silhouette(image, chroma, 0.1, near=np.array([30.0, 40.0])).max() > 0.9


def _hand_view(blob, gain=1.0, size=96, seed=0):
    """A hand-camera picture: the table, the object somewhere, and the gripper's two fingers and edge at the
    bottom, where the camera always sees them."""
    img = _picture([blob], size=size, seed=seed).astype(np.float32)
    img[int(0.8 * size):, :] = (150, 150, 150)  # the gripper's edge
    for u in (0.25, 0.75):
        cx, cy = int(u * size), int(0.72 * size)
        img[cy - 6:cy + 6, cx - 4:cx + 4] = (60, 60, 70)  # a finger
        img[cy - 3:cy + 3, cx - 2:cx + 2] = (220, 220, 220)  # its pad
    return np.clip(img * gain, 0, 255).astype(np.uint8)


def test_the_hand_camera_check_knows_the_gripper_and_refuses_other_pictures():
    from policy.gate import procedural_texture
    from policy.aligned.camera_check import CameraCheck, fit_camera_check, log_edge_map
    from policy.grasp_check import correlation
    from policy.probes import photos, synthetic_probes

    rng = np.random.default_rng(0)
    hands = [_hand_view(rng.uniform(15, 80, 2), seed=i) for i in range(40)]
    negatives = synthetic_probes(30, (96, 96), seed=5) + [procedural_texture(rng, (96, 96)) for _ in range(30)]
    check, report = fit_camera_check(hands, negatives, "gripper")
    assert check is not None and report["used"] and 0 < check.threshold < report["demonstrations"]["min"]
    # other light, another object position: still the hand camera
    for gain in (0.45, 0.7, 1.3):
        assert check.agreement(_hand_view((40.0, 30.0), gain=gain, seed=99)) >= check.threshold
    # photographs and noise the fit never saw are not
    unseen = [im for _, im in photos((96, 96))] + synthetic_probes(30, (96, 96), seed=77)
    assert unseen and all(check.agreement(im) < check.threshold for im in unseen)
    # clutter beside a finger spoils the tiles it covers, not the median over the gripper's tiles
    cluttered = _hand_view((40.0, 30.0), seed=99)
    cluttered[57:80, 62:84] = (20, 20, 20)
    cluttered[62:75, 66:80] = (250, 250, 250)
    assert check.agreement(cluttered) >= check.threshold
    whole = correlation(log_edge_map(cluttered)[check.region], check.template[check.region])
    assert check.agreement(cluttered) > whole  # one correlation over the whole region suffers more
    # a covered lens, the gripper gone from view
    assert check.agreement(np.full((96, 96, 3), 30, np.uint8)) < check.threshold
    assert check.agreement(_picture([(40.0, 30.0)])) < check.threshold
    again = CameraCheck.from_json(check.to_json(), check.arrays("hand_camera"), "hand_camera")
    assert again.threshold == check.threshold and np.array_equal(again.region, check.region)
    # hand views without a steady gripper cannot tell themselves from unrelated pictures: no check, and why
    none, why = fit_camera_check([_picture([rng.uniform(15, 80, 2)], seed=i) for i in range(40)], negatives,
                                 "gripper")
    assert none is None and not why["used"] and "steady gripper" in why["why"]


def test_an_unrelated_picture_as_either_view_stops_the_aligned_policy_at_the_start(sim_policies):
    from policy.probes import photos

    policy = sim_policies
    check, third_check = policy.locator.hand_camera, policy.locator.third_camera
    assert check is not None, policy.locator.report.get("hand_camera")
    assert third_check is not None, policy.locator.report.get("third_camera")
    rig = make_rig("sim", image_size=64)
    with rig:
        rig.reset(3, "in_distribution")
        rig.clock.start()
        obs = rig.observe()
        hand, third = obs.frames["hand"].image, obs.frames["third"].image
    rig.close()
    assert not policy.retrieve(hand, third).ood  # the live scene is fine
    for name, photo in photos((64, 64)):
        r = policy.retrieve(photo, third)
        assert r.ood, (name, r.similarity)
        assert check.agreement(photo) < check.threshold, name
        r = policy.retrieve(hand, photo)
        assert r.ood, (name, r.similarity)
        # the structural check on its own refuses it: the encoder's thresholds are set to let clutter through
        assert third_check.agreement(photo) < third_check.threshold, name
    assert third_check.agreement(third) >= third_check.threshold


def test_the_grasp_checks_second_opinion_looks_for_the_object_where_it_was(sim_policies):
    """Clutter and shadows change a hand view's edges, not where the object's colour sits: the second opinion
    passes those and still refuses an object that is elsewhere, another size, or not in view."""
    from policy.aligned.alignment import fit_grasp_places

    locator = replace(sim_policies.locator, hand_reference=None, grasp_places={}, place_tolerance=-1.0)
    assert sim_policies.locator.report["grasp_places"]["used"]  # learned from the recorded demonstrations
    colour = np.clip(locator.chroma / locator.chroma.sum() * 330, 0, 255)
    yy, xx = np.mgrid[0:64, 0:64]

    def view(centre, radius=8.0, clutter=False, shadow=False):
        image = np.full((64, 64, 3), 140.0)
        image[np.hypot(xx - centre[0], yy - centre[1]) <= radius] = colour
        if clutter:  # a box of another colour beside it
            image[4:20, 44:62] = (40, 60, 200)
        if shadow:
            image[:, :30] *= 0.5
        return image.astype(np.uint8)

    rng = np.random.default_rng(3)
    closes = {e: 20 for e in range(6)}
    hands = {e: [(f, view((32 + rng.uniform(-1, 1), 40 - 0.5 * (20 - f) + rng.uniform(-1, 1))))
                 for f in range(14, 20)] for e in range(6)}
    fit_grasp_places(locator, hands, closes, 0.05)
    assert locator.report["grasp_places"]["used"] and 0 < locator.place_tolerance < 4
    frames = [19, 18]
    assert locator.object_in_place(view((32, 39.5), clutter=True, shadow=True), 2, frames)
    assert not locator.object_in_place(view((32 + 8, 39.5)), 2, frames)  # elsewhere in the view
    assert not locator.object_in_place(view((32, 39.5), radius=12), 2, frames)  # nearer or another object
    assert not locator.object_in_place(np.full((64, 64, 3), 140, np.uint8), 2, frames)  # not in view
    assert not locator.object_in_place(view((32, 39.5)), 99, frames)  # an episode it knows nothing of
    again = TargetLocator.from_json(locator.to_json(), locator.arrays())
    assert again.place_tolerance == locator.place_tolerance and again.object_in_place(view((32, 39.5)), 2, frames)


def test_the_aligned_gate_is_calibrated_on_frames_augmented_as_in_training_too(sim_policies):
    """Clutter and other light the encoder learned to look past lower its thresholds; the same calibration
    again gives the same thresholds (seeded)."""
    from policy.data import load_frames
    from policy.aligned.build import calibrate_aligned

    policy = sim_policies
    with Dataset.open(policy.info["dataset"]) as ds:
        table = load_frames(ds, policy.config, episodes=[int(e) for e in policy.info["episodes"]])
    held = [int(e) for e in policy.info["held_out_episodes"]]
    chosen = policy.calibration.aligned
    plain = calibrate_aligned(policy.encoder, table, policy.database, held,
                              policy.config.with_overrides(calibration_augments=0))
    names = ("gamma", "hand_view", "third_view")
    assert all(chosen[k] <= plain[k] for k in names) and any(chosen[k] < plain[k] for k in names), (chosen, plain)
    again = calibrate_aligned(policy.encoder, table, policy.database, held, policy.config)
    assert all(again[k] == pytest.approx(chosen[k], abs=1e-6) for k in names)
    # the replay's similarity bound: no higher than the lowest of the frames as recorded
    assert chosen["replay_gamma"] <= plain["replay_gamma"] and again["replay_gamma"] == chosen["replay_gamma"]


def test_a_table_map_too_coarse_to_trust_a_grasp_to_is_reported():
    from policy.aligned.alignment import COARSE_MAP_M, coarse_map_warning

    fine = {"map_error_loo_m": {"p50": 0.0027, "max": 0.0063}}
    coarse = {"map_error_loo_m": {"p50": 0.0038, "max": 0.0117}}
    assert coarse_map_warning(fine) is None
    warning = coarse_map_warning(coarse)
    assert warning is not None and "11.7 mm" in warning and "--input-size" in warning
    assert coarse_map_warning({"map_error_loo_m": {"max": COARSE_MAP_M}}) is None


def test_the_aligned_method_is_a_policy_of_its_own(sim_policies, tmp_path):
    """The policy folder's method picks the class; the paper's ALTPolicy never asks about a locator."""
    import inspect

    from policy.aligned.policy import AlignedPolicy
    from policy.aligned.source import AlignedPolicySource
    from policy.runner import PolicySource

    aligned = sim_policies
    assert type(aligned) is AlignedPolicy and type(aligned.make_source()) is AlignedPolicySource
    loaded = ALTPolicy.load(aligned.save(tmp_path / "aligned"))
    assert type(loaded) is AlignedPolicy and loaded.thresholds() == aligned.thresholds()
    alt = make_policy(replace(aligned.config, method="alt"), aligned.encoder, aligned.database, aligned.calibration,
                      aligned.info, aligned.grasp_check)
    assert type(alt) is ALTPolicy and type(alt.make_source()) is PolicySource
    assert type(ALTPolicy.load(alt.save(tmp_path / "alt"))) is ALTPolicy
    for source in (inspect.getsource(ALTPolicy), inspect.getsource(PolicySource)):
        assert "locator" not in source.replace("locator = None", "")
    with pytest.raises(PolicyArtifactError, match="make_policy"):
        ALTPolicy(aligned.config, aligned.encoder, aligned.database, aligned.calibration, aligned.info)


# -- does a recording suit the aligned method? -------------------------------------------------------------------

BLUE = np.array([40, 60, 200], np.float32)


def _demo_actions(xy, goal=None, gripper=None, frames=30, close=20):
    """``_actions``, then after the grasp a lift straight up (the mug) or, given a ``goal``, a carry there.
    ``gripper``: a command held throughout instead (no grasp)."""
    a = _actions(xy, frames, close)
    for f in range(close + 1, frames):
        s = min(1.0, (f - close) / 5)
        a[f, 2] = 0.1 + 0.15 * s
        if goal is not None:
            a[f, :2] = xy + (np.asarray(goal) - xy) * s
    if gripper is not None:
        a[:, 7] = gripper
    return a


def _recording(kind="mug", n=12, size=96, seed=3, frames=30, close=20):
    """Constructed demonstrations (first third-person frames, actions, measured start positions) of a mug-like
    task, or of one that breaks one of the aligned method's assumptions."""
    rng = np.random.default_rng(seed)
    scale = size / 96
    firsts, actions, starts = {}, {}, {}
    for e in range(n):
        p = rng.uniform(20, 76, 2)
        xy = _table_xy(*p)
        extra = [(tuple(rng.uniform(20, 76, 2) * scale), BLUE)] if kind == "two_objects" else []
        firsts[e] = _picture([p * scale], size=size, extra=extra, seed=e)
        if kind == "map":  # grasped somewhere the object is not
            xy = np.array([0.45, 0.0]) + rng.uniform(-0.1, 0.1, 2)
        goal = xy + rng.uniform(-0.15, 0.15, 2) if kind == "carry" else None
        gripper = {"open": 1.0, "closed": 0.0}.get(kind)
        actions[e] = _demo_actions(xy, goal, gripper, frames, close)
        starts[e] = np.array([0.4, 0.0, 0.3]) + (rng.uniform(-0.05, 0.05, 3) if kind == "starts" else 0.0)
    return firsts, actions, starts


def _check(kind, **kwargs):
    from policy.aligned.build import check_assumptions

    firsts, actions, starts = _recording(kind, **kwargs)
    return check_assumptions(firsts, actions, starts, radius=0.01, margin=0.05)


def test_a_mug_like_recording_suits_the_aligned_method():
    check = _check("mug")
    assert check.holds and check.failure is None and check.locator is not None, check.summary()
    values = {f.assumption: f.value for f in check.findings}
    assert values["grasp"] == 12 and values["start_pose"] == 0.0 and values["motion_after_grasp"] < 0.001
    assert values["one_object"] == 0.0 and values["table_map"] < 0.003
    assert "FAILS" not in check.summary() and check.to_json()["failed"] == []


@pytest.mark.parametrize("kind, assumption, shown", [
    ("open", "grasp", "the gripper closes from open in 0 of 12 (at least 5 must; its command stays at 1.00 (open)"),
    ("closed", "grasp", "its command stays at 0.00 (closed) throughout"),
    ("starts", "start_pose", "the demonstrations start from different arm poses (up to "),
    ("carry", "motion_after_grasp", "after the grasp the demonstrations move to different places"),
    ("two_objects", "one_object", "not one object: 12 of 12 demonstrations' first third-person frames show a second "
                                  "region"),
    ("map", "table_map", "the table map does not fit: the object's pixel position predicts where it is grasped to"),
])
def test_each_broken_assumption_is_named_in_one_line_with_its_number(kind, assumption, shown):
    from policy.aligned import build

    check = _check(kind)
    assert not check.holds and check.failure.assumption == assumption, check.summary()
    line = check.fallback_line()
    assert line.startswith("aligned method not used: ") and shown in line, line
    assert line.endswith("built the paper's method (alt) instead") and "\n" not in line
    bound = {"start_pose": build.START_SPREAD_M, "motion_after_grasp": build.MOTION_RESIDUAL_M,
             "table_map": build.MAP_LOO_M}.get(assumption)
    if bound is not None:  # the number beyond its bound, both in the line
        assert check.failure.value > bound and check.failure.bound == bound
    if assumption == "motion_after_grasp":
        assert f"{100 * check.failure.value:.1f} cm" in line and "> 3 cm" in line
    if assumption == "table_map":
        assert f"{1000 * check.failure.value:.0f} mm" in line and "> 30 mm" in line
    assert check.refusal().startswith("aligned method refused: ")


def test_a_locator_that_does_not_fit_is_never_built():
    """``build_locator`` (every way an aligned policy is built) refuses a recording that breaks an assumption."""
    from types import SimpleNamespace

    import torch

    from policy.aligned.build import build_locator
    from policy.aligned.alignment import AlignmentError

    firsts, actions, _ = _recording("carry", size=32)
    episodes = sorted(firsts)
    table = SimpleNamespace(actions=actions, third=torch.from_numpy(np.stack([firsts[e] for e in episodes])),
                            episode=np.array(episodes), frame=np.zeros(len(episodes), np.int64), pose_reference=None)
    with pytest.raises(AlignmentError, match="aligned method refused: after the grasp"):
        build_locator(table, PolicyConfig(image_width=32, image_height=32, method="aligned"))


def _write_recording(root, kind, n=6, cameras=("hand", "third")):
    """A tiny recorded dataset (32 px, pose + gripper actions and states) of ``_recording``."""
    from core.types import ACTION_NAMES, Frame
    from recorder.dataset import CameraSpec, DatasetSpec, EpisodeWriter, StepRecord

    firsts, actions, _ = _recording(kind, n=n, size=32, frames=20, close=14)
    spec = DatasetSpec(fps=10.0, cameras=tuple(CameraSpec(c, 32, 32) for c in cameras), robot="sim-panda",
                       joint_count=0, action_names=tuple(ACTION_NAMES), state_names=tuple(ACTION_NAMES), codec="png")
    with Dataset.create(root, spec) as ds:
        for e in range(n):
            w = EpisodeWriter(ds, e, task="constructed")
            for i, action in enumerate(actions[e].astype(np.float32)):
                hand = np.roll(firsts[e], i, axis=1)
                frames = {c: Frame(hand if c == "hand" else firsts[e], i / 10, i / 10, i, c) for c in cameras}
                w.add(StepRecord(i, i / 10, i / 10, action, np.zeros(0, np.float32), action, action, frames))
            w.keep("stop_button")
    return root


def test_train_falls_back_to_the_papers_method_and_says_why(tmp_path, capsys):
    import main as cli

    data = _write_recording(tmp_path / "ds", "carry")
    common = ["--method", "aligned", "--epochs", "1", "--input-size", "32", "--backbone-weights", "none",
              "--batch-size", "8", "--frame-stride", "10", "--chunk-length", "4", "--progress", "none"]
    # strict: refused before any training, nothing saved
    assert cli.main(["train", str(data), "--out", str(tmp_path / "strict"), *common, "--strict-method"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: aligned method refused: after the grasp the demonstrations move to different "
                          "places") and "nothing was saved" in err
    assert not (tmp_path / "strict").exists()
    # the default: the paper's method, and the one line in the log, the summary and the policy folder
    assert cli.main(["train", str(data), "--out", str(tmp_path / "p"), *common]) == 0
    captured = capsys.readouterr()
    line = next(ln for ln in captured.err.splitlines() if ln.startswith("aligned method not used:"))
    assert "after the grasp the demonstrations move to different places" in line and line.endswith(
        "built the paper's method (alt) instead")
    assert f"  {line}" in captured.out.splitlines() and "aligned method's assumptions: " in captured.out
    policy = ALTPolicy.load(tmp_path / "p")
    assert policy.method == "alt" and policy.locator is None
    record = policy.info["method"]
    assert record["requested"] == "aligned" and record["built"] == "alt" and record["reason"] == line
    assert record["assumptions"]["failed"][0] == "motion_after_grasp"


def test_the_aligned_policy_records_its_assumptions_as_measured(sim_policies):
    report = sim_policies.locator.report["assumptions"]
    assert report["holds"] and report["failed"] == []
    assert [f["assumption"] for f in report["findings"]] == ["grasp", "start_pose", "motion_after_grasp",
                                                              "one_object", "table_map"]


def test_the_method_is_chosen_before_any_training(tmp_path):
    """``choose_method`` reads the first frames and the actions only: a mug-like recording keeps the aligned
    method, one without a third-person view falls back (or, strict, is refused) and says why."""
    from policy.aligned.alignment import AlignmentError
    from policy.build import choose_method

    config = PolicyConfig(image_width=32, image_height=32, method="aligned")
    with Dataset.open(_write_recording(tmp_path / "mug", "mug")) as ds:
        chosen, record = choose_method(ds, config, ds.episode_indices())
    assert chosen.method == "aligned" and record["built"] == "aligned" and record["reason"] is None
    assert record["assumptions"]["holds"]
    with Dataset.open(_write_recording(tmp_path / "hand", "mug", cameras=("hand",))) as ds:
        chosen, record = choose_method(ds, config.with_overrides(views=("hand",)), ds.episode_indices())
        assert chosen.method == "alt" and record["built"] == "alt"
        assert record["reason"].startswith("aligned method not used: the aligned method finds the object in the "
                                           "third-person view; this dataset has none")
        with pytest.raises(AlignmentError, match="third-person view"):
            choose_method(ds, config, ds.episode_indices(), fallback=False)
    assert choose_method(None, config.with_overrides(method="alt"), [])[1] == {"requested": "alt", "built": "alt",
                                                                             "reason": None}
