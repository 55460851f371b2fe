"""The LeRobotDataset v3.0 layout an export writes (codebase version, path templates, file sizes, index features) and ExportError."""

from __future__ import annotations

from typing import Callable

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
PROVENANCE_FILE = "meta/alt_studio_export.json"
INDEX_FEATURES = ("frame_index", "episode_index", "index", "task_index")

ProgressCallback = Callable[[int, int], None]


class ExportError(RuntimeError):
    """The export cannot be done; the message says why and what to do."""


def _next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    if file_index == CHUNKS_SIZE - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1

