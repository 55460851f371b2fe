"""The export's videos: choosing an FFmpeg encoder that works here, writing each camera's frames into rolling mp4 files, and checking the frame counts."""

from __future__ import annotations

import functools
import io
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from lerobot_bridge.layout import VIDEO_PATH, ExportError, _next_file

ENCODER_PREFERENCE = ("libsvtav1", "libx264", "mpeg4")
ENCODER_ALIASES = {"av1": "libsvtav1", "svtav1": "libsvtav1", "h264": "libx264", "x264": "libx264",
                   "lossless": "libx264rgb"}
KEYFRAME_INTERVAL = 2
PIX_FMT = "yuv420p"
#: Encoders that store RGB as it is, without the YUV conversion and chroma subsampling (``lossless``: H.264
#: in RGB at quantiser 0, bit-exact; any FFmpeg decodes it, LeRobot's loaders included).
RGB_PIX_FMT = {"libx264rgb": "rgb24"}



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


def _pad_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _canonical_codec_name(encoder: str) -> str:
    import av

    return av.codec.Codec(encoder, "w").canonical_name


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

