"""The Autonomous tab: pick a policy, run it, watch what it retrieves, stop it."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QComboBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton,
                             QSlider, QVBoxLayout, QWidget)

from policy.artifact import MANIFEST
from recorder.idle import IdleConfig, IdleMonitor

from .controller import AUTONOMOUS, HALTED, Halt, RigController
from .widgets import ImageView, RollingPlot, StopButton, ask
from .workers import DatasetReader, PolicyBookkeeper, PolicyLoader

GAMMA_MIN, GAMMA_MAX = 0.5, 1.0
#: the hand hovering this long while the policy runs gets a hint (the runner's progress watchdog may stop it)
HOVER_HINT = IdleConfig(motion_m=0.005, min_stretch_s=10.0)


def find_policies(root: Path) -> list[Path]:
    """Policy folders under ``root`` (any depth), newest first."""
    if not root.is_dir():
        return []
    found = [p.parent for p in root.rglob(MANIFEST) if (p.parent / "config.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class AutonomyPanel(QWidget):
    load_request = pyqtSignal(str)  # queued to the loader thread

    add_request = pyqtSignal(str, str)  # policy folder, dataset folder: queued to the bookkeeper's thread
    summary_request = pyqtSignal(str, str)  # ledger file, policy folder
    coverage_request = pyqtSignal(str, str)  # ledger file, policy folder

    def __init__(self, controller: RigController, loader: PolicyLoader, reader: DatasetReader, runs_root: Path,
                 bookkeeper: PolicyBookkeeper, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.reader = reader
        self.runs_root = runs_root
        self.policy = None
        self._dataset_root: str | None = None
        self._shown_match: tuple[int, int] | None = None
        self._latencies: deque[float] = deque(maxlen=100)
        self.ticks = 0

        # -- policy picker
        self.picker = QComboBox()
        self.picker.setMinimumWidth(320)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_policies)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self.load_selected)
        self.policy_label = QLabel("no policy loaded")
        self.policy_label.setWordWrap(True)
        pick = QGroupBox("Policy")
        pl = QVBoxLayout(pick)
        row = QHBoxLayout()
        row.addWidget(self.picker, 1)
        for b in (refresh, browse, self.load_button):
            row.addWidget(b)
        pl.addLayout(row)
        pl.addWidget(self.policy_label)
        # Corrections (kept Take over & record episodes) join the lookup table without retraining: a new version.
        self.add_button = QPushButton("Add corrections")
        self.add_button.setToolTip("Embed the kept corrections with this policy's encoder and add them to its "
                                   "lookup table: a new policy version, loaded at once (the old one is kept)")
        self.add_button.setEnabled(False)
        self.add_button.clicked.connect(self._add_corrections)
        self.trials_label = QLabel("trials: -")
        self.trials_label.setToolTip("Every run of this policy version, from the trial ledger (runs/trials.jsonl); "
                                     "success rate over decided trials with a Wilson 95% interval")
        self.coverage_button = QPushButton("Coverage map")
        self.coverage_button.setToolTip("Where the demonstrations and corrections lie in the policy's embedding "
                                        "space, the latest runs, every OOD stop and where to record next")
        self.coverage_button.setEnabled(False)
        self.coverage_button.clicked.connect(self.show_coverage)
        self.coverage_window = CoverageWindow(self)  # its own window, closed with the app
        self.coverage_window.refresh.clicked.connect(self._request_coverage)
        book = QHBoxLayout()
        book.addWidget(self.add_button)
        book.addWidget(self.coverage_button)
        book.addWidget(self.trials_label, 1)
        pl.addLayout(book)

        # -- run controls
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.start_button.clicked.connect(self._start)
        self.pause_button.clicked.connect(controller.pause)
        self.resume_button.clicked.connect(controller.resume)
        self.stop_button = StopButton()
        self.stop_button.clicked.connect(controller.emergency_stop)
        controls = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setMinimumHeight(40)
            controls.addWidget(b)
        controls.addWidget(self.stop_button, 2)

        # -- the operator's verdict on the run that ended: a real rig has no task check, only the operator can tell
        self.mark_box = QWidget()
        self.mark_prompt = QLabel("")
        self.mark_prompt.setWordWrap(True)
        self.mark_prompt.setStyleSheet("font-weight: bold;")
        self.mark_success = QPushButton("Success (S)")
        self.mark_failure = QPushButton("Failure (F)")
        marks = QHBoxLayout(self.mark_box)
        marks.setContentsMargins(0, 0, 0, 0)
        marks.addWidget(self.mark_prompt, 1)
        self.mark_keys: list[QShortcut] = []
        for button, outcome, key in ((self.mark_success, "success", Qt.Key.Key_S),
                                     (self.mark_failure, "failure", Qt.Key.Key_F)):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _checked=False, o=outcome: controller.mark_last_trial(o))
            marks.addWidget(button)
            # A window shortcut owned by the box: live only while the box (so this tab) is shown; a text field
            # that has focus takes the letter first.
            shortcut = QShortcut(QKeySequence(key), self.mark_box)
            shortcut.activated.connect(lambda o=outcome: controller.mark_last_trial(o))
            self.mark_keys.append(shortcut)
        self.mark_box.hide()
        self._mark_trial = None  # the ended trial (evaluation.trials.Trial) the prompt asks about

        # -- views
        self.live = {"hand": ImageView("hand (live)"), "third": ImageView("third-person (live)")}
        self.retrieved = {"hand": ImageView("hand (retrieved)"), "third": ImageView("third-person (retrieved)")}
        self.views = QWidget()
        views = QGridLayout(self.views)
        views.setContentsMargins(0, 0, 0, 0)
        views.addWidget(self.live["hand"], 0, 0)
        views.addWidget(self.live["third"], 0, 1)
        views.addWidget(self.retrieved["hand"], 0, 2)
        views.addWidget(self.retrieved["third"], 0, 3)
        # the aligned method: the demonstration frame the approach aligns the hand to, and where it stands
        self.target_view = ImageView("aligning to (hand)")
        views.addWidget(self.target_view, 0, 4)
        self.target_view.hide()
        self.alignment_label = QLabel("")
        self.alignment_label.setStyleSheet("font-weight: bold; color: #1f5f99;")
        self.alignment_label.hide()
        self._shown_target: tuple[int, int] | None = None

        # -- similarity and gamma
        self.similarity_plot = RollingPlot("similarity of the best match (dashed: gamma)", "cosine", window=600,
                                           y_range=(0.4, 1.0), threshold=0.8)
        self.gamma_slider = QSlider(Qt.Orientation.Horizontal)
        self.gamma_slider.setRange(int(GAMMA_MIN * 1000), int(GAMMA_MAX * 1000))
        self.gamma_slider.setEnabled(False)
        self.gamma_slider.valueChanged.connect(self._gamma_changed)
        self.gamma_slider.sliderReleased.connect(lambda: self._gamma_changed(self.gamma_slider.value()))
        self.gamma_question = None  # open while the operator is asked to confirm a gamma below the calibrated one
        self.gamma_label = QLabel("gamma -")
        self.gamma_reset = QPushButton("Calibrated value")
        self.gamma_reset.setEnabled(False)
        self.gamma_reset.clicked.connect(self._gamma_to_calibrated)
        self.latency_label = QLabel("tick latency -")
        self.hover = IdleMonitor(HOVER_HINT)
        self.hover_hint = QLabel("")
        self.hover_hint.setWordWrap(True)
        self.hover_hint.setStyleSheet("color: #a15c00; font-weight: bold;")
        self.hover_hint.hide()
        self.similarity_label = QLabel("similarity -")
        self.similarity_label.setStyleSheet("font-size: 15px; font-weight: bold;")
        gamma_row = QHBoxLayout()
        gamma_row.addWidget(self.similarity_label)
        gamma_row.addWidget(QLabel("gamma"))
        gamma_row.addWidget(self.gamma_slider, 1)
        gamma_row.addWidget(self.gamma_label)
        gamma_row.addWidget(self.gamma_reset)
        gamma_row.addWidget(self.latency_label)

        # -- halt box: why the arm stopped, and the operator's three choices
        self.halt_box = QGroupBox("Arm halted")
        self.halt_box.setStyleSheet("QGroupBox { background: #fbe3e2; font-weight: bold; }")
        self.halt_text = QLabel("")
        self.halt_text.setWordWrap(True)
        self.halt_live = {"hand": ImageView("hand at the stop", min_side=120),
                          "third": ImageView("third at the stop", min_side=120)}
        self.halt_match = {"hand": ImageView("match (hand)", min_side=120),
                           "third": ImageView("match (third)", min_side=120)}
        self.halt_resume = QPushButton("Resume policy")
        self.halt_teleop = QPushButton("Take over (teleop)")
        self.halt_record = QPushButton("Take over && record")
        self.halt_record.setToolTip("Teleoperate from where the arm stands and record it as a correction of this "
                                    "stop; Stop & keep (Enter) keeps it, then Add corrections")
        self.halt_record.clicked.connect(controller.take_over_and_record)
        self.halt_home = QPushButton("Home")
        self.halt_resume.clicked.connect(controller.resume)
        self.halt_teleop.clicked.connect(controller.take_over)
        self.halt_home.clicked.connect(lambda: controller.request_home(self.window()))
        hl = QVBoxLayout(self.halt_box)
        hl.addWidget(self.halt_text)
        frames = QHBoxLayout()
        for view in (*self.halt_live.values(), *self.halt_match.values()):
            frames.addWidget(view)
        self._halt_frames = QWidget()
        self._halt_frames.setLayout(frames)
        hl.addWidget(self._halt_frames)
        choices = QHBoxLayout()
        for b in (self.halt_resume, self.halt_teleop, self.halt_record, self.halt_home):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setMinimumHeight(36)
            choices.addWidget(b)
        hl.addLayout(choices)
        self.halt_box.hide()

        # -- OOD drill (simulated rig only)
        self.drill_box = QGroupBox("OOD drill (simulated rig): cover the third-person camera")
        dl = QHBoxLayout(self.drill_box)
        self.drill_noise = QPushButton("with noise")
        self.drill_clear = QPushButton("uncover")
        self.drill_noise.clicked.connect(self.cover_with_noise)
        self.drill_clear.clicked.connect(lambda: self._cover(None))
        dl.addWidget(self.drill_noise)
        dl.addWidget(self.drill_clear)
        dl.addStretch(1)
        self.drill_box.hide()

        layout = QVBoxLayout(self)
        layout.addWidget(pick)
        layout.addLayout(controls)
        layout.addWidget(self.mark_box)
        layout.addWidget(self.halt_box)
        layout.addWidget(self.hover_hint)
        layout.addWidget(self.views)
        layout.addLayout(gamma_row)
        layout.addWidget(self.alignment_label)
        layout.addWidget(self.similarity_plot, 1)
        layout.addWidget(self.drill_box)

        self.bookkeeper = bookkeeper
        self.add_request.connect(bookkeeper.add_corrections)
        self.summary_request.connect(bookkeeper.summarise)
        self.coverage_request.connect(bookkeeper.coverage)
        bookkeeper.coverage_ready.connect(self._on_coverage)
        bookkeeper.added.connect(self._on_added)
        bookkeeper.nothing_to_add.connect(self._on_nothing_to_add)
        bookkeeper.summary_ready.connect(self._on_summary)
        bookkeeper.failed.connect(self._on_add_failed)
        self.load_request.connect(loader.load)
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(self._on_load_failed)
        reader.frame_ready.connect(self._on_frame)
        reader.frame_refused.connect(self._on_frame_refused)
        controller.autonomy_event.connect(self._on_event)
        controller.trial_ended.connect(self._on_trial_ended)
        controller.trial_marked.connect(self._on_trial_marked)
        controller.tick.connect(self._on_tick)
        controller.halted.connect(self._on_halted)
        controller.halt_cleared.connect(self._on_halt_cleared)
        controller.mode_changed.connect(self._on_mode)
        controller.connected.connect(lambda rig: self.drill_box.setVisible(rig.scene_control() is not None))
        self.rig = None
        controller.connected.connect(self._set_rig)
        controller.disconnected.connect(lambda: self._set_rig(None))
        self.refresh_policies()
        self._on_mode(controller.mode)

    # -- policy -------------------------------------------------------------
    def refresh_policies(self, select: str | None = None) -> None:
        current = select or self.picker.currentData()
        self.picker.clear()
        for path in find_policies(self.runs_root):
            self.picker.addItem(str(path.relative_to(self.runs_root)) if path.is_relative_to(self.runs_root)
                                else str(path), str(path))
        if current:
            i = self.picker.findData(str(current))
            if i < 0:
                self.picker.addItem(str(current), str(current))
                i = self.picker.count() - 1
            self.picker.setCurrentIndex(i)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Policy folder", str(self.runs_root))
        if path:
            self.refresh_policies(select=path)

    def load_selected(self) -> None:
        path = self.picker.currentData()
        if path:
            self.policy_label.setText(f"loading {path}…")
            self.load_button.setEnabled(False)
            self.load_request.emit(path)

    def select_and_load(self, path: str) -> None:
        self.refresh_policies(select=str(Path(path).resolve()))
        self.load_selected()

    def _on_loaded(self, policy) -> None:
        self.policy = policy
        self.load_button.setEnabled(True)
        self.controller.set_policy(policy)
        info = policy.info
        self._dataset_root = info.get("dataset")
        cal = policy.calibrated_gamma
        aligned = policy.locator is not None
        self.target_view.setVisible(aligned)
        self.alignment_label.setVisible(aligned)
        self.alignment_label.setText("aligned method: the object is located when a run starts" if aligned else "")
        self._shown_target = None
        missing = "" if self._dataset_root and Path(self._dataset_root).is_dir() else \
            " (its dataset is not on this machine: retrieved frames cannot be shown)"
        if not missing and info.get("episode_fingerprints") is None:
            missing = " (built before episode fingerprints: retrieved frames are shown unverified)"
        self.policy_label.setText(f"{info.get('path', '')} ({policy.method}): {info.get('frames', '?')} frames from "
                                  f"{len(info.get('episodes', []))} demos, gamma {policy.gamma:.3f} "
                                  f"(calibrated {cal:.3f}){missing}")
        self.gamma_slider.blockSignals(True)
        self.gamma_slider.setValue(int(round(policy.gamma * 1000)))
        self.gamma_slider.blockSignals(False)
        self.gamma_slider.setEnabled(True)
        self.gamma_reset.setEnabled(True)
        self._show_gamma(policy.gamma)
        self.add_button.setEnabled(bool(self._dataset_root))
        self.coverage_button.setEnabled(bool(policy.info.get("path")))
        self._request_summary()
        if self.coverage_window.isVisible():
            self._request_coverage()
        self._on_mode(self.controller.mode)

    # -- corrections and the trial ledger -------------------------------------------
    def _add_corrections(self) -> None:
        if self.policy is None or not self._dataset_root:
            return
        self.add_button.setEnabled(False)
        self.add_button.setText("Adding…")
        self.add_request.emit(self.policy.info["path"], self._dataset_root)

    def _on_added(self, path: str, result) -> None:
        self.add_button.setText("Add corrections")
        self.policy_label.setText(f"version {result.version} with {len(result.addition.episodes)} correction(s) "
                                  f"added in {result.seconds:.1f} s; loading…")
        self.select_and_load(path)

    def _on_nothing_to_add(self, message: str) -> None:
        self.add_button.setText("Add corrections")
        self.add_button.setEnabled(True)
        self.policy_label.setText(message)

    def _on_add_failed(self, message: str) -> None:
        self.add_button.setText("Add corrections")
        self.add_button.setEnabled(self.policy is not None)
        self.policy_label.setText(message)

    def _request_summary(self) -> None:
        ledger = self.controller.supervisor.ledger
        if ledger is not None and self.policy is not None and self.policy.info.get("path"):
            self.summary_request.emit(str(ledger.path), self.policy.info["path"])

    def show_coverage(self) -> None:
        """Open (or raise) the coverage map window and draw the map for the loaded policy off the GUI thread."""
        self.coverage_window.show()
        self.coverage_window.raise_()
        self._request_coverage()

    def _request_coverage(self) -> None:
        if self.policy is None or not self.policy.info.get("path"):
            return
        ledger = self.controller.supervisor.ledger
        self.coverage_window.status.setText("drawing the coverage map…")
        self.coverage_request.emit(str(ledger.path) if ledger is not None else "", self.policy.info["path"])

    def _on_coverage(self, policy_dir: str, image, summary: str) -> None:
        if self.policy is None or policy_dir != self.policy.info.get("path"):
            return
        version = self.policy.info.get("version", 1)
        self.coverage_window.setWindowTitle(f"Coverage map: {Path(policy_dir).name} (v{version})")
        self.coverage_window.view.set_image(image)
        self.coverage_window.status.setText(summary)

    def _on_summary(self, policy_dir: str, rows) -> None:
        if self.policy is None or policy_dir != self.policy.info.get("path"):
            return
        if not rows:
            self.trials_label.setText("trials: none yet with this policy version")
            return
        parts = []
        for row in rows:
            rate = "-" if row.rate is None else \
                f"{100 * row.rate:.0f}% (95% CI {100 * row.interval[0]:.0f}-{100 * row.interval[1]:.0f}%)"
            stops = ", ".join(f"{k} {v}" for k, v in sorted(row.counts.items()) if v and k != "success")
            marks = ", ".join(f"{n} {what}" for n, what in ((row.marked, "marked by the operator"),
                                                            (row.awaiting_mark, "to mark")) if n)
            parts.append(f"v{row.version}: {row.successes}/{row.decided} succeeded {rate}"
                         + "".join(f"; {extra}" for extra in (stops, marks) if extra))
        self.trials_label.setText("trials: " + " | ".join(parts))

    def _on_load_failed(self, message: str) -> None:
        self.load_button.setEnabled(True)
        self.policy_label.setText(message)

    def _gamma_changed(self, value: int) -> None:
        """A new gamma, applied (and logged by the policy) once the slider is let go; below the calibrated value
        only after the operator confirms: a lower gamma lets more unfamiliar scenes through."""
        policy = self.policy
        if policy is None or self.gamma_question is not None:
            return
        gamma = value / 1000.0
        if self.gamma_slider.isSliderDown():
            self.gamma_label.setText(f"{gamma:.3f}?")  # shown while dragging, applied on release
            return
        if abs(gamma - policy.gamma) < 1e-9:
            return
        if not policy.gamma_needs_confirmation(gamma):
            policy.set_gamma(gamma, by="operator (window)")  # read by the runner at its next lookup
            self._show_gamma(policy.gamma)
            return

        def answered(lower: bool) -> None:
            self.gamma_question = None
            if lower and self.policy is policy:
                policy.set_gamma(gamma, by="operator (window), confirmed below the calibrated value")
            self.gamma_slider.blockSignals(True)
            self.gamma_slider.setValue(int(round(policy.gamma * 1000)))
            self.gamma_slider.blockSignals(False)
            self._show_gamma(policy.gamma)

        self.gamma_question = ask(self, "Lower gamma below the calibrated value?",
                                  f"gamma {gamma:.3f} is below the calibrated {policy.calibrated_gamma:.3f}: the policy "
                                  "will run on in scenes less like its demonstrations, and more of its mistakes will "
                                  "go unstopped. The change is logged with every run.", "Lower gamma", answered)

    def _gamma_to_calibrated(self) -> None:
        if self.policy is not None and self.policy.calibration is not None:
            self.gamma_slider.setValue(int(round(self.policy.calibration.gamma * 1000)))

    def _show_gamma(self, gamma: float) -> None:
        self.gamma_label.setText(f"{gamma:.3f}")
        self.similarity_plot.set_threshold(gamma)

    # -- running --------------------------------------------------------------
    def _set_rig(self, rig) -> None:
        self.rig = rig
        if rig is not None:
            for name, view in self.live.items():
                camera = rig.cameras.get(name)
                view.set_overlay(camera.grasp_overlay if camera is not None else None)

    def _on_mode(self, mode: str) -> None:
        running = mode == AUTONOMOUS
        loaded = self.policy is not None
        self.start_button.setEnabled(loaded and not running and mode != HALTED)
        self.pause_button.setEnabled(running)
        halt = self.controller.halt
        self.resume_button.setEnabled(loaded and mode == HALTED and (halt is None or halt.reason != "done"))
        self.load_button.setEnabled(not running)
        self.picker.setEnabled(not running)
        if running:
            self.halt_box.hide()
            self.mark_box.hide()  # a new run: the prompt was about the one before
            self.views.show()
        else:
            self.hover_hint.hide()
            if self._mark_trial is not None:
                self._show_mark_prompt(mode)
        self.hover.reset()

    def _on_trial_ended(self, trial) -> None:
        self._mark_trial = trial
        self._show_mark_prompt(self.controller.mode)
        self.mark_box.show()

    def _on_trial_marked(self, trial) -> None:
        if self._mark_trial is not None and trial.id == self._mark_trial.id:
            self._show_mark_prompt(self.controller.mode)
        self._request_summary()  # the mark is in the ledger: the success rate counts it

    def _show_mark_prompt(self, mode: str) -> None:
        """The question about the last run, or the mark recorded. S and F are teleop motion keys too: they mark only
        while the arm is halted (the keyboard cannot move it then); the buttons work in every mode."""
        trial = self._mark_trial
        keys = mode == HALTED
        for shortcut in self.mark_keys:
            shortcut.setEnabled(keys)
        how = "Press S for success, F for failure." if keys else "Mark it with the buttons."
        if trial.marked is not None:
            text = f"Marked: {trial.marked}." + (" S or F changes it." if keys else "")
        elif trial.task_check:
            text = (f"The simulator's check said {'success' if trial.outcome == 'success' else 'failure'}. "
                    f"Overrule it? {how}")
        else:
            text = f"Did the arm do the task? {how}"
        self.mark_prompt.setText(text)

    def _start(self) -> None:
        self.similarity_plot.clear_data()  # a new run: the plot starts empty (Resume carries on the same one)
        self.controller.start_autonomy()

    def _on_tick(self, record) -> None:
        """The live views follow the cameras in every mode (teleop, replay, halted), not only while running."""
        frames = record.observation.frames
        for name, view in self.live.items():
            if name in frames:
                view.set_image(frames[name].image)

    def _on_event(self, event) -> None:
        self.ticks += 1
        state = event.record.observation.state
        self.hover.add(state.ee_pose.position, state.gripper, event.record.timing.actual)
        if self.hover.still_for_s >= HOVER_HINT.min_stretch_s:
            self.hover_hint.setText(f"The hand has hardly moved for {self.hover.still_for_s:.0f} s: the policy may be "
                                    "stuck (e.g. hovering at the grasp). Its progress watchdog stops it; or press "
                                    "STOP and take over.")
            self.hover_hint.show()
        elif self.hover_hint.isVisible():
            self.hover_hint.hide()
        r = event.retrieval
        self.similarity_plot.add(event.tick if self.similarity_plot.count == 0 else
                                 self.similarity_plot._x[-1] + 1, r.similarity, mark=event.ood)
        grasp = "" if np.isnan(r.grasp_alignment) else f"  ·  grasp alignment {r.grasp_alignment:.2f}"
        self.similarity_label.setText(f"similarity {r.similarity:.3f}{grasp}")
        self.similarity_label.setStyleSheet("font-size: 15px; font-weight: bold; color: "
                                            + ("#d0312d" if event.ood else "#2e9d49"))
        self._latencies.append(event.tick_ms)
        lat = np.asarray(self._latencies)
        self.latency_label.setText(f"lookup {event.tick_ms:.0f} ms (p50 {np.median(lat):.0f}, max {lat.max():.0f})")
        if event.replay is not None:
            self._show_replay(event.replay)
        best = r.matches[0]
        match = (best.episode, best.frame)
        if match != self._shown_match:
            self._shown_match = match
            self._request_match("live", best.episode, best.frame)
            for name, view in self.retrieved.items():
                view.set_caption(f"{name}: demo {best.episode}, frame {best.frame}")

    def _show_replay(self, replay) -> None:
        """The aligned method's phase, the remaining offset and the frame it aligns to."""
        left, total = replay.remaining, replay.correction
        self.alignment_label.setText(
            f"{replay.phase}: demo {replay.episode} frame {replay.frame}, aligning to its frame {replay.bottleneck}"
            f"  ·  correction {100 * np.linalg.norm(total):.1f} cm (x {100 * total[0]:+.1f}, y {100 * total[1]:+.1f})"
            f"  ·  remaining {100 * np.linalg.norm(left):.1f} cm")
        target = (replay.episode, replay.bottleneck)
        if target != self._shown_target and self._dataset_root and Path(self._dataset_root).is_dir():
            self._shown_target = target
            check = self.policy.check_source_episode if self.policy is not None else None
            self.reader.request_frame("target-hand", self._dataset_root, replay.episode, "hand", replay.bottleneck,
                                      check)
            self.target_view.set_caption(f"aligning to: demo {replay.episode}, frame {replay.bottleneck}")

    def _request_match(self, prefix: str, episode: int, frame: int) -> None:
        if not self._dataset_root or not Path(self._dataset_root).is_dir():
            for view in (self.retrieved if prefix == "live" else self.halt_match).values():
                view.set_image(None, "training frames unavailable")
            return
        check = self.policy.check_source_episode if self.policy is not None else None
        for name in ("hand", "third"):
            self.reader.request_frame(f"{prefix}-{name}", self._dataset_root, episode, name, frame, check)

    def _on_frame_refused(self, key: str, request, message: str) -> None:
        """The retrieved episode changed since the policy was built: its frame would be a lie."""
        prefix, _, name = key.partition("-")
        views = self.retrieved if prefix == "live" else self.halt_match if prefix == "ood" else \
            {"hand": self.target_view} if prefix == "target" else {}
        if name in views:
            views[name].set_image(None, "episode changed since training")
            views[name].setToolTip(message)

    def _on_frame(self, key: str, request, image) -> None:
        prefix, _, name = key.partition("-")
        if prefix == "live" and name in self.retrieved:
            self.retrieved[name].set_image(image)
        elif prefix == "ood" and name in self.halt_match:
            self.halt_match[name].set_image(image)
        elif prefix == "target":
            self.target_view.set_image(image)

    def _on_halted(self, halt: Halt) -> None:
        self.resume_button.setEnabled(self.policy is not None and halt.reason != "done")  # a finished task is not resumed
        self._request_summary()  # the run just ended: its trial is in the ledger
        if self.coverage_window.isVisible():
            self._request_coverage()
        self.halt_record.setVisible(halt.reason in ("ood", "stall", "stop", "paused")
                                    and self.controller.session is not None)
        done = halt.reason == "done"
        self.halt_box.setTitle({"ood": "Out of distribution: the arm stopped", "stop": "STOP: the arm is halted",
                                "paused": "Paused", "done": "Task done"}.get(halt.reason, "Arm halted"))
        colour = "#e3f4e6" if done else "#fbe3e2"
        self.halt_box.setStyleSheet(f"QGroupBox {{ background: {colour}; font-weight: bold; }}")
        text = halt.message
        self.halt_resume.setVisible(not done)  # a finished task is not resumed: take over or home
        self.halt_resume.setEnabled(self.policy is not None)
        result = halt.evidence
        show_frames = result is not None and getattr(result, "ood_observation", None) is not None
        self._halt_frames.setVisible(show_frames)
        if show_frames:
            frames = result.ood_observation.frames
            for name, view in self.halt_live.items():
                view.set_image(frames[name].image if name in frames else None)
            best = result.ood_evidence.matches[0]
            for name, view in self.halt_match.items():  # short captions: a 120-px view cuts long ones off
                view.set_caption(f"match {name}: demo {best.episode}")
            text += (f"\nBest match: demo {best.episode}, frame {best.frame}, similarity "
                     f"{result.ood_evidence.similarity:.3f} (left: the views at the stop; right: that match).")
            self._request_match("ood", best.episode, best.frame)
        self.halt_text.setText(text)
        self.views.setVisible(not show_frames)  # the halt box shows the frames that matter now
        self.halt_box.show()

    def _on_halt_cleared(self) -> None:
        """Resolved (take over, home, resume): the box and its choices go, the live views come back."""
        self.halt_box.hide()
        self.views.show()

    # -- drill ------------------------------------------------------------------
    def _cover(self, image) -> None:
        control = self.rig.scene_control() if self.rig is not None else None
        if control is not None:
            control.cover_camera("third", image)

    def cover_with_noise(self) -> None:
        rng = np.random.default_rng()
        self._cover(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))


class CoverageWindow(QWidget):
    """A separate window with the coverage map (evaluation/coverage.py), redrawn after each run while it is open."""

    def __init__(self, parent=None):
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("Coverage map")
        self.view = ImageView("", min_side=480)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.refresh = QPushButton("Refresh")
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.refresh)
        layout.addLayout(row)
        self.resize(1120, 820)
