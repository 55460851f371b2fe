"""Data integrity: sign-continuous quaternions everywhere they are stored, exported or fed to the policy;
episode indices never reused after a deletion; episode fingerprints for policies."""

import json
import shutil
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from policy.config import PolicyConfig
from policy.data import load_frames
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder
from policy.policy import ALTPolicy, check_source_episode
from recorder.dataset import (META_FILE, NEXT_INDEX_FILE, STEPS_FILE, CameraSpec, Dataset, DatasetError,
                              DatasetSpec, StepRecord)
from lerobot_bridge.export import export_lerobot
from robot_drivers.safety import SafetyConfig, clip_action
from core.transforms import (euler_to_quat, quat_angle, quat_nearest, rotvec_to_quat, sign_continuous,
                                      sign_continuous_poses)
from core.types import Action, Frame, Pose

from recording_helpers import record_sim

JUMP = 0.5  # a sign flip jumps by 2.0; one tick of real motion moves a quaternion by < 0.1


def jumps(rows: np.ndarray) -> int:
    """Ticks where the quaternion of flat pose rows (x y z qx qy qz qw ...) jumps by more than JUMP."""
    q = np.asarray(rows, np.float64)[:, 3:7]
    return int(np.sum(np.linalg.norm(np.diff(q, axis=0), axis=1) > JUMP))


