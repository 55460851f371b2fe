"""Output folders: refused before any work when they would destroy an input, replaced atomically."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from policy.artifact import FILES, PolicyArtifactError, check_artifact, write_artifact
from recorder import outputs
from recorder.outputs import DATASET, LEROBOT, POLICY, OutputPathError, check_output, clean_leftovers, \
    folder_kind, swap_into_place, temp_sibling

ROOT = Path(__file__).resolve().parents[1]


def _policy_writer(tag: str, size: int = 1000):
    def write(tmp: Path) -> None:
        for name in FILES:
            (tmp / name).write_bytes(tag.encode() * size)
    return write


def _make(path: Path, kind: str) -> Path:
    path.mkdir(parents=True)
    if kind == DATASET:
        (path / "dataset.json").write_text("{}")
    elif kind == POLICY:
        write_artifact(path, _policy_writer("old"), overwrite=True)
    elif kind == LEROBOT:
        (path / "meta").mkdir()
        (path / "meta" / "info.json").write_text("{}")
    else:
        (path / "notes.txt").write_text("mine")
    return path


@pytest.mark.parametrize("text", ["", "  ", None])
def test_an_empty_output_path_is_refused(text):
    with pytest.raises(OutputPathError, match="--out is empty"):
        check_output(text, POLICY, overwrite=True)


def test_the_working_folder_and_those_above_it_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for text in (".", "", "..", str(tmp_path), "./", str(work)):
        with pytest.raises(OutputPathError):
            check_output(text, POLICY, overwrite=True)
    assert check_output("new", POLICY) == Path("new")


def test_the_project_folder_and_a_git_checkout_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputPathError, match="ALT Studio's own folder"):
        check_output(str(ROOT), POLICY, overwrite=True)
    # (a checkout under /tmp has /tmp above it, which also holds the working folder: either refusal will do)
    with pytest.raises(OutputPathError, match="ALT Studio's own folder|a folder above the one you are in"):
        check_output(str(ROOT.parent), DATASET, append=True)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    with pytest.raises(OutputPathError, match="git checkout"):
        check_output(str(repo), POLICY, overwrite=True)


@pytest.mark.parametrize("found,wanted", [(DATASET, POLICY), (POLICY, DATASET), (LEROBOT, POLICY), (POLICY, LEROBOT),
                                          ("other", POLICY), ("other", DATASET)])
def test_a_folder_of_another_kind_is_never_replaced(tmp_path, found, wanted):
    path = _make(tmp_path / "x", found)
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(OutputPathError, match=r"x (is|holds)"):
        check_output(path, wanted, overwrite=True, append=wanted == DATASET)
    assert sorted(p.name for p in path.rglob("*")) == before


def test_same_kind_needs_overwrite_and_record_appends(tmp_path):
    policy = _make(tmp_path / "p", POLICY)
    with pytest.raises(OutputPathError, match="already exists.*--overwrite"):
        check_output(policy, POLICY)
    assert check_output(policy, POLICY, overwrite=True) == policy
    dataset = _make(tmp_path / "d", DATASET)
    assert check_output(dataset, DATASET, append=True) == dataset
    assert folder_kind(tmp_path / "nothing") == outputs.MISSING


def test_an_output_inside_or_around_an_input_is_refused(tmp_path):
    data = _make(tmp_path / "data" / "ds", DATASET)
    for out, relation in ((data, "is the input"), (data / "policy", "lies inside the input"),
                          (tmp_path / "data", "holds the input")):
        with pytest.raises(OutputPathError, match=relation):
            check_output(out, POLICY, overwrite=True, inputs=(data,))


def test_write_artifact_refuses_a_dataset_even_with_overwrite(tmp_path):
    data = _make(tmp_path / "ds", DATASET)
    with pytest.raises(PolicyArtifactError, match="is an ALT Studio dataset"):
        write_artifact(data, _policy_writer("new"), overwrite=True)
    assert (data / "dataset.json").read_text() == "{}"


def test_overwrite_swaps_in_the_new_policy_and_leaves_nothing_behind(tmp_path):
    out = write_artifact(tmp_path / "p", _policy_writer("old"))
    write_artifact(out, _policy_writer("new"), overwrite=True)
    check_artifact(out)
    assert (out / "config.json").read_bytes().startswith(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_a_failed_write_keeps_the_old_policy(tmp_path):
    out = write_artifact(tmp_path / "p", _policy_writer("old"))

    def broken(tmp):
        (tmp / "config.json").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(PolicyArtifactError, match=r"disk is full.*B free in .*nothing was replaced"):
        write_artifact(out, broken, overwrite=True)
    check_artifact(out)
    assert (out / "config.json").read_bytes().startswith(b"old")
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_the_fallback_swap_restores_the_old_folder_after_a_crash_between_its_renames(tmp_path, monkeypatch):
    out = write_artifact(tmp_path / "p", _policy_writer("old"))
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def crash_on_second(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for the process dying between the two renames
        real_rename(a, b)

    tmp = temp_sibling(out)
    _policy_writer("new")(tmp)
    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        swap_into_place(tmp, out)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not out.exists()
    # the next write to the same place (another process: this one's pid is made to look dead) puts it back
    monkeypatch.setattr(outputs, "process_alive", lambda pid: False)
    clean_leftovers(out)
    check_artifact(out)
    assert (out / "config.json").read_bytes().startswith(b"old")
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_leftovers_of_dead_processes_are_cleaned_and_live_ones_kept(tmp_path):
    out = tmp_path / "p"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".p.writing-{int(dead.stdout)}-abcd1234"
    live = tmp_path / f".p.exporting-{os.getpid()}-abcd1234"
    other = tmp_path / f".q.writing-{int(dead.stdout)}-abcd1234"
    for p in (stale, live, other):
        p.mkdir()
    assert clean_leftovers(out) == [stale]
    assert live.exists() and other.exists()


SAVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from policy.artifact import FILES, write_artifact
    out, start = Path(sys.argv[1]), int(sys.argv[2])
    i = start
    while True:
        def write(tmp, tag=str(i)):
            for name in FILES:
                (tmp / name).write_bytes(tag.encode().ljust(8) * 20000)
        write_artifact(out, write, overwrite=True)
        print(i, flush=True)
        i += 1
""")


