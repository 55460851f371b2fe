"""The coverage map: a deterministic projection, OOD stops covered or suggested, the PNG and the CLI verb."""

import cv2
import numpy as np
import pytest

from evaluation.coverage import Projection, _UNCOVERED, build_coverage, render_png
from evaluation.trials import StopEvidence, TrialLedger

from supervisor_helpers import IMAGE, tiny_policy


def test_projection_is_deterministic_and_follows_the_main_spread():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) * np.r_[5.0, 2.0, np.full(14, 0.1)]
    a, b = Projection.fit(x), Projection.fit(x[::-1].copy())
    assert np.allclose(a(x), b(x))  # same data, any order: same picture (signs fixed)
    assert abs(a.axes[0, 0]) > 0.99 and abs(a.axes[1, 1]) > 0.99
    assert a.axes[0, 0] > 0 and a.axes[1, 1] > 0
    assert a.explained[0] > a.explained[1] > 0
    assert np.allclose(a(x).mean(axis=0), 0, atol=1e-9)


def _frames(seed):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for c in ("hand", "third")}


@pytest.fixture()
def saved_policy(tmp_path):
    """A tiny policy whose gamma lies between the noise frames' best similarity and its own frames' (1)."""
    policy = tiny_policy(frames=12)
    noise = max(float(np.max(policy.database.embeddings @ policy.embed(f["hand"], f["third"])))
                for f in map(_frames, range(1, 5)))
    policy.gamma = (noise + 1) / 2
    path = policy.save(tmp_path / "policy")
    return policy, path


def _stop(ledger, policy_dir, policy, frames, encoder_embedding=None):
    z = policy.embed(frames["hand"], frames["third"]) if encoder_embedding is None else encoder_embedding
    sim = float(np.max(policy.database.embeddings @ z))
    trial = ledger.start(policy_dir, 1, "alt", policy.gamma)
    ledger.finish(trial, "ood_stop", "ood", evidence=StopEvidence(z, sim, frames),
                  trajectory=np.stack([policy.database.embeddings[0], z]))
    return trial


def test_stops_near_the_table_are_covered_and_the_others_are_suggested(saved_policy, tmp_path):
    policy, path = saved_policy
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    covered = _stop(ledger, path, policy, {}, encoder_embedding=policy.database.embeddings[4])
    far = _stop(ledger, path, policy, _frames(1))
    ledger.finish(ledger.start(path, 1, "alt", 0.9), "success")
    cov = build_coverage(policy, path, ledger)
    stops = {s.trial: s for s in cov.stops}
    assert stops[covered.id].covered and stops[covered.id].covered_by == "table"
    assert stops[covered.id].nearest == (0, 4) and stops[covered.id].similarity_now == pytest.approx(1, abs=1e-5)
    assert not stops[far.id].covered and stops[far.id].similarity_now < policy.gamma
    assert [s.trial for s in cov.suggestions] == [far.id]
    assert set(stops[far.id].frames) == {"hand", "third"}
    assert np.allclose(stops[far.id].xy, cov.projection(policy.embed(_frames(1)["hand"], _frames(1)["third"]))[0],
                       atol=1e-5)
    assert len(cov.points) == len(policy.database) and set(cov.trajectories) == {covered.id, far.id}
    assert cov.trajectories[far.id].shape == (2, 2)


def test_a_stop_under_another_encoder_is_embedded_again_from_its_frames(saved_policy, tmp_path):
    policy, path = saved_policy
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    other = tiny_policy(frames=4, seed=5).save(tmp_path / "retrained")  # another encoder
    frames = _frames(2)
    wrong = np.zeros(policy.database.dim, np.float32)
    wrong[0] = 1
    with_frames = ledger.start(other, 1, "alt", 0.9)
    ledger.finish(with_frames, "ood_stop", "ood", evidence=StopEvidence(wrong, 0.1, frames))
    without = ledger.start(other, 1, "alt", 0.9)
    ledger.finish(without, "ood_stop", "ood", evidence=StopEvidence(wrong, 0.1, {}))
    cov = build_coverage(policy, path, ledger)
    (stop,) = cov.stops
    z = policy.embed(frames["hand"], frames["third"])
    assert stop.trial == with_frames.id and stop.similarity_now == pytest.approx(float(np.max(
        policy.database.embeddings @ z)), abs=1e-5)
    assert len(cov.skipped) == 1 and without.id in cov.skipped[0] and "no frames were kept" in cov.skipped[0]


