"""The on-disk demonstration dataset (format described in docs/dataset_format.md).

Design in one paragraph: every episode is its own folder. While recording it
is called ``.partial-episode-NNNNNN``; camera images are JPEG (or PNG)
encoded on background threads and appended to one pack file per camera as
they arrive. Keeping the episode writes the per-step arrays, then the
metadata, fsyncs everything and atomically renames the folder to
``episode-NNNNNN``. So a kept episode is complete the moment it is kept, and a
crash, kill -9 or power loss can only ever leave one ``.partial-`` folder
behind, which is reported and can be deleted. Each frame is a separate JPEG
with its byte range stored per step, so any frame of any episode is one
``pread`` and one decode away.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from recorder.dataset_format import (CODECS, DATASET_FILE, DELETING_PREFIX, EPISODES_DIR, FORMAT_NAME, FORMAT_VERSION,
                                     KEPT_LOG_FILE, KEPT_PREFIX, META_FILE, NEXT_INDEX_FILE, ORIGINALS_DIR,
                                     PARTIAL_PREFIX, QUAT_NAMES, STEPS_FILE, CameraSpec, DamagedDatasetError,
                                     DatasetError, DatasetLockedError, DatasetMismatchError, DatasetSpec,
                                     _describe_os_error, _is_full_disk, _is_int, _one_line, _read_header, _read_json,
                                     _read_meta, _write_atomic, continuous_quaternions, decode_image, encode_image,
                                     fsync_dir)
from recorder.episode_writer import EpisodeWriter, StepRecord, _remove_contents, _remove_tree
from recorder.integrity import IntegrityReport, check_episodes, episode_problem

log = logging.getLogger(__name__)

# The names other modules import from here (the format's parts live in recorder.dataset_format, writing in
# recorder.episode_writer, the integrity check in recorder.integrity).
__all__ = [
    "CODECS", "DATASET_FILE", "DELETING_PREFIX", "EPISODES_DIR", "FORMAT_NAME", "FORMAT_VERSION", "KEPT_LOG_FILE",
    "KEPT_PREFIX", "META_FILE", "NEXT_INDEX_FILE", "ORIGINALS_DIR", "PARTIAL_PREFIX", "QUAT_NAMES", "STEPS_FILE",
    "CameraSpec", "DamagedDatasetError", "Dataset", "DatasetError", "DatasetLockedError", "DatasetMismatchError",
    "DatasetSpec", "EpisodeData", "EpisodeInfo", "EpisodeWriter", "IntegrityReport", "StepRecord",
    "continuous_quaternions", "decode_image", "encode_image", "fsync_dir",
]


@dataclass
class EpisodeInfo:
    index: int
    path: Path
    length: int
    duration_s: float
    task: str
    note: str
    started_at: str
    end_reason: str
    stats: dict
    extra: dict
    size_bytes: int
    keep_seconds: float | None = None

    @property
    def is_correction(self) -> bool:
        """Recorded by taking over from the policy (Take over & record): it fixes one stop, it is no demonstration."""
        return bool(self.extra.get("intervention")) if isinstance(self.extra, dict) else False

    @property
    def is_complete(self) -> bool:
        """Ended by the operator's keep (Stop & keep, or the teleop device's stop button), not cut short by a fault,
        a STOP, a command or the episode time limit."""
        return self.end_reason == "stop_button"

    @property
    def is_demonstration(self) -> bool:
        """Counts toward the demonstrations an operator sets out to record: complete, and not a correction."""
        return self.is_complete and not self.is_correction


@dataclass
class EpisodeData:
    info: EpisodeInfo
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def actions(self) -> np.ndarray:
        return self.arrays["action"]

    @property
    def states(self) -> np.ndarray:
        return self.arrays["state"]

    @property
    def timestamps(self) -> np.ndarray:
        return self.arrays["t_actual"]


class Dataset:
    """A folder of episodes. ``Dataset.open`` reads; ``writable=True`` also takes the writer lock."""

    def __init__(self, root: Path, spec: DatasetSpec, writable: bool):
        self.root = Path(root)
        self.spec = spec
        self.episodes_dir = self.root / EPISODES_DIR
        self._lock_fd: int | None = None
        self._fds: dict[Path, int] = {}
        if writable:
            self._take_lock()
        self._arrays_cached = lru_cache(maxsize=8)(self._load_arrays)
        self._fingerprints: dict[int, tuple[tuple, str]] = {}

    # -- opening ----------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: DatasetSpec) -> "Dataset":
        """A new dataset at ``root`` (refused if one is there already), open for writing."""
        return cls._create(Path(root), spec, append=False)

    @classmethod
    def open(cls, root: str | Path, writable: bool = False) -> "Dataset":
        root = Path(root)
        path = root / DATASET_FILE
        if not root.is_dir():
            raise DatasetError(f"{root} does not exist or is not a folder")
        if not path.is_file():
            raise DatasetError(f"{root} is not an ALT Studio dataset (no {DATASET_FILE})")
        return cls(root, _read_header(root), writable)

    @classmethod
    def open_or_create(cls, root: str | Path, spec: DatasetSpec) -> "Dataset":
        """Open for appending, refusing a rig whose settings differ; create if absent."""
        return cls._create(Path(root), spec, append=True)

    @classmethod
    def _create(cls, root: Path, spec: DatasetSpec, append: bool) -> "Dataset":
        """The settings of a dataset are fixed by whoever creates it, under the writer lock: the lock is taken
        first, then the header is read (and compared) or written. Two processes creating one dataset with
        different settings cannot both succeed: the second finds the first one's header and is refused."""
        if not append and (root / DATASET_FILE).exists():
            raise DatasetError(f"{root} already holds a dataset; open it to append instead")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _describe_os_error(exc, root, "could not create a dataset in") from exc
        dataset = cls(root, spec, writable=True)
        try:
            if (root / DATASET_FILE).exists():
                if not append:
                    raise DatasetError(f"{root} already holds a dataset; open it to append instead")
                stored = _read_header(root)
                problems = stored.mismatches(spec)
                if problems:
                    raise DatasetMismatchError(f"cannot append to {root}: the rig differs from how it was recorded: "
                                               + "; ".join(problems) + ". Record into a new folder, or change the "
                                               "rig settings back.")
                dataset.spec = stored
                return dataset
            header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                      "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "spec": spec.to_json()}
            try:
                (root / EPISODES_DIR).mkdir(exist_ok=True)
                _write_atomic(root / KEPT_LOG_FILE, json.dumps({"kept": []}).encode())
                _write_atomic(root / DATASET_FILE, json.dumps(header, indent=1).encode())  # last: it makes a dataset
                fsync_dir(root)
            except OSError as exc:
                raise _describe_os_error(exc, root, "could not create a dataset in") from exc
            return dataset
        except BaseException:
            dataset.close()
            raise

    def _take_lock(self) -> None:
        import fcntl

        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _describe_os_error(exc, path, "could not open the lock file") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatasetLockedError(f"{self.root} is being written by another process; close it there first")
        try:  # the pid is for people looking; the flock is the lock, so a full disk must not stop us here
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            log.debug("could not write the pid into %s: %s", path, exc)
        self._lock_fd = fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- episodes ---------------------------------------------------------
    def _require_writable(self) -> None:
        if self._lock_fd is None:
            raise DatasetError(f"{self.root} was opened read-only")

    def _scan(self, prefix: str) -> list[tuple[int, Path]]:
        out = []
        if not self.episodes_dir.is_dir():
            return out
        for p in self.episodes_dir.iterdir():
            if p.name.startswith(prefix) and p.is_dir():
                try:
                    out.append((int(p.name[len(prefix):]), p))
                except ValueError:
                    continue
        return sorted(out)

    def episode_indices(self) -> list[int]:
        return [i for i, _ in self._scan(KEPT_PREFIX)]

    def interrupted(self) -> list[Path]:
        """Folders of episodes whose recording never finished (crash, kill, power loss)."""
        return [p for _, p in self._scan(PARTIAL_PREFIX)]

    def next_index(self) -> int:
        """The index the next episode gets: past every kept, interrupted or half-deleted episode and past
        every index ever deleted (``next_index.json``), so an index is never reused after a deletion."""
        used = [i for prefix in (KEPT_PREFIX, PARTIAL_PREFIX, DELETING_PREFIX + KEPT_PREFIX)
                for i, _ in self._scan(prefix)]
        return max([self._deleted_floor()] + [i + 1 for i in used])

    def _deleted_floor(self) -> int:
        """One past the highest index ever deleted (0 when nothing was deleted)."""
        path = self.root / NEXT_INDEX_FILE
        if not path.exists():
            return 0
        value = _read_json(path).get("next_index")
        if not _is_int(value) or value < 0:
            raise DatasetError(f"{path}: 'next_index' must be a non-negative integer, not {value!r}; set it one past "
                               "the highest episode index this dataset ever had")
        return value

    # -- which episodes should be there ------------------------------------
    def _kept_log(self) -> set[int] | None:
        """The indices ``kept_episodes.json`` lists (None for a dataset from before it)."""
        path = self.root / KEPT_LOG_FILE
        if not path.exists():
            return None
        kept = _read_json(path).get("kept")
        if not isinstance(kept, list) or not all(_is_int(i) and i >= 0 for i in kept):
            raise DatasetError(f"{path}: 'kept' must be a list of episode indices; delete the file to rebuild it "
                               "from the episode folders")
        return set(kept)

    def _set_aside(self) -> set[int]:
        """Indices of originals moved to trimmed-originals/ (recorder.idle): set aside, not missing."""
        folder = self.root / ORIGINALS_DIR
        out = set()
        if folder.is_dir():
            for p in folder.iterdir():
                number = p.name[len(KEPT_PREFIX):].split(".", 1)[0] if p.name.startswith(KEPT_PREFIX) else ""
                if number.isdigit():
                    out.add(int(number))
        return out

    def _expected(self) -> set[int]:
        """Indices that should have a folder in episodes/: those the kept log lists, and every present one.
        Without a log (a dataset from before it) kept indices run on without gaps, except where an episode was
        deleted through ALT Studio (those lie below ``next_index.json``'s floor) or set aside."""
        present = set(self.episode_indices())
        kept = self._kept_log()
        if kept is None:
            kept = set(range(self._deleted_floor(), max(present, default=-1) + 1))
        return kept | present

    def missing_episodes(self) -> list[int]:
        """Kept episodes whose folder is gone without `dataset delete` (removed by hand, a bad sync, a disk error):
        listed as kept (or, in a dataset from before that list, leaving a gap above the last deletion), not
        set aside by trimming, not being deleted."""
        busy = {i for prefix in (PARTIAL_PREFIX, DELETING_PREFIX + KEPT_PREFIX) for i, _ in self._scan(prefix)}
        return sorted(self._expected() - set(self.episode_indices()) - busy - self._set_aside())

    def _write_kept_log(self, add: int | None = None, remove: set[int] = frozenset()) -> None:
        try:
            expected = self._expected()
        except DatasetError as exc:  # a corrupt log or floor: rebuilt from the folders
            log.warning("%s; rebuilding it from the episode folders", exc)
            expected = set(self.episode_indices())
        kept = (expected - self._set_aside() - set(remove)) | ({add} if add is not None else set())
        _write_atomic(self.root / KEPT_LOG_FILE, json.dumps({"kept": sorted(kept)}).encode())

    def _note_kept(self, index: int) -> None:
        """Add a just-published episode to the kept log; best effort (the episode is kept either way)."""
        try:
            self._write_kept_log(add=index)
        except (OSError, DatasetError) as exc:
            log.warning("episode %d is kept, but %s could not be updated (%s); a later removal of its folder by "
                        "hand will not be noticed", index, self.root / KEPT_LOG_FILE, exc)

    def _record_deletion(self, removed: set[int], past: int) -> None:
        """Durably, before the folders go: no index below ``past`` is given out again (``next_index.json``), and
        ``removed`` are no longer expected (``kept_episodes.json``). DatasetError naming the file on failure,
        with the OSError as its cause."""
        path = self.root / NEXT_INDEX_FILE
        try:
            if past > self._deleted_floor():
                _write_atomic(path, json.dumps({"next_index": past}).encode())
            path = self.root / KEPT_LOG_FILE
            if removed:
                self._write_kept_log(remove=removed)
            fsync_dir(self.root)
        except OSError as exc:
            raise _describe_os_error(exc, path, "could not write") from exc

    def _record_deletion_or_defer(self, removed: set[int], past: int) -> bool:
        """:meth:`_record_deletion` now; on a full disk, False: the caller frees the space first (keeping the
        emptied folders, which hold the indices, until the record is written)."""
        try:
            self._record_deletion(removed, past)
            return True
        except DatasetError as exc:
            if _is_full_disk(exc.__cause__):
                return False
            raise DatasetError(f"nothing was deleted; {exc}") from exc

    def _finish_deferred(self, removed: set[int], past: int, markers: list[Path]) -> None:
        try:
            self._record_deletion(removed, past)
        except DatasetError as exc:
            names = ", ".join(p.name for p in markers)
            raise DatasetError(f"the files were removed, but {exc}; the empty folder(s) {names} keep their indices "
                               f"from being given out again until `dataset delete {self.root} --interrupted` "
                               "succeeds") from exc
        for p in markers:
            try:
                p.rmdir()
            except OSError as exc:
                log.warning("could not remove the empty folder %s: %s", p, exc)

    def _episode_dir(self, index: int) -> Path:
        path = self.episodes_dir / f"{KEPT_PREFIX}{index:06d}"
        if not path.is_dir():
            raise DatasetError(f"{self.root} has no episode {index} (episodes: {self.episode_indices()})")
        return path

    def episode(self, index: int) -> EpisodeInfo:
        path = self._episode_dir(index)
        meta = _read_meta(path / META_FILE)
        return EpisodeInfo(index=meta["index"], path=path, length=meta["length"], duration_s=meta["duration_s"],
                           task=meta["task"], note=meta["note"], started_at=meta["started_at"],
                           end_reason=meta["end_reason"], stats=meta["stats"], extra=meta["extra"],
                           size_bytes=sum(f["bytes"] for f in meta["files"].values()))

    def episodes(self) -> list[EpisodeInfo]:
        return [self.episode(i) for i in self.episode_indices()]

    def new_episode(self, task: str, note: str = "", extra: dict | None = None) -> EpisodeWriter:
        self._require_writable()
        return EpisodeWriter(self, self.next_index(), task, note, extra)

    def delete_episode(self, index: int) -> bool:
        """Delete kept episode ``index`` for good; its index is never given out again. Works on a full disk
        (the files are removed first then, the emptied folder holding the index until the record is written).
        An episode whose folder is already gone (``missing_episodes``) is acknowledged: it is no longer
        expected; returns False then, True when a folder was deleted."""
        self._require_writable()
        path = self.episodes_dir / f"{KEPT_PREFIX}{index:06d}"
        if not path.is_dir():
            if index not in self.missing_episodes():
                raise DatasetError(f"{self.root} has no episode {index} (episodes: {self.episode_indices()})")
            try:
                self._record_deletion({index}, index + 1)
            except DatasetError as exc:
                raise DatasetError(f"nothing was changed; {exc}") from exc
            return False
        recorded = self._record_deletion_or_defer({index}, index + 1)
        self._forget(path)
        doomed = path.with_name(f"{DELETING_PREFIX}{path.name}")
        try:
            os.rename(path, doomed)  # atomic: the episode is gone from listings at once
            fsync_dir(self.episodes_dir)
        except OSError as exc:
            raise _describe_os_error(exc, path, "could not delete") from exc
        _remove_contents(doomed, keep_folder=not recorded)
        if not recorded:
            self._finish_deferred({index}, index + 1, [doomed])
        return True

    def delete_interrupted(self) -> list[Path]:
        """Remove the folders of recordings that never finished and of deletions that never finished; their
        indices are not given out again. Works on a full disk (it frees space before it writes)."""
        self._require_writable()
        removed = self.interrupted()
        deleting = self._scan(DELETING_PREFIX + KEPT_PREFIX)
        leftovers = self._scan(PARTIAL_PREFIX) + deleting
        others = [p for p in self.episodes_dir.glob(f"{DELETING_PREFIX}*") if p not in {d for _, d in deleting}]
        recorded = True
        gone = {i for i, _ in deleting}
        past = max((i + 1 for i, _ in leftovers), default=0)
        if leftovers:
            recorded = self._record_deletion_or_defer(gone, past)
        folders = [p for _, p in leftovers]
        for path in folders:
            _remove_contents(path, keep_folder=not recorded)
        for p in others:
            _remove_tree(p)
        if not recorded:
            self._finish_deferred(gone, past, folders)
        return removed

    def _forget(self, path: Path) -> None:
        for p in [p for p in self._fds if p.parent == path]:
            os.close(self._fds.pop(p))
        self._arrays_cached.cache_clear()

    # -- integrity --------------------------------------------------------
    def check(self, full: bool = False, episodes: Iterable[int] | None = None,
              progress: Callable[[int, int], None] | None = None) -> IntegrityReport:
        """Check episodes against what was recorded when they were kept; reports, never raises for damage.

        Quick (default): every file meta.json lists exists with its recorded size and CRC32 (this reads the
        image packs once: a flipped byte is found), meta.json is well formed, steps.npz loads with the arrays
        and the number of steps meta.json names, every frame's byte range lies inside its pack, and the first
        frame of every camera decodes at the size dataset.json names. ``full``: every frame is decoded.
        ``episodes``: only these (default all); also reports kept episodes whose folder is missing
        (``missing_episodes``). DatasetError only for an index that is neither present nor missing."""
        return check_episodes(self, full, episodes, progress)

    def require_intact(self, episodes: Iterable[int] | None = None, skip_damaged: bool = False, *,
                       full: bool = False) -> tuple[list[int], list[str]]:
        """The episodes to use, checked (quick check, or ``full``): returns (intact indices in order, one line per
        damaged or missing episode left out). Raises DamagedDatasetError naming each damaged episode unless
        ``skip_damaged``, and also then when nothing intact is left. ``episodes``: default every episode."""
        return self.check(full=full, episodes=episodes).require(skip_damaged)

    # -- data -------------------------------------------------------------
    def _load_arrays(self, index: int) -> dict[str, np.ndarray]:
        path = self._episode_dir(index)
        meta = _read_meta(path / META_FILE)
        for name, expect in meta["files"].items():
            f = path / name
            if not f.is_file():
                raise DatasetError(f"{f} is missing; delete episode {index} or restore the file")
            size = f.stat().st_size
            if size != expect["bytes"]:
                raise DatasetError(f"{f} is truncated or altered: {size} bytes on disk, {expect['bytes']} recorded; "
                                   f"delete episode {index} or restore the file")
        try:
            with np.load(path / STEPS_FILE, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip/npy errors come in many types
            raise DatasetError(f"{path / STEPS_FILE} is corrupt ({_one_line(exc)}); delete episode {index}") from exc
        if len(arrays.get("tick", ())) != meta["length"]:
            raise DatasetError(f"{path / STEPS_FILE} holds {len(arrays.get('tick', ()))} steps, "
                               f"{META_FILE} says {meta['length']}; delete episode {index}")
        return continuous_quaternions(arrays, self.spec)

    def load_episode(self, index: int) -> EpisodeData:
        return EpisodeData(self.episode(index), dict(self._arrays_cached(index)))

    def episode_fingerprint(self, index: int) -> str:
        """A digest of episode ``index`` as it is on disk now; it changes when the episode is deleted and
        another recorded under its index, or when its files change. SHA-256 of ``meta.json`` (index, start
        time, size and CRC32 of every file as kept) and ``steps.npz``, plus the current size of every file;
        the image packs are not read, so it costs a few kB of reading (and is cached on the files' stat)."""
        path = self._episode_dir(index)
        try:
            files = sorted((p.name, p.stat()) for p in path.iterdir() if p.is_file())
        except OSError as exc:
            raise _describe_os_error(exc, path, "could not read") from exc
        signature = (str(path), tuple((n, st.st_size, st.st_mtime_ns, st.st_ino) for n, st in files))
        cached = self._fingerprints.get(index)
        if cached is not None and cached[0] == signature:
            return cached[1]
        digest = hashlib.sha256()
        for name, st in files:
            digest.update(f"{name}:{st.st_size};".encode())
        for name in (META_FILE, STEPS_FILE):
            try:
                digest.update((path / name).read_bytes())
            except FileNotFoundError:
                digest.update(b"missing")
            except OSError as exc:
                raise _describe_os_error(exc, path / name, "could not read") from exc
        fingerprint = f"sha256:{digest.hexdigest()}"
        self._fingerprints[index] = (signature, fingerprint)
        return fingerprint

    def verify(self, index: int) -> None:
        """Check every file of an episode against its recorded size and CRC (reads everything); DatasetError
        naming the file when something is wrong (:meth:`check` reports instead of raising)."""
        self._episode_dir(index)
        problem = episode_problem(self, index, full=False)
        if problem is not None:
            raise DatasetError(f"{problem}; delete episode {index} or restore it from a backup")

    def frame(self, index: int, camera: str, i: int) -> np.ndarray:
        """Frame ``i`` of ``camera`` in episode ``index`` as an RGB array (one read, one decode)."""
        arrays = self._arrays_cached(index)
        key = f"{camera}.offset"
        if key not in arrays:
            raise DatasetError(f"no camera '{camera}' in {self.root} (cameras: {[c.name for c in self.spec.cameras]})")
        n = len(arrays[key])
        if not -n <= i < n:
            raise IndexError(f"episode {index} has {n} frames; frame {i} does not exist")
        offset, length = int(arrays[key][i]), int(arrays[f"{camera}.length"][i])
        path = self._episode_dir(index) / f"{camera}.pack"
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise DatasetError(f"{path} is truncated: frame {i} lies beyond the end of the file")
        return decode_image(data, f"{path} frame {i}")

    def stats(self) -> dict:
        """Per-feature statistics over all kept episodes (min, max, mean, std, count)."""
        chunks: dict[str, list] = {"state": [], "action": []}
        for i in self.episode_indices():
            arrays = self._arrays_cached(i)
            for k in chunks:
                chunks[k].append(arrays[k])
        out = {}
        for k, parts in chunks.items():
            if not parts:
                continue
            x = np.concatenate(parts).astype(np.float64)
            out[k] = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
                      "std": x.std(0).tolist(), "count": int(len(x))}
        return out
