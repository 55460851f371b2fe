"""OpenCV camera: a lossless video file written by cv2.VideoWriter read back through cv2.VideoCapture."""

from __future__ import annotations

import time
from unittest.mock import create_autospec

import cv2
import numpy as np
import pytest

from core.errors import ConnectionLostError, DeviceNotFoundError, StaleFrameError, UnsupportedModeError
from core.clock import RealTimeClock
from robot_drivers.fake import KinematicArm
from robot_drivers.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm

W, H = 64, 48


def write_video(path, n=6, fps=50.0):
    """A lossless FFV1 file; returns the RGB images written."""
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (W, H))
    assert writer.isOpened(), "this OpenCV build cannot write FFV1"
    images = [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in range(n)]
    for rgb in images:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return images


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "cam.avi"
    return path, write_video(path)


def test_file_frames_are_rgb_bit_exact_with_stream_timestamps(video):
    path, images = video
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(path), width=W, height=H, fps=50.0), "third")
    received = []
    publish = cam._slot.publish  # note every frame the capture thread publishes

    def spy(image, device_time):
        received.append(publish(image, device_time))
        return received[-1]

    cam._slot.publish = spy
    with cam:
        cam.wait_for_frame(len(images) - 2, timeout=3.0)
    assert len(received) == len(images)
    for i, frame in enumerate(received):
        np.testing.assert_array_equal(frame.image, images[i])  # BGR -> RGB at the boundary, lossless
        assert frame.device_time == pytest.approx(i / 50.0, abs=1e-9)  # CAP_PROP_POS_MSEC, in seconds
        assert frame.camera == "third" and frame.sequence == i
    # Paced at the configured fps, not as fast as the disk allows.
    span = received[-1].host_time - received[0].host_time
    assert span >= (len(images) - 1) / 50.0 * 0.8


def test_end_of_file_is_a_clear_error(video):
    path, images = video
    with OpenCVCamera(OpenCVCameraConfig(source=str(path), width=W, height=H, fps=100.0)) as cam:
        cam.wait_for_frame(len(images) - 2, timeout=3.0)
        deadline = time.monotonic() + 2.0
        with pytest.raises(ConnectionLostError, match="end of the video file"):
            while time.monotonic() < deadline:
                cam.read_latest(max_age=None)
                time.sleep(0.01)


def test_old_frames_are_refused(video):
    path, _ = video
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(path), width=W, height=H, fps=4.0,
                                          stale_limit_s=0.05))
    with cam:
        frame = cam.wait_for_frame(-1, timeout=2.0)
        assert cam.read_latest(max_age=None).sequence == frame.sequence
        time.sleep(0.1)
        with pytest.raises(StaleFrameError, match=r"limit 50 ms"):
            cam.read_latest()


def test_rig_observe_applies_each_cameras_own_stale_limit(video):
    path, _ = video
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(path), width=W, height=H, fps=4.0, stale_limit_s=0.05))
    rig = Rig(arm=SafeArm(KinematicArm()), cameras={"hand": cam}, clock=RealTimeClock(10.0))
    with rig:
        cam.wait_for_frame(-1, timeout=2.0)
        time.sleep(0.1)
        with pytest.raises(StaleFrameError, match=r"limit 50 ms"):  # the rig file's stale_limit_s, not 0.5 s
            rig.observe()
        assert rig.observe(max_age=None).frames["hand"] is not None  # an explicit limit still overrides


def test_file_of_another_size_is_refused(video):
    path, _ = video
    with pytest.raises(UnsupportedModeError, match=r"asked for 640x480, the video file is 64x48"):
        OpenCVCamera(OpenCVCameraConfig(source=str(path), width=640, height=480, fps=50.0)).connect()


def test_missing_file_and_missing_device():
    with pytest.raises(DeviceNotFoundError, match="does not exist"):
        OpenCVCamera(OpenCVCameraConfig(source="/nonexistent/cam.avi")).connect()
    with pytest.raises(DeviceNotFoundError, match=r"could not open camera 63 \(video devices present: .*\)"):
        OpenCVCamera(OpenCVCameraConfig(source=63, connect_attempts=1)).connect()


def fake_webcam(width, height, fps):
    """An autospec'd cv2.VideoCapture standing in for a webcam driver (the USB device is the boundary)."""
    cap = create_autospec(cv2.VideoCapture, instance=True)
    cap.isOpened.return_value = True
    props = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
    cap.get.side_effect = lambda prop: float(props.get(prop, 0.0))
    cap.read.return_value = (True, np.zeros((height, width, 3), np.uint8))
    return cap


def test_webcam_mode_is_set_then_verified():
    cap = fake_webcam(640, 480, 30)
    factory = create_autospec(cv2.VideoCapture, return_value=cap)
    config = OpenCVCameraConfig(source=2, width=1280, height=720, fps=30, fourcc="MJPG", connect_attempts=1)
    with pytest.raises(UnsupportedModeError, match=r"asked for 1280x720, the camera gave 640x480.*MJPG"):
        OpenCVCamera(config, capture_factory=factory).connect()
    factory.assert_called_once_with(2, cv2.CAP_V4L2)
    cap.set.assert_any_call(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
    cap.set.assert_any_call(cv2.CAP_PROP_FRAME_WIDTH, 1280)
    cap.set.assert_any_call(cv2.CAP_PROP_FRAME_HEIGHT, 720)
    cap.release.assert_called_once()

    slow = fake_webcam(1280, 720, 10)
    with pytest.raises(UnsupportedModeError, match=r"asked for 30 fps, the camera gave 10 fps"):
        OpenCVCamera(config, capture_factory=create_autospec(cv2.VideoCapture, return_value=slow)).connect()


def test_webcam_frames_without_driver_timestamp_have_none():
    cap = fake_webcam(W, H, 30)
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[..., 0] = 200  # blue in BGR
    cap.read.return_value = (True, bgr)
    cam = OpenCVCamera(OpenCVCameraConfig(source=0, width=W, height=H, fps=30, warmup_frames=2),
                       capture_factory=create_autospec(cv2.VideoCapture, return_value=cap))
    with cam:
        frame = cam.wait_for_frame(-1, timeout=2.0)
    assert frame.device_time is None  # POS_MSEC was 0: no device clock
    assert frame.image[0, 0].tolist() == [0, 0, 200]  # RGB
    cap.release.assert_called()