def test_kill_9_during_overwrite_always_leaves_a_loadable_policy(tmp_path):
    """20 processes overwriting the same policy in a loop, each killed with SIGKILL at a random moment: after each
    kill the folder holds a complete policy (every checksum holds), the newest finished or the one before."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(root=str(ROOT)))
    out = write_artifact(tmp_path / "p", _policy_writer("start"))
    rng = random.Random(22)
    finished = -1
    for attempt in range(20):
        proc = subprocess.Popen([sys.executable, str(script), str(out), str(1000 * attempt)],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.15, 0.6))
        proc.send_signal(signal.SIGKILL)
        lines = proc.communicate()[0].split()
        check_artifact(out)  # raises if a file is missing or half-written
        tag = (out / "config.json").read_bytes()[:8].decode().strip()
        if lines:
            finished = int(lines[-1])
            assert int(tag) in (finished, finished + 1), (tag, lines[-3:])
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".p.")]
        assert len(leftovers) <= 1  # at most the killed process's own temporary folder
    assert finished >= 0, "no save ever finished: the kills came too early to test anything"
    clean_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "saver.py"]
    json.loads((out / "manifest.json").read_text())


def test_hidden_files_make_a_folder_not_empty(tmp_path):
    hidden = tmp_path / "hid"
    (hidden / ".cfg").mkdir(parents=True)
    (hidden / ".important").write_text("secret")
    for kind in (POLICY, LEROBOT, DATASET):
        with pytest.raises(OutputPathError, match=r"holds files .*\.cfg, \.important"):
            check_output(hidden, kind, overwrite=True, append=kind == DATASET)
    lock_only = tmp_path / "lock"
    lock_only.mkdir()
    (lock_only / ".lock").write_text("")  # a dataset whose creation failed after taking its lock
    assert check_output(lock_only, DATASET, append=True) == lock_only


def test_nothing_is_written_inside_another_kind_or_over_a_folder_holding_one(tmp_path):
    policy = _make(tmp_path / "pol", POLICY)
    data = _make(tmp_path / "data", DATASET)
    with pytest.raises(OutputPathError, match="lies inside an ALT Studio policy"):
        check_output(policy / "sub", DATASET, append=True)
    with pytest.raises(OutputPathError, match="lies inside an ALT Studio dataset"):
        check_output(data / "episodes" / "x", POLICY)
    # a policy folder someone put a dataset in: replacing it would delete the dataset
    holder = _make(tmp_path / "pol2", POLICY)
    (holder / "sub").mkdir()
    (holder / "sub" / "dataset.json").write_text("{}")
    with pytest.raises(OutputPathError, match=r"holds an ALT Studio dataset .*pol2/sub"):
        check_output(holder, POLICY, overwrite=True)
