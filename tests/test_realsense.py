"""RealSense camera driver, tested through pyrealsense2 itself, without a camera.

A ``rs.software_device`` (a device object of the SDK whose sensors are fed
synthetic frames) and a ``.db3`` recording played back by the SDK go through
the very code path a USB camera uses: sensor selection, mode validation,
options, ``sensor.start`` into a syncer, the capture thread, timestamps.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

import numpy as np
import pytest

import pyrealsense2 as rs  # a dev dependency (setup.cfg): these tests never skip

from core.errors import ConnectionLostError, DeviceNotFoundError, StaleFrameError, UnsupportedModeError
from robot_drivers.realsense import RealSenseCamera, RealSenseCameraConfig, find_device, list_devices

W, H, FPS = 64, 48, 30


class SoftwareCamera:
    """A pyrealsense2 software device shaped like a D435: an RGB sensor and a stereo module."""

    def __init__(self, serial="123456789", width=W, height=H, fps=FPS, depth=False, usb="3.2",
                 sync_option=False, global_time_option=True):
        self.width, self.height = width, height
        self.device = rs.software_device()
        self.colour_sensor = self.device.add_sensor("RGB Camera")
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy = width, height, 60.0, 60.0
        intr.ppx, intr.ppy, intr.model, intr.coeffs = width / 2, height / 2, rs.distortion.none, [0.0] * 5
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height = rs.stream.color, 0, 0, width, height
        vs.fps, vs.bpp, vs.fmt, vs.intrinsics = fps, 3, rs.format.rgb8, intr
        self.colour_profile = self.colour_sensor.add_video_stream(vs)
        if global_time_option:
            self.colour_sensor.add_option(rs.option.global_time_enabled, rs.option_range(0, 1, 1, 0), True)
            self.colour_sensor.set_option(rs.option.global_time_enabled, 0)
        self.depth_sensor = self.depth_profile = None
        if depth or sync_option:
            self.depth_sensor = self.device.add_sensor("Stereo Module")
            if sync_option:
                self.depth_sensor.add_option(rs.option.inter_cam_sync_mode, rs.option_range(0, 2, 1, 0), True)
                self.depth_sensor.set_option(rs.option.inter_cam_sync_mode, 0)
        if depth:
            ds = rs.video_stream()
            ds.type, ds.index, ds.uid, ds.width, ds.height = rs.stream.depth, 0, 1, width, height
            ds.fps, ds.bpp, ds.fmt, ds.intrinsics = fps, 2, rs.format.z16, intr
            self.depth_profile = self.depth_sensor.add_video_stream(ds)
            self.depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
            identity = rs.extrinsics()
            identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
            self.depth_profile.register_extrinsics_to(self.colour_profile, identity)
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")
        self.device.register_info(rs.camera_info.firmware_version, "5.16.0.1")
        self.device.register_info(rs.camera_info.usb_type_descriptor, usb)
        self.device.create_matcher(rs.matchers.default)
        self.sent: dict[float, np.ndarray] = {}  # device timestamp (ms) -> pixels
        self._n = 0
        self._rng = np.random.default_rng(0)
        self._feeding = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self, timestamp_ms: float | None = None, depth_mm: int = 1000) -> np.ndarray:
        image = self._rng.integers(0, 256, size=(self.height, self.width, 3), dtype=np.uint8)
        ts = 1000.0 + self._n * 1000.0 / 30.0 if timestamp_ms is None else timestamp_ms
        self.sent[ts] = image
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = image, 3, self.width * 3
        f.timestamp, f.domain, f.frame_number = ts, rs.timestamp_domain.global_time, self._n
        f.profile = self.colour_profile.as_video_stream_profile()
        if self.depth_profile is not None:
            d = rs.software_video_frame()
            d.pixels = np.full((self.height, self.width), depth_mm, np.uint16)
            d.bpp, d.stride, d.timestamp, d.domain = 2, self.width * 2, ts, rs.timestamp_domain.global_time
            d.frame_number, d.depth_units = self._n, 0.001
            d.profile = self.depth_profile.as_video_stream_profile()
            self.depth_sensor.on_video_frame(d)
        self.colour_sensor.on_video_frame(f)
        self._n += 1
        return image

    # A feeder thread plays the camera's hardware clock.
    def start_feeding(self, period=0.005) -> None:
        self._feeding.set()

        def run():
            while not self._stop.is_set():
                if self._feeding.is_set():
                    self.push()
                time.sleep(period)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._feeding.clear()

    def resume(self) -> None:
        self._feeding.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)


def config(**kw) -> RealSenseCameraConfig:
    base = dict(serial="123456789", width=W, height=H, fps=FPS, warmup_frames=0, stale_limit_s=0.5,
                timeout_ms=50, startup_timeout_s=1.0, reconnect_after_s=30.0, connect_attempts=1)
    base.update(kw)
    return RealSenseCameraConfig(**base)


@pytest.fixture
def soft():
    cams = []

    def make(**kw):
        cam = SoftwareCamera(**kw)
        cams.append(cam)
        return cam

    yield make
    for cam in cams:
        cam.close()


def test_software_device_frames_and_timestamps_bit_exact(soft):
    sw = soft()
    sw.start_feeding()
    cam = RealSenseCamera(config(warmup_frames=3), "hand", device_source=lambda: sw.device)
    with cam:
        before = time.monotonic()
        last, frames = -1, []
        while len(frames) < 20:
            frame = cam.wait_for_frame(last, timeout=2.0)
            last = frame.sequence
            frames.append(frame)
    assert cam.info["serial"] == "123456789" and cam.info["usb"] == "3.2"
    assert cam.timestamp_domain == "global_time"
    sent_by_seconds = {ts / 1000.0: img for ts, img in sw.sent.items()}
    for frame in frames:
        # The device timestamp is the frame's own (ms -> s), exactly; pixels are the ones sent.
        assert frame.device_time in sent_by_seconds
        np.testing.assert_array_equal(frame.image, sent_by_seconds[frame.device_time])
        assert frame.image.dtype == np.uint8 and frame.image.shape == (H, W, 3)
        assert frame.camera == "hand"
    assert all(b.device_time > a.device_time for a, b in zip(frames, frames[1:]))
    assert all(b.host_time >= a.host_time for a, b in zip(frames, frames[1:]))
    assert frames[-1].host_time >= before
    # Warm-up: the first frames pushed never reached a reader.
    assert min(f.device_time for f in frames) > 1.0
    # The global time domain was switched on where the sensor offers it.
    assert sw.colour_sensor.get_option(rs.option.global_time_enabled) == 1.0


def test_exact_timestamps_of_individually_pushed_frames(soft):
    sw = soft()
    cam = RealSenseCamera(config(startup_timeout_s=2.0), "third", device_source=lambda: sw.device)
    opener = threading.Thread(target=cam.connect)
    opener.start()
    deadline = time.monotonic() + 2.0
    while opener.is_alive() and time.monotonic() < deadline:  # connect waits for the first frame
        sw.push(timestamp_ms=500.0)
        time.sleep(0.01)
    opener.join()
    try:
        seq = cam.read_latest(max_age=None).sequence
        for ts in (123456.789, 123490.123, 123523.457):
            image = sw.push(timestamp_ms=ts)
            frame = cam.wait_for_frame(seq, timeout=2.0)
            seq = frame.sequence
            assert frame.device_time == ts / 1000.0
            np.testing.assert_array_equal(frame.image, image)
    finally:
        cam.disconnect()


def test_stalled_device_gives_stale_frame_error(soft):
    sw = soft()
    sw.start_feeding()
    cam = RealSenseCamera(config(stale_limit_s=0.1), device_source=lambda: sw.device)
    with cam:
        cam.wait_for_frame(-1, timeout=2.0)
        assert cam.read_latest() is not None
        sw.stall()
        time.sleep(0.25)
        with pytest.raises(StaleFrameError, match=r"ms old \(limit 100 ms\)"):
            cam.read_latest()  # the configured stale limit is the default
        with pytest.raises(StaleFrameError):
            cam.read_nearest(time.monotonic())


def test_stall_reopens_the_camera_and_frames_resume(soft, caplog):
    sw = soft()
    sw.start_feeding()
    cam = RealSenseCamera(config(reconnect_after_s=0.2, startup_timeout_s=5.0), device_source=lambda: sw.device)
    with cam:
        first = cam.wait_for_frame(-1, timeout=5.0)
        sw.stall()
        # past reconnect_after_s the capture thread reopens the camera (and says so) and waits for a frame; on a
        # loaded machine it may notice the stall late, so the test waits for it rather than for a fixed time
        deadline = time.monotonic() + 10.0
        while "reopening the camera" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "reopening the camera" in caplog.text
        before = cam.read_latest(max_age=None).sequence  # no frame arrives while stalled: the last one before it
        sw.resume()
        frame = cam.wait_for_frame(before, timeout=5.0)
        deadline = time.monotonic() + 5.0
        while cam.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cam.reconnects >= 1 and cam.is_connected
        assert frame.device_time > first.device_time


def test_stream_that_never_resumes_reports_connection_lost(soft):
    sw = soft()
    sw.start_feeding()
    cam = RealSenseCamera(config(reconnect_after_s=0.1, startup_timeout_s=0.2), device_source=lambda: sw.device)
    with cam:
        cam.wait_for_frame(-1, timeout=2.0)
        sw.stall()
        deadline = time.monotonic() + 3.0
        with pytest.raises(ConnectionLostError, match="could not be reopened"):
            while time.monotonic() < deadline:
                try:
                    cam.read_latest(max_age=None)
                except StaleFrameError:
                    pass
                time.sleep(0.02)


def test_connect_retries_and_resets_before_the_last_attempt(soft, caplog):
    sw = soft()
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("xioctl(VIDIOC_S_FMT) failed: Device or resource busy")
        if calls["n"] == 3:
            sw.start_feeding()  # after the hardware reset the frames come (not on a timer: a loaded machine is late)
        return sw.device

    # Attempt 2 opens the device but no frame comes in time; attempt 3 follows a hardware reset.
    cam = RealSenseCamera(config(connect_attempts=3, startup_timeout_s=0.3), device_source=flaky)
    with caplog.at_level(logging.WARNING, logger="robot_drivers.realsense"):
        with cam:
            assert cam.wait_for_frame(-1, timeout=2.0) is not None
    text = caplog.text
    assert "attempt 1/3 failed: xioctl" in text and "attempt 2/3 failed" in text
    # The software device has no USB to reset: the attempt is made and its failure logged.
    assert "hardware reset before the last connection attempt" in text
    assert calls["n"] == 3


def test_all_attempts_failing_is_a_clear_error(soft):
    sw = soft()  # never fed
    cam = RealSenseCamera(config(connect_attempts=2, startup_timeout_s=0.1), device_source=lambda: sw.device)
    with pytest.raises(ConnectionLostError, match="2 connection attempts failed.*delivered no frame"):
        cam.connect()
    assert not cam.is_connected


NONE_CONNECTED = r"no RealSense camera with serial '000000000042': none connected — check the USB cable.*udev"


def test_unknown_serial_with_no_camera_attached():
    with pytest.raises(DeviceNotFoundError, match=NONE_CONNECTED):
        find_device("000000000042", [])


def test_unknown_serial_through_the_real_context():
    # The path hardware takes: pyrealsense2's own context, whatever is plugged into this machine.
    cam = RealSenseCamera(config(serial="000000000042"), context=rs.context())
    expected = NONE_CONNECTED if not list_devices() else r"serial '000000000042'; connected: .*main.py devices"
    with pytest.raises(DeviceNotFoundError, match=expected):
        cam.connect()
    assert not cam.is_connected


def test_unknown_serial_lists_the_serials_found(soft):
    a, b = soft(serial="111"), soft(serial="222")
    assert find_device("222", [a.device, b.device]) is b.device
    with pytest.raises(DeviceNotFoundError, match=r"serial '333'; connected: 111 \(Intel RealSense D435 "
                                                  r"\(software\)\), 222 .*main.py devices"):
        find_device("333", [a.device, b.device])


def test_unsupported_mode_lists_the_supported_ones(soft):
    sw = soft()
    cam = RealSenseCamera(config(width=1280, height=720, fps=30), device_source=lambda: sw.device)
    with pytest.raises(UnsupportedModeError, match=r"no colour mode 1280x720@30; supported \(nearest first\): 64x48@30"):
        cam.connect()


def test_unsupported_mode_on_usb2_says_to_use_usb3(soft):
    sw = soft(usb="2.1")
    cam = RealSenseCamera(config(fps=60), device_source=lambda: sw.device)
    with pytest.raises(UnsupportedModeError, match=r"USB 2.1 link.*USB 3 port"):
        cam.connect()


def test_hardware_sync_role_is_set(soft):
    sw = soft(sync_option=True)
    sw.start_feeding()
    with RealSenseCamera(config(hw_sync_role="slave"), device_source=lambda: sw.device):
        assert sw.depth_sensor.get_option(rs.option.inter_cam_sync_mode) == 2.0
    plain = soft(serial="999")
    with pytest.raises(UnsupportedModeError, match="no hardware sync"):
        RealSenseCamera(config(serial="999", hw_sync_role="master"), device_source=lambda: plain.device).connect()


def test_depth_aligned_to_colour(soft):
    sw = soft(depth=True)
    sw.start_feeding()
    with RealSenseCamera(config(depth=True), device_source=lambda: sw.device) as cam:
        depth, last = None, -1
        deadline = time.monotonic() + 3.0
        while depth is None and time.monotonic() < deadline:
            frame = cam.wait_for_frame(last, timeout=2.0)
            last = frame.sequence
            depth = cam.depth_for(frame)
    assert depth is not None, "no frame came with its depth"
    assert depth.shape == (H, W) and depth.dtype == np.float32
    # A flat plane at 1000 mm, identity extrinsics: 1.0 m wherever the aligner mapped a pixel.
    valid = depth[depth > 0]
    assert valid.size > 0.8 * depth.size
    np.testing.assert_allclose(valid, 1.0, atol=1e-3)


def record_db3(path, sw: SoftwareCamera, n: int) -> dict[float, np.ndarray]:
    """Write a .db3 with the SDK's recorder, exactly as a recording of a USB camera is written."""
    recorder = rs.recorder(str(path), sw.device)
    sensor = recorder.query_sensors()[0]
    queue = rs.frame_queue(n + 4, True)
    sensor.open(sensor.get_stream_profiles()[0])
    sensor.start(queue)
    for i in range(n):
        sw.push(timestamp_ms=5000.0 + i * 33.25)
        queue.wait_for_frame(1000)
    sensor.stop()
    sensor.close()
    del sensor, recorder
    gc.collect()  # the recorder writes its file when released
    return dict(sw.sent)


