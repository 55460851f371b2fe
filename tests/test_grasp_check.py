"""The grasp check: an object off-centre before the grasp stops the arm; the same view passes."""

import cv2
import numpy as np
import pytest

from policy.grasp_check import (GraspCheck, correlation, cross_demo_alignment, edge_map, pre_grasp_frames,
                                pre_grasp_rows, thumbnail)


def _scene(dx: int = 0, seed: int = 0, size: int = 96) -> np.ndarray:
    """A hand view: a textured table, a mug (red disc with a handle) at the centre shifted by dx pixels, and
    the fingers as two grey bars at the bottom."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (200, 170, 130), np.uint8)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    c = (size // 2 + dx, size // 2)
    cv2.circle(img, c, size // 6, (220, 30, 30), -1)
    cv2.rectangle(img, (c[0] - 2, c[1] - size // 4), (c[0] + 2, c[1] - size // 6), (220, 30, 30), -1)
    cv2.rectangle(img, (size // 8, size - size // 6), (size // 4, size - 1), (120, 120, 120), -1)
    cv2.rectangle(img, (size - size // 4, size - size // 6), (size - size // 8, size - 1), (120, 120, 120), -1)
    return img


def test_pre_grasp_frames_come_from_the_gripper_channel():
    a = np.zeros((7, 8), np.float32)
    a[:, 7] = [1, 1, 1, 0.2, 0, 0, 1]
    assert pre_grasp_frames(a) == 4  # up to and including the first close command
    a[:, 7] = 1
    assert pre_grasp_frames(a) == 7  # never closes: every frame approaches
    a[:, 7] = 0
    assert pre_grasp_frames(a) == 0  # starts closed: nothing to check
    acts = {3: np.c_[np.zeros((4, 7)), [1, 1, 0, 0]], 5: np.c_[np.zeros((3, 7)), [1, 0, 0]]}
    rows = pre_grasp_rows(np.array([3, 3, 3, 3, 5, 5, 5]), np.array([0, 1, 2, 3, 0, 1, 2]), acts)
    np.testing.assert_array_equal(rows, [0, 1, 2, 4, 5])
    assert len(pre_grasp_rows(np.array([0]), np.array([0]), {0: np.zeros((1, 6))})) == 0  # joint actions: none


@pytest.mark.parametrize("shift", [8, -10, 14])
def test_an_object_off_centre_lines_up_worse_than_the_same_view_under_other_light(shift):
    ref = thumbnail(_scene(0, seed=1))
    check = GraspCheck(np.array([7]), ref[None], threshold=0.8)
    darker = (_scene(0, seed=2).astype(np.float32) * 0.7).astype(np.uint8)  # same scene, dimmer light, new noise
    same = check.alignment(thumbnail(darker), 7)
    off = check.alignment(thumbnail(_scene(shift, seed=2)), 7)
    assert same > 0.9 and off < check.threshold < same
    assert check.alignment(thumbnail(darker), 8) is None and not check.applies(8)


def test_correlation_is_one_for_equal_maps_and_ignores_gain():
    e = edge_map(thumbnail(_scene(0)))
    assert correlation(e, e) == pytest.approx(1.0)
    assert correlation(e, 3 * e + 1) == pytest.approx(1.0, abs=1e-5)
    assert correlation(e, np.zeros_like(e)) == 0.0


def test_cross_demo_alignment_compares_with_other_demonstrations_only():
    thumbs = np.stack([thumbnail(_scene(dx)) for dx in (0, 1, 12, 13)])
    episodes = np.array([0, 0, 1, 1])
    # embeddings: each frame's nearest neighbour overall is its own episode's other frame
    emb = np.array([[1, 0], [0.99, 0.141], [0.6, 0.8], [0.59, 0.807]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    values = cross_demo_alignment(np.arange(4), thumbs, episodes, emb)
    assert len(values) == 4 and values.max() < 0.9  # never matched with its own (nearly identical) episode


def test_extending_keeps_the_threshold_and_serialises():
    t = thumbnail(_scene(0))
    check = GraspCheck(np.array([0, 1]), np.stack([t, t]), 0.7).extended(np.array([9]), t[None])
    assert check.applies(9) and check.threshold == 0.7
    again = GraspCheck.from_arrays(check.arrays(), 0.7)
    np.testing.assert_array_equal(again.rows, [0, 1, 9])
    assert again.alignment(t, 9) == pytest.approx(1.0)
    assert GraspCheck.from_arrays(check.arrays(), None) is None and GraspCheck.from_arrays({}, 0.7) is None


def test_demonstrations_that_never_grasp_get_no_grasp_check():
    """A task without a grasp (a drawer pulled open, a point reached): every frame would count as an approach to a
    grasp, and the check would stop runs for what the task is. No check; a task that grasps keeps it."""
    from types import SimpleNamespace

    from policy.calibration import build_grasp_check
    from policy.config import PolicyConfig

    def table(closes: bool):
        actions = {}
        for e in range(3):
            a = np.zeros((6, 8))
            a[:, 7] = 1.0
            if closes:
                a[4:, 7] = 0.0
            actions[e] = a
        episodes = np.repeat(np.arange(3), 6)
        return SimpleNamespace(actions=actions, episode=episodes, frame=np.tile(np.arange(6), 3))

    config = PolicyConfig()
    assert build_grasp_check(table(closes=False), None, config, None) is None
    with pytest.raises(AttributeError, match="hand"):  # it goes on to build the check from the hand frames
        build_grasp_check(table(closes=True), None, config, None)
