"""Camera plumbing: timestamps, sequence numbers, stale and lost frames."""

import time

import numpy as np
import pytest

from robot_drivers.camera import LatestFrameSlot
from core.errors import ConnectionLostError, StaleFrameError
from robot_drivers.fake import SyntheticCamera


def test_synthetic_camera_frames_are_ordered():
    with SyntheticCamera("c", 64, 48, fps=100.0) as cam:
        frames = []
        last = -1
        for _ in range(10):
            f = cam.wait_for_frame(last, timeout=1.0)
            frames.append(f)
            last = f.sequence
    seq = [f.sequence for f in frames]
    assert all(b > a for a, b in zip(seq, seq[1:]))
    assert all(b.host_time > a.host_time for a, b in zip(frames, frames[1:]))
    assert all(b.device_time > a.device_time for a, b in zip(frames, frames[1:]))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    # The image carries its own frame count: the slot delivered the frame it names.
    for f in frames:
        assert int(np.frombuffer(f.image[0, :8, 0].tobytes(), dtype=np.int64)[0]) == f.sequence


def test_stale_frame_raises():
    now = [10.0]
    slot = LatestFrameSlot("cam", clock=lambda: now[0])
    with pytest.raises(StaleFrameError, match="not delivered a frame yet"):
        slot.latest()
    slot.publish(np.zeros((4, 4, 3), np.uint8), device_time=1.0)
    assert slot.latest(max_age=0.1).sequence == 0
    now[0] = 10.3
    with pytest.raises(StaleFrameError, match="300 ms old"):
        slot.latest(max_age=0.1)
    assert slot.latest(max_age=None).sequence == 0


def test_frames_of_a_scene_that_is_no_more_are_forgotten():
    now = [0.0]
    slot = LatestFrameSlot("cam", clock=lambda: now[0])
    for t, device in ((0.00, 1.0), (0.03, 1.1), (0.095, 5.0), (0.096, 5.1)):  # the new scene's renders bunched up
        now[0] = t
        slot.publish(np.zeros((4, 4, 3), np.uint8), device_time=device)
    assert slot.nearest(0.060, max_age=None).device_time == 1.1  # an old frame lies nearest the alignment time
    slot.forget_before(0.095)
    assert slot.nearest(0.060, max_age=None).device_time == 5.0
    slot.forget_before(1.0)  # never empty: the newest frame stays
    assert slot.nearest(0.0, max_age=None).device_time == 5.1 and slot.latest(max_age=None).device_time == 5.1


def test_unplugged_camera_reports_connection_lost():
    cam = SyntheticCamera("c", 32, 32, fps=200.0)
    with cam:
        cam.wait_for_frame(-1, timeout=1.0)
        cam.unplug()
        deadline = time.monotonic() + 2.0
        with pytest.raises(ConnectionLostError, match="unplugged"):
            while time.monotonic() < deadline:
                cam.read_latest(max_age=None)
                time.sleep(0.01)
