"""Background workers of the window: training, policy loading, episode and frame reading.

Each is a QObject moved to a QThread of its own; it is told what to do through
queued signals and reports through signals. None of them holds recording or
policy logic: they run the `train` verb, the artefact loader and the dataset.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
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


_PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TrainRequest:
    dataset: str
    out: str
    preset: str = "cpu"
    epochs: int | None = None
    image_size: int | None = None
    frame_stride: int | None = None

    def command(self) -> list[str]:
        """The CLI's own train verb: one training implementation for the app and the command line."""
        argv = [sys.executable, str(_PROJECT_ROOT / "main.py"), "train", self.dataset, "--out", self.out,
                "--preset", self.preset, "--progress", "jsonl"]
        for flag, value in (("--epochs", self.epochs), ("--input-size", self.image_size),
                            ("--frame-stride", self.frame_stride)):
            if value is not None:
                argv += [flag, str(value)]
        return argv


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
    """Trains in a child process (the `train` verb) and relays its progress.

    A thread of this process would share the GIL with the control loop and the
    window: data loading and the per-step Python work stall both for hundreds
    of milliseconds on a small machine. The child runs at the app's own CPU
    priority (it inherits it; nothing lowers it): niced, it got a tenth of a
    core's share against any other busy process and trained 5 demonstrations
    in 29 min where ``main.py train`` took a few. While it trains the
    rig stays connected and idle, so the two hardly compete (benchmarks/
    app_training.py measures both). Cancel sends it SIGTERM, which it honours
    between two steps (nothing is saved).
    """

    progress = pyqtSignal(object)  # TrainUpdate
    finished = pyqtSignal(str, object)  # policy folder, info dict
    failed = pyqtSignal(str)
    cancelled = pyqtSignal()

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self.child_pid: int | None = None  # the latest training child's process id

    def cancel(self) -> None:  # called from the GUI thread, deliberately not a queued slot
        self._cancel.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)

    @pyqtSlot(object)
    def train(self, request: TrainRequest) -> None:
        self._cancel.clear()
        done: dict | None = None
        last_emit = 0.0
        with tempfile.TemporaryFile(mode="w+") as errors:
            try:
                with self._lock:
                    self._process = subprocess.Popen(request.command(), stdout=subprocess.PIPE, stderr=errors,
                                                     stdin=subprocess.DEVNULL, text=True, cwd=_PROJECT_ROOT)
                    self.child_pid = self._process.pid  # benchmarks and tests look at the child
                for line in self._process.stdout:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # not ours (a library printing to stdout)
                    if record.get("stage") == "done":
                        done = record
                        continue
                    update = _update_from(record)
                    now = time.monotonic()
                    if update.stage == "train" and now - last_emit < 0.05 and update.fraction < 1.0:
                        continue  # 20 updates a second is plenty for a progress bar
                    last_emit = now
                    self.progress.emit(update)
                code = self._process.wait()
            except OSError as exc:
                self.failed.emit(f"training could not start: {exc}")
                return
            finally:
                with self._lock:
                    self._process = None
            if self._cancel.is_set():
                self.cancelled.emit()
            elif code == 0 and done is not None:
                self.finished.emit(done["path"], {**done["info"], "gamma": done.get("gamma"),
                                                  "gamma_method": done.get("gamma_method")})
            else:
                errors.seek(0)
                lines = [ln.strip() for ln in errors.read().splitlines() if ln.strip()]
                reason = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else
                              f"exit status {code}")
                self.failed.emit(f"training failed: {reason}")


def _update_from(record: dict) -> TrainUpdate:
    if record["stage"] == "train":
        step = (record["epoch"] - 1) * record["steps_per_epoch"] + record["step"]
        return TrainUpdate("train", record["fraction"], record["epoch"], record["epochs"], step, record["loss"],
                           record["eta_s"])
    return TrainUpdate(record["stage"], record["done"] / max(record["total"], 1))


class PolicyLoader(QObject):
    """Loads a policy folder (checksums, weights, index) off the GUI thread."""

    loaded = pyqtSignal(object)  # ALTPolicy
    failed = pyqtSignal(str)

    @pyqtSlot(str)
    def load(self, path: str) -> None:
        import torch

        from policy.policy import ALTPolicy

        # Inference shares the machine with the cameras, the control loop and the window: half the cores.
        # On 2 cores one thread halves lookup time (44 vs ~100 ms) because it no longer fights the renderers.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))

        try:
            policy = ALTPolicy.load(path)
        except Exception as exc:  # noqa: BLE001 - shown in the window
            self.failed.emit(f"cannot load the policy in {path}: {exc}")
            return
        policy.info["path"] = str(Path(path).resolve())
        self.loaded.emit(policy)


