"""The gamma slider: the policy's OOD threshold, changed through the supervisor like every other command."""

from __future__ import annotations

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from .widgets import ask

GAMMA_MIN, GAMMA_MAX = 0.5, 1.0


class GammaControl(QWidget):
    """A new gamma is applied (and logged by the policy) once the slider is let go: the window asks the supervisor
    (``set_gamma``), which changes it on its control thread, between two lookups of a run. Below the calibrated
    value only after the operator confirms: a lower gamma lets more unfamiliar scenes through."""

    shown = pyqtSignal(float)  # the gamma now in force (as the window asked for it), for the similarity plot

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.policy = None
        self.gamma: float | None = None  # the value last asked of the supervisor for this policy
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(GAMMA_MIN * 1000), int(GAMMA_MAX * 1000))
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._changed)
        self.slider.sliderReleased.connect(lambda: self._changed(self.slider.value()))
        self.question = None  # open while the operator is asked to confirm a gamma below the calibrated one
        self.label = QLabel("gamma -")
        self.reset = QPushButton("Calibrated value")
        self.reset.setEnabled(False)
        self.reset.clicked.connect(self._to_calibrated)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("gamma"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        row.addWidget(self.reset)

    def set_policy(self, policy) -> None:
        """A policy was loaded: the slider starts at its gamma."""
        self.policy = policy
        self.gamma = policy.gamma
        self._put_slider(policy.gamma)
        self.slider.setEnabled(True)
        self.reset.setEnabled(True)
        self._show(policy.gamma)

    def _changed(self, value: int) -> None:
        policy = self.policy
        if policy is None or self.question is not None:
            return
        gamma = value / 1000.0
        if self.slider.isSliderDown():
            self.label.setText(f"{gamma:.3f}?")  # shown while dragging, applied on release
            return
        if abs(gamma - self.gamma) < 1e-9:
            return
        if not policy.gamma_needs_confirmation(gamma):
            self._apply(gamma, "operator (window)")
            return

        def answered(lower: bool) -> None:
            self.question = None
            if lower and self.policy is policy:
                self._apply(gamma, "operator (window), confirmed below the calibrated value")
            self._put_slider(self.gamma)
            self._show(self.gamma)

        self.question = ask(self, "Lower gamma below the calibrated value?",
                            f"gamma {gamma:.3f} is below the calibrated {policy.calibrated_gamma:.3f}: the policy "
                            "will run on in scenes less like its demonstrations, and more of its mistakes will "
                            "go unstopped. The change is logged with every run.", "Lower gamma", answered)

    def _apply(self, gamma: float, by: str) -> None:
        self.controller.set_gamma(gamma, by=by)  # read by the runner at its next lookup
        self.gamma = gamma
        self._show(gamma)

    def _put_slider(self, gamma: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(gamma * 1000)))
        self.slider.blockSignals(False)

    def _to_calibrated(self) -> None:
        if self.policy is not None and self.policy.calibration is not None:
            self.slider.setValue(int(round(self.policy.calibration.gamma * 1000)))

    def _show(self, gamma: float) -> None:
        self.label.setText(f"{gamma:.3f}")
        self.shown.emit(gamma)
