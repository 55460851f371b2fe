"""The gate's controls: the gamma slider (the similarity threshold alone) and the strictness control (the
false-stop rate, which moves every threshold of the gate together). Both change the policy through the
supervisor like every other command."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QGridLayout, QLabel, QPushButton, QSlider, QWidget

from .widgets import ask

GAMMA_MIN, GAMMA_MAX = 0.5, 1.0

#: The false-stop rates the strictness control offers (per held-out frame, the gate as a whole); the policy's
#: calibrated rate is added when it is not one of them.
RATES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)

#: How the thresholds are named in the window.
SHORT = {"similarity": "similarity", "hand_view": "hand", "third_view": "third"}


def _percent(rate: float) -> str:
    return f"{100 * rate:.2g}%"


def describe_gate(thresholds: dict) -> str:
    """``similarity 0.931 · hand 0.902 · third 0.884``: the thresholds in force, as the window shows them."""
    return " · ".join(f"{SHORT.get(k, k)} {v:.3f}" for k, v in thresholds.items() if v is not None)


class GammaControl(QWidget):
    """A new gamma is applied (and logged by the policy) once the slider is let go: the window asks the supervisor
    (``set_gamma``), which changes it on its control thread, between two lookups of a run. Below the calibrated
    value only after the operator confirms: a lower gamma lets more unfamiliar scenes through.

    The strictness control (below the slider) picks a false-stop rate on the held-out demonstrations; the
    thresholds it implies for every signal are shown as it moves and applied together on release (the supervisor's
    ``set_gamma`` with a dict of thresholds). A policy calibrated before its held-out values were kept has
    gamma only: the strictness control is then disabled and says so."""

    shown = pyqtSignal(float)  # the gamma now in force (as the window asked for it), for the similarity plot
    applied = pyqtSignal(dict)  # the thresholds in force once the supervisor has applied a change

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.policy = None
        self.gamma: float | None = None  # the value last asked of the supervisor for this policy
        self.rates: list[float] = list(RATES)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(GAMMA_MIN * 1000), int(GAMMA_MAX * 1000))
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._changed)
        self.slider.sliderReleased.connect(lambda: self._changed(self.slider.value()))
        self.question = None  # open while the operator is asked to confirm a threshold below the calibrated one
        self.label = QLabel("gamma -")
        self.label.setFixedWidth(self.label.fontMetrics().horizontalAdvance("0.000?") + 8)
        self.reset = QPushButton("Calibrated value")
        self.reset.setEnabled(False)
        self.reset.clicked.connect(self._to_calibrated)

        # the gate as a whole: a false-stop rate and the thresholds it implies
        self.rate_slider = QSlider(Qt.Orientation.Horizontal)
        self.rate_slider.setEnabled(False)
        self.rate_slider.setToolTip("How often the gate may stop a run like the demonstrations (per frame, on the "
                                    "held-out demonstrations). Every signal's threshold moves with it: to the right "
                                    "they rise and the gate stops sooner; to the left they fall and more unfamiliar "
                                    "scenes get through")
        self.rate_slider.valueChanged.connect(self._rate_changed)
        self.rate_slider.sliderReleased.connect(lambda: self._rate_changed(self.rate_slider.value()))
        self.rate_label = QLabel("false stops -")
        self.rate_label.setFixedWidth(self.rate_label.fontMetrics().horizontalAdvance("false stops 0.05%?") + 8)
        self.implied_label = QLabel("")  # the thresholds the rate implies (or: the rate the thresholds imply)
        self.implied_label.setMinimumWidth(self.implied_label.fontMetrics().horizontalAdvance(
            "similarity 0.000 · hand 0.000 · third 0.000 (held-out stops ~00%)") + 8)
        self.rate_reset = QPushButton("Calibrated rate")
        self.rate_reset.setEnabled(False)
        self.rate_reset.clicked.connect(self._to_calibrated_rate)
        self.rate: float | None = None  # the rate last applied (None: the gate was set by gamma alone)

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(QLabel("gamma"), 0, 0)
        grid.addWidget(self.slider, 0, 1)
        grid.addWidget(self.label, 0, 2)
        grid.addWidget(self.reset, 0, 3)
        grid.addWidget(QLabel("gate"), 1, 0)
        grid.addWidget(self.rate_slider, 1, 1)
        grid.addWidget(self.rate_label, 1, 2)
        grid.addWidget(self.rate_reset, 1, 3)
        grid.addWidget(self.implied_label, 2, 1, 1, 3)
        grid.setColumnStretch(1, 1)
        self._pending = None  # (ticket, policy) of the change the supervisor has not answered yet
        self._poll = QTimer(self)
        self._poll.setInterval(30)
        self._poll.timeout.connect(self._check_applied)

    def set_policy(self, policy) -> None:
        """A policy was loaded: the slider starts at its gamma, the strictness control at its rate."""
        self.policy = policy
        self.gamma = policy.gamma
        self._put_slider(policy.gamma)
        self.slider.setEnabled(True)
        self.reset.setEnabled(True)
        scores = policy.gate_scores()
        calibrated = None if policy.calibration is None else policy.calibration.false_stop_rate
        self.rates = sorted(set(RATES) | ({float(calibrated)} if calibrated else set()))
        self.rate_slider.blockSignals(True)
        self.rate_slider.setRange(0, len(self.rates) - 1)
        self.rate_slider.blockSignals(False)
        self.rate_slider.setEnabled(scores is not None)
        self.rate_reset.setEnabled(scores is not None)
        self.rate = policy.gate_rate if scores is not None else None
        if scores is None:
            self.rate_slider.setToolTip("this policy was calibrated before its held-out values were kept: retrain it "
                                        "to set the gate by its false-stop rate (gamma can still be set)")
        self._show(policy.gamma)
        self._show_gate(policy.gate_in_force())

    # -- gamma alone ------------------------------------------------------------------
    def _changed(self, value: int) -> None:
        policy = self.policy
        if policy is None or self.question is not None:
            return
        gamma = value / 1000.0
        if self.slider.isSliderDown():
            self.label.setText(f"{gamma:.3f}?")  # shown while dragging, applied on release
            self._show_implied({**policy.gate_in_force(), "similarity": gamma}, preview=True)
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
        ticket = self.controller.set_gamma(gamma, by=by)  # read by the runner at its next lookup
        self.gamma = gamma
        self.rate = None  # gamma alone: the gate is no longer at a chosen rate
        self._show(gamma)
        self._await(ticket)

    def _put_slider(self, gamma: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(gamma * 1000)))
        self.slider.blockSignals(False)

    def _to_calibrated(self) -> None:
        if self.policy is not None and self.policy.calibration is not None:
            self.slider.setValue(int(round(self.policy.calibrated_gamma * 1000)))

    def _show(self, gamma: float) -> None:
        self.label.setText(f"{gamma:.3f}")
        self.shown.emit(gamma)

    # -- the gate as a whole ------------------------------------------------------------
    def _rate_at(self, index: int) -> float:
        return self.rates[max(0, min(int(index), len(self.rates) - 1))]

    def _rate_changed(self, index: int) -> None:
        policy = self.policy
        if policy is None or self.question is not None or policy.gate_scores() is None:
            return
        rate = self._rate_at(index)
        thresholds = policy.thresholds_at_rate(rate)
        if self.rate_slider.isSliderDown():
            self.rate_label.setText(f"false stops {_percent(rate)}?")  # shown while dragging, applied on release
            self._show_implied(thresholds, preview=True)
            return
        if self.rate is not None and abs(rate - self.rate) < 1e-12:
            return
        if not policy.thresholds_need_confirmation(thresholds):
            self._apply_rate(rate, thresholds, "operator (window)")
            return

        def answered(lower: bool) -> None:
            self.question = None
            if lower and self.policy is policy:
                self._apply_rate(rate, thresholds, "operator (window), confirmed below the calibrated thresholds")
            else:
                self._show_gate(policy.gate_in_force())

        calibrated = policy.calibration.false_stop_rate
        self.question = ask(self, "Loosen the gate below its calibrated thresholds?",
                            f"A false-stop rate of {_percent(rate)} (calibrated {_percent(calibrated)}) sets "
                            f"{describe_gate(thresholds)}, below the calibrated "
                            f"{describe_gate(policy.calibrated_thresholds())}: the policy will run on in scenes "
                            "less like its demonstrations, and more of its mistakes will go unstopped. The change "
                            "is logged with every run.", "Loosen the gate", answered)

    def _apply_rate(self, rate: float, thresholds: dict, by: str) -> None:
        ticket = self.controller.set_gamma(thresholds, by=f"{by}, false-stop rate {_percent(rate)}", rate=rate)
        self.rate = rate
        self.gamma = thresholds["similarity"]
        self._put_slider(self.gamma)
        self._show(self.gamma)
        self._show_gate(thresholds)
        self._await(ticket)

    def _to_calibrated_rate(self) -> None:
        if self.policy is not None and self.policy.calibration is not None:
            self.rate = None  # apply even when the slider is already there (gamma may have moved since)
            self.rate_slider.setValue(self._nearest_index(self.policy.calibration.false_stop_rate))
            self._rate_changed(self.rate_slider.value())

    def _nearest_index(self, rate: float) -> int:
        return int(np.argmin([abs(np.log(r) - np.log(rate)) for r in self.rates]))

    def _show_gate(self, thresholds: dict) -> None:
        """The gate in force: the rate control where it stands, and the thresholds (or the rate they imply)."""
        policy = self.policy
        if policy is None:
            return
        if self.rate is not None:
            self.rate_slider.blockSignals(True)
            self.rate_slider.setValue(self._nearest_index(self.rate))
            self.rate_slider.blockSignals(False)
            self.rate_label.setText(f"false stops {_percent(self.rate)}")
        else:
            self.rate_label.setText("false stops -" if policy.gate_scores() is None else "false stops (set)")
        self._show_implied(thresholds, preview=False)

    def _show_implied(self, thresholds: dict, preview: bool) -> None:
        rates = self.policy.implied_rates(thresholds) if self.policy is not None else None
        parts = [] if rates is None else [f"held-out frames stopped ~{_percent(rates['gate'])}"]
        runs = self.policy.implied_run_rate(thresholds) if self.policy is not None else None
        if runs is not None:  # the rate per run (policy/conformal.py): held-out runs, and a new run's bound
            parts.append(f"runs {runs['stopped']}/{runs['episodes']}, a new one <= "
                         f"{_percent(runs['conformal_bound'])}")
        implied = f" ({'; '.join(parts)})" if parts else ""
        self.implied_label.setText(("if applied: " if preview else "in force: ") + describe_gate(thresholds) + implied)

    # -- the supervisor's answer ----------------------------------------------------------
    def _await(self, ticket) -> None:
        """Once the supervisor has answered, the thresholds actually in force are shown and announced."""
        if ticket is None:
            return
        self._pending = (ticket, self.policy)
        self._poll.start()

    def _check_applied(self) -> None:
        if self._pending is None:
            self._poll.stop()
            return
        ticket, policy = self._pending
        if not ticket.answered:
            return
        self._pending = None
        self._poll.stop()
        if policy is not self.policy:
            return
        now = policy.gate_in_force()
        if ticket.refused:
            self.rate = policy.gate_rate
            self.gamma = policy.gamma
            self._put_slider(policy.gamma)
            self._show(policy.gamma)
            self.implied_label.setText(f"not changed: {ticket.refusal}")
        else:
            self._show_gate(now)
        self.applied.emit(now)
