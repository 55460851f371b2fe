"""The landmark method (policy/landmarks/): landmarks found by colour in the first third-person frames, the path
regressed on them phase by phase, the replay that follows the arm, and the policy folder round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.config import METHODS, PolicyConfig
from policy.database import LookupDatabase
from policy.landmarks.model import (MIN_DEMOS, LandmarkError, LandmarkModel, fit_landmarks, phases, segments)
from policy.landmarks.source import ARRIVAL_M, LandmarkSource
from policy.policy import policy_class

SIZE = 64
START = np.array([0.0, 0.6, 0.2])
QUAT = np.array([0.0, 1.0, 0.0, 0.0])


def _background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 120.0) + rng.normal(0, 4, (SIZE, SIZE, 3))
    img[:, :, 1] += np.linspace(-20, 20, SIZE)[None, :]  # a gradient: the table is not flat grey
    return img


def _scene(red: np.ndarray, blue: np.ndarray | None, noise_seed: int) -> np.ndarray:
    img = _background()
    cv2.circle(img, (int(round(red[0])), int(round(red[1]))), 3, (220, 30, 30), -1)
    if blue is not None:
        cv2.circle(img, (int(round(blue[0])), int(round(blue[1]))), 3, (30, 40, 220), -1)
    img += np.random.default_rng(noise_seed).normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _table_xy(pixel: np.ndarray) -> np.ndarray:
    """The synthetic rig's table map: pixel -> metres."""
    return np.array([0.004 * (pixel[0] - 32), 0.7 + 0.003 * (pixel[1] - 32)])


def _demo(red: np.ndarray, blue: np.ndarray, steps: int = 12) -> np.ndarray:
    """Approach the red thing, close, carry to the blue thing, open: pose + gripper actions [T, 8]."""
    grasp = np.r_[_table_xy(red), 0.05]
    place = np.r_[_table_xy(blue), 0.15]
    rows = []
    for i in range(steps):
        rows.append(np.r_[START + (grasp - START) * (i + 1) / steps, QUAT, 1.0])
    rows += [np.r_[grasp, QUAT, 0.0]] * 3  # the grasp: the gripper closes and settles
    for i in range(steps):
        rows.append(np.r_[grasp + (place - grasp) * (i + 1) / steps, QUAT, 0.0])
    rows.append(np.r_[place, QUAT, 1.0])
    return np.array(rows)


