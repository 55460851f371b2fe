"""Damaged or incomplete policy folders: one clear error line naming the file and the field, never a traceback,
and nothing changed that the verb was not asked to write. The reproductions first, then a fuzz test that
generates damaged policy folders (Hypothesis) and runs the verbs that read them."""

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from policy.artifact import FILES, MANIFEST, PolicyArtifactError, sha256
from policy.config import PolicyConfig
from policy.policy import ALTPolicy
from recorder.dataset import Dataset

from fuzz_helpers import JSON_VALUES, KINDS, damage, replace_file, run_cli
from recording_helpers import record_sim

TINY = PolicyConfig(image_width=32, image_height=32, batch_size=16, epochs=1, frame_stride=1, learning_rate=1e-3,
                    chunk_length=5, pretrained="none", annoy_trees=4)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """(policy folder, dataset folder, an image file): a tiny policy on 3 sim episodes, built on 2 of them."""
    root = tmp_path_factory.mktemp("pristine")
    record_sim(root / "ds", 3, image_size=32)
    with Dataset.open(root / "ds") as ds:  # built on two episodes: `policy add` adds the third
        policy = ALTPolicy.build(ds, TINY, episodes=ds.episode_indices()[:2])
    path = policy.save(root / "policy")
    import cv2

    cv2.imwrite(str(root / "image.png"), np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    return path, root / "ds", root / "image.png"


def _copy_policy(src: Path, dst: Path) -> Path:
    """A copy whose large encoder file is a hard link (cheap); a mutation replaces files, never edits in place."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "encoder.safetensors":
            os.link(p, dst / p.name)
        else:
            shutil.copy2(p, dst / p.name)
    return dst


def _rehash(folder: Path) -> None:
    """Make the manifest agree with the files as they are now (so the checks after the checksums are tested)."""
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
        manifest["files"] = {n: sha256(folder / n) for n in FILES if (folder / n).is_file()}
    except Exception:
        return
    replace_file(mpath, json.dumps(manifest).encode())


_run = run_cli


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _edit_config(folder: Path, edit) -> None:
    doc = json.loads((folder / "config.json").read_text())
    edit(doc)
    replace_file(folder / "config.json", json.dumps(doc).encode())
    _rehash(folder)


# -- the reproductions ------------------------------------------------------------------------------------------
def _damaged_cases():
    def manifest_list(f):
        replace_file(f / MANIFEST, b"[]")

    def no_gamma(f):
        _edit_config(f, lambda d: d.pop("gamma"))

    def unknown_calibration_field(f):
        _edit_config(f, lambda d: d["calibration"].update(surprise=1))

    def bad_zip(f):
        data = bytearray((f / "database.npz").read_bytes())
        data[len(data) // 2:len(data) // 2 + 64] = b"\0" * 64
        replace_file(f / "database.npz", bytes(data))
        _rehash(f)

    def truncated_zip(f):
        replace_file(f / "database.npz", (f / "database.npz").read_bytes()[:1000])
        _rehash(f)

    def missing_setting(f):
        _edit_config(f, lambda d: d["config"].pop("chunk_length"))

    def wrong_type_setting(f):
        _edit_config(f, lambda d: d["config"].update(epochs="eight"))

    def nan_gamma(f):
        replace_file(f / "config.json", (f / "config.json").read_bytes().replace(b'"gamma": ', b'"gamma": NaN, "x": ', 1))
        _rehash(f)

    def short_chunks(f):
        z = dict(np.load(f / "database.npz"))
        z["chunks"] = z["chunks"][:-3]
        buf = io.BytesIO()
        np.savez(buf, **z)
        replace_file(f / "database.npz", buf.getvalue())
        _rehash(f)

    def encoder_garbage(f):
        replace_file(f / "encoder.safetensors", b"\x08\0\0\0\0\0\0\0{}garbage")
        _rehash(f)

    return {"manifest is a list": (manifest_list, "manifest.json"),
            "config without gamma": (no_gamma, "config.json.*'gamma' is missing"),
            "unknown calibration field": (unknown_calibration_field, "config.json.*field 'calibration'.*unknown entry 'surprise'"),
            "damaged database": (bad_zip, "database.npz"),
            "truncated database": (truncated_zip, "database.npz"),
            "missing setting": (missing_setting, r"config.json, field 'config'.*chunk_length.*missing"),
            "setting of the wrong type": (wrong_type_setting, "epochs is 'eight', not a whole number"),
            "NaN gamma": (nan_gamma, "config.json"),
            "chunks shorter than the table": (short_chunks, "database.npz"),
            "encoder garbage": (encoder_garbage, "encoder.safetensors")}


CASES = _damaged_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_policy_is_one_clear_line_in_every_verb(pristine, tmp_path, name):
    policy, dataset, image = pristine
    spoil, message = CASES[name]
    folder = _copy_policy(policy, tmp_path / "p")
    spoil(folder)
    with pytest.raises(PolicyArtifactError, match=message):
        ALTPolicy.load(folder)
    before = _snapshot(folder, dataset)
    for argv in (["ood", str(folder), str(image)],
                 ["eval", str(folder), "--episodes", "1"],
                 ["policy", "add", str(folder), str(dataset), "--episodes", "2", "--out", str(tmp_path / "new")]):
        code, _, err = _run(argv)
        assert code == 2, (argv, err)
        line = _one_clear_line(err)
        assert str(folder) in line or "manifest" in line, line
    assert _snapshot(folder, dataset) == before
    assert not (tmp_path / "new").exists()


# -- the fuzz test -----------------------------------------------------------------------------------------------
MUTATION = st.tuples(
    st.sampled_from([MANIFEST, *FILES]),
    st.sampled_from(KINDS),
    st.integers(0, 10 ** 6), JSON_VALUES, st.booleans())
VERBS = st.sampled_from(["ood", "ood_hand", "add", "add", "eval"])


def _apply(folder: Path, mutation) -> None:
    name, kind, n, value, rehash = mutation
    damage(folder / name, kind, n, value)
    if rehash and name != MANIFEST:
        _rehash(folder)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=2), verb=VERBS)
def test_fuzz_damaged_policy_folders_never_give_a_traceback(pristine, tmp_path_factory, mutations, verb):
    policy, dataset, image = pristine
    work = tmp_path_factory.mktemp("fuzz")
    folder = _copy_policy(policy, work / "p")
    for mutation in mutations:
        _apply(folder, mutation)
    out = work / "new"
    argv = {"ood": ["ood", str(folder), str(image)],
            "ood_hand": ["ood", str(folder), str(image), "--view", "hand"],
            "add": ["policy", "add", str(folder), str(dataset), "--episodes", "2", "--out", str(out)],
            "eval": ["eval", str(folder), "--episodes", "1"]}[verb]
    before = _snapshot(folder, dataset)
    code, _, err = _run(argv)
    event(f"{verb} exit {code}")
    assert code in (0, 2), (code, err)
    if code == 2:
        event(f"refused by: {_one_clear_line(err)[7:40]}")
    assert "Traceback" not in err
    assert _snapshot(folder, dataset) == before  # nothing it was not asked to write
    if code == 0 and verb == "add":
        ALTPolicy.load(out)
    elif verb == "add":
        assert not out.exists()
    shutil.rmtree(work)


# -- outputs that would destroy inputs (the reproductions 1 and 2) ------------------------------------------
def test_a_typo_in_out_deletes_nothing(pristine, tmp_path, monkeypatch):
    policy, dataset, _ = pristine
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    monkeypatch.chdir(work)
    for out in ("", ".", "..", str(work)):
        code, _, err = _run(["policy", "add", str(policy), str(dataset), "--episodes", "2", "--out", out,
                             "--overwrite"])
        assert code == 2, (out, err)
        assert re.search("the folder you are in|a folder above the one you are in|is empty", _one_clear_line(err))
        code, _, err = _run(["train", str(dataset), "--out", out, "--overwrite", "--epochs", "1"])
        assert code == 2, (out, err)
        _one_clear_line(err)
    assert (work / "precious.txt").read_text() == "keep me"


def test_a_dataset_never_becomes_a_policy_and_nothing_is_trained_first(pristine, tmp_path, monkeypatch):
    policy, dataset, _ = pristine

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(ALTPolicy, "build", no_training)
    before = _snapshot(dataset, policy)
    for argv in (["train", str(dataset), "--out", str(dataset), "--overwrite"],
                 ["train", str(dataset), "--out", str(dataset / "episodes"), "--overwrite"],
                 ["train", str(dataset), "--out", str(policy)],
                 ["policy", "add", str(policy), str(dataset), "--episodes", "2", "--out", str(dataset),
                  "--overwrite"],
                 ["record", "--out", str(policy), "--episodes", "1"]):
        code, _, err = _run(argv)
        assert code == 2, (argv, err)
        line = _one_clear_line(err)
        assert str(dataset) in line or str(policy) in line, line
    assert _snapshot(dataset, policy) == before


def test_an_old_policy_folder_loads_with_the_settings_it_was_built_with(pristine, tmp_path, caplog):
    """A folder saved before some settings existed loads (with a warning naming them); the same folder dated
    after them is damaged."""
    policy, _, _ = pristine
    folder = _copy_policy(policy, tmp_path / "old")
    _edit_config(folder, lambda d: [d["config"].pop(k) for k in ("views", "calibration_augments", "method")])
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["created_at"] = "2026-11-28T10:00:00+00:00"
    replace_file(folder / MANIFEST, json.dumps(manifest).encode())
    loaded = ALTPolicy.load(folder)
    assert loaded.config.views == ("hand", "third") and loaded.config.calibration_augments == 0
    assert loaded.method == "alt" and "before the settings" in caplog.text
    manifest["created_at"] = "2026-12-05T10:00:00+00:00"
    replace_file(folder / MANIFEST, json.dumps(manifest).encode())
    with pytest.raises(PolicyArtifactError, match="missing"):
        ALTPolicy.load(folder)
