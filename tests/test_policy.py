"""The ALT policy: loss, training, database, artefact, OOD gate, cancellation."""

import json
import math
import shutil
import threading

import numpy as np
import pytest
import torch

from policy.artifact import PolicyArtifactError
from policy.augment import augment
from policy.augment import pasted_patches as augment_patches
from policy.augment import shadows as augment_shadows
from policy.config import PolicyConfig
from policy.data import action_chunks, load_frames, resume_index
from policy.database import LookupDatabase, probe_queries
from policy.encoder import nt_xent
from policy.policy import ALTPolicy
from policy.runner import run_autonomous
from policy.train import TrainingCancelled, embed_table, train_encoder
from recorder.dataset import Dataset
from core.clock import RealTimeClock
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm

from recording_helpers import record_sim

TINY = PolicyConfig(image_width=32, image_height=32, batch_size=16, epochs=12, frame_stride=1, learning_rate=1e-3,
                    chunk_length=5, pretrained="none", annoy_trees=4)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy") / "ds"
    record_sim(out, 2, image_size=32)
    return out


@pytest.fixture(scope="module")
def table(dataset_dir):
    with Dataset.open(dataset_dir) as ds:
        return load_frames(ds, TINY)


@pytest.fixture(scope="module")
def policy(dataset_dir):
    with Dataset.open(dataset_dir) as ds:
        return ALTPolicy.build(ds, TINY.with_overrides(epochs=1))


