"""Camera plumbing: timestamps, sequence numbers, stale and lost frames."""

import pickle
import time

import numpy as np
import pytest

from robot_drivers.camera import STALE_CAP_S, STALE_FLOOR_S, STALE_WINDOW, LatestFrameSlot, StaleLimit
from core.errors import CameraLostError, ConnectionLostError, StaleFrameError
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


# -- stale limits that fit the camera ---------------------------------------------------------------------------

def _slot_with_history(intervals, fps=15.0, **limits):
    """A slot on a fake clock that received frames at the given intervals (s); returns (slot, now)."""
    now = [100.0]
    slot = LatestFrameSlot("third", clock=lambda: now[0], stale=StaleLimit(fps, **limits))
    slot.publish(np.zeros((4, 4, 3), np.uint8), None)
    for interval in intervals:
        now[0] += interval
        slot.publish(np.zeros((4, 4, 3), np.uint8), None)
    return slot, now


def test_a_steady_camera_gets_the_floor():
    slot, now = _slot_with_history([1 / 30] * 100, fps=30.0)
    assert slot.stale_limit()[0] == STALE_FLOOR_S
    now[0] += 0.49
    slot.latest()
    now[0] += 0.02
    with pytest.raises(StaleFrameError, match=r"510 ms old \(limit 500 ms, floor\)"):
        slot.latest()


def test_a_jittery_but_running_camera_is_not_stale():
    # A loaded host: mostly 15 fps, but every tenth frame comes 250 ms after the one before.
    rng = np.random.default_rng(0)
    intervals = [0.25 if i % 10 == 9 else 1 / 15 + rng.uniform(0, 0.02) for i in range(200)]
    slot, now = _slot_with_history(intervals)
    limit, why = slot.stale_limit()
    assert limit == pytest.approx(3 * 0.25) and "99th-percentile frame interval 250 ms" in why
    now[0] += 0.6  # as old as the frames that halted the operator's simulated rig against the fixed 500 ms
    assert slot.latest().sequence == 200
    now[0] += 0.2
    with pytest.raises(StaleFrameError) as caught:
        slot.latest()
    error = caught.value
    assert (error.camera, error.age_s, error.limit_s) == ("third", pytest.approx(0.8), pytest.approx(0.75))
    assert "camera 'third'" in str(error) and "800 ms old (limit 750 ms" in str(error)


def test_a_camera_that_stops_is_refused_within_the_bound_whatever_its_history():
    for intervals in ([1 / 15] * 300, [0.9] * 300, [1 / 15] * 3):  # steady; very slow; just started
        slot, now = _slot_with_history(intervals)
        assert slot.stale.bound_s == STALE_CAP_S == 1.0
        now[0] += STALE_CAP_S + 0.001
        with pytest.raises(StaleFrameError, match="newest frame is 1001 ms old"):
            slot.latest()
    for intervals in ([0.9] * 300, [1 / 15] * 3):  # ... and the very slow and the new camera at the bound only
        slot, now = _slot_with_history(intervals)
        now[0] += STALE_CAP_S - 0.001
        slot.latest()
    # a camera slower than 3 fps waits 3 of its frame periods before it is refused
    assert StaleLimit(fps=1.0).bound_s == pytest.approx(3.0)
    slot, now = _slot_with_history([1.0] * 50, fps=1.0)
    now[0] += 2.9
    slot.latest()
    now[0] += 0.2
    with pytest.raises(StaleFrameError, match="limit 3000 ms"):
        slot.latest()


def test_the_limit_follows_the_recent_intervals():
    slot, now = _slot_with_history([0.3] * 100 + [1 / 15] * STALE_WINDOW)  # the hiccups are over
    assert slot.stale_limit()[0] == STALE_FLOOR_S


def test_a_fixed_limit_replaces_the_derived_one():
    now = [0.0]
    cam = SyntheticCamera("c", 16, 16, fps=15.0, clock=lambda: now[0])
    cam.set_stale_limit(0.1)
    assert cam.stale_limit.bound_s == 0.1
    cam._slot.publish(np.zeros((4, 4, 3), np.uint8), None)
    now[0] = 0.15
    with pytest.raises(StaleFrameError, match=r"150 ms old \(limit 100 ms\)"):
        cam.read_latest()
    cam.set_stale_limit(None)
    assert cam.read_latest().sequence == 0 and cam.current_stale_limit() == STALE_CAP_S  # no history yet


def test_stale_frame_error_keeps_its_details_across_processes():
    error = pickle.loads(pickle.dumps(StaleFrameError("old", camera="hand", age_s=1.2, limit_s=1.0)))
    assert (str(error), error.camera, error.age_s, error.limit_s) == ("old", "hand", 1.2, 1.0)
    lost = pickle.loads(pickle.dumps(CameraLostError("gone", camera="hand")))
    assert isinstance(lost, ConnectionLostError) and lost.camera == "hand"


def test_an_unplugged_camera_names_itself():
    now = [0.0]
    slot = LatestFrameSlot("hand", clock=lambda: now[0])
    slot.publish(np.zeros((4, 4, 3), np.uint8), None)
    slot.fail(OSError("usb gone"))
    with pytest.raises(CameraLostError, match="camera 'hand' stopped delivering frames: usb gone") as caught:
        slot.latest()
    assert caught.value.camera == "hand"