def _recording(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    firsts, actions, places = {}, {}, {}
    for e in range(n):
        red = rng.uniform(14, 50, 2)
        blue = rng.uniform(14, 50, 2)
        while np.linalg.norm(blue - red) < 12:
            blue = rng.uniform(14, 50, 2)
        firsts[e] = _scene(red, blue, e)
        actions[e] = _demo(red, blue)
        places[e] = (red, blue)
    return firsts, actions, places


@pytest.fixture(scope="module")
def model() -> LandmarkModel:
    firsts, actions, _ = _recording(20)
    return fit_landmarks(firsts, actions, margin=0.05)


def test_the_method_is_named_everywhere_a_method_is_chosen():
    assert "landmarks" in METHODS
    assert PolicyConfig(method="landmarks").method == "landmarks"
    assert policy_class("landmarks").__name__ == "LandmarkPolicy"
    with pytest.raises(ValueError, match="landmarks"):
        PolicyConfig(method="nearest")


def test_segments_cut_at_each_gripper_change_and_phases_run_along_the_path():
    a = _demo(np.array([20.0, 20.0]), np.array([40.0, 40.0]))
    assert [b - s for s, b in segments(a)] == [12, 15, 1]
    seg, phase = phases(a)
    assert seg[0] == 0 and seg[12] == 1 and seg[-1] == 2
    first = phase[:12]
    assert first[0] == 0.0 and first[-1] == 1.0 and np.all(np.diff(first) > 0)
    # the grasp's settling frames do not move: they stay at the start of the next segment's path
    assert np.all(phase[12:15] == 0.0)


def test_a_gripper_step_of_exactly_the_cut_is_a_change_in_any_float_width():
    """push-v3's expert steps its gripper command 0.5 -> 0.2: 0.30000000000000004 in float64, 0.29999998 in
    float32 (how a recording stores actions). Both widths cut there, and a recording stored so is fitted (it failed
    with an IndexError when the count and the fit cut differently)."""
    a = _demo(np.array([20.0, 20.0]), np.array([40.0, 40.0]))
    a[:, 7] = np.where(a[:, 7] > 0.5, 0.5, 0.2)
    assert segments(a.astype(np.float32)) == segments(a) == [(0, 12), (12, 27), (27, 28)]
    firsts, actions, _ = _recording(MIN_DEMOS + 2, seed=3)
    for e in actions:
        actions[e] = actions[e].copy()
        actions[e][:, 7] = np.where(actions[e][:, 7] > 0.5, 0.5, 0.2)
        actions[e] = actions[e].astype(np.float32)
    fitted = fit_landmarks(firsts, actions, margin=0.05)
    assert fitted.report["segments"] == 3


def test_two_landmarks_are_found_by_colour_and_the_path_follows_both(model):
    report = model.report
    assert model.count == 2 and report["landmarks"] == 2 and report["segments"] == 3
    assert report["demonstrations"] == 20
    colours = np.array(report["landmark_colours"])
    assert {int(np.argmax(c)) for c in colours} == {0, 2}  # one red, one blue
    # a scene no demonstration had: the grasp goes to the red thing, the place to the blue one
    red, blue = np.array([27.0, 41.0]), np.array([44.0, 19.0])
    found = model.find(_scene(red, blue, 99))
    assert found.features is not None and not found.missing
    plan = model.plan(found.episode, found.features)
    close = int(np.flatnonzero(np.diff(plan[:, 7]) < -0.5)[0])
    assert np.linalg.norm(plan[close, :2] - _table_xy(red)) < 0.006
    assert np.linalg.norm(plan[-2, :2] - _table_xy(blue)) < 0.006
    # the demonstration keeps its timing, gripper and orientation
    own = model.episode_actions[found.episode]
    assert plan.shape == own.shape and np.array_equal(plan[:, 3:], own[:, 3:])


def test_the_nearest_demonstration_is_the_one_replayed(model):
    firsts, _, _ = _recording(20)
    for e in (0, 7, 13):
        assert model.find(firsts[e]).episode == e


def test_a_missing_landmark_is_named():
    firsts, actions, _ = _recording(20)
    model = fit_landmarks(firsts, actions, margin=0.05)
    found = model.find(_scene(np.array([30.0, 30.0]), None, 5))
    assert found.features is None and len(found.missing) == 1


def test_corrections_grow_with_the_distance_and_bound_what_is_trusted(model):
    assert model.max_correction >= model.report["largest_needed_m"] + 0.05 - 1e-9
    far = model.find(_scene(np.array([14.0, 14.0]), np.array([50.0, 50.0]), 3))
    near = model.find(_scene(*_recording(20)[2][4], 4))
    moved = lambda f: np.abs(model.corrections(f.episode, np.arange(25), model.episode_actions[f.episode][:25, :3],
                                               f.features)).max()
    assert moved(near) < 0.005 < moved(far)


def test_a_recording_without_landmarks_is_refused_with_the_reason():
    firsts, actions, _ = _recording(10)
    same = {e: firsts[0] for e in firsts}  # nothing moves between the demonstrations
    with pytest.raises(LandmarkError, match="no landmark"):
        fit_landmarks(same, actions, margin=0.05)
    few = {e: firsts[e] for e in range(MIN_DEMOS - 1)}
    with pytest.raises(LandmarkError, match=f"at least {MIN_DEMOS}"):
        fit_landmarks(few, {e: actions[e] for e in few}, margin=0.05)
    with pytest.raises(LandmarkError, match="pose"):
        fit_landmarks(firsts, {e: a[:, :7] for e, a in actions.items()}, margin=0.05)


def test_the_model_survives_the_policy_folder(model):
    again = LandmarkModel.from_json(model.to_json(), model.arrays())
    scene = _scene(np.array([22.0, 35.0]), np.array([40.0, 25.0]), 11)
    a, b = model.find(scene), again.find(scene)
    assert a.episode == b.episode and np.allclose(a.features, b.features)
    assert np.allclose(model.plan(a.episode, a.features), again.plan(b.episode, b.features))
    assert again.max_correction == model.max_correction and again.report == model.report


def _boxed_scene(box: np.ndarray, blue: np.ndarray, noise_seed: int) -> np.ndarray:
    """A grey box (the thing to grasp, at ``box``; no colour of its own) and a blue goal marker."""
    img = _background()
    x, y = (int(round(v)) for v in box)
    cv2.rectangle(img, (x - 7, y - 7), (x + 7, y + 7), (60, 60, 60), -1)
    cv2.circle(img, (int(round(blue[0])), int(round(blue[1]))), 3, (30, 40, 220), -1)
    img += np.random.default_rng(noise_seed).normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _boxed_recording(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    firsts, actions = {}, {}
    for e in range(n):
        box = rng.uniform(16, 30, 2)
        blue = rng.uniform(40, 52, 2)
        firsts[e] = _boxed_scene(box, blue, e)
        actions[e] = _demo(box, blue)  # the grasp goes to the box's middle, the place to the blue marker
    return firsts, actions


def test_the_changes_as_a_whole_join_the_landmarks_only_where_they_predict_the_paths_better(model):
    """Two colour markers (the recording above): the changed part of the scene as a whole adds nothing, and the
    model keeps to the colour landmarks. A grey box grasped at its middle and a blue goal: the colour landmarks
    see only the goal; the changed part of the scene as a whole places the grasp, so it joins the landmarks (the
    leave-one-out error then falls below MASS_GAIN of the colour landmarks' alone), and the model keeps that
    through the policy folder."""
    from policy.landmarks.model import MASS_GAIN

    scores = model.report["loo_score_m"]
    assert model.report["changes_as_a_whole"] is False and not model.mass
    assert scores["colour landmarks"] > 0 and scores["with the changes as a whole"] > MASS_GAIN * \
        scores["colour landmarks"]
    assert len(model.find(_scene(np.array([27.0, 41.0]), np.array([44.0, 19.0]), 99)).features) == 6

    firsts, actions = _boxed_recording(24)
    boxed = fit_landmarks(firsts, actions, margin=0.05)
    scores = boxed.report["loo_score_m"]
    assert boxed.mass and boxed.report["changes_as_a_whole"] is True and boxed.count == 1  # the blue marker
    assert scores["with the changes as a whole"] <= MASS_GAIN * scores["colour landmarks"]
    box, blue = np.array([23.0, 20.0]), np.array([47.0, 44.0])
    scene = _boxed_scene(box, blue, 77)
    found = boxed.find(scene)
    assert found.features is not None and len(found.features) == 6
    plan = boxed.plan(found.episode, found.features)
    close = int(np.flatnonzero(np.diff(plan[:, 7]) < -0.5)[0])
    assert np.linalg.norm(plan[close, :2] - _table_xy(box)) < 0.006
    assert boxed.name(0) == "landmark 1" and boxed.name(1) == "the changed part of the scene as a whole"
    again = LandmarkModel.from_json(boxed.to_json(), boxed.arrays())
    assert again.mass and np.allclose(again.find(scene).features, found.features)
    # something new in the scene (a second box) moves the whole beyond where the demonstrations had it (the run
    # stops: "coverage"), a larger one makes it larger than any demonstration's (stops: not found)
    from policy.landmarks.model import COVERAGE_SLACK

    for side, stop in ((20, "coverage"), (32, "missing")):
        cluttered = scene.copy()
        cv2.rectangle(cluttered, (30, 2), (30 + side, 2 + side), (60, 60, 60), -1)
        seen = boxed.find(cluttered)
        if stop == "missing":
            assert seen.features is None and seen.missing == [1]
        else:
            excess, which = boxed.coverage(seen.features)
            assert excess > COVERAGE_SLACK and which == 1


class _Replay(LandmarkSource):
    """The replay's frame rule alone, on a plan (no policy, no rig)."""

    def __init__(self, plan: np.ndarray):
        self._plan, self._frame, self._reached = plan, 0, 0
        self._hands = plan[:, :3]  # a demonstration whose hand kept up with its commands


def test_the_replay_follows_the_arm_and_waits_before_the_gripper_changes():
    plan = _demo(np.array([20.0, 20.0]), np.array([40.0, 40.0]))
    replay = _Replay(plan)
    stuck = plan[0, :3]  # a hand that does not move: the replay runs a few frames ahead, then waits for it
    frames = [replay._next_frame(stuck) for _ in range(10)]
    assert max(frames) <= 3 and frames[-1] == frames[-2]
    # a hand that keeps up gets to the frame before the grasp, and the gripper closes only once it is there
    replay = _Replay(plan)
    for _ in range(11):
        replay._frame = replay._next_frame(plan[replay._frame, :3])
    assert replay._frame == 11 and plan[12, 7] == 0.0
    short = plan[11, :3] + np.array([0.0, 0.0, 2 * ARRIVAL_M])
    assert replay._next_frame(short) == 11  # not there yet: the gripper stays open
    assert replay._next_frame(plan[11, :3]) == 12


def test_the_replay_goes_on_where_the_demonstrations_hand_lagged_its_command_too():
    """Pressing or pushing, the command runs centimetres ahead of the hand: the replay has got as far as a frame
    when the hand is where the demonstration's own hand was then, not where it was commanded."""
    plan = _demo(np.array([20.0, 20.0]), np.array([40.0, 40.0]))
    replay = _Replay(plan)
    replay._hands = plan[:, :3] + np.array([0.0, 0.0, 0.04])  # the demonstration's hand stayed 4 cm short
    for _ in range(8):
        replay._frame = replay._next_frame(replay._hands[replay._frame])
    assert replay._frame == 8


def test_train_builds_the_landmark_method_on_a_meta_world_recording_and_it_runs(tmp_path, capsys):
    """`train --method landmarks` end to end on a rig no one here designed (six reach-v3 demonstrations at 48 px):
    the landmarks are fitted before any training, the policy folder keeps the model, a run finds them at its start
    and replays the nearest demonstration moved; a recording it cannot serve builds alt and says why, or is
    refused with --strict-method."""
    import recorder.recording
    from evaluation.evaluate import run_episode
    from policy.build import train_policy
    from policy.landmarks.model import LandmarkError
    from policy.policy import ALTPolicy
    from robot_drivers.factory import make_rig

    ds = tmp_path / "ds"
    assert recorder.recording.record_scripted(ds, 6, 48, 3, robot="metaworld:reach-v3")
    tiny = PolicyConfig(image_width=32, image_height=32, epochs=1, batch_size=16, pretrained="none",
                        method="landmarks")
    policy = train_policy(str(ds), str(tmp_path / "p"), tiny, progress="none")
    assert policy.method == "landmarks" and policy.info["method"]["built"] == "landmarks"
    loaded = ALTPolicy.load(tmp_path / "p")
    assert type(loaded).__name__ == "LandmarkPolicy" and loaded.landmarks.count >= 1
    assert loaded.landmarks.report == policy.landmarks.report
    rig = make_rig("metaworld:reach-v3", image_size=48)
    rig.connect()
    try:
        result, run = run_episode(loaded, rig, "in_distribution", 1000, max_ticks=40)
    finally:
        rig.disconnect()
    first = run.retrievals[0]
    assert first.target is not None and first.target.features is not None  # found at the run's start
    assert set(first.readings) >= {"similarity", "correction", "coverage"}
    # the first lookup is judged by gamma; once a moved demonstration is replayed, by the replay gamma: the lowest
    # similarity any demonstration's frame has to the other demonstrations (never above gamma)
    assert first.readings["similarity"][1] == pytest.approx(loaded.gamma)
    replay = min(loaded.gamma, loaded.database.lowest_similarity_to_other_demonstrations())
    assert loaded.thresholds()["replay_gamma"] == pytest.approx(
        loaded.database.lowest_similarity_to_other_demonstrations())
    assert all(r.readings["similarity"][1] == pytest.approx(replay) for r in run.retrievals[1:])
    assert result.outcome in ("success", "ood_stop", "stall_stop")  # a 1-epoch encoder may stop; never silently
    # three demonstrations cannot fit it: alt is built and says why; --strict-method refuses
    few = tmp_path / "few"
    assert recorder.recording.record_scripted(few, 3, 48, 3, robot="metaworld:reach-v3")
    fallback = train_policy(str(few), str(tmp_path / "q"), tiny, progress="none")
    assert fallback.method == "alt" and "at least 6" in fallback.info["method"]["reason"]
    with pytest.raises(LandmarkError, match="at least 6"):
        train_policy(str(few), str(tmp_path / "r"), tiny, progress="none", fallback=False)
    assert not (tmp_path / "r").exists()


def test_a_patch_of_a_landmarks_colour_but_not_its_size_is_not_taken_for_it(model):
    """Other light can make a large patch of the table differ from the empty scene in a landmark's colour: only a
    region of the size the demonstrations showed the landmark with is taken for it."""
    red, blue = np.array([27.0, 41.0]), np.array([44.0, 19.0])
    scene = _scene(red, blue, 21)
    clean = model.find(scene)
    lit = scene.copy()
    lit[48:62, 2:22] = (40, 50, 225)  # a big blue patch, far from the blue thing
    found = model.find(lit)
    assert found.features is not None and np.allclose(found.features, clean.features, atol=0.5)


def test_a_live_frame_is_looked_at_as_the_recording_stored_its_frames():
    """JPEG halves colour resolution: a small saturated marker comes out of a recording paler than a live frame
    shows it. The model keeps the recording's codec and looks at a live frame after the same round trip."""
    from recorder.dataset_format import decode_image, encode_image

    firsts, actions, _ = _recording(20)
    stored = {e: decode_image(encode_image(f, "jpeg", 90), "test") for e, f in firsts.items()}
    model = fit_landmarks(stored, actions, margin=0.05, codec=("jpeg", 90))
    again = LandmarkModel.from_json(model.to_json(), model.arrays())
    assert again.codec == ("jpeg", 90)
    live = _scene(np.array([30.0, 22.0]), np.array([18.0, 44.0]), 31)
    round_trip = decode_image(encode_image(live, "jpeg", 90), "test")
    assert np.array_equal(again.as_stored(live), round_trip)
    found = again.find(live)
    assert found.features is not None
    plain = LandmarkModel.from_json({**model.to_json(), "codec": None}, model.arrays())
    assert np.allclose(plain.find(round_trip).features, found.features)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 60), demos=st.integers(1, 5), block=st.integers(1, 70))
def test_the_lowest_similarity_to_other_demonstrations_is_computed_in_blocks_as_in_one(seed, rows, demos, block):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 8)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    episodes = rng.integers(0, demos, rows)
    db = LookupDatabase(z, episodes, np.arange(rows), np.zeros((rows, 2, 8), np.float32))
    got = db.lowest_similarity_to_other_demonstrations(block=block)
    if len(np.unique(episodes)) < 2:
        assert np.isnan(got)
        return
    s = z @ z.T
    want = min(max(s[i, j] for j in range(rows) if episodes[j] != episodes[i]) for i in range(rows))
    assert got == pytest.approx(float(want), abs=1e-5)
