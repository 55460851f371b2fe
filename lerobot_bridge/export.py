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

import functools
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.transforms import POSE_QUAT

from recorder.dataset import QUAT_NAMES, DamagedDatasetError, Dataset, DatasetError, continuous_quaternions, fsync_dir
from recorder.outputs import EMPTY, LEROBOT, MISSING, folder_kind, swap_into_place, temp_sibling

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
PROVENANCE_FILE = "meta/alt_studio_export.json"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count") + QUANTILE_KEYS
ENCODER_PREFERENCE = ("libsvtav1", "libx264", "mpeg4")
ENCODER_ALIASES = {"av1": "libsvtav1", "svtav1": "libsvtav1", "h264": "libx264", "x264": "libx264",
                   "lossless": "libx264rgb"}
KEYFRAME_INTERVAL = 2
PIX_FMT = "yuv420p"
#: Encoders that store RGB as it is, without the YUV conversion and chroma subsampling (``lossless``: H.264
#: in RGB at quantiser 0, bit-exact; any FFmpeg decodes it, LeRobot's loaders included).
RGB_PIX_FMT = {"libx264rgb": "rgb24"}
INDEX_FEATURES = ("frame_index", "episode_index", "index", "task_index")

ProgressCallback = Callable[[int, int], None]


class ExportError(RuntimeError):
    """The export cannot be done; the message says why and what to do."""


class _UnreadableEpisode(Exception):
    """An episode's data failed to load or decode while it was being exported."""

    def __init__(self, index: int, error: DatasetError):
        super().__init__(str(error))
        self.index, self.error = index, error


@dataclass(frozen=True)
class ExportedEpisode:
    source_index: int  # episode number in the ALT Studio dataset
    episode_index: int  # episode number in the LeRobot dataset
    length: int
    task: str


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


