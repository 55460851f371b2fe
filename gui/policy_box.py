"""The Autonomous tab's policy box: pick and load a policy, add corrections to it, its trial record and coverage map."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from policy.artifact import MANIFEST

from .widgets import ImageView
from .workers import PolicyBookkeeper, PolicyLoader


def find_policies(root: Path) -> list[Path]:
    """Policy folders under ``root`` (any depth), newest first."""
    if not root.is_dir():
        return []
    found = [p.parent for p in root.rglob(MANIFEST) if (p.parent / "config.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class PolicyBox(QGroupBox):
    """Loading goes to the loader's thread, corrections, summaries and coverage maps to the bookkeeper's; the tab
    is told of a loaded policy by the loader and hands it back here with :meth:`show_loaded`."""

    load_request = pyqtSignal(str)  # queued to the loader thread
    add_request = pyqtSignal(str, str)  # policy folder, dataset folder: queued to the bookkeeper's thread
    summary_request = pyqtSignal(str, str)  # ledger file, policy folder
    coverage_request = pyqtSignal(str, str)  # ledger file, policy folder

    def __init__(self, runs_root: Path, loader: PolicyLoader, bookkeeper: PolicyBookkeeper,
                 ledger: Callable[[], object], parent=None):
        """``ledger``: the trial ledger the supervisor records runs in now (None: none)."""
        super().__init__("Policy", parent)
        self.runs_root = runs_root
        self._ledger = ledger
        self.policy = None
        self._missing = ""  # why retrieved frames cannot be shown (part of the policy line)
        self.dataset_root: str | None = None

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
        pl = QVBoxLayout(self)
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

        self.add_request.connect(bookkeeper.add_corrections)
        self.summary_request.connect(bookkeeper.summarise)
        self.coverage_request.connect(bookkeeper.coverage)
        bookkeeper.coverage_ready.connect(self._on_coverage)
        bookkeeper.added.connect(self._on_added)
        bookkeeper.nothing_to_add.connect(self._on_nothing_to_add)
        bookkeeper.summary_ready.connect(self._on_summary)
        bookkeeper.failed.connect(self._on_add_failed)
        self.load_request.connect(loader.load)
        loader.failed.connect(self._on_load_failed)

    # -- picking and loading ------------------------------------------------------
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

    def show_loaded(self, policy) -> None:
        """The loader loaded ``policy`` (the tab has handed it to the supervisor)."""
        self.policy = policy
        self.load_button.setEnabled(True)
        info = policy.info
        self.dataset_root = info.get("dataset")
        missing = "" if self.dataset_root and Path(self.dataset_root).is_dir() else \
            " (its dataset is not on this machine: retrieved frames cannot be shown)"
        if not missing and info.get("episode_fingerprints") is None:
            missing = " (built before episode fingerprints: retrieved frames are shown unverified)"
        self._missing = missing
        self.show_gate(policy)

    def show_gate(self, policy) -> None:
        """The policy line with the gate now in force: gamma (and the calibrated one), each view's threshold and
        the false-stop rate it was set at; called after every change the supervisor applied."""
        if policy is not self.policy:
            return
        info = policy.info
        gate = policy.gate_in_force()
        views = "".join(f", {name.replace('_view', '')} view {value:.3f}" for name, value in gate.items()
                        if name != "similarity")
        rate = "" if policy.gate_rate is None else f", false stops {100 * policy.gate_rate:.2g}% of frames"
        run = None if policy.calibration is None else policy.calibration.run
        if run:
            now = policy.implied_run_rate()
            asked = "" if run.get("alpha") is None else f"asked {100 * run['alpha']:.3g}%, " + \
                ("NOT applied (the per-frame rule kept: see the training summary), " if run.get("refused") else "")
            if now is not None:
                rate += (f"; per run: {asked}held-out {now['stopped']}/{now['episodes']} stopped (bound "
                         f"{100 * now['conformal_bound']:.3g}%)")
        changed = " (changed)" if policy.gate_in_force() != policy.calibrated_thresholds() else ""
        self.policy_label.setText(f"{info.get('path', '')} ({policy.method}): {info.get('frames', '?')} frames from "
                                  f"{len(info.get('episodes', []))} demos; gate{changed}: gamma {policy.gamma:.3f} "
                                  f"(calibrated {policy.calibrated_gamma:.3f}){views}{rate}"
                                  f"{self._missing}")

    def show_record(self) -> None:
        """After a load: the buttons that need the policy's folder or dataset, its trials, its coverage map."""
        self.add_button.setEnabled(bool(self.dataset_root))
        self.coverage_button.setEnabled(bool(self.policy.info.get("path")))
        self.request_summary()
        if self.coverage_window.isVisible():
            self._request_coverage()

    def run_ended(self) -> None:
        """A run ended (its trial is in the ledger): the summary and an open coverage map follow."""
        self.request_summary()
        if self.coverage_window.isVisible():
            self._request_coverage()

    def _on_load_failed(self, message: str) -> None:
        self.load_button.setEnabled(True)
        self.policy_label.setText(message)

    # -- corrections and the trial ledger -------------------------------------------
    def _add_corrections(self) -> None:
        if self.policy is None or not self.dataset_root:
            return
        self.add_button.setEnabled(False)
        self.add_button.setText("Adding…")
        self.add_request.emit(self.policy.info["path"], self.dataset_root)

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

    def request_summary(self) -> None:
        ledger = self._ledger()
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
        ledger = self._ledger()
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
