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
import logging
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
from typing import Callable, Iterable

import cv2
import numpy as np

from core.transforms import POSE_QUAT, sign_continuous_poses
from core.types import ACTION_NAMES, Frame

from recorder.outputs import free_space_note

log = logging.getLogger(__name__)

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
KEPT_LOG_FILE = "kept_episodes.json"
ORIGINALS_DIR = "trimmed-originals"  # where recorder.idle sets trimmed originals aside
CODECS = {"jpeg": ".jpg", "png": ".png"}
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class DatasetError(RuntimeError):
    """Something is wrong with a dataset on disk; the message names the file and what to do."""


class DatasetMismatchError(DatasetError):
    """The rig's settings differ from those the dataset was recorded with."""


class DatasetLockedError(DatasetError):
    """Another process is writing to the dataset."""


class DamagedDatasetError(DatasetError):
    """Episodes failed the integrity check; ``damaged`` maps each one's index to its problem."""

    def __init__(self, message: str, damaged: dict[int, str] | None = None):
        super().__init__(message)
        self.damaged = dict(damaged or {})


def _is_full_disk(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL_DISK


def _describe_os_error(exc: OSError, path: Path, doing: str) -> DatasetError:
    if exc.errno in _FULL_DISK:
        what = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
        note = free_space_note(_mount_point(path))
        why = f"{what}{f' ({note})' if note else ''}; free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied; choose a folder you can write to"
    else:
        why = exc.strerror or str(exc)
    return DatasetError(f"{doing} {path}: {why}")


def _mount_point(path: Path) -> Path:
    """The mount point of the filesystem ``path`` is (or would be) on: where the free space is."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    while not os.path.ismount(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
        """The spec stored in dataset.json; ValueError naming the field when one is missing or of the wrong type."""
        if not isinstance(d, dict):
            raise ValueError(f"'spec' must be an object, not {_json_type(d)}")
        for key in ("fps", "cameras", "robot", "joint_count", "action_names", "state_names"):
            if key not in d:
                raise ValueError(f"missing field '{key}'")
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        if isinstance(d["fps"], bool) or not isinstance(d["fps"], (int, float)):
            raise ValueError(f"'fps' must be a number, not {_json_type(d['fps'])}")
        if not isinstance(d["robot"], str):
            raise ValueError(f"'robot' must be a string, not {_json_type(d['robot'])}")
        if not _is_int(d["joint_count"]) or d["joint_count"] < 0:
            raise ValueError(f"'joint_count' must be a whole number >= 0, not {d['joint_count']!r}")
        for key in ("action_names", "state_names"):
            if not isinstance(d[key], list) or not all(isinstance(n, str) for n in d[key]):
                raise ValueError(f"'{key}' must be a list of strings")
        if "codec" in d and d["codec"] not in CODECS:
            raise ValueError(f"'codec' must be one of {sorted(CODECS)}, not {d['codec']!r}")
        if "jpeg_quality" in d and (not _is_int(d["jpeg_quality"]) or not 0 <= d["jpeg_quality"] <= 100):
            raise ValueError(f"'jpeg_quality' must be a whole number in [0, 100], not {d['jpeg_quality']!r}")
        if not isinstance(d["cameras"], list):
            raise ValueError(f"'cameras' must be a list, not {_json_type(d['cameras'])}")
        cameras = []
        for i, c in enumerate(d["cameras"]):
            if not isinstance(c, dict) or set(c) != {"name", "width", "height"}:
                raise ValueError(f"camera {i} must be an object with name, width and height")
            if not isinstance(c["name"], str) or not c["name"] or "/" in c["name"]:
                raise ValueError(f"camera {i}: 'name' must be a non-empty string without '/'")
            if not all(_is_int(c[k]) and c[k] > 0 for k in ("width", "height")):
                raise ValueError(f"camera '{c['name']}': width and height must be positive whole numbers")
            cameras.append(CameraSpec(c["name"], c["width"], c["height"]))
        if len({c.name for c in cameras}) != len(cameras):
            raise ValueError("two cameras have the same name")
        d = dict(d)
        d["cameras"] = tuple(cameras)
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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


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

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> None:
        """Wait for the queue to drain and make the file durable."""
        self._stop_thread()
        if self._file.closed:
            raise DatasetError(f"{self.path} was already closed")
        try:
            if self.error is None:
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as exc:
            self.error = exc
        finally:
            try:
                self._file.close()  # flushes what is still buffered: can fail with ENOSPC too
            except OSError as exc:
                self.error = self.error or exc
        if self.error is not None:
            if isinstance(self.error, OSError):
                raise _describe_os_error(self.error, self.path, "could not write") from self.error
            raise DatasetError(f"encoding {self.path} failed: {self.error}")

    def abort(self) -> None:
        """Stop encoding and close the file; never raises (what it could not flush is thrown away anyway)."""
        self._stop_thread()
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:  # e.g. ENOSPC flushing the buffer: the first error was already reported
                log.debug("closing %s after an abort: %s", self.path, exc)


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
        self._packs: dict[str, _PackWriter] = {}
        try:
            self.dir.mkdir(parents=False, exist_ok=False)
        except OSError as exc:
            raise _describe_os_error(exc, self.dir, "could not start an episode in") from exc
        try:
            for c in spec.cameras:
                path = self.dir / f"{c.name}.pack"
                self._packs[c.name] = _PackWriter(path, spec.codec, spec.jpeg_quality)
        except OSError as exc:
            self._clean_up_after_failure()
            raise _describe_os_error(exc, path, "could not start an episode: could not create") from exc
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
        """Finish encoding, write arrays then metadata, fsync, and atomically publish the episode.

        If anything fails before the episode is published (a full disk, an encoder error), the first error
        is raised, naming the file being written (and the free space when the disk is full); the
        ``.partial-`` folder is removed (which frees space and needs none), and errors of that cleanup are
        logged, never raised over the first one. Episodes kept before are not touched."""
        if self._closed:
            raise DatasetError(f"episode {self.index} was already closed")
        if len(self) == 0:
            self.discard()
            raise DatasetError(f"episode {self.index} has no steps; nothing to keep")
        self._closed = True
        t0 = time.perf_counter()
        final = self._dataset.episodes_dir / f"{KEPT_PREFIX}{self.index:06d}"
        writing = self.dir
        try:
            for pack in self._packs.values():
                writing = pack.path
                pack.finish()
            arrays = self._arrays()
            writing = self.dir / STEPS_FILE
            with open(writing, "wb") as f:
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
            writing = self.dir / META_FILE
            _write_atomic(writing, json.dumps(meta, indent=1).encode())
            writing = self.dir
            fsync_dir(self.dir)
            writing = final
            os.rename(self.dir, final)
        except BaseException as exc:
            removed = self._clean_up_after_failure()
            where = "" if removed else f" (its folder {self.dir} is left; `dataset delete --interrupted` removes it)"
            if isinstance(exc, OSError):
                raise _describe_os_error(exc, writing, f"episode {self.index} was NOT kept{where}: could not "
                                                       "write") from exc
            if isinstance(exc, DatasetError):
                raise DatasetError(f"episode {self.index} was NOT kept{where}: {exc}") from exc
            raise
        # Published: from here on the episode is kept, whatever else fails.
        try:
            fsync_dir(self._dataset.episodes_dir)
        except OSError as exc:
            log.warning("episode %d is kept, but its folder entry may not be durable yet: %s", self.index, exc)
        self._dataset._note_kept(self.index)
        info = self._dataset.episode(self.index)
        info.keep_seconds = time.perf_counter() - t0
        return info

    def _arrays(self) -> dict[str, np.ndarray]:
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
        return arrays

    def _clean_up_after_failure(self) -> bool:
        """Stop every encoder and remove the partial folder; never raises. True when the folder is gone."""
        for pack in self._packs.values():
            pack.abort()
        return _remove_tree(self.dir)

    def discard(self) -> None:
        """Throw the take away (its folder is removed); never raises: a failure is logged and the folder is
        then listed as interrupted."""
        if not self._closed:
            self._closed = True
        self._clean_up_after_failure()


def _remove_contents(path: Path, keep_folder: bool = False) -> None:
    """Remove a folder, or with ``keep_folder`` only what is in it; DatasetError naming what could not be removed."""
    errors: list[tuple[str, BaseException]] = []

    def onerror(func, name, exc_info):
        errors.append((name, exc_info[1]))

    if keep_folder:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, onerror=onerror)
            else:
                try:
                    child.unlink()
                except OSError as exc:
                    errors.append((str(child), exc))
    else:
        shutil.rmtree(path, onerror=onerror)
    if errors:
        name, exc = errors[0]
        if isinstance(exc, OSError):
            raise _describe_os_error(exc, Path(name), "could not remove") from exc
        raise DatasetError(f"could not remove {name}: {exc}") from exc


def _remove_tree(path: Path) -> bool:
    """``shutil.rmtree`` that logs instead of raising (removing frees space; it never needs any)."""
    if not path.exists():
        return True

    def onerror(func, name, exc_info):
        log.warning("could not remove %s: %s", name, exc_info[1])

    try:
        shutil.rmtree(path, onerror=onerror)
    except Exception as exc:  # noqa: BLE001 - cleanup must never hide the error that caused it
        log.warning("could not remove %s: %s", path, exc)
    return not path.exists()


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


@dataclass
class IntegrityReport:
    """What :meth:`Dataset.check` found. ``damaged`` maps each damaged or missing episode's index to one line
    naming the file and the problem; ``missing`` lists those of them whose folder is gone; ``problems`` are
    findings about the dataset's own files (not about an episode)."""

    root: Path
    full: bool
    checked: list[int]  # indices whose folders were checked
    damaged: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (self.damaged or self.problems)

    @property
    def intact(self) -> list[int]:
        """The checked episodes that passed."""
        return [i for i in self.checked if i not in self.damaged]

    def episode_messages(self) -> list[str]:
        """One line per damaged or missing episode, in index order: ``episode N: <problem>``."""
        return [f"episode {i}: {self.damaged[i]}" for i in sorted(self.damaged)]

    def messages(self) -> list[str]:
        return self.problems + self.episode_messages()

    def require(self, skip_damaged: bool = False) -> tuple[list[int], list[str]]:
        """(intact indices, one line per damaged episode left out); DamagedDatasetError naming each damaged
        episode unless ``skip_damaged``, and also then when nothing intact is left."""
        for problem in self.problems:
            log.warning(problem)
        if self.damaged and (not skip_damaged or not self.intact):
            raise DamagedDatasetError(_damage_message(self.root, self, all_damaged=skip_damaged), self.damaged)
        return self.intact, self.episode_messages()


def _damage_message(root: Path, report: IntegrityReport, all_damaged: bool = False) -> str:
    lines = report.episode_messages()
    shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
    first = min(report.damaged)
    head = (f"{root}: every selected episode is damaged" if all_damaged
            else f"{root}: {len(lines)} damaged episode(s)")
    return (f"{head}: {shown}. Pass --skip-damaged to leave them out, or remove them (`dataset delete {root} "
            f"{first}`) or restore them from a backup; `dataset info {root}` lists every problem")


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
        present = self.episode_indices()
        problems: list[str] = []
        try:
            missing = self.missing_episodes()
        except DatasetError as exc:
            problems.append(str(exc))
            missing = []
        if episodes is None:
            targets, lost = present, missing
        else:
            wanted = sorted({int(i) for i in episodes})
            unknown = [i for i in wanted if i not in set(present) | set(missing)]
            if unknown:
                raise DatasetError(f"{self.root} has no episode(s) {unknown} (episodes: {present})")
            targets = [i for i in wanted if i in set(present)]
            lost = [i for i in wanted if i in set(missing)]
        report = IntegrityReport(self.root, full, list(targets), missing=list(lost), problems=problems)
        for i in lost:
            report.damaged[i] = (f"its folder {self.episodes_dir / f'{KEPT_PREFIX}{i:06d}'} is missing (deleted "
                                 "outside ALT Studio?)")
        for n, i in enumerate(targets):
            problem = self._episode_problem(i, full)
            if problem is not None:
                report.damaged[i] = problem
            if progress is not None:
                progress(n + 1, len(targets))
        return report

    def require_intact(self, episodes: Iterable[int] | None = None, skip_damaged: bool = False, *,
                       full: bool = False) -> tuple[list[int], list[str]]:
        """The episodes to use, checked (quick check, or ``full``): returns (intact indices in order, one line per
        damaged or missing episode left out). Raises DamagedDatasetError naming each damaged episode unless
        ``skip_damaged``, and also then when nothing intact is left. ``episodes``: default every episode."""
        return self.check(full=full, episodes=episodes).require(skip_damaged)

    def _episode_problem(self, index: int, full: bool) -> str | None:
        """The first problem of episode ``index``, one line naming the file, or None."""
        path = self.episodes_dir / f"{KEPT_PREFIX}{index:06d}"
        try:
            meta = _read_meta(path / META_FILE)
        except DatasetError as exc:
            return str(exc)
        if meta["index"] != index:
            return f"{path / META_FILE} says it is episode {meta['index']}, its folder says {index}"
        for name, expect in meta["files"].items():
            f = path / name
            try:
                size = f.stat().st_size
                if size != expect["bytes"]:
                    return f"{f} is truncated or altered: {size} bytes on disk, {expect['bytes']} recorded"
                if "crc32" in expect and _crc32_file(f) != expect["crc32"]:
                    return f"{f} is corrupt: its checksum differs from the one recorded when the episode was kept"
            except FileNotFoundError:
                return f"{f} is missing"
            except OSError as exc:
                return str(_describe_os_error(exc, f, "could not read"))
        steps = path / STEPS_FILE
        cameras = [(c, path / f"{c.name}.pack") for c in self.spec.cameras]
        for f in [steps] + [p for _, p in cameras]:
            if not f.is_file():
                return f"{f} is missing"
        try:
            with np.load(steps, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip/npy errors come in many types
            return f"{steps} does not load ({_one_line(exc)})"
        n = meta["length"]
        keys = ["tick", "t_scheduled", "t_actual", "state", "joints", "action", "requested"] + [
            f"{c.name}.{k}" for c, _ in cameras for k in ("offset", "length")]
        lacking = [k for k in keys if k not in arrays]
        if lacking:
            return f"{steps} lacks the array(s) {lacking}"
        if len(arrays["tick"]) != n:
            return f"{steps} holds {len(arrays['tick'])} steps, {path / META_FILE} says {n}"
        for k in keys:
            if arrays[k].ndim == 0 or len(arrays[k]) != n:
                return f"{steps}: array '{k}' has {arrays[k].shape} rows, {n} expected"
        for cam, pack in cameras:
            offsets = arrays[f"{cam.name}.offset"].astype(np.int64)
            lengths = arrays[f"{cam.name}.length"].astype(np.int64)
            try:
                size = pack.stat().st_size
                bad = np.flatnonzero((offsets < 0) | (lengths <= 0) | (offsets + lengths > size))
                if len(bad):
                    return f"{pack}: frame {int(bad[0])} lies outside the file ({size} bytes)"
                with open(pack, "rb") as fh:
                    for i in (range(n) if full else range(min(n, 1))):
                        data = os.pread(fh.fileno(), int(lengths[i]), int(offsets[i]))
                        image = decode_image(data, f"{pack} frame {i}")
                        if image.shape != (cam.height, cam.width, 3):
                            return (f"{pack} frame {i} is {image.shape[1]}x{image.shape[0]}, but {DATASET_FILE} says "
                                    f"camera '{cam.name}' is {cam.width}x{cam.height} (recorded with other settings)")
            except DatasetError as exc:
                return str(exc)
            except OSError as exc:
                return str(_describe_os_error(exc, pack, "could not read"))
        return None

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
        problem = self._episode_problem(index, full=False)
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


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; anything else (missing, unreadable, not JSON, not UTF-8, not an object)
    is a DatasetError whose one line names the file."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{path} is missing") from exc
    except IsADirectoryError as exc:
        raise DatasetError(f"{path} is a folder, not a file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path} is corrupt or truncated (not valid JSON: {_one_line(exc)})") from exc
    except OSError as exc:
        raise _describe_os_error(exc, path, "could not read") from exc
    if not isinstance(value, dict):
        raise DatasetError(f"{path} is corrupt: it holds a JSON {_json_type(value)} where an object "
                           "({...}) belongs")
    return value


def _json_type(value) -> str:
    return {list: "list", str: "string", bool: "true/false", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_header(root: Path) -> DatasetSpec:
    """The spec of the dataset at ``root`` (its dataset.json checked field by field)."""
    path = root / DATASET_FILE
    header = _read_json(path)
    if header.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: not an ALT Studio dataset header (format {header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {header.get('format_version')} is not supported "
                           f"(this ALT Studio reads version {FORMAT_VERSION})")
    if "spec" not in header:
        raise DatasetError(f"{path}: the dataset spec is missing")
    try:
        return DatasetSpec.from_json(header["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: the dataset spec is malformed ({_one_line(exc)})") from exc


_META_FIELDS = {"index": _is_int, "length": _is_int, "duration_s": lambda v: _is_int(v) or isinstance(v, float),
                "task": lambda v: isinstance(v, str), "note": lambda v: isinstance(v, str),
                "started_at": lambda v: isinstance(v, str), "end_reason": lambda v: isinstance(v, str),
                "stats": lambda v: isinstance(v, dict), "extra": lambda v: isinstance(v, dict),
                "files": lambda v: isinstance(v, dict)}


def _read_meta(path: Path) -> dict:
    """An episode's meta.json, checked: every field present with the right type, ``files`` well formed."""
    meta = _read_json(path)
    for key, ok in _META_FIELDS.items():
        if key not in meta:
            raise DatasetError(f"{path}: missing field '{key}'")
        if not ok(meta[key]):
            raise DatasetError(f"{path}: field '{key}' has the wrong type ({_json_type(meta[key])})")
    if meta["length"] < 0:
        raise DatasetError(f"{path}: 'length' is negative ({meta['length']})")
    for name, entry in meta["files"].items():
        if (not isinstance(entry, dict) or not _is_int(entry.get("bytes"))
                or ("crc32" in entry and not _is_int(entry["crc32"])) or "/" in name or name in ("", ".", "..")):
            raise DatasetError(f"{path}: the entry for file {name!r} is malformed")
    return meta
