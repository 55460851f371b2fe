"""Writing an export's files: the data and episode parquet files, tasks, stats.json and info.json, episode by episode alongside the videos."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.transforms import POSE_QUAT

from lerobot_bridge.layout import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, INDEX_FEATURES, VIDEO_PATH,
                                   ProgressCallback, _next_file)
from lerobot_bridge.stats import STAT_KEYS, ImageStats, _stats_to_json, vector_stats
from lerobot_bridge.video import _check_videos, _pad_even, _VideoFileWriter
from recorder.dataset import QUAT_NAMES, Dataset, DatasetError, continuous_quaternions, fsync_dir


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