def test_recorded_db3_played_back_bit_exact(soft, tmp_path):
    path = tmp_path / "hand.db3"
    sent = record_db3(path, soft(serial="777"), n=12)
    assert path.stat().st_size > 0
    # Found by serial through the same lookup a USB camera goes through (the playback device is in the context).
    ctx = rs.context()
    held = ctx.load_device(str(path))  # the context holds loaded files weakly: keep the device alive
    assert [d["serial"] for d in list_devices(ctx)] == ["777"]
    cam = RealSenseCamera(config(serial="777"), "hand", context=ctx)
    frames = []
    publish = cam._slot.publish  # playback outruns any reader: note every frame the capture thread publishes

    def spy(image, device_time):
        frames.append(publish(image, device_time))
        return frames[-1]

    cam._slot.publish = spy
    with cam:
        cam.wait_for_frame(10, timeout=3.0)
    del held
    # Not in real time: every recorded frame, in order, pixels and timestamps unchanged.
    assert [f.device_time for f in frames] == [ts / 1000.0 for ts in sorted(sent)]
    for frame, ts in zip(frames, sorted(sent)):
        np.testing.assert_array_equal(frame.image, sent[ts])


def test_playback_file_in_config(soft, tmp_path):
    path = tmp_path / "third.db3"
    sent = record_db3(path, soft(serial="778"), n=4)
    cam = RealSenseCamera(RealSenseCameraConfig(playback_file=str(path), width=W, height=H, fps=FPS, warmup_frames=1,
                                                timeout_ms=50, connect_attempts=1))
    with cam:
        frame = cam.wait_for_frame(1, timeout=2.0)  # 4 recorded, 1 for the warm-up: 3 published
    assert cam.serial == "778" and frame.sequence == 2
    assert frame.device_time == max(sent) / 1000.0
    np.testing.assert_array_equal(frame.image, sent[max(sent)])


