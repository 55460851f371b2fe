"""Writing one episode: per-camera encoder threads appending to pack files, the step rows, and keeping (publishing) or discarding the take."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.types import Frame

from recorder.dataset_format import (FORMAT_NAME, FORMAT_VERSION, KEPT_PREFIX, META_FILE, PARTIAL_PREFIX, STEPS_FILE,
                                     DatasetError, _crc32_file, _describe_os_error, _write_atomic,
                                     continuous_quaternions, encode_image, fsync_dir)

if TYPE_CHECKING:
    from recorder.dataset import Dataset, EpisodeInfo

log = logging.getLogger("recorder.dataset")  # the logger name these messages have always carried


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

