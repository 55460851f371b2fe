"""The Record tab: dataset, episode life cycle, kept episodes and the episode browser."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox, QProgressBar,
                             QPushButton, QSlider, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from recorder.idle import IdleConfig, IdleMonitor

from .controller import REPLAY, RECORDING, RigController
from .widgets import EpisodeTable, ImageView, ask, fixed_split, keep_place
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
        # Millimetres and percent on separate plots (one axis each), sharing time.
        self.pose_plot = pg.PlotWidget(title="end-effector position (mm)")
        self.gripper_plot = pg.PlotWidget(title="gripper opening (%)")
        self._cursors = []
        for plot in (self.pose_plot, self.gripper_plot):
            plot.setMenuEnabled(False)
            plot.showGrid(x=True, y=True, alpha=0.3)
            plot.setLabel("bottom", "time", units="s")
            cursor = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("#d0312d", width=2))
            plot.addItem(cursor)
            self._cursors.append(cursor)
        self.pose_plot.addLegend(offset=(-10, 5), colCount=3)
        self.pose_plot.setMinimumHeight(150)
        self.gripper_plot.setMinimumHeight(130)
        self.gripper_plot.setYRange(0, 100, padding=0.05)
        self.gripper_plot.setXLink(self.pose_plot)
        self._curves = {name: self.pose_plot.plot(pen=pg.mkPen(colour, width=2), name=name)
                        for name, colour in (("x", "#1f5fbf"), ("y", "#2e9d49"), ("z", "#e07b00"))}
        self._curves["gripper"] = self.gripper_plot.plot(pen=pg.mkPen("#7d3cbf", width=2))
        self.delete_button = QPushButton("Delete episode…")
        self.replay_button = QPushButton("Replay on the arm")
        self.place_button = QPushButton("Place as in this episode")
        self.place_button.setToolTip("Simulated rig: put the scene back as it was when this episode was recorded")
        self.place_button.hide()
        self.delete_button.clicked.connect(self._delete)
        self.replay_button.clicked.connect(self._replay)
        self.place_button.clicked.connect(self._place_as_recorded)
        self.replay_progress = QProgressBar()
        self.replay_progress.setFormat("replaying on the arm: step %v / %m (STOP halts it)")
        self.replay_progress.hide()
        keep_place(self.replay_progress, self.place_button)  # a replay or a sim rig never moves the plots
        self.position.setMinimumWidth(1)  # the frame's time and number never widen the browser
        self.delete_question: QMessageBox | None = None
        buttons = QHBoxLayout()
        buttons.addWidget(self.position, 1)
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.place_button)
        buttons.addWidget(self.replay_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self._views_row, 2)
        layout.addWidget(self.slider)
        layout.addLayout(buttons)
        layout.addWidget(self.replay_progress)
        layout.addWidget(self.pose_plot, 1)
        layout.addWidget(self.gripper_plot, 1)
        self._set_enabled(False)
        reader.episode_loaded.connect(self._on_loaded)
        reader.frame_ready.connect(self._on_frame)
        self.load_request.connect(reader.load_episode)
        controller.mode_changed.connect(self._on_mode)
        controller.tick.connect(self._on_tick)
        controller.connected.connect(lambda rig: self.place_button.setVisible(rig.scene_control() is not None))
        self._replaying = False

    def _set_enabled(self, enabled: bool) -> None:
        for w in (self.slider, self.delete_button, self.replay_button, self.place_button):
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
        # Frames are numbered from 0 everywhere (the dataset, the policy's "demo K, frame N", the captions).
        self.position.setText(f"episode {e.index}: frame {i} (0-{e.length - 1}), t = {e.times[i]:.2f} s")
        for cursor in self._cursors:
            cursor.setValue(float(e.times[i]))
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
        if self.episode is None or self.delete_question is not None:
            return
        index = self.episode.index

        def answered(yes: bool) -> None:
            self.delete_question = None
            if yes:
                self.controller.delete_episode(index)
                if self.episode is not None and self.episode.index == index:
                    self.clear()

        self.delete_question = ask(self, "Delete this episode?",
                                   f"Delete kept episode {index} from the dataset? This cannot be undone.",
                                   "Delete", answered)

    def _replay(self) -> None:
        if self.episode is not None:
            self.replay_progress.setRange(0, self.episode.length)
            self.replay_progress.setValue(0)
            self.controller.replay(self.episode.index)

    def _place_as_recorded(self) -> None:
        if self.episode is not None:
            self.controller.restore_episode_scene(self.episode.index)

    def _on_mode(self, mode: str) -> None:
        self._replaying = mode == REPLAY
        self.replay_progress.setVisible(self._replaying)

    def _on_tick(self, record) -> None:
        if self._replaying:
            self.replay_progress.setValue(min(self.replay_progress.value() + 1, self.replay_progress.maximum()))


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
        self.count_bar.setFormat("%v / %m demonstrations")
        self.place_button = QPushButton(self._place_text(0))
        self.place_button.setToolTip("Simulated rig only: reset the scene to one of the rig's training placements "
                                     "(those of the scripted demonstrations), one per episode")
        self.place_button.clicked.connect(self._place)
        self.place_button.hide()
        self.next_button = QPushButton("Next episode")
        self.next_button.setToolTip("Open the gripper and home the arm (and on a simulated rig reset the scene to "
                                    "the next training placement): ready for the next demonstration")
        self.next_button.clicked.connect(self.next_episode)
        self.next_button.setEnabled(False)
        self.idle_config = IdleConfig()
        self.idle = IdleMonitor(self.idle_config)
        self.trim_button = QPushButton("Trim idle stretches")
        self.trim_button.setToolTip("Replace the episode by a copy without its idle stretches; the original is "
                                    "kept in the dataset's trimmed-originals/ folder")
        self.trim_button.clicked.connect(self._trim_last)
        self.trim_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.trim_button.hide()
        self.discard_question: QMessageBox | None = None
        self._sim = False
        self._placements = 0  # the connected rig's training placements (its scene control's)

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
        keep_place(self.discard_last_button, self.rerecord_last_button, self.trim_button)
        self._last_kept: int | None = None

        rec_box = QGroupBox("Recording")
        rl = QVBoxLayout(rec_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("target"))
        row.addWidget(self.target)
        row.addWidget(self.count_bar, 1)
        row.addWidget(self.place_button)
        row.addWidget(self.next_button)
        rl.addLayout(row)
        row = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.discard_button, self.rerecord_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            row.addWidget(b)
        rl.addLayout(row)
        rl.addWidget(self.status)
        rl.addWidget(self.warning)
        row = QHBoxLayout()
        self.last_label.setWordWrap(True)
        row.addWidget(self.last_label, 1)
        row.addWidget(self.trim_button)
        row.addWidget(self.discard_last_button)
        row.addWidget(self.rerecord_last_button)
        rl.addLayout(row)

        self.table = EpisodeTable()
        self.browser = EpisodeBrowser(controller, reader)
        self.table.episode_selected.connect(lambda i: self.root and self.browser.show_episode(self.root, i))
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.browser)
        fixed_split(split, [220, 360], [330, 650])
        self.split = split

        layout = QVBoxLayout(self)
        layout.addWidget(ds_box)
        layout.addWidget(rec_box)
        layout.addWidget(split, 1)

        controller.dataset_changed.connect(self._on_dataset)
        controller.episodes_changed.connect(self._on_episodes)
        controller.record_event.connect(self._on_event)
        controller.episode_finished.connect(self._on_finished)
        controller.mode_changed.connect(self._on_mode)
        controller.connected.connect(self._on_connected)
        controller.disconnected.connect(lambda: self.next_button.setEnabled(False))
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
        self._last_kept = None  # "the episode just kept" was in the dataset that is gone now
        self._show_last_choices(False)
        self.last_label.setText("")
        if root is None:  # closed (disconnect, another dataset): no table, no count
            self.episodes = []
            self.table.show_episodes([])
            self._update_count()
        self._show_dataset()

    def _show_dataset(self) -> None:
        if self.root is None:
            self.dataset_label.setText("no dataset open")
        else:
            self.dataset_label.setText(f"dataset {self.root}: {len(self.episodes)} episode(s) kept; "
                                       "Start records the next one")

    def reader_forget(self, root: str) -> None:
        self.forget_request.emit(root)  # queued to the reader's thread like its other requests

    def _on_episodes(self, episodes) -> None:
        self.episodes = list(episodes)
        if self.root is not None:
            self.reader_forget(self.root)
        self.table.show_episodes(self.episodes)
        self._update_count()
        self._show_dataset()

    def _update_count(self) -> None:
        """Demonstrations toward the target: complete episodes that are not corrections (the others are counted
        beside it, so the operator knows what the dataset holds)."""
        demos = sum(1 for e in self.episodes if e.is_demonstration)
        corrections = sum(1 for e in self.episodes if e.is_correction)
        partial = sum(1 for e in self.episodes if not e.is_complete and not e.is_correction)
        others = [f"{n} {what}" for n, what in ((corrections, "correction(s)"), (partial, "cut short")) if n]
        self.count_bar.setMaximum(self.target.value())
        self.count_bar.setValue(min(demos, self.target.value()))
        self.count_bar.setFormat("%v / %m demonstrations" + (f" (+ {', '.join(others)})" if others else ""))
        self.place_button.setText(self._place_text(self._next_spot()))

    @staticmethod
    def _place_text(spot: int) -> str:
        return f"Reset to training scene {spot}"

    def _next_spot(self) -> int:
        """The training placement of the next episode: one per episode, round and round."""
        return len(self.episodes) % self._placements if self._placements else len(self.episodes)

    def _on_connected(self, rig) -> None:
        control = rig.scene_control()
        self._sim = control is not None
        self._placements = control.training_placements if control is not None else 0
        self.place_button.setToolTip(f"Simulated rig only: reset the scene to one of the rig's {self._placements} "
                                     "training placements (those of the scripted demonstrations), one per episode")
        self.place_button.setVisible(self._sim and self._placements > 0)
        self.place_button.setText(self._place_text(self._next_spot()))
        self.next_button.setEnabled(True)

    def _place(self) -> None:
        self._scene_seed += 1
        self.controller.reset_scene(self._scene_seed, training_index=self._next_spot())

    def next_episode(self) -> None:
        """Between two demonstrations: release the object, home, and on a simulated rig reset the scene to the next
        training placement.

        A simulated rig resets the scene anyway, so it homes without asking; on a real rig Home asks first
        when the gripper holds something (homing opens it)."""
        if self._sim:
            self.controller.home()  # homing opens the gripper; it also lifts a halt the operator left
            if self._placements:
                self._place()  # queued behind the home
        else:
            self.controller.request_home(self.window())
    # -- episode life cycle ---------------------------------------------------
    def _on_mode(self, mode: str) -> None:
        recording = mode == RECORDING
        self.start_button.setEnabled(not recording)
        for b in (self.stop_button, self.discard_button, self.rerecord_button):
            b.setEnabled(recording)
        self.next_button.setEnabled(not recording and mode not in ("disconnected", "connecting"))
        if recording:
            self._episode_started = time.monotonic()
            self.idle = IdleMonitor(self.idle_config)
            self.warning.setText("")
            self.last_label.setText("")
            self._show_last_choices(False)

    def _on_event(self, event) -> None:
        if event.phase != "recording":
            return
        state = event.record.observation.state
        self.idle.add(state.ee_pose.position, state.gripper, event.record.timing.actual)
        elapsed = time.monotonic() - self._episode_started
        self.status.setText(f"<span style='color:#d0312d'>&#9679;</span> recording episode {event.episode}: "
                            f"{event.steps} steps, {elapsed:.1f} s &nbsp; <small>late ticks {event.late_ticks}, "
                            f"dropped frames {event.dropped_frames}</small>")
        self.status.setTextFormat(Qt.TextFormat.RichText)
        if event.warning:
            self.warning.setText(event.warning)
        elif self.idle.still_for_s >= self.idle_config.min_stretch_s:
            self.warning.setText(f"idle: the hand has not moved for {self.idle.still_for_s:.0f} s. Idle steps "
                                 "teach the policy nothing and slow training down; you can trim them afterwards.")
        elif event.dropped_frames:
            self.warning.setText(f"{event.dropped_frames} camera frame(s) dropped in this episode")
        elif self.warning.text().startswith("idle:"):
            self.warning.setText("")

    def _on_finished(self, outcome) -> None:
        self.status.setText("")
        if outcome.kept is not None:
            k = outcome.kept
            self._last_kept = k.index
            note = "" if outcome.reason == "stop_button" else f" (ended by {outcome.reason})"
            text = f"Episode {k.index} kept: {k.length} steps, {k.duration_s:.1f} s{note}"
            idle = self.idle.worth_trimming()
            if idle:
                text += (f". {self.idle.idle_s:.0f} s of it ({100 * self.idle.idle_share:.0f}%) was idle: trimming "
                         "it makes training faster (the original is kept)")
            self.last_label.setText(text)
            self._show_last_choices(True)
            self.trim_button.setVisible(idle)
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
        if not visible:
            self.trim_button.hide()

    def _discard_last(self) -> None:
        """The episode is kept on disk already: deleting it asks first (without blocking: STOP keeps working)."""
        if self._last_kept is None or self.discard_question is not None:
            return
        index = self._last_kept

        def answered(yes: bool) -> None:
            self.discard_question = None
            if yes and self._last_kept == index:
                self._delete_last()

        self.discard_question = ask(self, "Discard the episode just kept?",
                                    f"Episode {index} is kept in the dataset. Delete it? This cannot be undone.",
                                    "Delete", answered)

    def _delete_last(self) -> None:
        self.controller.delete_episode(self._last_kept)
        self._last_kept = None
        self._show_last_choices(False)
        self.last_label.setText("")

    def _rerecord_last(self) -> None:
        """Re-record says what it does on its button: no question (the operator records it again at once)."""
        if self._last_kept is not None:
            self._delete_last()
            self.controller.start_episode()  # queued after the delete: the new episode takes its place

    def _trim_last(self) -> None:
        if self._last_kept is not None:
            self.controller.trim_episode(self._last_kept, self.idle_config)
            self.trim_button.hide()
            self.last_label.setText(f"Episode {self._last_kept}: trimming its idle stretches…")
            self._last_kept = None
            self._show_last_choices(False)
