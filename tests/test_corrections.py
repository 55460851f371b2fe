"""Policy versions: corrections added to a policy without retraining, used by the next lookup; the loop from an
OOD stop in the ledger to a correction that covers it on the coverage map."""

import json

import numpy as np
import pytest

from policy.artifact import MANIFEST, sha256
from policy.config import PolicyConfig
from evaluation.coverage import build_coverage
from policy.data import action_chunks, load_frames
from policy.policy import ALTPolicy
from policy.train import embed_table
from evaluation.trials import StopEvidence, TrialLedger, encoder_digest
from policy.versions import add_episodes, default_out_dir, parse_episode_list
from recorder.dataset import Dataset, DatasetError
from recorder.session import RecorderConfig, RecordingSession
from robot_drivers.factory import make_rig, make_teleop
from robot_drivers.sim.task import training_scene

from recording_helpers import record_sim

TINY = PolicyConfig(image_width=32, image_height=32, batch_size=16, epochs=1, frame_stride=1, chunk_length=5,
                    pretrained="none", annoy_trees=4)


def record_correction(dataset_dir, intervention: dict, seed: int = 7) -> int:
    """Record one scripted episode into ``dataset_dir`` tagged as an intervention; returns its index."""
    rig = make_rig("sim", image_size=32)
    teleop = make_teleop("scripted", rig, seed=seed)
    with rig, Dataset.open(dataset_dir, writable=True) as dataset:
        session = RecordingSession(rig, dataset, teleop, RecorderConfig())
        while True:
            index = dataset.next_index()
            scene = training_scene(rig.task, index)
            rig.reset(seed + index, scene=scene)
            teleop.reset(seed + index)
            outcome = session.record_episode(extra={"intervention": intervention}, accept=rig.success)
            if outcome.kept is not None:
                rig.close()
                return outcome.kept.index


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A policy over two demonstrations, then a third demonstration and a correction recorded after it."""
    root = tmp_path_factory.mktemp("corrections")
    dataset_dir, policy_dir = root / "ds", root / "policy"
    record_sim(dataset_dir, 2, image_size=32)
    with Dataset.open(dataset_dir) as ds:
        ALTPolicy.build(ds, TINY).save(policy_dir)
    record_sim(dataset_dir, 1, image_size=32, seed=5)  # appends one: episode 2
    ledger = TrialLedger(root / "trials.jsonl")
    trial = ledger.start(policy_dir, 1, "alt", 0.9)
    correction = record_correction(dataset_dir, {"policy": str(policy_dir), "version": 1, "run": trial.id,
                                                 "halt_reason": "ood"})
    return {"root": root, "dataset": dataset_dir, "policy": policy_dir, "ledger": ledger, "trial": trial,
            "demo": 2, "correction": correction}


@pytest.fixture(scope="module")
def v2(setup):
    """Version 2: the correction added; with the parent's file digests from before."""
    parent_files = {p.name: sha256(p) for p in setup["policy"].iterdir()}
    result = add_episodes(setup["policy"], setup["dataset"], [setup["correction"]], setup["root"] / "v2")
    return result, parent_files


def test_added_episodes_are_embedded_with_the_current_encoder_in_a_new_version(setup, v2):
    parent_dir, ds_dir, correction = setup["policy"], setup["dataset"], setup["correction"]
    result, parent_files = v2
    assert {p.name: sha256(p) for p in parent_dir.iterdir()} == parent_files  # the parent is untouched
    parent = ALTPolicy.load(parent_dir)
    new = ALTPolicy.load(result.path)
    n = len(parent.database)
    with Dataset.open(ds_dir) as ds:
        table = load_frames(ds, parent.config, [correction])
        fingerprint = ds.episode_fingerprint(correction)
    # The old rows are kept as they were; the new rows are what the unchanged encoder makes of the new frames,
    # with chunks built exactly as training builds them.
    assert np.array_equal(new.database.embeddings[:n], parent.database.embeddings)
    assert np.allclose(new.database.embeddings[n:], embed_table(parent.encoder, table), atol=1e-5)
    assert np.array_equal(new.database.episodes[n:], table.episode)
    assert np.array_equal(new.database.frames[n:], table.frame)
    assert np.allclose(new.database.chunks[n:], action_chunks(table, parent.config.chunk_length))
    assert encoder_digest(result.path) == encoder_digest(parent_dir)
    assert new.gamma == parent.gamma and result.version == 2 and new.info["version"] == 2
    info = new.info
    assert info["parent"] == {"path": str(parent_dir.resolve()), "version": 1,
                              "manifest_sha256": parent_files[MANIFEST]}
    assert info["added"]["episodes"] == [correction] and info["added"]["frames"] == len(table)
    assert info["added"]["fingerprints"] == {str(correction): fingerprint}
    assert info["episode_fingerprints"][str(correction)] == fingerprint
    assert info["added"]["interventions"][str(correction)]["run"] == setup["trial"].id
    assert info["corrections"] == [correction] and info["episodes"] == [0, 1, correction]
    assert new.database.search_exact(new.database.embeddings[-1])[0].similarity == pytest.approx(1, abs=1e-5)