def test_config_validation():
    with pytest.raises(ValueError, match="serial number"):
        RealSenseCameraConfig(serial="")
    with pytest.raises(ValueError, match="hw_sync_role must be one of"):
        RealSenseCameraConfig(serial="1", hw_sync_role="leader")
    with pytest.raises(ValueError, match="fps must be positive"):
        RealSenseCameraConfig(serial="1", fps=0)


class OffTheBus:
    """The device source while the camera re-enumerates: not found until ``back()``."""

    def __init__(self, device):
        self.device, self.present = device, True

    def __call__(self):
        if not self.present:
            raise DeviceNotFoundError("no RealSense camera with serial '123456789': none connected")
        return self.device

    def back(self):
        self.present = True


def test_stall_recovery_waits_for_the_camera_to_come_back(soft):
    sw = soft()
    sw.start_feeding()
    source = OffTheBus(sw.device)
    cam = RealSenseCamera(config(reconnect_after_s=0.2, startup_timeout_s=2.0, reset_wait_s=5.0),
                          device_source=source)
    with cam:
        first = cam.wait_for_frame(-1, timeout=2.0)
        sw.stall()
        source.present = False  # it dropped off the bus: reopening finds nothing for a while
        time.sleep(0.8)
        source.back()
        sw.resume()
        frame = cam.wait_for_frame(first.sequence, timeout=5.0)
        assert cam.reconnects >= 1 and frame.device_time > first.device_time


def test_disconnect_ends_a_recovery_in_progress(soft):
    sw = soft()
    sw.start_feeding()
    source = OffTheBus(sw.device)
    cam = RealSenseCamera(config(reconnect_after_s=0.1, reset_wait_s=60.0), device_source=source)
    cam.connect()
    cam.wait_for_frame(-1, timeout=2.0)
    sw.stall()
    source.present = False
    time.sleep(0.5)  # the capture thread is now waiting for the camera to come back
    capture = cam._thread
    start = time.monotonic()
    cam.disconnect()
    assert time.monotonic() - start < 2.0 and not capture.alive  # it gave up at once, not after reset_wait_s