# --------------------------------------------------------------------------- statistics
def _quantiles_from_sorted_ranks(value_at_rank: Callable[[int], np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Quantiles with linear interpolation between order statistics (numpy's default method)."""
    out = {}
    for q, key in zip(QUANTILES, QUANTILE_KEYS):
        r = q * (n - 1)
        lo, hi = int(np.floor(r)), int(np.ceil(r))
        a, b = value_at_rank(lo), value_at_rank(hi)
        out[key] = a + (r - lo) * (b - a)
    return out


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension statistics of an (N,) or (N, D) array; (N,) gives shape-(1,) results."""
    x = np.asarray(x)
    flat = x.reshape(len(x), -1)
    xf = flat.astype(np.float64)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": xf.mean(0), "std": xf.std(0),
           "count": np.array([len(x)], np.int64)}
    for key, value in zip(QUANTILE_KEYS, np.quantile(xf, QUANTILES, axis=0)):
        out[key] = value
    return out


class ImageStats:
    """Exact per-channel statistics of uint8 RGB frames, kept as 256-bin histograms per channel."""

    _OFFSETS = np.array([0, 256, 512])

    def __init__(self):
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        counts = np.bincount((image.reshape(-1, 3) + self._OFFSETS).ravel(), minlength=768)
        self.hist += counts.reshape(3, 256)
        self.frames += 1

    def merge(self, other: "ImageStats") -> None:
        self.hist += other.hist
        self.frames += other.frames

    def result(self) -> dict[str, np.ndarray]:
        """LeRobot's layout: values in [0, 1], each statistic shaped (3, 1, 1), count = frames."""
        values = np.arange(256, dtype=np.float64)
        n = self.hist.sum(1)[0]
        cum = np.cumsum(self.hist, axis=1)
        mean = (self.hist * values).sum(1) / n
        var = (self.hist * values ** 2).sum(1) / n - mean ** 2
        nonzero = self.hist > 0
        out = {"min": nonzero.argmax(1).astype(np.float64),
               "max": 255 - nonzero[:, ::-1].argmax(1).astype(np.float64),
               "mean": mean, "std": np.sqrt(np.maximum(var, 0.0))}
        out.update(_quantiles_from_sorted_ranks(
            lambda rank: np.array([np.searchsorted(cum[c], rank, side="right") for c in range(3)], np.float64), n))
        out = {k: (v / 255.0).reshape(3, 1, 1) for k, v in out.items()}
        out["count"] = np.array([self.frames], np.int64)
        return {k: out[k] for k in STAT_KEYS}


def _stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# --------------------------------------------------------------------------- video
def pix_fmt(encoder: str) -> str:
    return RGB_PIX_FMT.get(encoder, PIX_FMT)


def _encoder_options(encoder: str) -> dict[str, str]:
    g = str(KEYFRAME_INTERVAL)
    if encoder == "libsvtav1":
        return {"g": g, "crf": "30", "preset": "12"}  # LeRobot's own settings
    if encoder == "libx264":
        return {"g": g, "crf": "23", "preset": "medium"}
    if encoder == "libx264rgb":
        return {"g": g, "qp": "0", "preset": "medium"}  # quantiser 0: lossless
    return {"g": g, "qmin": "2", "qmax": "4"}  # mpeg4 and anything else FFmpeg offers


def _stream_rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _open_video(target, encoder: str, width: int, height: int, fps: float):
    import av

    container = av.open(target, "w", format="mp4")
    try:
        stream = container.add_stream(encoder, rate=_stream_rate(fps), options=_encoder_options(encoder))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt(encoder)
    except BaseException:
        container.close()
        raise
    return container, stream


def _keeps_thread_scheduling(fn):
    """Undo what an encoder does to the calling thread's scheduling.

    SVT-AV1 switches the thread that opens it to real-time SCHED_FIFO when it
    may (as root). Left so, every thread and process started from it later
    (a camera, a training run) would inherit real-time priority and could
    starve the control loop; measured: 1.4 s stalls of the whole app.
    """
    if not hasattr(os, "sched_getscheduler"):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        try:
            return fn(*args, **kwargs)
        finally:
            if os.sched_getscheduler(0) != policy:
                os.sched_setscheduler(0, policy, param)

    return wrapper


@_keeps_thread_scheduling
def _encoder_works(encoder: str, sizes: Iterable[tuple[int, int]], fps: float) -> str | None:
    """None if ``encoder`` can encode a few frames of every size, else why not."""
    import av

    if encoder not in av.codecs_available:
        return "not in this FFmpeg build"
    try:
        for width, height in sizes:
            buf = io.BytesIO()
            container, stream = _open_video(buf, encoder, width, height, fps)
            try:
                for i in range(3):
                    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 40 * i, np.uint8), format="rgb24")
                    frame.pts = i
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            finally:
                container.close()
    except Exception as exc:  # noqa: BLE001 - FFmpeg reports failures in many types
        return f"{type(exc).__name__}: {exc}"
    return None


def choose_encoder(requested: str | None, sizes: Iterable[tuple[int, int]], fps: float) -> str:
    """The FFmpeg encoder to use: ``requested`` (must work) or the first working of the preference list."""
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner on every encoder open otherwise
    sizes = list(sizes)
    if requested is not None:
        name = ENCODER_ALIASES.get(requested, requested)
        why = _encoder_works(name, sizes, fps)
        if why is not None:
            raise ExportError(f"video encoder {requested!r} cannot be used here ({why}); "
                              f"leave video_codec unset to pick one automatically")
        return name
    problems = []
    for name in ENCODER_PREFERENCE:
        why = _encoder_works(name, sizes, fps)
        if why is None:
            return name
        problems.append(f"{name}: {why}")
    raise ExportError("no usable video encoder in this FFmpeg build (" + "; ".join(problems) + ")")


class _VideoFileWriter:
    """One camera's video files: frames appended end to end, rolling over to a new file when full."""

    def __init__(self, root: Path, key: str, encoder: str, width: int, height: int, fps: float, limit_bytes: int):
        self.root, self.key, self.encoder = root, key, encoder
        self.width, self.height, self.fps = width, height, fps
        self.limit_bytes = limit_bytes
        self.chunk_index, self.file_index = 0, 0
        self._container = self._stream = None
        self._frames_in_file = 0
        self._bytes_in_file = 0
        self.paths: list[Path] = []

    def _path(self) -> Path:
        return self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk_index,
                                             file_index=self.file_index)

    def _mux(self, packets) -> None:
        for packet in packets:
            self._bytes_in_file += packet.size
            self._container.mux(packet)

    def start_episode(self) -> tuple[int, int, float]:
        """Where the next episode goes: (chunk index, file index, its first timestamp in that file)."""
        if self._container is not None and self._bytes_in_file >= self.limit_bytes:
            self._close_file()
            self.chunk_index, self.file_index = _next_file(self.chunk_index, self.file_index)
        if self._container is None:
            path = self._path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._container, self._stream = _open_video(str(path), self.encoder, self.width, self.height, self.fps)
            self.paths.append(path)
            self._frames_in_file = self._bytes_in_file = 0
        return self.chunk_index, self.file_index, self._frames_in_file / self.fps

    def add(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._frames_in_file
        self._mux(self._stream.encode(frame))
        self._frames_in_file += 1

    def end_timestamp(self) -> float:
        return self._frames_in_file / self.fps

    def _close_file(self) -> None:
        try:
            self._mux(self._stream.encode())
        finally:
            self._container.close()
            self._container = self._stream = None

    def close(self) -> None:
        if self._container is not None:
            self._close_file()

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the folder is being thrown away anyway
                pass
            self._container = self._stream = None


def _next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    if file_index == CHUNKS_SIZE - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def _pad_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# --------------------------------------------------------------------------- parquet helpers
def _hf_features_metadata(features: dict) -> bytes:
    """The ``huggingface`` schema metadata ``datasets`` writes, so the parquet is self-describing."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
    return json.dumps({"info": {"features": out}}).encode()


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _tasks_table(tasks: list[str]):
    """What ``pandas.DataFrame({"task_index": ...}, index=tasks).to_parquet()`` writes (LeRobot's writer)."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                     "__index_level_0__": pa.array(tasks, pa.string())}, schema=schema)


def _fixed_list(x: np.ndarray):
    import pyarrow as pa

    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


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
        except BaseException:
            for w in writers:
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return ExportReport(out_dir=out_dir, episodes=exported, frames=total, excluded=excluded, encoder=encoder,
                        video_codec=canonical, bytes_written=size, seconds=time.perf_counter() - t_start,
                        notes=notes)


def _names(names: tuple[str, ...], dim: int) -> list[str]:
    names = list(names)
    return names if len(names) == dim else [f"dim_{i}" for i in range(dim)]


def _canonical_codec_name(encoder: str) -> str:
    import av

    return av.codec.Codec(encoder, "w").canonical_name


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


def _write_all(dataset: Dataset, selected: list, root: Path, cameras: list, writers: list[_VideoFileWriter],
               features: dict, fps: float, fps_json, data_files_size_in_mb: int, video_files_size_in_mb: int,
               progress: ProgressCallback | None) -> tuple[list[ExportedEpisode], int]:
    import pyarrow as pa

    tasks: list[str] = []
    task_of: dict[str, int] = {}
    total_frames = sum(info.length for info in selected)
    done = 0
    exported: list[ExportedEpisode] = []
    rows: list[dict] = []  # episodes parquet rows
    all_cols: dict[str, list[np.ndarray]] = {k: [] for k in ("observation.state", "action", "timestamp",
                                                             *INDEX_FEATURES)}
    image_totals = {key: ImageStats() for _, key, _, _ in cameras}

    # data files: episodes accumulate into the current file until it reaches the size limit
    data_limit = data_files_size_in_mb * 1024 * 1024
    data_loc = [0, 0]
    data_parts: list[pa.Table] = []
    data_bytes = 0
    hf_meta = _hf_features_metadata(features)

    def flush_data() -> None:
        nonlocal data_parts, data_bytes
        if data_parts:
            table = pa.concat_tables(data_parts).replace_schema_metadata({b"huggingface": hf_meta})
            _write_parquet(table, root / DATA_PATH.format(chunk_index=data_loc[0], file_index=data_loc[1]))
        data_parts, data_bytes = [], 0

    reference = None  # every episode's quaternions in the hemisphere of the first one's first state
    for new_index, info in enumerate(selected):
        try:
            arrays = continuous_quaternions(dataset.load_episode(info.index).arrays, dataset.spec, reference)
        except DatasetError as exc:
            raise _UnreadableEpisode(info.index, exc) from exc
        if reference is None and dataset.spec.state_names[POSE_QUAT] == QUAT_NAMES:
            reference = arrays["state"][0, POSE_QUAT]
        n = info.length
        state = np.asarray(arrays["state"], np.float32)
        action = np.asarray(arrays["action"], np.float32)
        if state.shape != (n, features["observation.state"]["shape"][0]) or \
                action.shape != (n, features["action"]["shape"][0]):
            raise DatasetError(f"episode {info.index}: state {state.shape} / action {action.shape} do not match "
                               f"{n} steps of the dataset's layout")
        if info.task not in task_of:
            task_of[info.task] = len(tasks)
            tasks.append(info.task)
        start = done
        cols = {
            "observation.state": state,
            "action": action,
            "timestamp": (np.arange(n) / fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, new_index, np.int64),
            "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, task_of[info.task], np.int64),
        }
        row: dict = {"episode_index": new_index, "tasks": [info.task], "length": n}

        if data_parts and data_bytes >= data_limit:
            flush_data()
            data_loc[:] = _next_file(*data_loc)
        table = pa.table({
            "observation.state": _fixed_list(state), "action": _fixed_list(action),
            **{k: pa.array(cols[k]) for k in ("timestamp", *INDEX_FEATURES)}})
        data_parts.append(table)
        data_bytes += table.nbytes
        row.update({"data/chunk_index": data_loc[0], "data/file_index": data_loc[1],
                    "dataset_from_index": start, "dataset_to_index": start + n})

        # videos: every camera's frames of this episode, appended to that camera's current file
        ep_images = {key: ImageStats() for _, key, _, _ in cameras}
        placements = [w.start_episode() for w in writers]
        for k in range(n):
            for (name, key, _, _), writer in zip(cameras, writers):
                try:
                    image = dataset.frame(info.index, name, k)
                except DatasetError as exc:
                    raise _UnreadableEpisode(info.index, exc) from exc
                if _pad_even(image).shape[:2] != tuple(features[key]["shape"][:2]):
                    raise _UnreadableEpisode(info.index, DatasetError(
                        f"{info.path / (name + '.pack')} frame {k} is {image.shape[1]}x{image.shape[0]}, not the "
                        f"size dataset.json names"))
                ep_images[key].add(image)
                writer.add(_pad_even(image))
            if progress is not None and (k + 1) % 50 == 0:
                progress(start + k + 1, total_frames)
        for (_, key, _, _), writer, (chunk, file, t0) in zip(cameras, writers, placements):
            row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": t0, f"videos/{key}/to_timestamp": writer.end_timestamp()})

        # per-episode statistics, in the order of the features
        ep_stats = {}
        for key, ft in features.items():
            ep_stats[key] = ep_images[key].result() if ft["dtype"] == "video" else vector_stats(cols[key])
        for key, st in ep_stats.items():
            for stat in STAT_KEYS:
                row[f"stats/{key}/{stat}"] = np.asarray(st[stat]).tolist()
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        rows.append(row)
        for key in all_cols:
            all_cols[key].append(cols[key])
        for key in image_totals:
            image_totals[key].merge(ep_images[key])
        done += n
        exported.append(ExportedEpisode(info.index, new_index, n, info.task))
        if progress is not None:
            progress(done, total_frames)

    flush_data()
    for writer in writers:
        writer.close()
    _check_videos(writers, done)

    # meta/episodes
    columns = list(rows[0])
    episodes_table = pa.table({c: pa.array([r[c] for r in rows]) for c in columns})
    _write_parquet(episodes_table, root / EPISODES_PATH.format(chunk_index=0, file_index=0))

    # meta/tasks, meta/stats, meta/info
    _write_parquet(_tasks_table(tasks), root / "meta/tasks.parquet")
    stats = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            stats[key] = _stats_to_json(image_totals[key].result())
        else:
            stats[key] = _stats_to_json(vector_stats(np.concatenate(all_cols[key])))
    _write_json(root / "meta/stats.json", stats)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": dataset.spec.robot,
        "total_episodes": len(exported),
        "total_frames": done,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps_json,
        "splits": {"train": f"0:{len(exported)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
    }
    _write_json(root / "meta/info.json", info)
    return exported, done


def _check_videos(writers: list[_VideoFileWriter], frames: int) -> None:
    """Every camera's files together must hold exactly one video frame per exported frame."""
    import av

    for w in writers:
        count = 0
        for path in w.paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                n = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            count += n
        if count != frames:
            raise ExportError(f"encoding {w.key} with {w.encoder} produced {count} video frames for {frames} "
                              f"data frames; try another video_codec")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False))


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(root)