def test_the_next_lookup_retrieves_the_added_frames(setup, v2):
    parent_dir, ds_dir, correction = setup["policy"], setup["dataset"], setup["correction"]
    parent = ALTPolicy.load(parent_dir)
    result = v2[0]
    with Dataset.open(ds_dir) as ds:
        hits = []
        for f in range(0, ds.episode(correction).length, 5):
            hand, third = ds.frame(correction, "hand", f), ds.frame(correction, "third", f)
            before, after = parent.retrieve(hand, third), result.policy.retrieve(hand, third)
            hits.append(after.matches[0].episode == correction)
            assert after.similarity >= before.similarity - 1e-6
    assert np.mean(hits) >= 0.8, hits  # its own frames (identical frames elsewhere may tie)


def test_versions_chain_and_recalibration_is_recorded(setup):
    root = setup["root"]
    v2 = add_episodes(setup["policy"], setup["dataset"], [setup["demo"]], root / "chain-v2")
    v3 = add_episodes(v2.path, setup["dataset"], [setup["correction"]], recalibrate=True)
    assert v3.path == root / "chain-v3" and v3.version == 3 and v3.parent_version == 2
    info = ALTPolicy.load(v3.path).info
    assert [a["episodes"] for a in info["additions"]] == [[setup["demo"]], [setup["correction"]]]
    assert info["parent"]["version"] == 2 and info["corrections"] == [setup["correction"]]
    assert info["added"]["recalibrated"] and info["added"]["gamma_after"] == pytest.approx(v3.policy.gamma)
    assert v3.policy.calibration.gamma == pytest.approx(v3.policy.gamma)
    assert info["added"]["interventions"] == {str(setup["correction"]): {
        "policy": str(setup["policy"]), "version": 1, "run": setup["trial"].id, "halt_reason": "ood"}}
    assert ALTPolicy.load(v2.path).info["added"]["interventions"] == {str(setup["demo"]): None}


def test_bad_additions_are_refused_with_the_reason(setup, tmp_path):
    policy_dir, ds_dir = setup["policy"], setup["dataset"]
    with pytest.raises(ValueError, match=r"episode\(s\) \[1\] are already in the policy"):
        add_episodes(policy_dir, ds_dir, [1], tmp_path / "a")
    with pytest.raises(DatasetError, match=r"\[99\] are not in .* \(it has 0-3\)"):
        add_episodes(policy_dir, ds_dir, [99], tmp_path / "b")
    with Dataset.open(ds_dir) as ds:
        Dataset.create(tmp_path / "other-ds", ds.spec).close()
    with pytest.raises(DatasetError, match="the policy was built from"):
        add_episodes(policy_dir, tmp_path / "other-ds", [0], tmp_path / "c")
    with pytest.raises(ValueError, match="is the parent policy itself"):
        add_episodes(policy_dir, ds_dir, [setup["demo"]], policy_dir)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_episode_lists_and_default_folders():
    assert parse_episode_list(["31", "32", "40-42", "7,9"]) == [31, 32, 40, 41, 42, 7, 9]
    with pytest.raises(ValueError, match="neither a number nor a range"):
        parse_episode_list(["3x"])
    with pytest.raises(ValueError, match="empty or negative"):
        parse_episode_list(["9-3"])


def test_default_out_dir_counts_versions(tmp_path):
    assert default_out_dir(tmp_path / "policy", 2) == tmp_path / "policy-v2"
    assert default_out_dir(tmp_path / "policy-v2", 3) == tmp_path / "policy-v3"
    (tmp_path / "policy-v3").mkdir()
    assert default_out_dir(tmp_path / "policy-v2", 3) == tmp_path / "policy-v3-b"


