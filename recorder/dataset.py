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

import errno
import hashlib
import json
import os
import queue
import shutil
import threading
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from robot_drivers.transforms import POSE_QUAT, sign_continuous_poses
from robot_drivers.types import ACTION_NAMES, Frame

FORMAT_NAME = "alt-studio-dataset"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
EPISODES_DIR = "episodes"
META_FILE = "meta.json"
STEPS_FILE = "steps.npz"
PARTIAL_PREFIX = ".partial-episode-"
KEPT_PREFIX = "episode-"
DELETING_PREFIX = ".deleting-"
NEXT_INDEX_FILE = "next_index.json"
CODECS = {"jpeg": ".jpg", "png": ".png"}


class DatasetError(RuntimeError):
    """Something is wrong with a dataset on disk; the message names the file and what to do."""


class DatasetMismatchError(DatasetError):
    """The rig's settings differ from those the dataset was recorded with."""


class DatasetLockedError(DatasetError):
    """Another process is writing to the dataset."""


def _describe_os_error(exc: OSError, path: Path, doing: str) -> DatasetError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full; free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied; choose a folder you can write to"
    else:
        why = exc.strerror or str(exc)
    return DatasetError(f"{doing} {path}: {why}")


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class DatasetSpec:
    """What every episode of a dataset shares; recording into it must match."""

    fps: float
    cameras: tuple[CameraSpec, ...]
    robot: str
    joint_count: int
    action_names: tuple[str, ...] = ACTION_NAMES
    state_names: tuple[str, ...] = ACTION_NAMES
    codec: str = "jpeg"
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"image codec must be one of {sorted(CODECS)}, not {self.codec!r}")
        if not 0 < self.fps <= 1000:
            raise ValueError(f"fps {self.fps} is out of range")

    def to_json(self) -> dict:
        d = asdict(self)
        d["cameras"] = [asdict(c) for c in self.cameras]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "DatasetSpec":
        d = dict(d)
        d["cameras"] = tuple(CameraSpec(**c) for c in d["cameras"])
        d["action_names"] = tuple(d["action_names"])
        d["state_names"] = tuple(d["state_names"])
        return cls(**d)

    def mismatches(self, other: "DatasetSpec") -> list[str]:
        """Human-readable differences that make ``other`` unfit to append to this dataset."""
        out = []
        if abs(self.fps - other.fps) > 1e-9:
            out.append(f"control rate: dataset {self.fps:g} Hz, rig {other.fps:g} Hz")
        mine = {c.name: c for c in self.cameras}
        theirs = {c.name: c for c in other.cameras}
        if set(mine) != set(theirs):
            out.append(f"cameras: dataset has {sorted(mine)}, rig has {sorted(theirs)}")
        for name in sorted(set(mine) & set(theirs)):
            a, b = mine[name], theirs[name]
            if (a.width, a.height) != (b.width, b.height):
                out.append(f"camera '{name}' image size: dataset {a.width}x{a.height}, rig {b.width}x{b.height}")
        if self.action_names != other.action_names:
            out.append(f"action layout: dataset {list(self.action_names)}, rig {list(other.action_names)}")
        if self.state_names != other.state_names:
            out.append(f"state layout: dataset {list(self.state_names)}, rig {list(other.state_names)}")
        if self.joint_count != other.joint_count:
            out.append(f"joint count: dataset {self.joint_count}, rig {other.joint_count}")
        if self.robot != other.robot:
            out.append(f"robot: dataset '{self.robot}', rig '{other.robot}'")
        return out


# --------------------------------------------------------------------------- helpers
def fsync_dir(path: Path) -> None:
    """Make a folder's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def encode_image(image: np.ndarray, codec: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(CODECS[codec], bgr, params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {codec}")
    return buf.tobytes()


def decode_image(data: bytes, where: str) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{where}: the image bytes do not decode (the file is corrupt)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


QUAT_NAMES = ("qx", "qy", "qz", "qw")


def continuous_quaternions(arrays: dict[str, np.ndarray], spec: "DatasetSpec",
                           reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The episode's pose quaternions made sign-continuous along the episode (q and -q are one rotation;
    the measured and commanded poses come with w >= 0, which flips the sign wherever w crosses 0, e.g.
    at a gripper-down pose). ``state`` keeps its first sign (or starts in ``reference``'s hemisphere
    when given: several episodes then share one hemisphere), ``action`` starts in the first state's
    hemisphere and ``requested`` in the first action's. Recording stores episodes this way; loading
    applies it again, which changes nothing for them and repairs episodes recorded before."""
    out = dict(arrays)
    layouts = {"state": spec.state_names, "action": spec.action_names, "requested": spec.action_names}
    for key, names in layouts.items():
        rows = out.get(key)
        if tuple(names[POSE_QUAT]) != QUAT_NAMES or rows is None or rows.ndim != 2 or len(rows) == 0:
            continue
        out[key] = sign_continuous_poses(rows, reference)
        reference = out[key][0, POSE_QUAT]
    return out


