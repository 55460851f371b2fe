"""Export an ALT Studio dataset as a LeRobotDataset v3.0 folder.

The result opens with LeRobot's own loader::

    LeRobotDataset(repo_id="local/name", root=out_dir)

What is written (the layout LeRobot 0.4.x itself writes for codebase v3.0)::

    meta/info.json                              # format, fps, features, path templates
    meta/stats.json                             # statistics over the whole export
    meta/tasks.parquet                          # task_index, indexed by the task string
    meta/episodes/chunk-000/file-000.parquet    # one row per episode: lengths, where its rows and
                                                #   video frames are, and per-episode statistics
    meta/alt_studio_export.json                 # provenance: source folder, episode mapping, exclusions
    data/chunk-000/file-000.parquet             # one row per frame: state, action, timestamp, indices
    videos/observation.images.<cam>/chunk-000/file-000.mp4   # all episodes of a camera, end to end

Rules the export follows:

* Quaternions are sign-continuous within each episode (datasets recorded before the recorder
  ensured it are repaired on the way), and every episode starts in the hemisphere of the first
  exported episode's first state, so q and -q of one rotation do not both appear in the statistics.
* Episodes are renumbered 0..N-1 in the order of their source indices (the source may have gaps
  after deletions); ``index`` is the global frame number over the whole export.
* ``timestamp`` is ``frame_index / fps``: LeRobot assumes frames on a fixed grid. An episode whose
  control loop did not hold its rate (``skipped_ticks`` > 0 in its statistics, or a jump in its
  tick numbers) has holes in time, and stamping it at the nominal rate would silently lie about
  when things happened; such episodes are left out and listed in the report with the reason,
  unless ``allow_gaps=True``.
* Video: encoded with PyAV (FFmpeg), preferring ``libsvtav1`` (LeRobot's default), then
  ``libx264``, then ``mpeg4``, in ``yuv420p``, a keyframe every 2 frames (as LeRobot does, so
  random access stays cheap); ``video_codec="lossless"`` writes H.264 in RGB at quantiser 0
  (``libx264rgb``, ``rgb24``): every pixel comes back as recorded, at several times the size, for
  training elsewhere on exactly the frames ALT Studio trains on. ``yuv420p`` needs even image sizes: a camera with an odd width or
  height is padded by one row / column repeating the edge pixels, and the padded size is what
  ``info.json`` declares (the report notes it).
* Statistics (min, max, mean, std, count, q01, q10, q50, q90, q99) for every feature, in LeRobot's
  layout: vectors per dimension; images per channel over all pixels of all frames, scaled to
  [0, 1] and shaped (3, 1, 1), count = frames. All are exact (quantiles interpolate linearly, as
  numpy does; image statistics come from per-channel histograms of the source frames), and the
  dataset-wide ones are computed over all exported frames rather than averaged from the
  per-episode ones. (LeRobot 0.4.4's own writer approximates quantiles with histograms, and its
  image std overflows uint8 arithmetic; min, max and mean agree with it.)
* Data and video files roll over to a new ``file-NNN`` at an episode boundary once the current
  file has reached ``data_files_size_in_mb`` / ``video_files_size_in_mb`` (so a file can exceed
  the limit by at most one episode); ``chunk-NNN`` advances every ``chunks_size`` files.
* Nothing appears at ``out_dir`` until the export is complete: it is written to a hidden sibling
  folder (``.<name>.exporting-<pid>-*``) and renamed into place at the end; on any error that folder
  is removed, and the folders a killed export left behind are removed by the next export to the same
  place. An existing non-empty ``out_dir`` is refused, unless ``overwrite=True`` and it is a LeRobot
  dataset: the new export then replaces it atomically (``recorder.outputs.swap_into_place``).
* What is read is checked first (``Dataset.require_intact``: sizes and checksums of every file,
  the step arrays, the first frames): damaged or missing episodes stop the export, naming each, or
  with ``skip_damaged=True`` are left out and listed as excluded; a frame that fails to decode
  during the export does the same (with ``skip_damaged`` the export starts again without it).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from lerobot_bridge.export_files import ExportedEpisode, _fsync_tree, _UnreadableEpisode, _write_all, _write_json
from lerobot_bridge.layout import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILES_SIZE_IN_MB, DATA_PATH, EPISODES_PATH,
                                   INDEX_FEATURES, PROVENANCE_FILE, VIDEO_FILES_SIZE_IN_MB, VIDEO_PATH, ExportError,
                                   ProgressCallback)
from lerobot_bridge.stats import QUANTILE_KEYS, QUANTILES, STAT_KEYS, ImageStats, vector_stats
from lerobot_bridge.video import (ENCODER_ALIASES, ENCODER_PREFERENCE, KEYFRAME_INTERVAL, PIX_FMT, RGB_PIX_FMT,
                                  _canonical_codec_name, _keeps_thread_scheduling, _VideoFileWriter, choose_encoder,
                                  pix_fmt)
from recorder.dataset import DamagedDatasetError, Dataset, fsync_dir
from recorder.outputs import EMPTY, LEROBOT, MISSING, folder_kind, free_space_note, swap_into_place, temp_sibling

# The names other modules may import from here (the layout lives in lerobot_bridge.layout, statistics in
# lerobot_bridge.stats, video in lerobot_bridge.video, the files' writing in lerobot_bridge.export_files).
__all__ = [
    "CHUNKS_SIZE", "CODEBASE_VERSION", "DATA_FILES_SIZE_IN_MB", "DATA_PATH", "ENCODER_ALIASES", "ENCODER_PREFERENCE",
    "EPISODES_PATH", "INDEX_FEATURES", "KEYFRAME_INTERVAL", "PIX_FMT", "PROVENANCE_FILE", "QUANTILES",
    "QUANTILE_KEYS", "RGB_PIX_FMT", "STAT_KEYS", "VIDEO_FILES_SIZE_IN_MB", "VIDEO_PATH", "ExcludedEpisode",
    "ExportError", "ExportReport", "ExportedEpisode", "ImageStats", "ProgressCallback", "choose_encoder",
    "export_lerobot", "pix_fmt", "vector_stats",
]


@dataclass(frozen=True)
class ExcludedEpisode:
    source_index: int
    reason: str


@dataclass
class ExportReport:
    out_dir: Path
    episodes: list[ExportedEpisode]
    frames: int
    excluded: list[ExcludedEpisode]
    encoder: str | None  # FFmpeg encoder used, e.g. "libsvtav1"; None when there are no cameras
    video_codec: str | None  # codec as info.json records it, e.g. "av1"
    bytes_written: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def episodes_exported(self) -> int:
        return len(self.episodes)

    def summary(self) -> str:
        lines = [f"exported {self.episodes_exported} episodes, {self.frames} frames to {self.out_dir} "
                 f"({self.bytes_written / 1e6:.1f} MB, video {self.encoder or 'none'}, {self.seconds:.1f} s)"]
        lines += [f"excluded episode {e.source_index}: {e.reason}" for e in self.excluded]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- selection
def _gap_reason(info, arrays: dict[str, np.ndarray]) -> str | None:
    skipped = int(info.stats.get("skipped_ticks", 0) or 0)
    ticks = arrays.get("tick")
    jumps = int(np.count_nonzero(np.diff(ticks) != 1)) if ticks is not None and len(ticks) > 1 else 0
    if skipped <= 0 and jumps == 0:
        return None
    parts = []
    if skipped > 0:
        parts.append(f"{skipped} skipped control ticks")
    if jumps > 0:
        parts.append(f"{jumps} jumps in its tick numbers")
    return (f"the control rate was not held ({', '.join(parts)}), so its frames are not on a fixed "
            f"time grid and cannot be stamped frame_index / fps; pass allow_gaps=True to export it anyway")


# --------------------------------------------------------------------------- export
@_keeps_thread_scheduling
def export_lerobot(dataset: Dataset | str | os.PathLike, out_dir: str | os.PathLike, *,
                   episodes: Iterable[int] | None = None, video_codec: str | None = None,
                   allow_gaps: bool = False, progress: ProgressCallback | None = None,
                   data_files_size_in_mb: int = DATA_FILES_SIZE_IN_MB,
                   video_files_size_in_mb: int = VIDEO_FILES_SIZE_IN_MB,
                   skip_damaged: bool = False, overwrite: bool = False) -> ExportReport:
    """Write ``dataset`` (a :class:`Dataset` or its folder) as a LeRobotDataset v3.0 folder at ``out_dir``.

    ``episodes``: source episode indices to export (default: all kept episodes), in any order;
    they are exported in ascending order and renumbered from 0.
    ``video_codec``: an FFmpeg encoder name (``libsvtav1``, ``libx264``, ``mpeg4``; ``av1`` and
    ``h264`` are accepted as aliases); default: the first of those that works here.
    ``allow_gaps``: also export episodes whose control rate was not held (see the module notes).
    ``progress(frames_done, frames_total)`` is called as frames are written.
    ``skip_damaged``: leave out episodes that fail the integrity check (listed in ``excluded``) instead
    of refusing. ``overwrite``: replace an existing LeRobot dataset at ``out_dir`` (atomically).
    Raises :class:`ExportError` (bad arguments, nothing to export, ``out_dir`` not empty) or
    :class:`~recorder.dataset.DatasetError` (unreadable source; :class:`~recorder.dataset.DamagedDatasetError`
    for damaged episodes, naming each); ``out_dir`` is untouched then.
    """
    t_start = time.perf_counter()
    if not isinstance(dataset, Dataset):
        with Dataset.open(dataset) as opened:
            return export_lerobot(opened, out_dir, episodes=episodes, video_codec=video_codec,
                                  allow_gaps=allow_gaps, progress=progress,
                                  data_files_size_in_mb=data_files_size_in_mb,
                                  video_files_size_in_mb=video_files_size_in_mb,
                                  skip_damaged=skip_damaged, overwrite=overwrite)
    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    spec = dataset.spec

    # -- which episodes ------------------------------------------------------------------
    available = dataset.episode_indices()
    if episodes is not None:
        wanted = sorted(set(int(i) for i in episodes))
        unknown = [i for i in wanted if i not in set(available) | set(dataset.missing_episodes())]
        if unknown:
            raise ExportError(f"{dataset.root} has no episode(s) {unknown} (episodes: {available})")
    if data_files_size_in_mb < 0 or video_files_size_in_mb < 0:
        raise ExportError("file size limits must be >= 0 MB")
    # every file of every episode read is checked against its recorded size and checksum first
    check = dataset.check(episodes=None if episodes is None else wanted)
    wanted, _ = check.require(skip_damaged)  # DamagedDatasetError naming each, unless skip_damaged
    excluded = [ExcludedEpisode(i, f"damaged: {why}") for i, why in sorted(check.damaged.items())]
    selected = []
    gappy: list[int] = []  # exported although the rate was not held (allow_gaps=True)
    for i in wanted:
        info = dataset.episode(i)
        arrays = dataset.load_episode(i).arrays
        if info.length <= 0:
            excluded.append(ExcludedEpisode(i, "the episode has no frames"))
            continue
        reason = _gap_reason(info, arrays)
        if reason is not None:
            if not allow_gaps:
                excluded.append(ExcludedEpisode(i, reason))
                continue
            gappy.append(i)
        selected.append(info)
    if not selected:
        why = "; ".join(f"episode {e.source_index}: {e.reason}" for e in excluded) or "the dataset has no episodes"
        raise ExportError(f"nothing to export from {dataset.root} ({why})")

    # -- features ------------------------------------------------------------------------
    fps = float(spec.fps)
    fps_json: int | float = int(fps) if fps.is_integer() else fps
    notes: list[str] = []
    if gappy:
        notes.append(f"episode(s) {gappy} did not hold the control rate but were exported (allow_gaps=True): "
                     f"their timestamps are frame_index / fps and hide the skipped ticks")
    cameras = []  # (name, key, padded width, padded height)
    for cam in spec.cameras:
        w, h = cam.width + cam.width % 2, cam.height + cam.height % 2
        if (w, h) != (cam.width, cam.height):
            notes.append(f"camera '{cam.name}' is {cam.width}x{cam.height}; {PIX_FMT} video needs even sizes, so "
                         f"its frames were padded to {w}x{h} by repeating the last row/column")
        cameras.append((cam.name, f"observation.images.{cam.name}", w, h))
    encoder = choose_encoder(video_codec, {(w, h) for _, _, w, h in cameras}, fps) if cameras else None
    canonical = _canonical_codec_name(encoder) if encoder else None
    if encoder and encoder != ENCODER_PREFERENCE[0] and video_codec is None:
        notes.append(f"{ENCODER_PREFERENCE[0]} is not usable here; videos are {encoder}")

    features: dict[str, dict] = {}
    for _, key, w, h in cameras:
        features[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": h, "video.width": w, "video.codec": canonical,
                                  "video.pix_fmt": pix_fmt(encoder), "video.is_depth_map": False,
                                  "video.fps": fps_json,
                                  "video.channels": 3, "has_audio": False}}
    first = dataset.load_episode(selected[0].index).arrays
    state_dim, action_dim = first["state"].shape[1], first["action"].shape[1]
    features["observation.state"] = {"dtype": "float32", "shape": [state_dim],
                                     "names": _names(spec.state_names, state_dim)}
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": _names(spec.action_names, action_dim)}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_FEATURES:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}

    # -- write into a hidden sibling folder ---------------------------------------------------
    while True:
        # temp_sibling first removes the .NAME.exporting-PID-* folders of exports that were killed
        tmp = temp_sibling(out_dir, "exporting")
        writers: list[_VideoFileWriter] = []
        try:
            writers = [_VideoFileWriter(tmp, key, encoder, w, h, fps, video_files_size_in_mb * 1024 * 1024)
                       for _, key, w, h in cameras]
            exported, total = _write_all(dataset, selected, tmp, cameras, writers, features, fps, fps_json,
                                         data_files_size_in_mb, video_files_size_in_mb, progress)
            provenance = {"source": str(Path(dataset.root).resolve()),
                          "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "encoder": encoder, "episodes": [e.__dict__ for e in exported],
                          "excluded": [e.__dict__ for e in excluded], "notes": notes}
            _write_json(tmp / PROVENANCE_FILE, provenance)
            _fsync_tree(tmp)
            _refuse_existing(out_dir, overwrite)
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()  # existing but empty (checked just above)
            if out_dir.exists():
                swap_into_place(tmp, out_dir)  # overwrite=True: the old export is replaced atomically
            else:
                os.rename(tmp, out_dir)
                fsync_dir(out_dir.parent)
            break
        except _UnreadableEpisode as exc:
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            message = f"episode {exc.index}: {exc.error}"
            if not skip_damaged:
                raise DamagedDatasetError(
                    f"{dataset.root}: 1 damaged episode(s): {message}. Pass --skip-damaged to leave it out, or "
                    f"remove it (`dataset delete {dataset.root} {exc.index}`) or restore it from a backup; "
                    f"nothing was exported", {exc.index: str(exc.error)}) from exc.error
            excluded.append(ExcludedEpisode(exc.index, f"damaged: {exc.error}"))
            selected = [info for info in selected if info.index != exc.index]
            if not selected:
                raise ExportError(f"nothing to export from {dataset.root}: every selected episode is damaged "
                                  f"({message})") from exc.error
            # and again from the start without it: the videos already hold some of its frames
        except BaseException as exc:
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)  # frees what it took: needs no space
            if _disk_full(exc):
                raise ExportError(f"the disk is full: could not write the export {out_dir} ({exc}); "
                                  f"{free_space_note(out_dir.parent)}; free some space and run it again (nothing "
                                  "was written, the source is untouched)") from exc
            raise
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return ExportReport(out_dir=out_dir, episodes=exported, frames=total, excluded=excluded, encoder=encoder,
                        video_codec=canonical, bytes_written=size, seconds=time.perf_counter() - t_start,
                        notes=notes)


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT, as an OSError or in the words of a library that wraps it (pyarrow, PyAV)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "no space left on device" in text or "errno 28" in text or "disk quota exceeded" in text


def _names(names: tuple[str, ...], dim: int) -> list[str]:
    names = list(names)
    return names if len(names) == dim else [f"dim_{i}" for i in range(dim)]


def _refuse_existing(out_dir: Path, overwrite: bool = False) -> None:
    if out_dir.is_dir():
        if overwrite and folder_kind(out_dir) in (LEROBOT, EMPTY, MISSING):
            return
        if any(out_dir.iterdir()):
            how = "" if overwrite else " (or pass overwrite=True / --overwrite to replace a LeRobot export)"
            kind = "" if not overwrite else " and is not a LeRobot dataset"
            raise ExportError(f"{out_dir} already exists{kind} and is not empty; choose a new folder or remove it "
                              f"first{how}")
    elif out_dir.exists():
        raise ExportError(f"{out_dir} exists and is not a folder; choose another destination")