def test_the_png_marks_uncovered_stops_and_shows_their_frames(saved_policy, tmp_path):
    policy, path = saved_policy
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    _stop(ledger, path, policy, {}, encoder_embedding=policy.database.embeddings[2])
    calm = render_png(build_coverage(policy, path, ledger), tmp_path / "calm.png", size=(900, 600))
    frames = _frames(3)
    frames["hand"][:] = (0, 255, 0)  # a pure green hand frame, to find its thumbnail
    _stop(ledger, path, policy, frames)
    busy = render_png(build_coverage(policy, path, ledger), tmp_path / "busy.png", size=(900, 600))
    a, b = cv2.imread(str(calm)), cv2.imread(str(busy))
    assert a.shape == b.shape == (600, 900, 3)
    red = lambda img: int(np.all(img == _UNCOVERED, axis=2).sum())  # noqa: E731
    assert red(b) > red(a) + 20  # the same legend in both; only the second has an uncovered stop
    green = np.all(b == (0, 255, 0), axis=2)  # BGR of the green thumbnail
    assert green[:, 600:].sum() > 500 and green[:, :600].sum() == 0  # in the suggestions panel only


def test_coverage_cli(saved_policy, tmp_path, capsys):
    from main import main

    policy, path = saved_policy
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    far = _stop(ledger, path, policy, _frames(4))
    out = tmp_path / "map.png"
    assert main(["coverage", str(path), "--ledger", str(ledger.path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"coverage map written to {out}" in text and "1 OOD stop(s), 0 covered" in text
    assert f"1. trial {far.id}" in text and "hand.png" in text
    assert cv2.imread(str(out)) is not None
    assert main(["coverage", str(path), "--ledger", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 0
    assert "no trial ledger at" in capsys.readouterr().out


def test_stop_evidence_from_a_real_ood_halt_matches_what_the_policy_saw(tmp_path):
    from policy.runner import run_autonomous
    from evaluation.trials import stop_evidence

    from supervisor_helpers import fake_rig

    policy = tiny_policy(frames=6)
    policy.gamma = 1.01  # nothing is similar enough: the first lookup halts
    with fake_rig() as rig:
        rig.wait_for_cameras()
        result = run_autonomous(rig, policy, max_ticks=20)
    assert result.reason == "ood"
    evidence = stop_evidence(policy, result.ood_observation, result.ood_evidence)
    hand, third = evidence.frames["hand"], evidence.frames["third"]
    assert np.allclose(evidence.embedding, policy.embed(hand, third), atol=1e-6)
    assert evidence.similarity == pytest.approx(result.ood_evidence.similarity)
    assert evidence.best_match == (result.ood_evidence.matches[0].episode, result.ood_evidence.matches[0].frame)
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    trial = ledger.start(tmp_path / "p", 1, "alt", policy.gamma)
    ledger.finish(trial, "ood_stop", "similarity below gamma", evidence=evidence)
    assert np.array_equal(ledger.stop_frames(ledger.trials()[0])["hand"], hand)


def test_an_ood_drill_stop_is_drawn_but_never_suggested(saved_policy, tmp_path):
    """The drill covers a camera with noise on purpose: its stop is the least covered of all, and still not a place
    to record a demonstration."""
    policy, path = saved_policy
    ledger = TrialLedger(tmp_path / "trials.jsonl")
    far = _stop(ledger, path, policy, _frames(1))
    drill = ledger.start(path, 1, "alt", policy.gamma)
    noise = _frames(2)
    z = policy.embed(noise["hand"], noise["third"])
    ledger.event(drill, "ood_stop", "similarity below gamma", ticks=5,
                 evidence=StopEvidence(z, float(np.max(policy.database.embeddings @ z)), noise),
                 extra={"drill": ["third"]})
    ledger.finish(drill, "ood_stop", "home")
    cov = build_coverage(policy, path, ledger)
    stops = {s.trial: s for s in cov.stops}
    assert stops[drill.id].drill and not stops[drill.id].covered
    assert [s.trial for s in cov.suggestions] == [far.id]