# --------------------------------------------------------------------------- writing
class _PackWriter:
    """Encodes one camera's frames on a background thread and appends them to a pack file."""

    def __init__(self, path: Path, codec: str, quality: int, max_queue: int = 256):
        self.path = path
        self._codec, self._quality = codec, quality
        self._file = open(path, "wb")
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self._position = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"encode-{path.stem}", daemon=True)
        self._thread.start()

    def put(self, image: np.ndarray) -> None:
        if self.error is not None:
            raise _describe_os_error(self.error, self.path, "could not write") if isinstance(
                self.error, OSError) else DatasetError(f"encoding {self.path} failed: {self.error}")
        self._queue.put(image)  # blocks only if the encoder is a whole queue behind

    def _run(self) -> None:
        while True:
            image = self._queue.get()
            if image is None:
                return
            if self.error is not None:
                continue  # drain so put() never blocks forever; the error is reported there
            try:
                data = encode_image(image, self._codec, self._quality)
                self._file.write(data)
                self.offsets.append(self._position)
                self.lengths.append(len(data))
                self._position += len(data)
            except BaseException as exc:  # noqa: BLE001 - handed to the recording thread
                self.error = exc

    def finish(self) -> None:
        """Wait for the queue to drain and make the file durable."""
        self._queue.put(None)
        self._thread.join()
        try:
            if self.error is None:
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as exc:
            self.error = exc
        finally:
            self._file.close()
        if self.error is not None:
            if isinstance(self.error, OSError):
                raise _describe_os_error(self.error, self.path, "could not write")
            raise DatasetError(f"encoding {self.path} failed: {self.error}")

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()


@dataclass
class StepRecord:
    """One control tick as stored: timing, state, the action actually sent, a frame per camera."""

    tick: int
    t_scheduled: float
    t_actual: float
    state: np.ndarray  # (8,) x y z qx qy qz qw gripper
    joints: np.ndarray  # (J,)
    action: np.ndarray  # (8,) what the safety layer sent
    requested: np.ndarray  # (8,) what the operator / policy asked for
    frames: dict[str, Frame]


