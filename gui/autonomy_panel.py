"""The Autonomous tab: pick a policy, run it, watch what it retrieves, stop it."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from recorder.idle import IdleConfig, IdleMonitor

from .controller import AUTONOMOUS, HALTED, Halt, RigController
from .gamma_control import GAMMA_MAX, GAMMA_MIN, GammaControl
from .halt_box import HaltBox
from .policy_box import CoverageWindow, PolicyBox, find_policies
from .signal_readouts import SignalReadouts
from .trial_mark import MarkBox
from .widgets import ImageView, RollingPlot, StopButton, keep_place
from .workers import DatasetReader, PolicyBookkeeper, PolicyLoader

# Importable from here as before the tab was split into its boxes.
__all__ = ["GAMMA_MAX", "GAMMA_MIN", "HOVER_HINT", "AutonomyPanel", "CoverageWindow",
           "find_policies"]

#: the hand hovering this long while the policy runs gets a hint (the runner's progress watchdog may stop it)
HOVER_HINT = IdleConfig(motion_m=0.005, min_stretch_s=10.0)


class AutonomyPanel(QWidget):
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

        # -- the policy: pick, load, corrections, its trial record and coverage map
        self.bookkeeper = bookkeeper
        self.policy_box = PolicyBox(runs_root, loader, bookkeeper, lambda: controller.supervisor.ledger)
        box = self.policy_box
        self.picker, self.load_button, self.policy_label = box.picker, box.load_button, box.policy_label
        self.add_button, self.trials_label = box.add_button, box.trials_label
        self.coverage_button, self.coverage_window = box.coverage_button, box.coverage_window
        self.refresh_policies, self.load_selected = box.refresh_policies, box.load_selected
        self.select_and_load, self.show_coverage = box.select_and_load, box.show_coverage

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

        # -- the operator's verdict on the run that ended
        self.mark_box = MarkBox(controller)
        self.mark_prompt, self.mark_success, self.mark_failure = (self.mark_box.prompt, self.mark_box.success,
                                                                  self.mark_box.failure)
        self.mark_keys = self.mark_box.keys

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
        self.gamma = GammaControl(controller)
        self.gamma.shown.connect(self.similarity_plot.set_threshold)
        self.gamma_slider, self.gamma_label, self.gamma_reset = self.gamma.slider, self.gamma.label, self.gamma.reset
        self.latency_label = QLabel("tick latency -")
        self.hover = IdleMonitor(HOVER_HINT)
        self.hover_hint = QLabel("")
        self.hover_hint.setWordWrap(True)
        self.hover_hint.setStyleSheet("color: #a15c00; font-weight: bold;")
        self.hover_hint.hide()
        # every signal's live value beside its own threshold
        self.readouts = SignalReadouts()
        self.similarity_label = self.readouts.values["similarity"]
        self.gamma.applied.connect(self._on_gate_applied)
        self.latency_label.setFixedWidth(self.latency_label.fontMetrics().horizontalAdvance(
            "lookup 0000 ms (p50 0000, max 0000)") + 8)
        gamma_row = QHBoxLayout()
        gamma_row.addWidget(self.readouts)
        gamma_row.addWidget(self.gamma, 1)
        gamma_row.addWidget(self.latency_label)

        # -- halt box: why the arm stopped, and the operator's choices
        self.halt_box = HaltBox(controller)
        h = self.halt_box
        self.halt_text, self.halt_live, self.halt_match = h.message, h.live, h.match
        self.halt_resume, self.halt_teleop, self.halt_record, self.halt_home = h.resume, h.teleop, h.record, h.home

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
        layout.addWidget(self.policy_box)
        layout.addLayout(controls)
        layout.addWidget(self.mark_box)
        keep_place(self.mark_box)  # the question about the last attempt comes and goes without moving the tab
        layout.addWidget(self.halt_box)
        layout.addWidget(self.hover_hint)
        layout.addWidget(self.views)
        layout.addLayout(gamma_row)
        layout.addWidget(self.alignment_label)
        layout.addWidget(self.similarity_plot, 1)
        layout.addWidget(self.drill_box)

        loader.loaded.connect(self._on_loaded)
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

    @property
    def gamma_question(self):
        """The question open while the operator is asked to confirm a gamma below the calibrated one."""
        return self.gamma.question

    # -- policy -------------------------------------------------------------
    def _on_loaded(self, policy) -> None:
        self.policy = policy
        self.controller.set_policy(policy)
        self.policy_box.show_loaded(policy)
        self._dataset_root = self.policy_box.dataset_root
        aligned = policy.locator is not None
        self.target_view.setVisible(aligned)
        self.alignment_label.setVisible(aligned)
        self.alignment_label.setText("aligned method: the object is located when a run starts" if aligned else "")
        self._shown_target = None
        self.gamma.set_policy(policy)
        self.readouts.set_signals(self._signals_of(policy))
        self.readouts.set_thresholds(self._thresholds_of(policy))
        self.policy_box.show_record()
        self._on_mode(self.controller.mode)

    @staticmethod
    def _signals_of(policy) -> list[str]:
        """The signals a policy's gate judges by."""
        names = ["similarity", *policy.view_thresholds]
        if policy.grasp_check is not None:
            names.append("grasp_alignment")
        if getattr(policy, "grip_check", None) is not None:
            names.append("grip")
        locator = policy.locator
        if locator is not None:
            names += [n for n, check in (("hand_camera", locator.hand_camera), ("third_camera", locator.third_camera))
                      if check is not None]
            names.append("correction")
        names += [n for n in policy.method_thresholds() if n not in names]
        return names

    @staticmethod
    def _thresholds_of(policy) -> dict:
        out = dict(policy.gate_in_force())
        if policy.grasp_check is not None:
            out["grasp_alignment"] = policy.grasp_check.threshold
        if getattr(policy, "grip_check", None) is not None:
            out["grip"] = policy.grip_check.margin
        locator = policy.locator
        if locator is not None:
            out.update({n: check.threshold for n, check in (("hand_camera", locator.hand_camera),
                                                            ("third_camera", locator.third_camera))
                        if check is not None})
            out["correction"] = locator.max_correction
        out.update(policy.method_thresholds())
        return out

    def _on_gate_applied(self, thresholds: dict) -> None:
        """The supervisor applied a gate change: the readouts and the policy line show the gate now in force."""
        if self.policy is None:
            return
        self.readouts.set_thresholds(thresholds)
        self.policy_box.show_gate(self.policy)

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
            self.mark_box.on_mode(mode)
        self.hover.reset()

    def _on_trial_ended(self, trial) -> None:
        self.mark_box.ended(trial, self.controller.mode)
        self.policy_box.request_summary()  # the attempt ended (take over, home, ...): the success rate counts it

    def _on_trial_marked(self, trial) -> None:
        self.mark_box.marked(trial, self.controller.mode)
        self.policy_box.request_summary()  # the mark is in the ledger: the success rate counts it

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
        readings = r.readings or {"similarity": (r.similarity, self.policy.gamma if self.policy else None)}
        self.readouts.show_readings(readings)
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
        # a finished task is not resumed
        self.resume_button.setEnabled(self.policy is not None and halt.reason != "done")
        self.policy_box.run_ended()  # the run just ended: its trial is in the ledger
        best = self.halt_box.show_halt(halt, self.policy is not None, self.controller.session is not None)
        if best is not None:
            self._request_match("ood", best.episode, best.frame)
        self.views.setVisible(best is None)  # the halt box shows the frames that matter now
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

