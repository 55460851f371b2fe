"""The dataset format's plain parts: names, errors, the spec, atomic writes, checksums, image coding, quaternion continuity, reading its JSON files with clear errors."""

from __future__ import annotations

import errno
import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.transforms import POSE_QUAT, sign_continuous_poses
from core.types import ACTION_NAMES

from recorder.outputs import free_space_note

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


# --------------------------------------------------------------------------- reading the JSON files
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
