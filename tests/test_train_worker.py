"""The app's training child runs at the app's own CPU priority, and the Train tab's ETA follows the recent pace
(a niced child once trained 5 demonstrations in 29 min, and the ETA began at 102 min)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gui.train_panel import ETA_MIN_SPAN_S, TrainPanel
from gui.workers import TrainingWorker, TrainRequest

pytestmark = pytest.mark.timeout(60)
_ROOT = Path(__file__).resolve().parents[1]

# A stand-in for the train verb: reports its niceness the way the verb reports the finished policy.
_CHILD = ("import json, os; print(json.dumps({'stage': 'done', 'path': 'p', 'info': {'nice': os.nice(0)}, "
          "'gamma': 0.9, 'gamma_method': 'test'}), flush=True)")


@dataclass(frozen=True)
class _NiceReport(TrainRequest):
    def command(self) -> list[str]:
        return [sys.executable, "-c", _CHILD]


def _child_niceness(worker: TrainingWorker) -> int:
    seen: dict = {}
    worker.finished.connect(lambda path, info: seen.update(info))
    worker.failed.connect(lambda message: seen.update(failed=message))
    worker.train(_NiceReport("dataset", "out"))  # called directly: it runs the child to its end on this thread
    assert "failed" not in seen, seen
    return seen["nice"]


def test_training_child_runs_at_the_parents_priority(qapp):
    assert _child_niceness(TrainingWorker()) == os.nice(0)


def test_training_child_keeps_a_niced_apps_niceness():
    """An app started niced (by the operator, say) gives its training child the same niceness, no other."""
    script = ("import os, sys; sys.path.insert(0, os.getcwd()); import tests.test_train_worker as t; "
              "from gui.workers import TrainingWorker; "
              "sys.exit(0 if t._child_niceness(TrainingWorker()) == os.nice(0) else 3)")
    result = subprocess.run([sys.executable, "-c", script], cwd=_ROOT, preexec_fn=lambda: os.nice(3),
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr


def test_eta_follows_the_recent_pace_not_the_slow_start(qapp, tmp_path):
    panel = TrainPanel(TrainingWorker(), tmp_path)
    try:
        # The first 10% of the steps took 5 minutes (start-up, a loaded machine); then 1% every 6 s.
        t0 = 1000.0
        assert "measuring" in panel._eta_text(0.10, now=t0)
        assert "measuring" in panel._eta_text(0.11, now=t0 + 6)
        text = ""
        for i in range(2, 12):
            text = panel._eta_text(0.10 + 0.01 * i, now=t0 + 6 * i)
        assert t0 + 6 * 11 - t0 >= ETA_MIN_SPAN_S
        # 79% left at 1% per 6 s: 474 s = 7.9 min (the whole-run average would say about 19 min)
        assert text.startswith("ETA 7.9 min"), text
    finally:
        panel.deleteLater()