class EpisodeWriter:
    """Records one episode into a ``.partial-`` folder; ``keep()`` makes it permanent."""

    def __init__(self, dataset: "Dataset", index: int, task: str, note: str = "", extra: dict | None = None):
        self._dataset = dataset
        self.index = index
        self.task, self.note = task, note
        self.extra = dict(extra or {})
        self.dir = dataset.episodes_dir / f"{PARTIAL_PREFIX}{index:06d}"
        spec = dataset.spec
        try:
            self.dir.mkdir(parents=False, exist_ok=False)
            self._packs = {c.name: _PackWriter(self.dir / f"{c.name}.pack", spec.codec, spec.jpeg_quality)
                           for c in spec.cameras}
        except OSError as exc:
            raise _describe_os_error(exc, self.dir, "could not start an episode in") from exc
        self._rows: dict[str, list] = {k: [] for k in
                                       ("tick", "t_scheduled", "t_actual", "state", "joints", "action", "requested")}
        self._frame_times: dict[str, dict[str, list]] = {
            c.name: {"device_time": [], "host_time": [], "sequence": []} for c in spec.cameras}
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows["tick"])

    def add(self, step: StepRecord) -> None:
        spec = self._dataset.spec
        for cam in spec.cameras:
            frame = step.frames.get(cam.name)
            if frame is None:
                raise DatasetError(f"step {step.tick} has no frame from camera '{cam.name}'")
            if frame.image.shape != (cam.height, cam.width, 3):
                raise DatasetError(f"camera '{cam.name}' delivered {frame.image.shape[1]}x{frame.image.shape[0]} "
                                   f"images; the dataset stores {cam.width}x{cam.height}")
        for cam in spec.cameras:
            frame = step.frames[cam.name]
            self._packs[cam.name].put(frame.image)
            times = self._frame_times[cam.name]
            times["device_time"].append(np.nan if frame.device_time is None else frame.device_time)
            times["host_time"].append(frame.host_time)
            times["sequence"].append(frame.sequence)
        for key in self._rows:
            self._rows[key].append(getattr(step, key))

    def keep(self, end_reason: str = "stop", stats: dict | None = None) -> "EpisodeInfo":
        """Finish encoding, write arrays then metadata, fsync, and atomically publish the episode."""
        if self._closed:
            raise DatasetError(f"episode {self.index} was already closed")
        if len(self) == 0:
            self.discard()
            raise DatasetError(f"episode {self.index} has no steps; nothing to keep")
        self._closed = True
        t0 = time.perf_counter()
        for pack in self._packs.values():
            pack.finish()
        arrays = {
            "tick": np.asarray(self._rows["tick"], np.int64),
            "t_scheduled": np.asarray(self._rows["t_scheduled"], np.float64),
            "t_actual": np.asarray(self._rows["t_actual"], np.float64),
            "state": np.asarray(self._rows["state"], np.float32),
            "joints": np.asarray(self._rows["joints"], np.float32),
            "action": np.asarray(self._rows["action"], np.float32),
            "requested": np.asarray(self._rows["requested"], np.float32),
        }
        arrays = continuous_quaternions(arrays, self._dataset.spec)
        for name, pack in self._packs.items():
            times = self._frame_times[name]
            arrays[f"{name}.device_time"] = np.asarray(times["device_time"], np.float64)
            arrays[f"{name}.host_time"] = np.asarray(times["host_time"], np.float64)
            arrays[f"{name}.sequence"] = np.asarray(times["sequence"], np.int64)
            arrays[f"{name}.offset"] = np.asarray(pack.offsets, np.int64)
            arrays[f"{name}.length"] = np.asarray(pack.lengths, np.int64)
        steps_path = self.dir / STEPS_FILE
        try:
            with open(steps_path, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            files = {p.name: {"bytes": p.stat().st_size, "crc32": _crc32_file(p)}
                     for p in sorted(self.dir.iterdir()) if p.is_file()}
            t = arrays["t_actual"]
            meta = {
                "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "index": self.index,
                "recording_id": uuid.uuid4().hex,
                "task": self.task, "note": self.note, "length": len(self), "started_at": self.started_at,
                "duration_s": float(t[-1] - t[0]) + 1.0 / self._dataset.spec.fps,
                "end_reason": end_reason, "stats": stats or {}, "extra": self.extra, "files": files,
            }
            _write_atomic(self.dir / META_FILE, json.dumps(meta, indent=1).encode())
            fsync_dir(self.dir)
            final = self._dataset.episodes_dir / f"{KEPT_PREFIX}{self.index:06d}"
            os.rename(self.dir, final)
            fsync_dir(self._dataset.episodes_dir)
        except OSError as exc:
            raise _describe_os_error(exc, self.dir, f"episode {self.index} was NOT kept; writing") from exc
        info = self._dataset.episode(self.index)
        info.keep_seconds = time.perf_counter() - t0
        return info

    def discard(self) -> None:
        if not self._closed:
            self._closed = True
            for pack in self._packs.values():
                pack.abort()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- reading
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
        root = Path(root)
        if (root / DATASET_FILE).exists():
            raise DatasetError(f"{root} already holds a dataset; open it to append instead")
        try:
            (root / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
            header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                      "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "spec": spec.to_json()}
            _write_atomic(root / DATASET_FILE, json.dumps(header, indent=1).encode())
        except OSError as exc:
            raise _describe_os_error(exc, root, "could not create a dataset in") from exc
        return cls(root, spec, writable=True)

    @classmethod
    def open(cls, root: str | Path, writable: bool = False) -> "Dataset":
        root = Path(root)
        path = root / DATASET_FILE
        if not root.is_dir():
            raise DatasetError(f"{root} does not exist or is not a folder")
        if not path.is_file():
            raise DatasetError(f"{root} is not an ALT Studio dataset (no {DATASET_FILE})")
        header = _read_json(path)
        if header.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}: not an ALT Studio dataset header")
        if header.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{path}: dataset format version {header.get('format_version')} is not supported "
                               f"(this ALT Studio reads version {FORMAT_VERSION})")
        try:
            spec = DatasetSpec.from_json(header["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: the dataset spec is malformed ({exc})") from exc
        return cls(root, spec, writable)

    @classmethod
    def open_or_create(cls, root: str | Path, spec: DatasetSpec) -> "Dataset":
        """Open for appending, refusing a rig whose settings differ; create if absent."""
        root = Path(root)
        if not (root / DATASET_FILE).exists():
            return cls.create(root, spec)
        dataset = cls.open(root, writable=True)
        problems = dataset.spec.mismatches(spec)
        if problems:
            dataset.close()
            raise DatasetMismatchError(f"cannot append to {root}: the rig differs from how it was recorded: "
                                       + "; ".join(problems) + ". Record into a new folder, or change the rig "
                                       "settings back.")
        return dataset

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
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
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
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DatasetError(f"{path}: 'next_index' must be a non-negative integer, not {value!r}; set it one past "
                               "the highest episode index this dataset ever had")
        return value

    def _raise_deleted_floor(self, past: int) -> None:
        """Durably remember that indices below ``past`` were used, before the folders that show it go away."""
        if past <= self._deleted_floor():
            return
        path = self.root / NEXT_INDEX_FILE
        try:
            _write_atomic(path, json.dumps({"next_index": past}).encode())
            fsync_dir(self.root)
        except OSError as exc:
            raise _describe_os_error(exc, path, "nothing was deleted; could not write") from exc

    def _episode_dir(self, index: int) -> Path:
        path = self.episodes_dir / f"{KEPT_PREFIX}{index:06d}"
        if not path.is_dir():
            raise DatasetError(f"{self.root} has no episode {index} (episodes: {self.episode_indices()})")
        return path

    def episode(self, index: int) -> EpisodeInfo:
        path = self._episode_dir(index)
        meta = _read_json(path / META_FILE)
        try:
            return EpisodeInfo(index=meta["index"], path=path, length=meta["length"], duration_s=meta["duration_s"],
                               task=meta["task"], note=meta["note"], started_at=meta["started_at"],
                               end_reason=meta["end_reason"], stats=meta["stats"], extra=meta["extra"],
                               size_bytes=sum(f["bytes"] for f in meta["files"].values()))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{path / META_FILE}: missing field {exc}") from exc

    def episodes(self) -> list[EpisodeInfo]:
        return [self.episode(i) for i in self.episode_indices()]

    def new_episode(self, task: str, note: str = "", extra: dict | None = None) -> EpisodeWriter:
        self._require_writable()
        return EpisodeWriter(self, self.next_index(), task, note, extra)

    def delete_episode(self, index: int) -> None:
        self._require_writable()
        path = self._episode_dir(index)
        self._raise_deleted_floor(index + 1)
        self._forget(path)
        doomed = path.with_name(f"{DELETING_PREFIX}{path.name}")
        os.rename(path, doomed)  # atomic: the episode is gone from listings at once
        fsync_dir(self.episodes_dir)
        shutil.rmtree(doomed)

    def delete_interrupted(self) -> list[Path]:
        self._require_writable()
        removed = self.interrupted()
        leftovers = self._scan(PARTIAL_PREFIX) + self._scan(DELETING_PREFIX + KEPT_PREFIX)
        if leftovers:
            self._raise_deleted_floor(max(i for i, _ in leftovers) + 1)
        for path in removed:
            shutil.rmtree(path)
        for p in self.episodes_dir.glob(f"{DELETING_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)
        return removed

    def _forget(self, path: Path) -> None:
        for p in [p for p in self._fds if p.parent == path]:
            os.close(self._fds.pop(p))
        self._arrays_cached.cache_clear()

    # -- data -------------------------------------------------------------
    def _load_arrays(self, index: int) -> dict[str, np.ndarray]:
        path = self._episode_dir(index)
        info = self.episode(index)
        meta = _read_json(path / META_FILE)
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
            raise DatasetError(f"{path / STEPS_FILE} is corrupt ({exc}); delete episode {index}") from exc
        if len(arrays.get("tick", ())) != info.length:
            raise DatasetError(f"{path / STEPS_FILE} holds {len(arrays.get('tick', ()))} steps, "
                               f"{META_FILE} says {info.length}")
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
        """Check every file of an episode against its recorded CRC (reads everything)."""
        path = self._episode_dir(index)
        meta = _read_json(path / META_FILE)
        for name, expect in meta["files"].items():
            if _crc32_file(path / name) != expect["crc32"]:
                raise DatasetError(f"{path / name} is corrupt (checksum mismatch); delete episode {index}")
        self._load_arrays(index)

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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"{path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is corrupt or truncated ({exc})") from exc
    except OSError as exc:
        raise _describe_os_error(exc, path, "could not read") from exc
