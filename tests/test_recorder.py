"""Recording: round trip, crash safety, corrupt files, resume checks, lost cameras, full disk."""

import json
import os
import signal
import subprocess
import threading
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.dataset import (CameraSpec, Dataset, DatasetError, DatasetLockedError, DatasetMismatchError,
                              DatasetSpec)
from recorder.session import RecorderConfig, RecordingSession, spec_for_rig
from core.clock import RealTimeClock
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm
from robot_drivers.teleop import Button, Teleop
from core.types import TeleopCommand

from recording_helpers import fill_disk_on_new_episodes, record_sim

ROOT = Path(__file__).resolve().parents[1]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def assert_same_poses(stored, seen):
    """Positions and grippers exactly as seen; quaternions the same rotations (q or -q: the sign is the store's)."""
    np.testing.assert_array_equal(stored[:, :3], seen[:, :3])
    np.testing.assert_array_equal(stored[:, 7:], seen[:, 7:])
    np.testing.assert_allclose(np.abs(stored[:, 3:7]), np.abs(seen[:, 3:7]), rtol=0, atol=0)
    np.testing.assert_allclose(np.abs(np.sum(stored[:, 3:7] * seen[:, 3:7], axis=1)), 1.0, atol=1e-6)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_sim_episode_round_trips(tmp_path, codec):
    events = []
    [info] = record_sim(tmp_path / "ds", 1, image_size=48, codec=codec,
                        on_event=lambda e: e.phase == "recording" and events.append(e))
    with Dataset.open(tmp_path / "ds") as ds:
        assert ds.episode_indices() == [info.index] and ds.interrupted() == []
        ep = ds.load_episode(info.index)
        assert ep.info.length == len(events) == len(ep.actions) > 20
        assert_same_poses(ep.actions, np.stack([e.record.sent.as_array() for e in events]))
        assert_same_poses(ep.states, np.stack([e.record.observation.state.ee_array() for e in events]))
        assert np.all(np.diff(ep.timestamps) > 0) and np.all(np.diff(ep.arrays["hand.host_time"]) > 0)
        assert np.all(np.diff(ep.arrays["hand.sequence"]) == 1)
        for i in (0, len(events) // 2, len(events) - 1):
            for cam in ("hand", "third"):
                stored = ds.frame(info.index, cam, i)
                seen = events[i].record.observation.frames[cam].image
                if codec == "png":
                    assert np.array_equal(stored, seen)  # lossless
                else:
                    assert psnr(stored, seen) >= 30.0  # JPEG quality 90
        ds.verify(info.index)
        assert ep.info.stats["late_ticks"] == 0 and ep.info.stats["rate_held"]
        assert ep.info.end_reason == "stop_button"
        stats = ds.stats()
        assert stats["action"]["count"] == ep.info.length


def test_kill_9_mid_episode_loses_only_that_episode(tmp_path):
    out = tmp_path / "ds"
    episodes_dir = out / "episodes"
    cmd = [sys.executable, "main.py", "record", "--episodes", "40", "--camera-size", "32", "--out", str(out)]
    for kills, kill_after_kept in enumerate((1, 2, 4), start=1):
        already = len(list(episodes_dir.glob("episode-*"))) if episodes_dir.exists() else 0
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                kept = len(list(episodes_dir.glob("episode-*"))) if episodes_dir.exists() else 0
                partial = list(episodes_dir.glob(".partial-*")) if episodes_dir.exists() else []
                if kept >= already + kill_after_kept and partial and any(p.iterdir() for p in partial):
                    break
                time.sleep(0.02)
            else:
                pytest.fail("recording did not progress")
            time.sleep(0.3)  # well into the next episode
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with Dataset.open(out) as ds:
            indices = ds.episode_indices()
            assert len(indices) >= already + kill_after_kept
            for i in indices:
                ds.verify(i)  # every kept episode is complete and intact
                assert ds.load_episode(i).info.length > 0
            interrupted = ds.interrupted()
            assert 1 <= len(interrupted) <= kills  # at most one per crash, and this one landed mid-episode
    with Dataset.open(out, writable=True) as ds:
        assert ds.interrupted(), "at least one kill landed mid-episode"
        ds.delete_interrupted()
        assert ds.interrupted() == []
    info = subprocess.run([sys.executable, "main.py", "dataset", "info", str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    assert info.returncode == 0 and "total:" in info.stdout


def test_interrupted_episode_is_reported_and_indices_move_on(tmp_path):
    record_sim(tmp_path / "ds", 1)
    with Dataset.open(tmp_path / "ds", writable=True) as ds:
        writer = ds.new_episode("grasp")
        partial = writer.dir  # simulate a crash: the writer never keeps nor discards
        assert ds.interrupted() == [partial]
        assert ds.next_index() == writer.index + 1
    out = subprocess.run([sys.executable, "main.py", "dataset", "info", str(tmp_path / "ds")], cwd=ROOT,
                         capture_output=True, text=True)
    assert "interrupted: .partial-episode-000001" in out.stdout


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    kept = record_sim(tmp_path / "ds", 3)
    a, b, c = (k.index for k in kept)
    ep_dir = lambda i: tmp_path / "ds" / "episodes" / f"episode-{i:06d}"  # noqa: E731
    pack = ep_dir(a) / "hand.pack"
    pack.write_bytes(pack.read_bytes()[:-100])
    (ep_dir(b) / "meta.json").write_text('{"index": 1, "task": ')
    steps = ep_dir(c) / "steps.npz"
    data = bytearray(steps.read_bytes())
    data[100:200] = b"\x00" * 100
    steps.write_bytes(bytes(data))
    with Dataset.open(tmp_path / "ds") as ds:
        with pytest.raises(DatasetError, match=r"hand\.pack is truncated or altered"):
            ds.load_episode(a)
        with pytest.raises(DatasetError, match=r"meta\.json is corrupt or truncated"):
            ds.episode(b)
        with pytest.raises(DatasetError, match=r"steps\.npz is corrupt"):
            ds.verify(c)
    with pytest.raises(DatasetError, match="format version 99"):
        header = json.loads((tmp_path / "ds" / "dataset.json").read_text())
        header["format_version"] = 99
        (tmp_path / "ds" / "dataset.json").write_text(json.dumps(header))
        Dataset.open(tmp_path / "ds")
    out = subprocess.run([sys.executable, "main.py", "dataset", "info", str(tmp_path / "ds")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_corrupt_frame_bytes_name_the_file_and_frame(tmp_path):
    [info] = record_sim(tmp_path / "ds", 1, codec="png")
    with Dataset.open(tmp_path / "ds") as ds:
        arrays = ds.load_episode(info.index).arrays
        off = int(arrays["third.offset"][5])
    pack = tmp_path / "ds" / "episodes" / f"episode-{info.index:06d}" / "third.pack"
    data = bytearray(pack.read_bytes())
    data[off:off + 64] = b"\xff" * 64
    pack.write_bytes(bytes(data))
    with Dataset.open(tmp_path / "ds") as ds:
        with pytest.raises(DatasetError, match=r"third\.pack frame 5: the image bytes do not decode"):
            ds.frame(info.index, "third", 5)
        ds.frame(info.index, "third", 6)  # its neighbours are unaffected


def test_resume_with_mismatched_settings_is_refused(tmp_path):
    spec = DatasetSpec(fps=10.0, cameras=(CameraSpec("hand", 48, 48), CameraSpec("third", 48, 48)), robot="sim-panda",
                       joint_count=9)
    Dataset.create(tmp_path / "ds", spec).close()
    cases = {
        "camera 'hand' image size: dataset 48x48, rig 64x64":
            DatasetSpec(10.0, (CameraSpec("hand", 64, 64), CameraSpec("third", 48, 48)), "sim-panda", 9),
        "control rate: dataset 10 Hz, rig 30 Hz": DatasetSpec(30.0, spec.cameras, "sim-panda", 9),
        "cameras: dataset has ['hand', 'third'], rig has ['hand']":
            DatasetSpec(10.0, (CameraSpec("hand", 48, 48),), "sim-panda", 9),
        "action layout": DatasetSpec(10.0, spec.cameras, "sim-panda", 9, action_names=("a",) * 8),
    }
    for message, other in cases.items():
        with pytest.raises(DatasetMismatchError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Dataset.open_or_create(tmp_path / "ds", other)
    Dataset.open_or_create(tmp_path / "ds", spec).close()  # the same settings append fine
    out = subprocess.run([sys.executable, "main.py", "record", "--episodes", "1", "--camera-size", "32", "--out",
                          str(tmp_path / "ds")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "error: cannot append" in out.stderr and "48x48, rig 32x32" in out.stderr


def test_second_writer_is_refused(tmp_path):
    spec = DatasetSpec(10.0, (CameraSpec("hand", 8, 8),), "x", 0)
    with Dataset.create(tmp_path / "ds", spec):
        with pytest.raises(DatasetLockedError, match="another process"):
            Dataset.open(tmp_path / "ds", writable=True)
        Dataset.open(tmp_path / "ds").close()  # readers are welcome


def test_unwritable_destination_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = DatasetSpec(10.0, (CameraSpec("hand", 8, 8),), "x", 0)
    with pytest.raises(DatasetError, match=str(blocker / "ds")):
        Dataset.create(blocker / "ds", spec)


class PushTeleop(Teleop):
    def __init__(self, stop_at=None):
        self.polls, self.stop_at = 0, stop_at

    def get_command(self, state, dt):
        self.polls += 1
        buttons = frozenset({Button.STOP}) if self.polls == self.stop_at else frozenset()
        return TeleopCommand(linear_velocity=np.array([0.0, 0.02, 0.0]), buttons=buttons)


def fake_rig():
    return Rig(arm=SafeArm(KinematicArm()), cameras={"a": SyntheticCamera("a", 32, 24, fps=60.0),
                                                      "b": SyntheticCamera("b", 32, 24, fps=60.0, seed=1)},
               clock=RealTimeClock(30.0))


def test_camera_that_stops_mid_episode_ends_it_cleanly(tmp_path):
    rig = fake_rig()
    events = []
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        with Dataset.create(tmp_path / "ds", spec_for_rig(rig)) as ds:
            def on_event(e):
                events.append(e)
                if e.steps == 15:
                    rig.cameras["b"].unplug()

            session = RecordingSession(rig, ds, PushTeleop(), RecorderConfig(max_episode_s=10), on_event=on_event)
            outcome = session.record_episode()
            assert rig.arm.stopped
            assert outcome.reason == "camera_lost" and "unplugged" in str(outcome.error)
            assert outcome.kept is not None and outcome.kept.end_reason == "camera_lost"
            assert 15 <= outcome.kept.length <= 25
            ds.verify(outcome.kept.index)
            assert ds.interrupted() == []


def test_full_disk_ends_the_episode_and_keeps_earlier_ones(tmp_path):
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        with Dataset.create(tmp_path / "ds", spec_for_rig(rig, codec="png")) as ds:
            session = RecordingSession(rig, ds, PushTeleop(stop_at=10), RecorderConfig(max_episode_s=10))
            first = session.record_episode()
            assert first.kept is not None
            rig.arm.release()
            # The disk fills up during the second episode: its pack file starts failing with ENOSPC.
            fill_disk_on_new_episodes(ds, "a")
            session.teleop = PushTeleop(stop_at=None)
            second = session.record_episode()
            assert second.kept is None and second.reason == "write_error"
            assert "the disk is full" in str(second.error)
            assert ds.episode_indices() == [first.kept.index]
            ds.verify(first.kept.index)


class ButtonTeleop(Teleop):
    """Presses the given buttons at the given polls (counted across phases)."""

    def __init__(self, presses):
        self.presses, self.polls = dict(presses), 0

    def get_command(self, state, dt):
        self.polls += 1
        button = self.presses.get(self.polls)
        return TeleopCommand(buttons=frozenset({button}) if button else frozenset())


def test_reset_phase_writes_nothing_and_buttons_drive_the_episode(tmp_path):
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        with Dataset.create(tmp_path / "ds", spec_for_rig(rig)) as ds:
            teleop = ButtonTeleop({5: Button.START, 12: Button.RERECORD, 20: Button.START, 30: Button.STOP})
            session = RecordingSession(rig, ds, teleop, RecorderConfig(max_episode_s=10))
            assert session.run_reset_phase() == "start_button"
            assert ds.episode_indices() == [] and ds.interrupted() == []
            first = session.record_episode(note="wobbly")
            assert first.discarded and first.reason == "rerecord" and ds.interrupted() == []
            assert session.run_reset_phase() == "start_button"
            second = session.record_episode(note="clean")
            assert second.kept is not None and second.kept.length == 10 and second.kept.note == "clean"
            # The GUI presses buttons through request(); they act at the next tick.
            session.teleop = ButtonTeleop({})
            threading.Timer(0.2, session.request, args=(Button.DISCARD,)).start()
            third = session.record_episode()
            assert third.discarded and third.reason == "discard"
            assert ds.episode_indices() == [second.kept.index]


class SlowTeleop(Teleop):
    def get_command(self, state, dt):
        time.sleep(0.05)  # an operator device that takes longer than a 30 Hz tick
        return TeleopCommand()


def test_a_rate_that_cannot_be_held_is_reported_not_stamped(tmp_path):
    rig = fake_rig()
    warnings = []
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        with Dataset.create(tmp_path / "ds", spec_for_rig(rig)) as ds:
            session = RecordingSession(rig, ds, SlowTeleop(), RecorderConfig(max_episode_s=1.0),
                                       on_event=lambda e: e.warning and warnings.append(e.warning))
            outcome = session.record_episode()
    stats = outcome.kept.stats
    assert not stats["rate_held"] and stats["skipped_ticks"] > 0
    assert stats["achieved_rate_hz"] < 25
    assert warnings and "cannot hold 30 Hz" in warnings[0]
    with Dataset.open(tmp_path / "ds") as ds:
        t = ds.load_episode(outcome.kept.index).timestamps
        assert np.median(np.diff(t)) > 1 / 25  # the stored times are the real ones


def test_dropped_and_repeated_frames_are_counted():
    from recorder.session import TimingStats
    from core.clock import TickTiming
    from robot_drivers.control import StepOutput, TickRecord
    from robot_drivers.rig import Observation
    from core.types import Frame

    stats = TimingStats(fps=10.0, cameras={"c": 30.0})
    # (sequence, device time): normal, repeated, 2 frames lost (0.1 s passed but only one frame delivered)
    for i, (seq, dev) in enumerate([(0, 0.0), (3, 0.1), (3, 0.1), (4, 0.2), (7, 0.3)]):
        frame = Frame(np.zeros((2, 2, 3), np.uint8), dev, 10.0 + i * 0.1, seq, "c")
        record = TickRecord(TickTiming(i, i * 0.1, i * 0.1, False, 0), Observation(None, {"c": frame}),
                            StepOutput(None), None)
        stats.update(record, window=30)
    assert stats.repeated_frames == {"c": 1}
    assert stats.dropped_frames == {"c": 2}


@pytest.mark.parametrize("end_reason, extra, complete, correction", [
    ("stop_button", {}, True, False),
    ("stop_button", {"intervention": {"run": "abc", "halt_reason": "ood"}}, True, True),
    ("camera_lost", {}, False, False),
    ("max_ticks", {}, False, False),
    ("ended_by_home", {}, False, False),
    ("estop", {"intervention": {"run": None}}, False, True),
])
def test_only_complete_episodes_that_are_not_corrections_count_as_demonstrations(end_reason, extra, complete,
                                                                                  correction):
    from recorder.dataset import EpisodeInfo

    info = EpisodeInfo(0, Path("x"), 10, 1.0, "task", "", "2026-01-01T00:00:00Z", end_reason, {}, extra, 0)
    assert info.is_complete == complete and info.is_correction == correction
    assert info.is_demonstration == (complete and not correction)