class PolicyBookkeeper(QObject):
    """Off the GUI thread: adds kept corrections to a policy (a new version) and summarises the trial ledger."""

    added = pyqtSignal(str, object)  # the new version's folder, policy.versions.AddResult
    nothing_to_add = pyqtSignal(str)
    summary_ready = pyqtSignal(str, object)  # policy folder, list[evaluation.trials.VersionSummary]
    coverage_ready = pyqtSignal(str, object, str)  # policy folder, the map as an RGB array, a one-line summary
    failed = pyqtSignal(str)

    @pyqtSlot(str, str)
    def add_corrections(self, policy_dir: str, dataset_dir: str) -> None:
        """Every kept correction (an episode tagged as an intervention) of the dataset not yet in the policy."""
        from policy.policy import ALTPolicy
        from policy.versions import add_episodes
        from recorder.dataset import Dataset

        try:
            known = set(int(e) for e in ALTPolicy.load(policy_dir).info.get("episodes", []))
            with Dataset.open(dataset_dir) as dataset:
                corrections = [e.index for e in dataset.episodes()
                               if "intervention" in e.extra and e.index not in known and e.end_reason == "stop_button"]
            if not corrections:
                self.nothing_to_add.emit(f"no new corrections in {dataset_dir}: after an OOD stop, use Take over & "
                                         "record and keep the episode")
                return
            result = add_episodes(policy_dir, dataset_dir, corrections)
        except Exception as exc:  # noqa: BLE001 - shown in the window
            self.failed.emit(f"could not add the corrections: {exc}")
            return
        self.added.emit(str(result.path), result)

    @pyqtSlot(str, str)
    def summarise(self, ledger_path: str, policy_dir: str) -> None:
        from evaluation.trials import TrialLedger

        try:
            rows = TrialLedger(ledger_path).summary(policy=policy_dir)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"cannot read the trial ledger {ledger_path}: {exc}")
            return
        self.summary_ready.emit(policy_dir, rows)

    @pyqtSlot(str, str)
    def coverage(self, ledger_path: str, policy_dir: str) -> None:
        """The coverage map of a policy with the runs and OOD stops of the ledger (evaluation.coverage)."""
        import cv2

        from evaluation.coverage import build_coverage, render_image
        from policy.policy import ALTPolicy
        from evaluation.trials import TrialLedger

        try:
            ledger = TrialLedger(ledger_path) if ledger_path and Path(ledger_path).exists() else None
            cov = build_coverage(ALTPolicy.load(policy_dir), policy_dir, ledger)
            image = cv2.cvtColor(render_image(cov), cv2.COLOR_BGR2RGB)
        except Exception as exc:  # noqa: BLE001 - shown in the window
            self.failed.emit(f"cannot draw the coverage map of {policy_dir}: {exc}")
            return
        covered = sum(s.covered for s in cov.stops)
        self.coverage_ready.emit(policy_dir, image, f"{len(cov.points)} frames ({len(cov.corrections)} correction "
                                                    f"episode(s)), {len(cov.trajectories)} run(s), {len(cov.stops)} "
                                                    f"OOD stop(s), {covered} covered; record here next: "
                                                    f"{len(cov.suggestions)}")


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
    frame_refused = pyqtSignal(str, object, str)  # view key, request, why the frame is not shown
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

    def request_frame(self, key: str, root: str, episode: int, camera: str, frame: int, check=None) -> None:
        """Any thread: ask for a frame; an older request for the same ``key`` not yet served is replaced.

        ``check(dataset, episode)``, when given, decides on this thread whether the frame may be shown (a
        policy's retrieved frame must come from the episode as it was when the policy was built)."""
        with self._lock:
            fresh = key not in self._pending
            self._pending[key] = (root, episode, camera, frame, check)
        if fresh:
            self._serve_signal.emit(key)

    @pyqtSlot(str)
    def _serve(self, key: str) -> None:
        with self._lock:
            request = self._pending.pop(key, None)
        if request is None:
            return
        root, episode, camera, frame, check = request
        request = request[:4]
        try:
            if check is not None:
                verdict = check(self._open(root), episode)
                if not verdict.show:
                    self.frame_refused.emit(key, request, verdict.message)
                    return
            image = self._open(root).frame(episode, camera, frame)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"cannot read frame {frame} of episode {episode} ({camera}) in {root}: {exc}")
            return
        self.frame_ready.emit(key, request, image)
