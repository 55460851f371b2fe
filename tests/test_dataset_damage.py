"""Nothing lost to a typo, nothing unsafe from a bad file: damaged recordings are found and named, malformed
headers give one clear line, a full disk loses nothing kept, concurrent creators cannot mix settings, and
output folders are checked before any work."""

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

import main
from recorder import dataset as dataset_module
from recorder import episode_writer as episode_writer_module
from recorder.dataset import (DATASET_FILE, KEPT_LOG_FILE, META_FILE, NEXT_INDEX_FILE, STEPS_FILE, CameraSpec,
                              DamagedDatasetError, Dataset, DatasetError, DatasetLockedError, DatasetMismatchError,
                              DatasetSpec, StepRecord)
from core.types import Frame

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
SPEC = DatasetSpec(fps=10.0, cameras=(CameraSpec("hand", SIZE, SIZE), CameraSpec("third", SIZE, SIZE)),
                   robot="synthetic", joint_count=2)
STEPS = 6


# --------------------------------------------------------------------------- helpers
def keep_episode(ds: Dataset, steps: int = STEPS, size: int = SIZE) -> int:
    yy, xx = np.mgrid[0:size, 0:size]
    writer = ds.new_episode("task")
    for k in range(steps):
        vec = np.array([0.4, 0.01 * k, 0.3, 0, 0, 0, 1, 0.5], np.float32)
        image = np.stack([(xx * 12 + k * 9) % 256, (yy * 12) % 256, np.full_like(xx, 40 * k % 256)], -1)
        frames = {c.name: Frame(image.astype(np.uint8), k / 10, k / 10, k, c.name) for c in ds.spec.cameras}
        writer.add(StepRecord(tick=k, t_scheduled=k / 10, t_actual=k / 10, state=vec, joints=np.zeros(2, np.float32),
                              action=vec, requested=vec, frames=frames))
    return writer.keep(stats={"skipped_ticks": 0}).index


def make_dataset(root: Path, episodes: int = 3, spec: DatasetSpec = SPEC) -> Path:
    with Dataset.create(root, spec) as ds:
        for _ in range(episodes):
            keep_episode(ds, size=spec.cameras[0].width)
    return root


def ep(root: Path, index: int) -> Path:
    return root / "episodes" / f"episode-{index:06d}"