def raw_steps(dataset: Dataset, index: int) -> dict:
    with np.load(dataset.episode(index).path / STEPS_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- the helpers
def random_path(rng, n=200, seam=True):
    """Gripper-down orientations wandering across the w = 0 seam, each with a random sign."""
    yaw = np.cumsum(rng.normal(0, 0.05, n))
    tilt = np.cumsum(rng.normal(0, 0.02, n)) if seam else np.zeros(n)
    q = np.stack([euler_to_quat(np.pi + t, 0.0, y) for t, y in zip(tilt, yaw)])
    return q * rng.choice([-1.0, 1.0], size=(n, 1))


def test_sign_continuous_removes_every_flip_and_keeps_the_rotations():
    rng = np.random.default_rng(0)
    q = random_path(rng)
    assert np.sum(np.linalg.norm(np.diff(q, axis=0), axis=1) > JUMP) > 50  # the input does flip
    out = sign_continuous(q)
    assert np.all(np.linalg.norm(np.diff(out, axis=0), axis=1) < JUMP)
    np.testing.assert_allclose(np.abs(np.sum(out * q, axis=1)), 1.0)  # each row is +-q: the same rotation
    np.testing.assert_array_equal(out[0], q[0])  # no reference: the first sign is kept
    np.testing.assert_array_equal(sign_continuous(out), out)  # idempotent
    ref = -out[0]
    with_ref = sign_continuous(q, reference=ref)
    np.testing.assert_array_equal(with_ref, -out)  # the whole path moves to the reference's hemisphere
    assert quat_nearest(q[0], ref) @ ref >= 0 and np.array_equal(np.abs(quat_nearest(q[0], ref)), np.abs(q[0]))


def test_sign_continuous_works_on_batches_of_paths_and_pose_rows():
    rng = np.random.default_rng(1)
    paths = np.stack([random_path(rng, 30) for _ in range(5)])  # [5, 30, 4]
    out = sign_continuous(paths)
    for one, path in zip(out, paths):
        np.testing.assert_array_equal(one, sign_continuous(path))
    rows = np.concatenate([rng.normal(size=(30, 3)), paths[0], rng.uniform(size=(30, 1))], axis=1).astype(np.float32)
    fixed = sign_continuous_poses(rows)
    assert fixed.dtype == np.float32 and jumps(rows) > 0 and jumps(fixed) == 0
    np.testing.assert_array_equal(fixed[:, :3], rows[:, :3])
    np.testing.assert_array_equal(fixed[:, 7], rows[:, 7])
    assert sign_continuous(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[..., T, 4\]"):
        sign_continuous(np.zeros(4))


def test_safety_clipping_treats_q_and_minus_q_as_one_rotation():
    """The gripper-down pose sits on the w = 0 seam: two poses 0.05 rad apart can come out with opposite signs."""
    config = SafetyConfig(max_rotation_per_tick=0.1)
    reference = Pose([0.45, 0.0, 0.3], rotvec_to_quat([np.pi - 0.02, 0.0, 0.0]))
    near = Action(Pose([0.45, 0.0, 0.3], rotvec_to_quat([np.pi + 0.03, 0.0, 0.0])), 1.0)
    assert np.dot(reference.orientation, near.pose.orientation) < -0.99  # stored with opposite signs
    sent = clip_action(near, reference, config)
    assert quat_angle(reference.orientation, near.pose.orientation) == pytest.approx(0.05, abs=1e-9)
    assert quat_angle(sent.pose.orientation, near.pose.orientation) < 1e-6  # not clipped: 0.05 < 0.1 rad
    far = Action(Pose([0.45, 0.0, 0.3], rotvec_to_quat([np.pi + 0.48, 0.0, 0.0])), 1.0)
    assert np.dot(reference.orientation, far.pose.orientation) < 0
    sent = clip_action(far, reference, config)
    assert quat_angle(reference.orientation, sent.pose.orientation) == pytest.approx(0.1, abs=1e-6)
    assert quat_angle(sent.pose.orientation, far.pose.orientation) == pytest.approx(0.4, abs=1e-6)  # on the way


# --------------------------------------------------------------------------- stored, reloaded, exported
@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """Two scripted sim episodes recorded as they are now, with what the arm reported and the loop sent."""
    root = tmp_path_factory.mktemp("integrity") / "ds"
    seen = []
    record_sim(root, 2, on_event=lambda e: e.phase == "recording" and seen.append(e))
    return root, seen


def test_a_scripted_episode_is_continuous_when_stored_reloaded_and_exported(scripted, tmp_path):
    root, seen = scripted
    # What the arm reports and the safety layer sends does flip (w >= 0 on the gripper-down seam) ...
    states = np.stack([e.record.observation.state.ee_array() for e in seen])
    sent = np.stack([e.record.sent.as_array() for e in seen])
    assert jumps(states) > 0 and jumps(sent) > 0
    # ... what is stored, reloaded and exported does not.
    with Dataset.open(root) as ds:
        indices = ds.episode_indices()
        for i in indices:
            raw = raw_steps(ds, i)
            loaded = ds.load_episode(i).arrays
            for key in ("state", "action", "requested"):
                assert jumps(raw[key]) == 0 and jumps(loaded[key]) == 0, (i, key)
                np.testing.assert_array_equal(raw[key], loaded[key])
            assert np.dot(raw["state"][0, 3:7], raw["action"][0, 3:7]) > 0  # state and action agree in sign
    export_lerobot(root, tmp_path / "lerobot")
    data = pq.read_table(tmp_path / "lerobot/data/chunk-000/file-000.parquet").to_pydict()
    episode = np.asarray(data["episode_index"])
    assert sorted(set(episode)) == list(range(len(indices)))
    firsts = []
    for e in range(len(indices)):
        state = np.asarray(data["observation.state"])[episode == e]
        action = np.asarray(data["action"])[episode == e]
        assert jumps(state) == 0 and jumps(action) == 0
        firsts.append(state[0, 3:7])
    assert all(np.dot(firsts[0], f) > 0 for f in firsts)  # all episodes in one hemisphere


def _write_old_format_episode(ds: Dataset, index: int) -> dict:
    """Rewrite an episode as a recorder without continuity would have: quaternions with w >= 0 (flipping
    wherever w crosses 0) plus deliberate extra flips, and meta.json's sizes and CRCs to match."""
    path = ds.episode(index).path
    arrays = raw_steps(ds, index)
    for key in ("state", "action", "requested"):
        rows = arrays[key].copy()
        q = rows[:, 3:7]
        q[q[:, 3] < 0] *= -1  # the old canonical sign
        q[::3] *= -1  # and flips on purpose, so the test does not depend on where the seam lies
        rows[:, 3:7] = q
        arrays[key] = rows
    with open(path / STEPS_FILE, "wb") as f:
        np.savez(f, **arrays)
    meta = json.loads((path / META_FILE).read_text())
    data = (path / STEPS_FILE).read_bytes()
    meta["files"][STEPS_FILE] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    (path / META_FILE).write_text(json.dumps(meta, indent=1))
    return arrays


def test_an_old_format_dataset_with_flips_loads_and_exports_without_them(scripted, tmp_path):
    root = tmp_path / "old"
    shutil.copytree(scripted[0], root)
    with Dataset.open(root) as ds:
        indices = ds.episode_indices()
        old = {i: _write_old_format_episode(ds, i) for i in indices}
    with Dataset.open(root) as ds:
        for i in indices:
            ds.verify(i)  # a valid episode as far as its own checksums go
            assert jumps(old[i]["state"]) > 5 and jumps(old[i]["action"]) > 5
            loaded = ds.load_episode(i).arrays
            for key in ("state", "action", "requested"):
                assert jumps(loaded[key]) == 0, (i, key)
                np.testing.assert_allclose(np.abs(np.sum(loaded[key][:, 3:7] * old[i][key][:, 3:7], 1)), 1, atol=1e-6)
                np.testing.assert_array_equal(loaded[key][:, :3], old[i][key][:, :3])
            np.testing.assert_array_equal(raw_steps(ds, i)["state"], old[i]["state"])  # the file is not rewritten
        stats = ds.stats()
    export_lerobot(root, tmp_path / "lerobot")
    data = pq.read_table(tmp_path / "lerobot/data/chunk-000/file-000.parquet").to_pydict()
    episode = np.asarray(data["episode_index"])
    for e in range(len(indices)):
        assert jumps(np.asarray(data["observation.state"])[episode == e]) == 0
        assert jumps(np.asarray(data["action"])[episode == e]) == 0
    assert stats["state"]["count"] == len(episode)


# --------------------------------------------------------------------------- the policy's inputs
def test_policy_chunks_and_pose_inputs_are_continuous(scripted, tmp_path):
    root = tmp_path / "old"
    shutil.copytree(scripted[0], root)
    with Dataset.open(root) as ds:
        for i in ds.episode_indices():
            _write_old_format_episode(ds, i)
    config = PolicyConfig(image_width=32, image_height=32, chunk_length=5, pretrained="none", use_pose=True)
    with Dataset.open(root) as ds:
        table = load_frames(ds, config)
    pose = table.pose.numpy()
    for e in np.unique(table.episode):
        assert jumps(pose[table.episode == e]) == 0
        assert jumps(table.actions[int(e)]) == 0
    assert np.all(pose[:, 3:7] @ table.pose_reference > 0)  # every training pose in the reference's hemisphere
    # a database from before the fix: chunks with flips inside are made continuous when it is built / loaded
    chunks = np.stack([old_rows[:5] for old_rows in [np.asarray(table.actions[int(e)]) for e in table.actions]])
    chunks[:, 1::2, 3:7] *= -1
    assert all(jumps(c) > 0 for c in chunks)
    db = LookupDatabase(np.eye(len(chunks), 8, dtype=np.float32), np.arange(len(chunks)), np.zeros(len(chunks)),
                        chunks)
    assert all(jumps(c) == 0 for c in db.chunks)
    # run time: q and -q of the measured pose are one input to the encoder
    torch.manual_seed(0)
    encoder = ALTEncoder(config, pretrained="none")
    policy = ALTPolicy(config, encoder, db, info={"pose_reference": table.pose_reference.tolist()})
    rng = np.random.default_rng(0)
    hand, third = (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    measured = pose[3].copy()
    flipped = measured.copy()
    flipped[3:7] *= -1
    np.testing.assert_array_equal(policy.pose_input(measured), policy.pose_input(flipped))
    np.testing.assert_allclose(policy.embed(hand, third, measured), policy.embed(hand, third, flipped), atol=1e-6)
    assert policy.pose_input(flipped)[3:7] @ table.pose_reference > 0
    legacy = ALTPolicy(config, encoder, db, info={})  # built before the reference was kept: pose as it is
    np.testing.assert_array_equal(legacy.pose_input(flipped), flipped)


# --------------------------------------------------------------------------- episode indices
def _spec() -> DatasetSpec:
    return DatasetSpec(fps=10.0, cameras=(CameraSpec("cam", 8, 8),), robot="synthetic", joint_count=2)


def _keep_episode(ds: Dataset, steps: int = 3, value: float = 0.0) -> int:
    writer = ds.new_episode("task")
    for k in range(steps):
        vec = np.array([0.4, 0, 0.3, 1, 0, 0, 0, value], np.float32)
        writer.add(StepRecord(tick=k, t_scheduled=k / 10, t_actual=k / 10, state=vec, joints=np.zeros(2, np.float32),
                              action=vec, requested=vec,
                              frames={"cam": Frame(np.full((8, 8, 3), k, np.uint8), k / 10, k / 10, k, "cam")}))
    return writer.keep().index


def test_deleting_the_last_episode_never_frees_its_index(tmp_path):
    with Dataset.create(tmp_path / "ds", _spec()) as ds:
        assert [_keep_episode(ds) for _ in range(3)] == [0, 1, 2]
        ds.delete_episode(2)
        assert ds.next_index() == 3
        assert _keep_episode(ds) == 3
        ds.delete_episode(3)
        ds.delete_episode(1)
    with Dataset.open(tmp_path / "ds", writable=True) as ds:  # survives reopening
        assert ds.episode_indices() == [0] and ds.next_index() == 4
        assert _keep_episode(ds) == 4
        # an episode being recorded, and one interrupted, count; deleting them still does not free the index
        writer = ds.new_episode("task")
        assert writer.index == 5 and ds.next_index() == 6
        ds.delete_interrupted()
        assert ds.next_index() == 6
    assert json.loads((tmp_path / "ds" / NEXT_INDEX_FILE).read_text()) == {"next_index": 6}


def test_half_deleted_episodes_count_and_a_corrupt_counter_is_named(tmp_path):
    with Dataset.create(tmp_path / "ds", _spec()) as ds:
        _keep_episode(ds)
        _keep_episode(ds)
        # a crash between the rename to .deleting- and the removal (a dataset written before the counter)
        (ds.episodes_dir / "episode-000001").rename(ds.episodes_dir / ".deleting-episode-000001")
        assert ds.episode_indices() == [0] and ds.next_index() == 2
        ds.delete_interrupted()
        assert ds.next_index() == 2
        (tmp_path / "ds" / NEXT_INDEX_FILE).write_text('{"next_index": -1}')
        with pytest.raises(DatasetError, match=f"{NEXT_INDEX_FILE}: 'next_index' must be a non-negative integer"):
            ds.next_index()


# --------------------------------------------------------------------------- fingerprints
def test_fingerprint_changes_with_the_episode_not_with_reading_it(tmp_path):
    with Dataset.create(tmp_path / "ds", _spec()) as ds:
        _keep_episode(ds, value=0.5)
        _keep_episode(ds, value=0.5)
        first = {i: ds.episode_fingerprint(i) for i in (0, 1)}
        assert first[0] != first[1] and all(f.startswith("sha256:") for f in first.values())
        ds.load_episode(0), ds.frame(0, "cam", 1), ds.verify(0)
        assert ds.episode_fingerprint(0) == first[0]
        policy_view = {str(i): f for i, f in first.items()}
        assert check_source_episode(policy_view, ds, 0).verified
        # the episode's files change (same size: only the content differs)
        steps = ds.episode(0).path / STEPS_FILE
        data = bytearray(steps.read_bytes())
        data[-30] ^= 0xFF
        steps.write_bytes(bytes(data))
        assert ds.episode_fingerprint(0) != first[0]
        check = check_source_episode(policy_view, ds, 0)
        assert not check.show and "episode 0" in check.message and "changed since" in check.message
        # deleted, then recorded again under the same index (by hand, behind the dataset's back)
        shutil.rmtree(ds.episode(1).path)
        check = check_source_episode(policy_view, ds, 1)
        assert not check.show and "deleted" in check.message
        assert _keep_episode(ds, value=0.5) == 1
        assert ds.episode_fingerprint(1) != first[1]
        assert not check_source_episode(policy_view, ds, 1).show
        assert not check_source_episode(policy_view, ds, 7).show  # not an episode the policy knows
        legacy = check_source_episode(None, ds, 1)  # a policy from before fingerprints: shown, flagged
        assert legacy.show and not legacy.verified and "cannot be checked" in legacy.message


def test_a_policy_records_the_fingerprints_of_its_episodes(scripted):
    root, _ = scripted
    with Dataset.open(root) as ds:
        table = load_frames(ds, PolicyConfig(image_width=32, image_height=32, pretrained="none"))
        assert table.fingerprints == {i: ds.episode_fingerprint(i) for i in ds.episode_indices()}
