"""Background workers of the window: training, policy loading, episode and frame reading.

Each is a QObject moved to a QThread of its own; it is told what to do through
queued signals and reports through signals. None of them holds recording or
policy logic: they call the trainer, the artefact loader and the dataset.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

log = logging.getLogger(__name__)


def start_worker(worker: QObject, name: str) -> QThread:
    """Move ``worker`` to a new started thread (the caller keeps both alive)."""
    thread = QThread()
    thread.setObjectName(name)
    worker.moveToThread(thread)
    thread.start()
    return thread


@dataclass(frozen=True)
class TrainRequest:
    dataset: str
    out: str
    config: object  # PolicyConfig
    device: str | None = None


@dataclass(frozen=True)
class TrainUpdate:
    stage: str  # "load", "train", "embed"
    fraction: float  # of this stage
    epoch: int = 0
    epochs: int = 0
    step: int = 0  # global step within training
    loss: float | None = None
    eta_s: float | None = None


class TrainingWorker(QObject):
    """Runs ``ALTPolicy.build`` + ``save``; cancel is checked by the trainer every step."""

    progress = pyqtSignal(object)  # TrainUpdate
    finished = pyqtSignal(str, object)  # policy folder, info dict
    failed = pyqtSignal(str)
    cancelled = pyqtSignal()

    def __init__(self):
        super().__init__()
        self._cancel = threading.Event()
        self._last_emit = 0.0

    def cancel(self) -> None:  # called from the GUI thread, deliberately not a queued slot
        self._cancel.set()

    @pyqtSlot(object)
    def train(self, request: TrainRequest) -> None:
        from policy.policy import ALTPolicy
        from policy.train import TrainingCancelled
        from recorder.dataset import Dataset

        self._cancel.clear()
        try:
            with Dataset.open(request.dataset) as dataset:
                policy = ALTPolicy.build(dataset, request.config, progress=self._report, cancel=self._cancel,
                                         device=request.device)
            if self._cancel.is_set():
                raise TrainingCancelled()
            path = policy.save(request.out)
        except TrainingCancelled:
            self.cancelled.emit()
            return
        except Exception as exc:  # noqa: BLE001 - any failure is shown in the window
            log.exception("training failed")
            self.failed.emit(f"training failed: {exc}")
            return
        self.finished.emit(str(path), policy.info)

    def _report(self, stage: str, value) -> None:
        if stage == "train":
            p = value
            step = (p.epoch - 1) * p.steps_per_epoch + p.step
            # Every step would flood the window's queue on a GPU; 20 updates a second is plenty.
            now = time.monotonic()
            last = p.epoch == p.epochs and p.step == p.steps_per_epoch
            if now - self._last_emit < 0.05 and not last:
                return
            self._last_emit = now
            self.progress.emit(TrainUpdate("train", p.fraction, p.epoch, p.epochs, step, p.loss, p.eta_s))
        else:
            done, total = value
            self.progress.emit(TrainUpdate(stage, done / max(total, 1)))


class PolicyLoader(QObject):
    """Loads a policy folder (checksums, weights, index) off the GUI thread."""

    loaded = pyqtSignal(object)  # ALTPolicy
    failed = pyqtSignal(str)

    @pyqtSlot(str)
    def load(self, path: str) -> None:
        from policy.policy import ALTPolicy

        try:
            policy = ALTPolicy.load(path)
        except Exception as exc:  # noqa: BLE001 - shown in the window
            self.failed.emit(f"cannot load the policy in {path}: {exc}")
            return
        policy.info["path"] = str(Path(path).resolve())
        self.loaded.emit(policy)


@dataclass(frozen=True)
class EpisodeView:
    index: int
    length: int
    duration_s: float
    states: np.ndarray  # [T, 8] x y z qx qy qz qw gripper (measured)
    actions: np.ndarray  # [T, 8] commanded
    times: np.ndarray  # [T] seconds from the first step
    cameras: tuple[str, ...]


class DatasetReader(QObject):
    """Reads episodes and frames of a dataset for display, with its own read-only handle.

    Frame requests are coalesced: while scrubbing, only the newest request per
    view is decoded, so the slider never queues up work.
    """

    episode_loaded = pyqtSignal(object)  # EpisodeView
    frame_ready = pyqtSignal(str, object, object)  # view key, (dataset, episode, camera, frame), RGB array
    failed = pyqtSignal(str)
    _serve_signal = pyqtSignal(str)  # queued to this worker's thread

    def __init__(self):
        super().__init__()
        self._datasets: dict[str, object] = {}
        self._pending: dict[str, tuple] = {}
        self._lock = threading.Lock()
        self._serve_signal.connect(self._serve)

    def _open(self, root: str):
        from recorder.dataset import Dataset

        dataset = self._datasets.get(root)
        if dataset is None:
            dataset = self._datasets[root] = Dataset.open(root)
        return dataset

    @pyqtSlot(str)
    def forget(self, root: str) -> None:
        """The dataset changed on disk (episode kept or deleted): drop cached handles and arrays."""
        dataset = self._datasets.pop(root, None)
        if dataset is not None:
            dataset.close()

    @pyqtSlot(str, int)
    def load_episode(self, root: str, index: int) -> None:
        try:
            data = self._open(root).load_episode(index)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"cannot read episode {index} of {root}: {exc}")
            return
        t = data.timestamps
        self.episode_loaded.emit(EpisodeView(index, data.info.length, data.info.duration_s, data.states,
                                             data.actions, t - t[0] if len(t) else t,
                                             tuple(c.name for c in self._open(root).spec.cameras)))

    def request_frame(self, key: str, root: str, episode: int, camera: str, frame: int) -> None:
        """Any thread: ask for a frame; an older request for the same ``key`` not yet served is replaced."""
        with self._lock:
            fresh = key not in self._pending
            self._pending[key] = (root, episode, camera, frame)
        if fresh:
            self._serve_signal.emit(key)

    @pyqtSlot(str)
    def _serve(self, key: str) -> None:
        with self._lock:
            request = self._pending.pop(key, None)
        if request is None:
            return
        root, episode, camera, frame = request
        try:
            image = self._open(root).frame(episode, camera, frame)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"cannot read frame {frame} of episode {episode} ({camera}) in {root}: {exc}")
            return
        self.frame_ready.emit(key, request, image)