def frame_range(root: Path, index: int, camera: str, i: int) -> tuple[int, int]:
    with np.load(ep(root, index) / STEPS_FILE) as z:
        return int(z[f"{camera}.offset"][i]), int(z[f"{camera}.length"][i])


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(err: str, after_progress: bool = False) -> str:
    """The one line of stderr, "error: ..." (``after_progress``: the last line, after the progress lines of
    work that had begun, and the only error line)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    if after_progress:
        assert [ln for ln in lines if "error" in ln.lower()] == lines[-1:], err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def fix_meta(root: Path, index: int, name: str) -> None:
    """Record the current size and CRC of ``name`` in meta.json (damage that happened before the episode was kept)."""
    path = ep(root, index)
    meta = json.loads((path / META_FILE).read_text())
    data = (path / name).read_bytes()
    meta["files"][name] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    (path / META_FILE).write_text(json.dumps(meta))


# --------------------------------------------------------------------------- damage of every kind is found and named
def flip_bytes(root):
    """8 flipped bytes in two frames of a pack: every frame still decodes, but to wrong pixels."""
    pack = ep(root, 1) / "hand.pack"
    data = bytearray(pack.read_bytes())
    for i in (2, 4):
        offset, length = frame_range(root, 1, "hand", i)
        for k in range(4):
            data[offset + length // 2 + k] ^= 0x5A
    pack.write_bytes(bytes(data))
    return "hand.pack is corrupt: its checksum differs"


def truncate_pack(root):
    pack = ep(root, 1) / "hand.pack"
    pack.write_bytes(pack.read_bytes()[:-100])
    return "hand.pack is truncated or altered"


def zero_pack(root):
    pack = ep(root, 1) / "third.pack"
    pack.write_bytes(bytes(pack.stat().st_size))
    return "third.pack is corrupt"


def delete_pack(root):
    (ep(root, 1) / "third.pack").unlink()
    return "third.pack is missing"


def truncate_steps(root):
    steps = ep(root, 1) / STEPS_FILE
    steps.write_bytes(steps.read_bytes()[:-50])
    return "steps.npz is truncated or altered"


def meta_wrong_length(root):
    path = ep(root, 1) / META_FILE
    meta = json.loads(path.read_text())
    meta["length"] += 1
    path.write_text(json.dumps(meta))
    return f"steps.npz holds {STEPS} steps"


def meta_is_a_list(root):
    (ep(root, 1) / META_FILE).write_text("[1, 2]")
    return "meta.json is corrupt: it holds a JSON list"


def meta_missing_key(root):
    path = ep(root, 1) / META_FILE
    meta = json.loads(path.read_text())
    del meta["files"]
    path.write_text(json.dumps(meta))
    return "meta.json: missing field 'files'"


def delete_folder(root):
    shutil.rmtree(ep(root, 1))
    return "episode-000001 is missing (deleted outside ALT Studio?)"


DAMAGE = [flip_bytes, truncate_pack, zero_pack, delete_pack, truncate_steps, meta_wrong_length, meta_is_a_list,
          meta_missing_key, delete_folder]


def test_a_healthy_dataset_is_called_healthy(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    rc, out, err = cli(capsys, "dataset", "info", root)
    assert rc == 0 and "health: healthy" in out and err == ""
    rc, out, _ = cli(capsys, "dataset", "info", root, "--full")
    assert rc == 0 and "health: healthy (full check" in out
    with Dataset.open(root) as ds:
        report = ds.check(full=True)
        assert report.healthy and report.intact == [0, 1, 2] and report.damaged == {}
        assert ds.require_intact() == ([0, 1, 2], [])


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damage_is_found_named_and_refused(tmp_path, capsys, damage):
    root = make_dataset(tmp_path / "ds")
    expected = damage(root)
    rc, out, err = cli(capsys, "dataset", "info", root)
    assert rc == 1, out
    assert "healthy" not in out.replace("DAMAGED", "")
    [line] = [ln for ln in out.splitlines() if ln.startswith(("damaged: ", "missing: "))]
    assert line.split(": ", 1)[1].startswith("episode 1: ") and expected in line
    assert "episode 1" in one_error_line(err)
    with Dataset.open(root) as ds:
        report = ds.check()
        assert set(report.damaged) == {1} and report.intact == [0, 2]
        assert (report.missing == [1]) == (damage is delete_folder)
        with pytest.raises(DamagedDatasetError, match=r"episode 1: .*--skip-damaged.*dataset delete") as info:
            ds.require_intact()
        assert set(info.value.damaged) == {1}
        usable, skipped = ds.require_intact(skip_damaged=True)
        assert usable == [0, 2] and len(skipped) == 1 and skipped[0].startswith("episode 1: ")
        assert ds.require_intact([0, 2]) == ([0, 2], [])  # the others are fine on their own
    # `dataset delete` removes (or, for a missing folder, forgets) it: healthy again
    rc, out, _ = cli(capsys, "dataset", "delete", root, "1")
    assert rc == 0
    rc, out, err = cli(capsys, "dataset", "info", root)
    assert rc == 0 and "health: healthy" in out and err == ""


def test_only_the_full_check_decodes_every_frame(tmp_path, capsys):
    """A frame whose bytes were bad before they were kept (the checksum agrees): found by --full, by export."""
    root = make_dataset(tmp_path / "ds")
    offset, length = frame_range(root, 1, "hand", 3)
    pack = ep(root, 1) / "hand.pack"
    data = bytearray(pack.read_bytes())
    data[offset:offset + length] = b"\xff" * length
    pack.write_bytes(bytes(data))
    fix_meta(root, 1, "hand.pack")
    rc, out, _ = cli(capsys, "dataset", "info", root)
    assert rc == 0 and "health: healthy" in out
    rc, out, err = cli(capsys, "dataset", "info", root, "--full")
    assert rc == 1 and "damaged: episode 1: " in out and "hand.pack frame 3: the image bytes do not decode" in out
    one_error_line(err)
    # export meets it while encoding: refused by name, nothing written ...
    rc, out, err = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264")
    line = one_error_line(err, after_progress=True)
    assert rc == 2 and "episode 1" in line and "hand.pack frame 3" in line and "--skip-damaged" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # ... or left out, saying which, with the rest exported
    rc, out, err = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264", "--skip-damaged")
    assert rc == 0 and "exported 2 episodes" in out and "excluded episode 1: damaged: " in out
    info = json.loads((tmp_path / "out/meta/info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 2 * STEPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out"]


def test_export_refuses_damaged_episodes_or_skips_them(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    flip_bytes(root)
    rc, _, err = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264")
    line = one_error_line(err)
    assert rc == 2 and "episode 1: " in line and "hand.pack is corrupt" in line and "--skip-damaged" in line
    assert not (tmp_path / "out").exists()
    rc, _, err = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264", "--episodes", "1",
                     "--skip-damaged")
    assert rc == 2 and "every selected episode is damaged" in one_error_line(err)
    rc, out, _ = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264", "--skip-damaged")
    assert rc == 0 and "exported 2 episodes" in out and "excluded episode 1: damaged: " in out
    provenance = json.loads((tmp_path / "out/meta/alt_studio_export.json").read_text())
    assert [e["source_index"] for e in provenance["episodes"]] == [0, 2]
    assert [e["source_index"] for e in provenance["excluded"]] == [1]


def test_episodes_recorded_at_another_size_than_the_header_says_are_damaged(tmp_path, capsys):
    """The aftermath of two creators racing before the fix: the header says 8x8, the episodes are 16x16."""
    root = make_dataset(tmp_path / "ds", episodes=2)
    header = json.loads((root / DATASET_FILE).read_text())
    for cam in header["spec"]["cameras"]:
        cam["width"] = cam["height"] = 8
    (root / DATASET_FILE).write_text(json.dumps(header))
    rc, out, err = cli(capsys, "dataset", "info", root)
    assert rc == 1 and "hand.pack frame 0 is 16x16, but dataset.json says camera 'hand' is 8x8" in out
    rc, _, err = cli(capsys, "export", root, "--out", tmp_path / "out", "--codec", "libx264")
    assert rc == 2 and "episode 0" in one_error_line(err)


# --------------------------------------------------------------------------- malformed headers: one line, every verb
GARBAGE = {
    "a list": b"[1, 2]",
    "empty object": b"{}",
    "truncated": b'{"format": "alt-studio-dataset", "format_version": 1, "spec": {"fps": 1',
    "not utf-8": b"\xff\xfe\x00\x81garbage",
    "spec missing fields": json.dumps({"format": "alt-studio-dataset", "format_version": 1,
                                       "spec": {"fps": 10.0}}).encode(),
    "spec not an object": json.dumps({"format": "alt-studio-dataset", "format_version": 1, "spec": [1]}).encode(),
}


def _header_with(**changes) -> bytes:
    spec = SPEC.to_json()
    spec.update(changes)
    return json.dumps({"format": "alt-studio-dataset", "format_version": 1, "spec": spec}).encode()


GARBAGE.update({
    "fps a string": _header_with(fps="fast"),
    "cameras a string": _header_with(cameras="hand"),
    "negative width": _header_with(cameras=[{"name": "hand", "width": -1, "height": 16}]),
    "camera a list": _header_with(cameras=[[1, 2]]),
    "names not strings": _header_with(action_names=[1, 2]),
})


@pytest.mark.parametrize("content", list(GARBAGE.values()), ids=list(GARBAGE))
def test_a_malformed_header_gives_one_line_in_every_verb(tmp_path, capsys, monkeypatch, content):
    root = make_dataset(tmp_path / "ds", episodes=1)
    (root / DATASET_FILE).write_bytes(content)
    for where in ("recorder.recording.make_rig", "robot_drivers.factory.make_rig"):  # record; replay
        monkeypatch.setattr(where, lambda *a, **k: pytest.fail("the rig was made"))
    with pytest.raises(DatasetError, match=DATASET_FILE):
        Dataset.open(root)
    verbs = [("dataset", "info", root), ("dataset", "delete", root, "--interrupted"),
             ("export", root, "--out", tmp_path / "out"), ("replay", root, "--episode", "0"),
             ("record", "--out", root, "--episodes", "1")]
    for argv in verbs:
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and DATASET_FILE in one_error_line(err), (argv, err)


def test_malformed_bookkeeping_files_are_named(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", episodes=2)
    (root / KEPT_LOG_FILE).write_text('{"kept": "all"}')
    rc, out, err = cli(capsys, "dataset", "info", root)
    assert rc == 1 and f"problem: {root / KEPT_LOG_FILE}: 'kept' must be a list" in out
    one_error_line(err)
    (root / KEPT_LOG_FILE).unlink()  # an older dataset: rebuilt from the folders
    (root / NEXT_INDEX_FILE).write_text("[3]")
    rc, _, err = cli(capsys, "dataset", "delete", root, "0")
    assert rc == 2 and NEXT_INDEX_FILE in one_error_line(err) and "JSON list" in err
    assert ep(root, 0).is_dir()  # nothing was deleted


# --------------------------------------------------------------------------- a full disk
def _buffered_full_disk(monkeypatch, camera: str = "hand", from_index: int = 0):
    """The pack of ``camera`` in episodes from ``from_index`` on goes to /dev/full through a buffer: the writes
    seem to succeed until the buffer is flushed (and closing the file raises ENOSPC too)."""
    real_init = episode_writer_module._PackWriter.__init__

    def init(self, path, *args, **kwargs):
        real_init(self, path, *args, **kwargs)
        index = int(path.parent.name.rsplit("-", 1)[1])
        if path.stem == camera and index >= from_index:
            self._file.close()
            self._file = open("/dev/full", "wb")

    monkeypatch.setattr(episode_writer_module._PackWriter, "__init__", init)


def test_a_full_disk_while_keeping_keeps_the_first_error_and_removes_the_partial_folder(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", episodes=2)
    with Dataset.open(root, writable=True) as ds:
        with monkeypatch.context() as m:
            _buffered_full_disk(m)
            with pytest.raises(DatasetError) as info:
                keep_episode(ds)
        message = str(info.value)
        assert message.startswith("episode 2 was NOT kept: could not write ")
        assert "episodes/.partial-episode-000002/hand.pack: the disk is full (" in message and "B free in" in message
        assert ds.interrupted() == [] and ds.episode_indices() == [0, 1]
        assert ds.check(full=True).healthy
        assert keep_episode(ds) == 2  # space again: recording goes on


def test_a_cleanup_that_fails_too_never_hides_the_first_error(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", episodes=1)

    def savez(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def rmtree(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device (RMTREE FAILED)")

    with Dataset.open(root, writable=True) as ds:
        with monkeypatch.context() as m:
            m.setattr(episode_writer_module.np, "savez", savez)
            m.setattr(episode_writer_module.shutil, "rmtree", rmtree)
            with pytest.raises(DatasetError) as info:
                keep_episode(ds)
        message = str(info.value)
        assert "could not write" in message and message.rstrip().endswith("free some space")
        assert "steps.npz: the disk is full" in message and "RMTREE FAILED" not in message
        assert "--interrupted` removes it" in message  # the folder could not be removed: it says so
        assert [p.name for p in ds.interrupted()] == [".partial-episode-000001"]
        ds.delete_interrupted()
        assert ds.interrupted() == [] and ds.check().healthy and ds.episode_indices() == [0]


def test_record_on_a_full_disk_names_the_file_and_loses_nothing_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    _buffered_full_disk(monkeypatch, from_index=1)
    rc, stdout, err = cli(capsys, "record", "--out", out, "--episodes", "3", "--camera-size", "32")
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert errors == [err.strip().splitlines()[-1]]  # one error line, the last one
    assert errors[0].startswith("error: episode 1 was NOT kept: could not write ")
    assert ".partial-episode-000001/hand.pack: the disk is full (" in errors[0] and "B free in" in errors[0]
    assert "the 1 episode(s) this run kept are intact" in errors[0]
    with Dataset.open(out) as ds:
        assert ds.episode_indices() == [0] and ds.interrupted() == []
        assert ds.check(full=True).healthy


class FakeFullDisk:
    """Writing to the dataset's files fails with ENOSPC until something is removed (removal frees space)."""

    def __init__(self, monkeypatch, frees: bool = True):
        self.full, self.writes_refused = True, 0
        real_write_atomic, real_write = dataset_module._write_atomic, os.write
        real_remove = dataset_module._remove_contents

        def write_atomic(path, data):
            if self.full:
                self.writes_refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write_atomic(path, data)

        def write(fd, data):
            if self.full and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == ".lock":
                self.writes_refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        def remove(*args, **kwargs):
            real_remove(*args, **kwargs)
            self.full = self.full and not frees

        monkeypatch.setattr(dataset_module, "_write_atomic", write_atomic)
        monkeypatch.setattr(episode_writer_module, "_write_atomic", write_atomic)
        monkeypatch.setattr(dataset_module.os, "write", write)
        monkeypatch.setattr(dataset_module, "_remove_contents", remove)


