"""The integrity check: each episode's files against what was recorded when it was kept, and the report that names each damaged one."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from recorder.dataset_format import (DATASET_FILE, KEPT_PREFIX, META_FILE, STEPS_FILE, DamagedDatasetError,
                                     DatasetError, _crc32_file, _describe_os_error, _one_line, _read_meta,
                                     decode_image)

if TYPE_CHECKING:
    from recorder.dataset import Dataset

log = logging.getLogger("recorder.dataset")  # the logger name these messages have always carried


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
        if self.problems and not skip_damaged:
            raise DamagedDatasetError(f"{self.root}: " + "; ".join(self.problems) + ". Fix it, or pass "
                                      "--skip-damaged to go on with the episodes that are intact", self.damaged)
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


def check_episodes(dataset: "Dataset", full: bool = False, episodes: Iterable[int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> IntegrityReport:
    """:meth:`Dataset.check` (its docstring says what is checked)."""
    present = dataset.episode_indices()
    problems: list[str] = []
    try:
        missing = dataset.missing_episodes()
    except DatasetError as exc:
        problems.append(str(exc))
        missing = []
    if episodes is None:
        targets, lost = present, missing
    else:
        wanted = sorted({int(i) for i in episodes})
        unknown = [i for i in wanted if i not in set(present) | set(missing)]
        if unknown:
            raise DatasetError(f"{dataset.root} has no episode(s) {unknown} (episodes: {present})")
        targets = [i for i in wanted if i in set(present)]
        lost = [i for i in wanted if i in set(missing)]
    report = IntegrityReport(dataset.root, full, list(targets), missing=list(lost), problems=problems)
    for i in lost:
        report.damaged[i] = (f"its folder {dataset.episodes_dir / f'{KEPT_PREFIX}{i:06d}'} is missing (deleted "
                             "outside ALT Studio?)")
    for n, i in enumerate(targets):
        problem = episode_problem(dataset, i, full)
        if problem is not None:
            report.damaged[i] = problem
        if progress is not None:
            progress(n + 1, len(targets))
    return report


def episode_problem(dataset: "Dataset", index: int, full: bool) -> str | None:
    """The first problem of episode ``index``, one line naming the file, or None."""
    path = dataset.episodes_dir / f"{KEPT_PREFIX}{index:06d}"
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
    cameras = [(c, path / f"{c.name}.pack") for c in dataset.spec.cameras]
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