def test_an_ood_stop_is_covered_once_its_correction_is_added(setup, v2):
    """The loop the window will drive: an OOD stop in the ledger is a suggestion until the correction recorded for
    that run is added to the policy."""
    policy_dir, ds_dir, ledger, trial = setup["policy"], setup["dataset"], setup["ledger"], setup["trial"]
    policy = ALTPolicy.load(policy_dir)
    with Dataset.open(ds_dir) as ds:  # what the arm saw at the stop: a frame far from the two demonstrations
        hand, third = ds.frame(setup["correction"], "hand", 0), ds.frame(setup["correction"], "third", 0)
    z = policy.embed(hand, third)
    stop_similarity = float(np.max(policy.database.embeddings @ z))
    policy.gamma = stop_similarity + 1e-3  # so that this observation was a stop for version 1
    if not trial.outcome:
        ledger.finish(trial, "ood_stop", f"similarity {stop_similarity:.3f}",
                      evidence=StopEvidence(z, stop_similarity, {"hand": hand, "third": third}))
    before = build_coverage(policy, policy_dir, ledger)
    assert [s.trial for s in before.suggestions] == [trial.id]
    assert before.suggestions[0].frames["hand"].endswith("hand.png")
    result = v2[0]
    after = build_coverage(result.policy, result.path, ledger)
    (stop,) = after.stops
    assert stop.covered and stop.covered_by == f"correction {setup['correction']}" and after.suggestions == []
    assert after.corrections == {setup["correction"]}
    assert stop.similarity_now == pytest.approx(1.0, abs=1e-4)  # the very frame is now in the table


def test_policy_add_cli(setup, capsys):
    from main import main

    out = setup["root"] / "cli-v2"
    assert main(["policy", "add", str(setup["policy"]), str(setup["dataset"]), "--episodes",
                 f"{setup['demo']}-{setup['correction']}", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"policy v2 saved to {out}" in text and "(1 correction(s))" in text and "gamma" in text
    assert json.loads((out / "config.json").read_text())["info"]["added"]["episodes"] == [setup["demo"],
                                                                                          setup["correction"]]
    assert main(["policy", "add", str(setup["policy"]), str(setup["dataset"]), "--episodes", "1",
                 "--out", str(setup["root"] / "cli-bad")]) == 2
    assert "already in the policy's lookup table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["policy", "add", str(setup["policy"]), str(setup["dataset"]), "--episodes", "two"])


def test_the_correction_loop_records_each_take_over_and_the_next_run_uses_it(setup, tmp_path):
    """`demo --corrections` at small scale: every stop is corrected from where the arm stood, added at once as a
    new version, and the second set runs on the last version; the policy's own dataset is left as it was."""
    from evaluation.correction_loop import correction_loop, prepare_loop_folder

    with Dataset.open(setup["dataset"]) as ds:
        before = ds.episode_indices()
    policy, dataset_dir = prepare_loop_folder(setup["policy"], tmp_path / "loop")
    rig = make_rig("sim", image_size=32)
    teleop = make_teleop("scripted", rig, seed=0)
    with rig:
        report = correction_loop(policy, dataset_dir, tmp_path / "loop", rig, teleop, first_seed=40, second_seed=60,
                                 episodes=2)
    rig.close()
    asked = [e for e in report.before.episodes if e.outcome in ("ood_stop", "stall_stop")]
    assert asked, "a two-demonstration policy stops between its demonstrations"
    assert [c.seed for c in report.corrections] == [e.seed for e in asked]
    added = [c for c in report.corrections if c.kept]
    assert added and all(c.added_seconds is not None for c in added)
    assert report.final_version == 1 + len(added)
    final = ALTPolicy.load(tmp_path / "loop" / f"v{report.final_version}")
    assert {c.episode for c in added} <= set(np.unique(final.database.episodes).tolist())
    assert set(final.info["corrections"]) == {c.episode for c in added}
    with Dataset.open(dataset_dir) as ds:
        for c in added:
            tag = ds.episode(c.episode).extra["intervention"]
            assert tag["halt_reason"] in ("ood", "stall") and tag["run"] == f"seed {c.seed}"
            first = ds.load_episode(c.episode).states[0, :3]
            assert np.linalg.norm(first - c.took_over_at) < 0.01  # the operator started where the arm stood
    with Dataset.open(setup["dataset"]) as ds:
        assert ds.episode_indices() == before
    assert len(report.after.episodes) == 2 and report.after.episodes[0].seed == 60
    assert [e.seed for e in report.baseline.episodes] == [60, 61]  # the same placements, before the corrections
    summary = report.summary()
    assert summary["corrections_added"] == len(added) and summary["add_seconds_median"] is not None