def _interrupted(root: Path) -> Path:
    with Dataset.open(root, writable=True) as ds:
        writer = ds.new_episode("task")  # a crash mid-episode: never kept nor discarded
        for pack in writer._packs.values():
            pack.abort()
        (writer.dir / "hand.pack").write_bytes(b"x" * 1000)
        return writer.dir


def test_delete_interrupted_works_on_a_full_disk(tmp_path, capsys, monkeypatch):
    root = make_dataset(tmp_path / "ds", episodes=2)
    partial = _interrupted(root)
    disk = FakeFullDisk(monkeypatch)
    rc, out, err = cli(capsys, "dataset", "delete", root, "--interrupted")
    assert rc == 0 and "removed 1 interrupted" in out and err == ""
    assert disk.writes_refused >= 1 and not partial.exists()
    assert json.loads((root / NEXT_INDEX_FILE).read_text()) == {"next_index": 3}  # written once space was free
    with Dataset.open(root, writable=True) as ds:
        assert ds.next_index() == 3 and ds.check().healthy


def test_deleting_on_a_disk_that_stays_full_keeps_the_index_taken(tmp_path, capsys, monkeypatch):
    root = make_dataset(tmp_path / "ds", episodes=3)
    FakeFullDisk(monkeypatch, frees=False)
    rc, _, err = cli(capsys, "dataset", "delete", root, "2")
    line = one_error_line(err)
    assert rc == 2 and "the files were removed" in line and NEXT_INDEX_FILE in line and "B free" in line
    marker = root / "episodes" / ".deleting-episode-000002"
    assert marker.is_dir() and list(marker.iterdir()) == []  # emptied: it holds index 2
    with Dataset.open(root) as ds:
        assert ds.episode_indices() == [0, 1] and ds.next_index() == 3 and ds.check().healthy
    monkeypatch.undo()
    rc, _, _ = cli(capsys, "dataset", "delete", root, "--interrupted")
    assert rc == 0 and not marker.exists()
    with Dataset.open(root, writable=True) as ds:
        assert ds.next_index() == 3 and ds.missing_episodes() == [] and keep_episode(ds) == 3