def test_nt_xent_matches_a_hand_computed_value():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    t = 0.5
    z = torch.cat([z1, z2])
    total = 0.0
    for i, pos in enumerate([2, 3, 0, 1]):  # by hand: -log(exp(s_ip/t) / sum_{k != i} exp(s_ik/t))
        s = [float(z[i] @ z[k]) / t for k in range(4)]
        denom = sum(math.exp(s[k]) for k in range(4) if k != i)
        total += -math.log(math.exp(s[pos]) / denom)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(total / 4, rel=1e-6)


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    x = torch.randint(0, 256, (4, 24, 32, 3), dtype=torch.uint8)
    a = augment(x, (0.2, 0.2, 0.2, 0.05), (0.9, 1.0), torch.Generator().manual_seed(0))
    b = augment(x, (0.2, 0.2, 0.2, 0.05), (0.9, 1.0), torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 24, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    plain = x.permute(0, 3, 1, 2).float() / 255
    assert float((a - plain).abs().mean()) > 0.01  # it really changed the images


def test_shadows_and_pasted_patches_change_only_what_they_say():
    x = torch.full((6, 3, 32, 32), 0.5)
    x[:, 0] = torch.linspace(0, 1, 32)  # images that differ from each other
    gen = torch.Generator().manual_seed(1)
    dark = augment_shadows(x, 1.0, gen)
    assert bool((dark <= x + 1e-6).all())  # a shadow only darkens
    darkened = (x - dark).flatten(1).amax(1)
    assert bool((darkened > 0.1).all())  # every image got one (probability 1)
    assert torch.equal(augment_shadows(x, 0.0, gen), x)
    pasted = augment_patches(x, 1.0, gen)
    changed = (pasted != x).any(1).flatten(1).float().mean(1)
    assert bool((changed > 0.005).all()) and bool((changed < 0.1).all())  # a patch of 1-9% of the image
    assert torch.equal(augment_patches(x, 0.0, gen), x)


def _self_retrieval_rate(encoder, table, seed=0, window=2):
    """Share of frames whose augmented view retrieves the frame itself or a frame at most ``window`` steps
    away in the same episode (neighbouring frames at 10 Hz look nearly alike)."""
    db = embed_table(encoder, table)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        q = encoder(augment(table.hand, (0.2, 0.2, 0.2, 0.05), (0.9, 1.0), gen),
                    augment(table.third, (0.2, 0.2, 0.2, 0.05), (0.9, 1.0), gen)).numpy()
    best = np.argmax(q @ db.T, axis=1)
    near = (table.episode[best] == table.episode) & (np.abs(table.frame[best] - table.frame) <= window)
    identical = np.array([torch.equal(table.hand[b], table.hand[i]) and torch.equal(table.third[b], table.third[i])
                          for i, b in enumerate(best)])  # the arm standing still: several frames look the same
    return float(np.mean(near | identical))


def test_training_lowers_the_loss_and_makes_each_frame_its_own_neighbour(table):
    # colour and crop only: at 32x32 a shadow or a pasted patch hides much of a tiny frame, which raises the
    # loss's floor (those augmentations are tested on their own above)
    plain = TINY.with_overrides(shadow_probability=0.0, paste_probability=0.0)
    result = train_encoder(table, plain)
    assert result.epoch_losses[-1] < 0.7 * result.epoch_losses[0], result.epoch_losses
    untrained = train_encoder(table, plain.with_overrides(epochs=1, learning_rate=1e-12)).encoder
    trained_rate, untrained_rate = _self_retrieval_rate(result.encoder, table), _self_retrieval_rate(untrained, table)
    assert trained_rate >= 0.6 and trained_rate > untrained_rate + 0.25, (trained_rate, untrained_rate)
    # Unaugmented, every frame is exactly its own nearest neighbour.
    emb = embed_table(result.encoder, table)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    sims = emb @ emb.T
    assert np.allclose(np.diag(sims), sims.max(axis=1), atol=1e-6)


def test_cancel_stops_training_within_one_step(table):
    cancel = threading.Event()
    steps = []

    def progress(p):
        steps.append(p)
        if len(steps) == 3:
            cancel.set()

    with pytest.raises(TrainingCancelled, match="epoch 1, step 4"):
        train_encoder(table, TINY, progress=progress, cancel=cancel)
    assert len(steps) == 3


def test_action_chunks_follow_the_demo_and_pad_at_the_end(table):
    chunks = action_chunks(table, 5)
    e = int(table.episode[0])
    acts = table.actions[e]
    start = int(resume_index(acts)[0])  # a still start's chunk begins where the motion resumes
    np.testing.assert_array_equal(chunks[0], acts[start:start + 5])
    moving = np.flatnonzero(resume_index(acts) == np.arange(len(acts)))[5]
    np.testing.assert_array_equal(chunks[np.flatnonzero(table.episode == e)[moving]], acts[moving:moving + 5])
    last = np.flatnonzero(table.episode == e)[-1]
    np.testing.assert_array_equal(chunks[last], np.repeat(acts[-1:], 5, axis=0))


def test_annoy_and_exact_search_agree(policy):
    db = policy.database
    queries = probe_queries(db.embeddings, db.episodes, 300, seed=3)
    for q in queries:
        exact = db.search_exact(q, 3)
        approx = db.search_annoy(q, 3)
        # the same best match (or one of identical similarity: the arm standing still gives identical frames)
        assert approx[0].similarity == pytest.approx(exact[0].similarity, abs=1e-6)
        assert exact[0].row == approx[0].row or np.allclose(db.embeddings[exact[0].row],
                                                            db.embeddings[approx[0].row], atol=1e-5)
    assert policy.info["annoy"]["recall_at_1"] == 1.0


def test_exact_search_orders_by_cosine_similarity():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(50, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    db = LookupDatabase(e, np.zeros(50), np.arange(50), np.zeros((50, 2, 8)))
    matches = db.search_exact(e[7], 5)
    assert matches[0].row == 7 and matches[0].similarity == pytest.approx(1.0, abs=1e-6)
    assert [m.similarity for m in matches] == sorted((m.similarity for m in matches), reverse=True)
    with pytest.raises(ValueError, match="unit vectors"):
        LookupDatabase(e * 2, np.zeros(50), np.arange(50), np.zeros((50, 2, 8)))


def test_artifact_round_trips_exactly(policy, tmp_path, dataset_dir):
    policy.save(tmp_path / "p")
    loaded = ALTPolicy.load(tmp_path / "p")
    for k, v in policy.encoder.state_dict().items():
        assert torch.equal(v, loaded.encoder.state_dict()[k]), k
    np.testing.assert_array_equal(policy.database.embeddings, loaded.database.embeddings)
    np.testing.assert_array_equal(policy.database.chunks, loaded.database.chunks)
    assert loaded.gamma == policy.gamma and loaded.config == policy.config
    with Dataset.open(dataset_dir) as ds:
        hand, third = ds.frame(0, "hand", 3), ds.frame(0, "third", 3)
    a, b = policy.retrieve(hand, third), loaded.retrieve(hand, third)
    assert a.matches == b.matches and np.array_equal(a.chunk, b.chunk)
    assert loaded.database.search_annoy(policy.embed(hand, third))[0].similarity == pytest.approx(
        a.matches[0].similarity, abs=1e-6)


def test_a_saved_policy_knows_the_episodes_it_was_built_from(policy, tmp_path, dataset_dir):
    loaded = ALTPolicy.load(policy.save(tmp_path / "p"))
    with Dataset.open(dataset_dir) as ds:
        indices = ds.episode_indices()
        assert loaded.info["episode_fingerprints"] == {str(i): ds.episode_fingerprint(i) for i in indices}
        assert all(loaded.check_source_episode(ds, i).verified for i in indices)
    copy = tmp_path / "ds"
    shutil.copytree(dataset_dir, copy)
    shutil.rmtree(copy / "episodes" / f"episode-{indices[-1]:06d}")  # deleted behind the dataset's back
    record_sim(copy, 1, image_size=32, seed=7)  # and recorded again under the same index
    with Dataset.open(copy) as ds:
        assert ds.episode_indices() == indices
        check = loaded.check_source_episode(ds, indices[-1])
        assert not check.show and "changed since this policy was built" in check.message
        assert loaded.check_source_episode(ds, indices[0]).verified


def test_tampered_or_wrong_version_artifact_is_refused(policy, tmp_path):
    path = policy.save(tmp_path / "p")
    with pytest.raises(PolicyArtifactError, match="already exists"):
        policy.save(path)
    db = path / "database.npz"
    original = db.read_bytes()
    db.write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(PolicyArtifactError, match=r"database\.npz has been modified"):
        ALTPolicy.load(path)
    db.write_bytes(original)
    ALTPolicy.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 0
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PolicyArtifactError, match="format version 0"):
        ALTPolicy.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(PolicyArtifactError, match="not an ALT Studio policy"):
        ALTPolicy.load(path)


def fake_rig():
    return Rig(arm=SafeArm(KinematicArm()), cameras={"hand": SyntheticCamera("hand", 32, 32, fps=30.0),
                                                      "third": SyntheticCamera("third", 32, 32, fps=30.0, seed=1)},
               clock=RealTimeClock(10.0))


def test_ood_gate_stops_the_arm(policy):
    rig = fake_rig()
    policy.gamma = 1.01  # nothing can be that similar: every observation is out of distribution
    events = []
    with rig:
        rig.cameras["hand"].wait_for_frame(); rig.cameras["third"].wait_for_frame()
        result = run_autonomous(rig, policy, max_ticks=20, on_event=events.append)
        assert result.reason == "ood" and rig.arm.stopped
        assert rig.arm.inner.sent == [] and rig.arm.inner.stop_calls >= 1
        assert result.ood_evidence is not None and result.ood_evidence.similarity < 1.01
        assert result.ood_observation.frames["hand"].image.shape == (32, 32, 3)
        assert events and events[-1].ood
    policy.gamma, policy.view_thresholds, policy.grasp_check = -1.0, {}, None  # everything passes: the chunk runs
    rig = fake_rig()
    with rig:
        rig.cameras["hand"].wait_for_frame(); rig.cameras["third"].wait_for_frame()
        events = []
        result = run_autonomous(rig, policy, max_ticks=4, requery_every=2, on_event=events.append)
        assert result.reason == "max_ticks" and len(rig.arm.inner.sent) == 4
        assert len(result.retrievals) == 4  # looked up (and OOD-checked) every tick
        assert [e.queried for e in events] == [True, False, True, False]  # the chunk replaced every 2 ticks
        # Each tick executes the chunk's entry for the time it is sent, counted from when the frames the chunk was
        # retrieved for were captured: [0, 1, 0, 1] when every tick is on time, further on when the machine lags.
        chunk = result.retrievals[0].chunk
        for e in events:
            obs = e.record.observation
            if e.queried:
                anchor, on_chunk = obs.capture_time, 0
            due = int(round((obs.latest_state.host_time - anchor) / 0.1))
            assert e.chunk_step == min(max(due, on_chunk), len(chunk) - 1)
            on_chunk += 1
        assert events[1].chunk_step > events[0].chunk_step or events[1].chunk_step == len(chunk) - 1
        sent = rig.arm.inner.sent[0].as_array()
        home = np.array([0.45, 0.0, 0.35])
        step, wanted = sent[:3] - home, chunk[events[0].chunk_step, :3] - home
        # through the safety layer: at most 3 cm from where the arm was, straight towards the chunk's target
        assert np.linalg.norm(step) <= min(0.03, np.linalg.norm(wanted)) + 1e-6
        assert np.dot(step, wanted) / (np.linalg.norm(step) * np.linalg.norm(wanted)) > 0.999


def test_a_chunk_starts_at_the_entry_for_now_counting_from_the_capture_time(policy):
    """Capture-to-action latency is skipped like lookup time: frames captured k ticks ago start the chunk at k."""
    from policy.runner import PolicySource
    from robot_drivers.rig import Observation
    from core.types import Frame, Pose, RobotState

    dt, now = 0.1, 50.0
    image = np.zeros((32, 32, 3), np.uint8)
    gamma, policy.gamma = policy.gamma, -1.0  # everything in distribution: the chunk is executed
    try:
        for k in (0, 1, 3):
            captured = now - k * dt
            frames = {cam: Frame(image, None, captured, 0, cam) for cam in ("hand", "third")}
            state = RobotState(captured, Pose(np.array([0.45, 0.0, 0.35]), np.array([1.0, 0.0, 0.0, 0.0])), 1.0,
                               np.zeros(9))
            latest = RobotState(now, state.ee_pose, 1.0, np.zeros(9))
            source = PolicySource(policy, requery_every=10)
            source.begin(Observation(state, frames, captured, latest))
            output = source.step(Observation(state, frames, captured, latest), dt)
            assert output.info["chunk_step"] == k
            np.testing.assert_allclose(output.action.pose.position, source.current.chunk[k, :3], atol=1e-6)
            later = RobotState(now + dt, state.ee_pose, 1.0, np.zeros(9))  # next tick, same chunk
            assert source.step(Observation(state, frames, captured + dt, later), dt).info["chunk_step"] == k + 1
    finally:
        policy.gamma = gamma
