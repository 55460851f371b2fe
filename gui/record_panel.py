"""The Record tab: dataset, episode life cycle, kept episodes and the episode browser."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                             QSlider, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from .controller import RECORDING, RigController
from .widgets import EpisodeTable, ImageView
from .workers import DatasetReader, EpisodeView


class EpisodeBrowser(QWidget):
    """Scrub through a kept episode: both views, pose and gripper over time; delete or replay it."""

    frame_request = pyqtSignal(str, str, int, str, int)  # key, root, episode, camera, frame
    load_request = pyqtSignal(str, int)  # root, episode

    def __init__(self, controller: RigController, reader: DatasetReader, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.reader = reader
        self.root: str | None = None
        self.episode: EpisodeView | None = None
        self.views: dict[str, ImageView] = {}
        self._views_row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._scrub)
        self.position = QLabel("no episode selected")
        self.plot = pg.PlotWidget(title="end-effector position (mm) and gripper (%)")
        self.plot.setMenuEnabled(False)
        self.plot.addLegend(offset=(-10, 5), colCount=4)
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setMinimumHeight(150)
        self._cursor = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("#d0312d", width=2))
        self.plot.addItem(self._cursor)
        self._curves = {name: self.plot.plot(pen=pg.mkPen(colour, width=2), name=name)
                        for name, colour in (("x", "#1f5fbf"), ("y", "#2e9d49"), ("z", "#e07b00"),
                                             ("gripper", "#7d3cbf"))}
        self.delete_button = QPushButton("Delete episode")
        self.replay_button = QPushButton("Replay on the arm")
        self.delete_button.clicked.connect(self._delete)
        self.replay_button.clicked.connect(self._replay)
        buttons = QHBoxLayout()
        buttons.addWidget(self.position, 1)
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.replay_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self._views_row, 2)
        layout.addWidget(self.slider)
        layout.addLayout(buttons)
        layout.addWidget(self.plot, 1)
        self._set_enabled(False)
        reader.episode_loaded.connect(self._on_loaded)
        reader.frame_ready.connect(self._on_frame)
        self.load_request.connect(reader.load_episode)

    def _set_enabled(self, enabled: bool) -> None:
        for w in (self.slider, self.delete_button, self.replay_button):
            w.setEnabled(enabled)

    def show_episode(self, root: str, index: int) -> None:
        self.root = root
        self.load_request.emit(root, index)

    def clear(self) -> None:
        self.episode = None
        self._set_enabled(False)
        self.position.setText("no episode selected")
        for view in self.views.values():
            view.set_image(None)
        for curve in self._curves.values():
            curve.setData([], [])

    def _on_loaded(self, episode: EpisodeView) -> None:
        self.episode = episode
        for i, camera in enumerate(episode.cameras):
            if camera not in self.views:
                self.views[camera] = ImageView(camera)
                self._views_row.addWidget(self.views[camera])
        t = episode.times
        for i, axis in enumerate("xyz"):
            self._curves[axis].setData(t, episode.states[:, i] * 1000)
        self._curves["gripper"].setData(t, episode.states[:, 7] * 100)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(episode.length - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self._set_enabled(True)
        self._scrub(0)

    def _scrub(self, i: int) -> None:
        e = self.episode
        if e is None or self.root is None:
            return
        self.position.setText(f"episode {e.index}: frame {i + 1} / {e.length}, t = {e.times[i]:.2f} s")
        self._cursor.setValue(float(e.times[i]))
        for camera in e.cameras:
            self.reader.request_frame(f"browser-{camera}", self.root, e.index, camera, i)

    def _on_frame(self, key: str, request, image: np.ndarray) -> None:
        if not key.startswith("browser-") or self.episode is None:
            return
        root, episode, camera, frame = request
        if episode == self.episode.index and camera in self.views:
            self.views[camera].set_image(image)
            self.views[camera].set_caption(f"{camera}: episode {episode}, frame {frame}")

    def _delete(self) -> None:
        if self.episode is not None:
            self.controller.delete_episode(self.episode.index)
            self.clear()

    def _replay(self) -> None:
        if self.episode is not None:
            self.controller.replay(self.episode.index)


class RecordPanel(QWidget):
    forget_request = pyqtSignal(str)

    def __init__(self, controller: RigController, reader: DatasetReader, data_root: Path, parent=None):
        super().__init__(parent)
        self.forget_request.connect(reader.forget)
        self.controller = controller
        self.reader = reader
        self.root: str | None = None
        self._episode_started = 0.0
        self._scene_seed = 0

        self.path_edit = QLineEdit(str(data_root / "demos"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.open_button = QPushButton("Open / create")
        self.open_button.clicked.connect(lambda: controller.open_dataset(self.path_edit.text().strip()))
        self.dataset_label = QLabel("no dataset open")
        ds_box = QGroupBox("Dataset (a new folder is created; an existing one is resumed)")
        dl = QVBoxLayout(ds_box)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        row.addWidget(self.open_button)
        dl.addLayout(row)
        dl.addWidget(self.dataset_label)

        self.target = QSpinBox()
        self.target.setRange(1, 10000)
        self.target.setValue(30)
        self.target.valueChanged.connect(lambda _: self._update_count())
        self.count_bar = QProgressBar()
        self.count_bar.setFormat("%v / %m episodes")
        self.place_button = QPushButton("Place mug at next training spot")
        self.place_button.setToolTip("Simulated rig only: the scripted demos' placements, in order")
        self.place_button.clicked.connect(self._place)
        self.place_button.hide()

        self.start_button = QPushButton("Start episode (Enter)")
        self.stop_button = QPushButton("Stop && keep (Enter)")
        self.discard_button = QPushButton("Discard (Backspace)")
        self.rerecord_button = QPushButton("Re-record (Ctrl+R)")
        self.start_button.clicked.connect(controller.start_episode)
        self.stop_button.clicked.connect(controller.stop_episode)
        self.discard_button.clicked.connect(controller.discard_episode)
        self.rerecord_button.clicked.connect(controller.rerecord_episode)
        self.start_button.setStyleSheet("QPushButton { font-weight: bold; }")
        self.status = QLabel("")
        self.status.setStyleSheet("font-size: 15px;")
        self.warning = QLabel("")
        self.warning.setStyleSheet("color: #a15c00; font-weight: bold;")
        self.warning.setWordWrap(True)
        self.last_label = QLabel("")
        self.discard_last_button = QPushButton("Discard that episode")
        self.discard_last_button.clicked.connect(self._discard_last)
        self.rerecord_last_button = QPushButton("Re-record it")
        self.rerecord_last_button.setToolTip("Delete the episode just kept and record it again")
        self.rerecord_last_button.clicked.connect(self._rerecord_last)
        for b in (self.discard_last_button, self.rerecord_last_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.hide()
        self._last_kept: int | None = None

        rec_box = QGroupBox("Recording")
        rl = QVBoxLayout(rec_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("target"))
        row.addWidget(self.target)
        row.addWidget(self.count_bar, 1)
        row.addWidget(self.place_button)
        rl.addLayout(row)
        row = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.discard_button, self.rerecord_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            row.addWidget(b)
        rl.addLayout(row)
        rl.addWidget(self.status)
        rl.addWidget(self.warning)
        row = QHBoxLayout()
        row.addWidget(self.last_label, 1)
        row.addWidget(self.discard_last_button)
        row.addWidget(self.rerecord_last_button)
        rl.addLayout(row)

        self.table = EpisodeTable()
        self.browser = EpisodeBrowser(controller, reader)
        self.table.episode_selected.connect(lambda i: self.root and self.browser.show_episode(self.root, i))
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.browser)
        split.setSizes([300, 600])

        layout = QVBoxLayout(self)
        layout.addWidget(ds_box)
        layout.addWidget(rec_box)
        layout.addWidget(split, 1)

        controller.dataset_changed.connect(self._on_dataset)
        controller.episodes_changed.connect(self._on_episodes)
        controller.record_event.connect(self._on_event)
        controller.episode_finished.connect(self._on_finished)
        controller.mode_changed.connect(self._on_mode)
        controller.connected.connect(lambda rig: self.place_button.setVisible(rig.scene_control() is not None))
        self.episodes: list = []
        self._on_mode(controller.mode)

    # -- dataset ----------------------------------------------------------
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset folder", self.path_edit.text())
        if path:
            self.path_edit.setText(path)

    def _on_dataset(self, root) -> None:
        if self.root is not None:
            self.reader_forget(self.root)
        self.root = None if root is None else str(root)
        self.browser.clear()
        self.dataset_label.setText("no dataset open" if root is None else f"recording into {root}")
        if root is None:
            self.table.show_episodes([])

    def reader_forget(self, root: str) -> None:
        self.forget_request.emit(root)  # queued to the reader's thread like its other requests

    def _on_episodes(self, episodes) -> None:
        self.episodes = list(episodes)
        if self.root is not None:
            self.reader_forget(self.root)
        self.table.show_episodes(self.episodes)
        self._update_count()

    def _update_count(self) -> None:
        self.count_bar.setMaximum(self.target.value())
        self.count_bar.setValue(min(len(self.episodes), self.target.value()))

    def _place(self) -> None:
        self._scene_seed += 1
        self.controller.reset_scene(self._scene_seed, training_index=len(self.episodes))

    # -- episode life cycle ---------------------------------------------------
    def _on_mode(self, mode: str) -> None:
        recording = mode == RECORDING
        self.start_button.setEnabled(not recording)
        for b in (self.stop_button, self.discard_button, self.rerecord_button):
            b.setEnabled(recording)
        if recording:
            self._episode_started = time.monotonic()
            self.warning.setText("")
            self.last_label.setText("")
            self._show_last_choices(False)

    def _on_event(self, event) -> None:
        if event.phase != "recording":
            return
        elapsed = time.monotonic() - self._episode_started
        self.status.setText(f"<span style='color:#d0312d'>&#9679;</span> recording episode {event.episode}: "
                            f"{event.steps} steps, {elapsed:.1f} s &nbsp; <small>late ticks {event.late_ticks}, "
                            f"dropped frames {event.dropped_frames}</small>")
        self.status.setTextFormat(Qt.TextFormat.RichText)
        if event.warning:
            self.warning.setText(event.warning)
        elif event.dropped_frames:
            self.warning.setText(f"{event.dropped_frames} camera frame(s) dropped in this episode")

    def _on_finished(self, outcome) -> None:
        self.status.setText("")
        if outcome.kept is not None:
            k = outcome.kept
            self._last_kept = k.index
            note = "" if outcome.reason == "stop_button" else f" (ended by {outcome.reason})"
            self.last_label.setText(f"Episode {k.index} kept: {k.length} steps, {k.duration_s:.1f} s{note}")
            self._show_last_choices(True)
            stats = outcome.stats
            drops = sum(stats.get("dropped_frames", {}).values())
            if stats.get("late_ticks") or drops:
                self.warning.setText(f"episode {k.index}: {stats.get('late_ticks', 0)} late ticks, "
                                     f"{drops} dropped frames")
        else:
            self.last_label.setText(f"Episode discarded ({outcome.reason}, {outcome.steps} steps)")
            self._show_last_choices(False)

    def _show_last_choices(self, visible: bool) -> None:
        self.discard_last_button.setVisible(visible)
        self.rerecord_last_button.setVisible(visible)

    def _discard_last(self) -> None:
        if self._last_kept is not None:
            self.controller.delete_episode(self._last_kept)
            self._last_kept = None
            self._show_last_choices(False)
            self.last_label.setText("")

    def _rerecord_last(self) -> None:
        if self._last_kept is not None:
            self._discard_last()
            self.controller.start_episode()  # queued after the delete: the new episode takes its place
