"""The Train tab: one button; progress, ETA, live loss plot and cancel, on a background thread."""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import datetime
from pathlib import Path

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                             QMessageBox, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from policy.config import PRESETS
from recorder.dataset import Dataset, DatasetError

from .widgets import RollingPlot, ask
from .workers import TrainingWorker, TrainRequest, TrainUpdate

_STAGES = {"load": "reading frames", "train": "training the encoder", "embed": "embedding every frame"}

#: The ETA is the training stage's remaining share over its pace in the last ETA_WINDOW_S seconds, shown once
#: ETA_MIN_SPAN_S seconds of steps are measured. The train verb's own eta_s extrapolates from the whole run so
#: far, start-up and first (slow) steps included: on a loaded 2-core machine it began at 102 min for a run that
#: took 29.
ETA_WINDOW_S = 60.0
ETA_MIN_SPAN_S = 15.0

#: Always shown under the settings (it never appears or vanishes, so nothing moves).
RIG_NOTE = ("Training runs in a process of its own at the app's normal priority. The rig stays connected and "
            "idles while nothing moves; driving the arm, recording or running a policy meanwhile slows the "
            "training. Disconnecting is not needed.")


class TrainPanel(QWidget):
    train_request = pyqtSignal(object)  # queued to the training thread
    policy_trained = pyqtSignal(str)  # the new policy's folder

    def __init__(self, worker: TrainingWorker, runs_root: Path, parent=None):
        super().__init__(parent)
        self.worker = worker
        self.runs_root = runs_root
        self.running = False
        self.gamma_text = ""  # the last finished policy's gamma, as shown
        self._started = 0.0
        self._pace: deque[tuple[float, float]] = deque()  # (monotonic time, training fraction)

        self.dataset_edit = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        self.preset.currentTextChanged.connect(self._apply_preset)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.image_size = QSpinBox()
        self.image_size.setRange(16, 640)
        self.image_size.setSingleStep(16)
        self.image_size.setToolTip("Side of the square encoder input; the preset's own size keeps its aspect")
        self.stride = QSpinBox()
        self.stride.setRange(1, 100)
        self._apply_preset(self.preset.currentText())
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("dataset name and the date, if left empty")
        self.name_edit.setToolTip(f"The policy's folder under {runs_root / 'policies'}")
        self.cancel_question: QMessageBox | None = None
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.dataset_edit, 1)
        row.addWidget(browse)
        form.addRow("dataset", row)
        form.addRow("policy name", self.name_edit)
        form.addRow("preset", self.preset)
        form.addRow("epochs", self.epochs)
        form.addRow("encoder input (px)", self.image_size)
        form.addRow("use every n-th frame", self.stride)
        settings = QGroupBox("Settings")
        settings.setLayout(form)

        self.train_button = QPushButton("Train policy")
        self.train_button.setMinimumHeight(44)
        self.train_button.setStyleSheet("QPushButton { font-size: 16px; font-weight: bold; }")
        self.cancel_button = QPushButton("Cancel…")
        self.train_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.stage = QLabel("idle")
        self.eta = QLabel("")
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.loss_plot = RollingPlot("contrastive loss (NT-Xent)", "loss", window=100000)
        self.loss_plot.setLabel("bottom", "step")

        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(settings)
        self.rig_note = QLabel(RIG_NOTE)
        self.rig_note.setWordWrap(True)
        self.rig_note.setStyleSheet("color: gray;")
        layout.addWidget(self.rig_note)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        row = QHBoxLayout()
        row.addWidget(self.stage, 1)
        row.addWidget(self.eta)
        layout.addLayout(row)
        layout.addWidget(self.result)
        layout.addWidget(self.loss_plot, 1)

        self.train_request.connect(worker.train)
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        self._set_running(False)

    def set_dataset(self, root) -> None:
        if root is not None and not self.running:
            self.dataset_edit.setText(str(root))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset folder", self.dataset_edit.text())
        if path:
            self.dataset_edit.setText(path)

    def _apply_preset(self, name: str) -> None:
        c = PRESETS[name]
        self.epochs.setValue(c.epochs)
        self.image_size.setValue(c.image_width)
        self.stride.setValue(c.frame_stride)

    def request(self, dataset: str, out: str) -> TrainRequest:
        preset = PRESETS[self.preset.currentText()]
        size = self.image_size.value()
        return TrainRequest(dataset, out, self.preset.currentText(), epochs=self.epochs.value(),
                            image_size=None if size == preset.image_width else size,
                            frame_stride=self.stride.value())

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _check(self, dataset: str) -> tuple[str, str | None]:
        """The policy's name, or why training cannot start (checked now, not after the child has started)."""
        if not dataset:
            return "", "Choose the dataset to train on (record one in the Record tab)."
        try:
            with Dataset.open(dataset) as ds:
                if not ds.episode_indices():
                    return "", f"{dataset} holds no kept episode yet; record some first."
        except DatasetError as exc:
            return "", f"Cannot train on this dataset: {exc}."
        name = self.name_edit.text().strip() or f"{Path(dataset).name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            return "", (f"The policy name {name!r} is not a folder name: use letters, digits, '.', '_' and '-' "
                        "(starting with a letter or digit).")
        if (self.runs_root / "policies" / name).exists():
            return "", f"A policy named {name!r} exists already in {self.runs_root / 'policies'}; choose another name."
        return name, None

    def start(self) -> None:
        dataset = self.dataset_edit.text().strip()
        name, problem = self._check(dataset)
        if problem is not None:
            self.result.setText(problem)
            return
        out = self.runs_root / "policies" / name
        self.loss_plot.clear_data()
        self.progress.setValue(0)
        self.result.setText("")
        self.eta.setText("")
        self.stage.setText("starting")
        self._started = time.monotonic()
        self._pace.clear()
        self._set_running(True)
        self.train_request.emit(self.request(dataset, str(out)))

    def cancel(self) -> None:
        """Ask first (the run so far is lost), without blocking the window."""
        if not self.running or self.cancel_question is not None:
            return

        def answered(yes: bool) -> None:
            self.cancel_question = None
            if yes and self.running:
                self.stage.setText("cancelling (at the next step)…")
                self.worker.cancel()

        self.cancel_question = ask(self, "Cancel training?", "Stop training now? Nothing of this run is saved.",
                                   "Cancel training", answered)

    def _on_progress(self, u: TrainUpdate) -> None:
        # Loading is ~5% of the work, training ~85%, embedding ~10%: one bar for the whole job.
        base, share = {"load": (0.0, 0.05), "train": (0.05, 0.85), "embed": (0.90, 0.10)}[u.stage]
        self.progress.setValue(int(1000 * (base + share * u.fraction)))
        if u.stage == "train":
            self.stage.setText(f"{_STAGES['train']}: epoch {u.epoch}/{u.epochs}, loss {u.loss:.3f}")
            self.eta.setText(self._eta_text(u.fraction))
            self.loss_plot.add(u.step, u.loss)
        else:
            self.eta.setText("")
            if u.stage == "embed" and u.fraction >= 1.0:
                # The index and the gamma calibration follow without progress reports: say what happens.
                self.stage.setText("building the lookup table (annoy index) and calibrating gamma; this takes "
                                   "up to a minute without further progress")
            else:
                self.stage.setText(f"{_STAGES[u.stage]}: {100 * u.fraction:.0f}%")

    def _eta_text(self, fraction: float, now: float | None = None) -> str:
        """The training stage's remaining time at its recent pace (see ETA_WINDOW_S), or that it is measured."""
        now = time.monotonic() if now is None else now
        pace = self._pace
        pace.append((now, fraction))
        while len(pace) > 2 and now - pace[1][0] >= ETA_WINDOW_S:
            pace.popleft()
        t0, f0 = pace[0]
        if now - t0 < ETA_MIN_SPAN_S or fraction <= f0:
            return "ETA: measuring the pace…"
        seconds = (1.0 - fraction) * (now - t0) / (fraction - f0)
        return f"ETA {seconds / 60:.1f} min (training)"

    def _on_finished(self, path: str, info: dict) -> None:
        self._close_question()
        self._set_running(False)
        self.progress.setValue(1000)
        minutes = (time.monotonic() - self._started) / 60
        self.stage.setText(f"done in {minutes:.1f} min")
        self.eta.setText("")
        gamma = info.get("gamma")
        method = info.get("gamma_method")
        how = "" if not method else ", set by hand" if method == "set by hand" else f", calibrated: {method}"
        self.gamma_text = "" if gamma is None else f"gamma {gamma:.3f}{how}"
        self.result.setText(f"Policy saved to {path}: {info.get('frames', '?')} frames from "
                            f"{len(info.get('episodes', []))} episodes; {self.gamma_text or 'gamma not reported'}. "
                            "It is selected in the Autonomous tab.")
        self.policy_trained.emit(path)

    def _on_failed(self, message: str) -> None:
        self._close_question()
        self._set_running(False)
        self.stage.setText("failed")
        self.result.setText(message)

    def _close_question(self) -> None:
        """The run ended by itself while the operator was asked whether to cancel it: the question is moot."""
        if self.cancel_question is not None:
            box, self.cancel_question = self.cancel_question, None
            box.finished.disconnect()
            box.done(0)

    def _on_cancelled(self) -> None:
        self._close_question()
        self._set_running(False)
        self.stage.setText("cancelled; nothing was saved")
        self.eta.setText("")
