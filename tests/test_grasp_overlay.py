"""The hand camera's grasp overlay: derived from the Panda model and the camera's own matrices."""

from __future__ import annotations

import numpy as np
import pytest

from robot_drivers.factory import make_rig
from robot_drivers.sim.camera import hand_camera, project_in_hand


def test_the_cameras_own_target_projects_to_the_image_centre():
    c = hand_camera()
    assert project_in_hand(c, np.array([c.target_in_hand])) == pytest.approx(np.array([[0.5, 0.5]]), abs=1e-6)  # float32 matrices


@pytest.fixture(scope="module")
def rig():
    rig = make_rig("sim", image_size=96)
    rig.connect()
    yield rig
    rig.disconnect()
    rig.close()


def test_the_overlay_lies_between_the_fingers_and_the_axis_recedes(rig):
    overlay = rig.cameras["hand"].grasp_overlay
    assert rig.cameras["third"].grasp_overlay is None  # a fixed camera has none
    (lx, ly), (rx, ry) = sorted(overlay.finger_span)
    gx, gy = overlay.grasp_point
    assert lx < gx < rx and ly == pytest.approx(gy) == pytest.approx(ry)  # the fingers close through it
    ys = [v for _, v in overlay.axis]
    assert ys[0] == pytest.approx(gy) and all(a > b for a, b in zip(ys, ys[1:]))  # deeper is higher up
    assert all(0 < v < 1 for point in (*overlay.finger_span, *overlay.axis) for v in point)


def test_the_fingers_are_where_the_overlay_says(rig):
    """In the rendered hand image the finger span's ends are on the (grey) fingers, not the (brown) table."""
    rig.scene_control().reset(0, training_index=0)
    rig.cameras["hand"].capture()
    image = rig.cameras["hand"].read_latest(None).image.astype(float)
    h, w, _ = image.shape
    for u, v in rig.cameras["hand"].grasp_overlay.finger_span:
        r, g, b = image[int(v * h), int(u * w)]
        assert max(r, g, b) - min(r, g, b) < 25, f"not a grey finger pixel at ({u:.2f}, {v:.2f}): {r, g, b}"
