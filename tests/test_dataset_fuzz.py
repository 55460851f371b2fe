"""Fuzz test of the verbs that read datasets: for generated damaged datasets (Hypothesis), `dataset info`
(quick and --full), `export` and `train` end with exit status 0 or one `error:` line, never a traceback, never
change a file of the dataset, and write nothing but their --out (a complete folder, or nothing)."""

import hashlib
import io
import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fuzz_helpers import KINDS, JSON_VALUES, damage, replace_file, run_cli
from recording_helpers import record_sim


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine-ds") / "ds"
    record_sim(root, 2, image_size=32)
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root)}


def _rehash(episode_dir: Path) -> None:
    """Make meta.json's sizes and CRCs agree with the files as they are now, so that the checks past the
    checksums (decoding, lengths, shapes) are reached too."""
    meta_path = episode_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        for name in list(meta["files"]):
            f = episode_dir / name
            if f.is_file():
                data = f.read_bytes()
                meta["files"][name] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    except Exception:
        return
    replace_file(meta_path, json.dumps(meta).encode())


TARGETS = ["dataset.json", "kept_episodes.json", "meta.json", "steps.npz", "hand.pack", "third.pack",
           "episode folder", "steps arrays"]
MUTATION = st.tuples(st.sampled_from(TARGETS),
                     st.sampled_from(KINDS),
                     st.integers(0, 1), st.integers(0, 10 ** 6), JSON_VALUES, st.booleans())
VERBS = st.sampled_from(["info", "info", "info_full", "export", "export", "train"])


def _mutate_steps(f: Path, n: int, value) -> None:
    """A loadable steps.npz with one array changed: shortened, NaN-filled, reshaped or retyped."""
    with np.load(f, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = sorted(arrays)[n % len(arrays)]
    a = arrays[key]
    choice = n % 5
    if choice == 0:
        arrays[key] = a[: max(0, len(a) - 1 - n % 7)]
    elif choice == 1 and a.dtype.kind == "f":
        arrays[key] = np.where(np.arange(a.size).reshape(a.shape) % 3 == 0, np.nan, a).astype(a.dtype)
    elif choice == 2:
        arrays[key] = a.reshape(-1)
    elif choice == 3:
        arrays[key] = a.astype(np.int8) if a.dtype.kind == "f" else a.astype(np.float32)
    else:
        arrays.pop(key)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    replace_file(f, buf.getvalue())


def _apply(root: Path, mutation) -> None:
    target, kind, episode, n, value, rehash = mutation
    episode_dir = root / "episodes" / f"episode-{episode:06d}"
    if target == "episode folder":
        shutil.rmtree(episode_dir, ignore_errors=True)
        return
    if not episode_dir.is_dir() and target not in ("dataset.json", "kept_episodes.json"):
        return
    name = "steps.npz" if target == "steps arrays" else target
    f = root / name if name in ("dataset.json", "kept_episodes.json") else episode_dir / name
    if not f.is_file():
        return
    if target == "steps arrays":
        _mutate_steps(f, n, value)
        if rehash:
            _rehash(episode_dir)
        return
    damage(f, kind, n, value)
    if rehash and name != "meta.json" and episode_dir.is_dir():
        _rehash(episode_dir)


def _run(argv: list[str]) -> tuple[int, str]:
    """(exit status, stdout + stderr)."""
    code, out, err = run_cli(argv)
    return code, out + err


TRAIN = ["--epochs", "1", "--input-size", "32", "--frame-stride", "3", "--backbone-weights", "none",
         "--batch-size", "8", "--progress", "none"]


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3), verb=VERBS)
def test_fuzz_damaged_datasets_never_give_a_traceback(pristine, tmp_path_factory, mutations, verb):
    work = tmp_path_factory.mktemp("dsfuzz")
    root = work / "ds"
    shutil.copytree(pristine, root)
    for mutation in mutations:
        _apply(root, mutation)
    out = work / "out"
    argv = {"info": ["dataset", "info", str(root)],
            "info_full": ["dataset", "info", str(root), "--full"],
            "export": ["export", str(root), "--out", str(out), "--codec", "mpeg4"],
            "train": ["train", str(root), "--out", str(out), *TRAIN]}[verb]
    before = _snapshot(root)
    code, err = _run(argv)
    event(f"{verb} exit {code}")
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code == 2:
        assert len(errors) == 1, err
        event(f"refused: {errors[0][7:60].replace(str(root), 'DS')}")
    if code == 1:
        assert verb.startswith("info"), err  # info's verdict: damage found
    assert _snapshot(root) == before  # the dataset is read, never written
    if verb in ("export", "train"):
        if code == 0:
            assert out.is_dir() and any(out.iterdir())
        else:
            assert not out.exists()
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".out.")]
        assert not leftovers, leftovers
    shutil.rmtree(work)


def test_the_fuzz_reaches_the_checks_past_the_checksums(pristine, tmp_path):
    """The rehash option really makes meta.json agree, so the fuzz's damage is not all caught by the CRC pass."""
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    _apply(root, ("steps arrays", "json", 0, 0, None, True))  # steps.npz one frame short, checksums updated
    code, text = _run(["dataset", "info", str(root)])
    assert code == 1
    assert re.search(r"steps\.npz: array '\w+' has \(\d+, \d+\) rows, \d+ expected", text), text
    assert "checksum mismatch" not in text.lower()