def test_deleting_an_episode_works_on_a_full_disk(tmp_path, capsys, monkeypatch):
    root = make_dataset(tmp_path / "ds", episodes=3)
    FakeFullDisk(monkeypatch)
    rc, out, _ = cli(capsys, "dataset", "delete", root, "2")
    assert rc == 0 and "deleted episode 2" in out
    monkeypatch.undo()
    assert not (root / "episodes" / ".deleting-episode-000002").exists()
    with Dataset.open(root, writable=True) as ds:
        assert ds.episode_indices() == [0, 1] and ds.missing_episodes() == [] and ds.check().healthy
        assert keep_episode(ds) == 3  # the index is not given out again
    assert json.loads((root / KEPT_LOG_FILE).read_text()) == {"kept": [0, 1, 3]}


# --------------------------------------------------------------------------- creators racing
SMALL = DatasetSpec(fps=10.0, cameras=(CameraSpec("hand", 8, 8), CameraSpec("third", 8, 8)), robot="synthetic",
                    joint_count=2)


def test_a_header_written_between_the_check_and_the_lock_is_compared_not_overwritten(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    real_take_lock, raced = Dataset._take_lock, []

    def slowed(self):
        if not raced:  # the other process wins the race right here, between the check and the lock
            raced.append(True)
            Dataset.create(self.root, SMALL).close()
        real_take_lock(self)

    monkeypatch.setattr(Dataset, "_take_lock", slowed)
    with pytest.raises(DatasetMismatchError, match="camera 'hand' image size: dataset 8x8, rig 16x16"):
        Dataset.open_or_create(root, SPEC)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        Dataset.create(root, SPEC)
    monkeypatch.undo()
    with Dataset.open(root) as ds:
        assert ds.spec == SMALL


def test_two_creators_with_different_settings_cannot_both_succeed(tmp_path):
    root = tmp_path / "ds"
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def create(name, spec):
        barrier.wait()
        while True:
            try:
                with Dataset.open_or_create(root, spec) as ds:
                    keep_episode(ds, size=spec.cameras[0].width)
                    keep_episode(ds, size=spec.cameras[0].width)
                results[name] = "ok"
                return
            except DatasetLockedError:
                continue  # the other one is creating or recording: try again
            except DatasetError as exc:
                results[name] = exc
                return

    threads = [threading.Thread(target=create, args=(n, s)) for n, s in (("big", SPEC), ("small", SMALL))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [n for n, r in results.items() if r == "ok"]
    [loser] = [r for r in results.values() if r != "ok"]
    assert len(winners) == 1 and isinstance(loser, DatasetMismatchError)
    with Dataset.open(root) as ds:
        assert ds.spec == (SPEC if winners == ["big"] else SMALL)
        assert ds.episode_indices() == [0, 1] and ds.check(full=True).healthy


def test_two_processes_creating_one_dataset(tmp_path):
    """As in the report: two `record`-like processes start together with different image sizes."""
    script = (
        "import sys, time; sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})\n"
        "from recorder.dataset import Dataset, DatasetLockedError, DatasetError\n"
        "from test_dataset_damage import SPEC, SMALL, keep_episode\n"
        "spec = SPEC if sys.argv[1] == 'big' else SMALL\n"
        "while True:\n"
        "    try:\n"
        "        with Dataset.open_or_create(sys.argv[2], spec) as ds:\n"
        "            keep_episode(ds, size=spec.cameras[0].width)\n"
        "        print('ok'); break\n"
        "    except DatasetLockedError: time.sleep(0.01)\n"
        "    except DatasetError as e: print('refused', type(e).__name__); break\n"
    ).format(root=str(ROOT), tests=str(ROOT / "tests"))
    procs = [subprocess.Popen([sys.executable, "-c", script, size, str(tmp_path / "ds")], stdout=subprocess.PIPE,
                              text=True) for size in ("big", "small")]
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outputs == ["ok", "refused DatasetMismatchError"]
    with Dataset.open(tmp_path / "ds") as ds:
        assert ds.check(full=True).healthy and ds.episode_indices() == [0]


# --------------------------------------------------------------------------- output folders for record and export
def _policy_folder(path: Path) -> Path:
    path.mkdir()
    (path / "manifest.json").write_text("{}")
    return path


def _lerobot_folder(path: Path) -> Path:
    (path / "meta").mkdir(parents=True)
    (path / "meta" / "info.json").write_text("{}")
    return path


def _other_files(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    return path


@pytest.mark.parametrize("target", ["policy", "lerobot", "other", ".", "", "project"])
def test_record_refuses_a_bad_output_before_the_rig_connects(tmp_path, capsys, monkeypatch, target):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("recorder.recording.make_rig", lambda *a, **k: pytest.fail("the rig was made"))
    out = {"policy": lambda: _policy_folder(tmp_path / "p"), "lerobot": lambda: _lerobot_folder(tmp_path / "l"),
           "other": lambda: _other_files(tmp_path / "o"), ".": lambda: ".", "": lambda: "",
           "project": lambda: ROOT}[target]()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, _, err = cli(capsys, "record", "--out", out, "--episodes", "1")
    assert rc == 2 and "--out" in one_error_line(err)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing mixed in


def test_export_output_checks_leftovers_and_overwrite(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", episodes=2)
    rc, _, err = cli(capsys, "export", root, "--out", root / "lerobot")
    assert rc == 2 and "lies inside the input" in one_error_line(err)
    rc, _, err = cli(capsys, "export", root, "--out", _other_files(tmp_path / "mine"))
    assert rc == 2 and "holds files that are not" in one_error_line(err)
    # what an export killed midway left behind is removed by the next export there; a live one's is not
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".lerobot.exporting-{dead.pid}-0badf00d"
    live = tmp_path / f".lerobot.exporting-{os.getppid()}-0badf00d"
    for folder in (stale, live):
        (folder / "videos").mkdir(parents=True)
        (folder / "videos" / "half.mp4").write_bytes(b"\0" * 100)
    rc, out, _ = cli(capsys, "export", root, "--out", tmp_path / "lerobot", "--codec", "libx264")
    assert rc == 0 and "exported 2 episodes" in out
    assert not stale.exists() and live.exists()
    assert not [p for p in tmp_path.iterdir() if ".exporting-" in p.name and p != live]
    # an existing export: refused, or replaced with --overwrite
    rc, _, err = cli(capsys, "export", root, "--out", tmp_path / "lerobot", "--codec", "libx264", "--episodes", "0")
    assert rc == 2 and "already exists" in one_error_line(err)
    rc, out, _ = cli(capsys, "export", root, "--out", tmp_path / "lerobot", "--codec", "libx264", "--episodes", "0",
                     "--overwrite")
    assert rc == 0 and json.loads((tmp_path / "lerobot/meta/info.json").read_text())["total_episodes"] == 1


# --------------------------------------------------------------------------- bookkeeping: deletions, trims, old data
def test_deleted_trimmed_and_interrupted_episodes_are_not_missing(tmp_path):
    from recorder.idle import set_aside

    root = make_dataset(tmp_path / "ds", episodes=4)
    with Dataset.open(root, writable=True) as ds:
        ds.delete_episode(1)
        set_aside(ds, 2)  # what trimming does with the original
        ds.new_episode("task")  # interrupted
        assert ds.missing_episodes() == [] and ds.check().healthy
        assert json.loads((root / KEPT_LOG_FILE).read_text()) == {"kept": [0, 2, 3]}
        shutil.rmtree(ep(root, 3))
        assert ds.missing_episodes() == [3]
        with pytest.raises(DatasetError, match="has no episode"):
            ds.delete_episode(7)
        assert ds.delete_episode(3) is False  # acknowledged: no longer expected, index not reused
        assert ds.missing_episodes() == [] and ds.next_index() == 5


def test_a_dataset_from_before_the_kept_list_still_opens_and_checks(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", episodes=4)
    with Dataset.open(root, writable=True) as ds:
        ds.delete_episode(0)
    (root / KEPT_LOG_FILE).unlink()
    rc, out, _ = cli(capsys, "dataset", "info", root)
    assert rc == 0 and "health: healthy" in out
    shutil.rmtree(ep(root, 2))  # a gap above the last deletion: removed by hand
    rc, out, _ = cli(capsys, "dataset", "info", root)
    assert rc == 1 and "missing: episode 2: " in out
    with Dataset.open(root, writable=True) as ds:
        assert keep_episode(ds) == 4  # the list is started, with what was already missing
        assert ds.missing_episodes() == [2]
    assert json.loads((root / KEPT_LOG_FILE).read_text()) == {"kept": [1, 2, 3, 4]}


# --------------------------------------------------------------------------- what train reads
@pytest.fixture
def trained_on(monkeypatch):
    """The episodes `train` would build from, without training: ALTPolicy.build is stopped at its door."""
    from policy.policy import ALTPolicy

    seen = {}

    class Stop(Exception):
        pass

    def build(dataset, config, **kwargs):
        seen["episodes"] = list(kwargs["episodes"])
        raise Stop

    monkeypatch.setattr(ALTPolicy, "build", build)
    return seen, Stop


def _complete(root: Path) -> Path:
    """Mark every episode ended by the stop button (complete: train uses it)."""
    for meta in root.glob(f"episodes/*/{META_FILE}"):
        doc = json.loads(meta.read_text())
        doc["end_reason"] = "stop_button"
        meta.write_text(json.dumps(doc))
    return root


def test_train_refuses_a_missing_episode_folder_and_skips_it_when_told(tmp_path, capsys, trained_on):
    seen, stop = trained_on
    root = _complete(make_dataset(tmp_path / "ds", episodes=3))
    shutil.rmtree(ep(root, 1))
    rc, _, err = cli(capsys, "train", root, "--out", tmp_path / "p")
    assert rc == 2 and "episode 1" in one_error_line(err) and "missing" in err and "--skip-damaged" in err
    with pytest.raises(stop):
        main.main(["train", str(root), "--out", str(tmp_path / "p"), "--skip-damaged"])
    assert seen["episodes"] == [0, 2]
    assert "skipped (damaged): episode 1" in capsys.readouterr().err


def test_train_skips_an_episode_whose_meta_is_gone(tmp_path, capsys, trained_on):
    seen, stop = trained_on
    root = _complete(make_dataset(tmp_path / "ds", episodes=3))
    (ep(root, 0) / META_FILE).unlink()
    rc, _, err = cli(capsys, "train", root, "--out", tmp_path / "p")
    assert rc == 2 and "episode 0" in one_error_line(err) and "--skip-damaged" in err
    with pytest.raises(stop):
        main.main(["train", str(root), "--out", str(tmp_path / "p"), "--skip-damaged"])
    assert seen["episodes"] == [1, 2]


def test_damaged_bookkeeping_stops_train_and_export_too(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", episodes=2)
    (root / KEPT_LOG_FILE).write_text('{"kept": "all"}')
    for argv in (("train", root, "--out", tmp_path / "p"), ("export", root, "--out", tmp_path / "x")):
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and KEPT_LOG_FILE in one_error_line(err), (argv, err)
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists()


def test_export_on_a_full_disk_names_the_export_and_the_free_space(tmp_path, capsys, monkeypatch):
    from lerobot_bridge import export as export_module

    root = make_dataset(tmp_path / "ds", episodes=1)

    def full(*args, **kwargs):
        raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(export_module, "_write_all", full)
    rc, _, err = cli(capsys, "export", root, "--out", tmp_path / "x")
    line = one_error_line(err)
    assert rc == 2 and "disk is full" in line and str(tmp_path / "x") in line and "B free in" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing left behind
