"""Idle stretches: found live and in a stored episode, trimmed from a copy that leaves the original intact."""

from __future__ import annotations

import numpy as np
import pytest

from recorder.dataset import CameraSpec, Dataset, DatasetError, DatasetSpec, StepRecord
from recorder.idle import ORIGINALS_DIR, IdleConfig, IdleMonitor, idle_stretches, trim_episode
from core.types import Frame

FPS = 10.0
CONFIG = IdleConfig(min_stretch_s=2.0, margin_s=0.3)


def _positions(rng: np.random.Generator) -> np.ndarray:
    """1 s of motion, 4 s still (sensor noise well under 2 mm), 1 s of motion: 60 steps at 10 Hz."""
    moving = np.linspace([0.4, 0.0, 0.3], [0.5, 0.0, 0.3], 10)
    still = np.repeat(moving[-1:], 40, axis=0) + rng.normal(0, 0.0002, (40, 3))
    back = np.linspace(moving[-1], [0.5, 0.1, 0.2], 11)[1:]
    return np.concatenate([moving, still, back])


def _record(dataset: Dataset, positions: np.ndarray) -> int:
    writer = dataset.new_episode("grasp the mug", extra={"scene": {"seed": 3}})
    for i, p in enumerate(positions):
        t = 100.0 + i / FPS
        state = np.array([*p, 0, 1, 0, 0, 1.0], np.float32)
        image = np.full((16, 16, 3), i * 4 % 256, np.uint8)
        writer.add(StepRecord(i, t, t, state, np.zeros(7, np.float32), state, state,
                              {"hand": Frame(image, t, t, i, "hand")}))
    return writer.keep("stop_button").index


@pytest.fixture
def dataset(tmp_path):
    spec = DatasetSpec(fps=FPS, cameras=(CameraSpec("hand", 16, 16),), robot="test", joint_count=7, codec="png")
    with Dataset.create(tmp_path / "demos", spec) as ds:
        yield ds


def test_the_monitor_reports_a_still_hand_and_the_idle_share():
    positions = _positions(np.random.default_rng(0))
    monitor = IdleMonitor(CONFIG)
    for i, p in enumerate(positions[:50]):
        monitor.add(p, 1.0, i / FPS)
    assert monitor.still_for_s == pytest.approx(4.0)
    assert monitor.worth_trimming()
    for i, p in enumerate(positions[50:], start=50):
        monitor.add(p, 1.0, i / FPS)
    assert monitor.still_for_s < 0.2
    assert monitor.idle_s == pytest.approx(4.1) and monitor.idle_share == pytest.approx(4.1 / 5.9)  # steps 9-50


def test_a_gripper_change_is_not_idle():
    monitor = IdleMonitor(CONFIG)
    for i in range(30):  # 1.5 s open, then closing: two stretches, each shorter than 2 s
        monitor.add(np.zeros(3), 1.0 if i < 15 else 0.0, i / FPS)
    assert monitor.still_for_s == pytest.approx(1.4)
    assert not monitor.worth_trimming()


def test_stored_stretches_and_a_trim_that_keeps_the_original(dataset):
    positions = _positions(np.random.default_rng(1))
    index = _record(dataset, positions)
    original = dataset.load_episode(index)
    assert idle_stretches(original.states, original.timestamps, CONFIG) == [(9, 50)]

    trimmed, cut = trim_episode(dataset, index, CONFIG)
    assert dataset.episode_indices() == [trimmed.index] and trimmed.index != index
    kept = dataset.load_episode(trimmed.index)
    assert cut == 41 - 2 * 3 and kept.info.length == 60 - cut  # 0.3 s (3 steps) kept at either end
    assert np.all(np.diff(kept.timestamps) == pytest.approx(1 / FPS))  # one continuous recording
    assert list(kept.arrays["tick"]) == list(range(kept.info.length))
    assert np.array_equal(kept.states[-10:], original.states[-10:])  # the motion after the pause is intact
    assert np.array_equal(dataset.frame(trimmed.index, "hand", kept.info.length - 1),
                          np.full((16, 16, 3), 59 * 4 % 256, np.uint8))
    assert kept.info.extra["scene"] == {"seed": 3} and kept.info.extra["trimmed_from"]["episode"] == index

    # The original is out of the training set, but intact: moved back, it reads as before.
    aside = dataset.root / ORIGINALS_DIR / original.info.path.name
    (aside).rename(dataset.episodes_dir / aside.name)
    assert sorted(dataset.episode_indices()) == sorted([index, trimmed.index])
    dataset.verify(index)
    assert np.array_equal(dataset.load_episode(index).states, original.states)


def test_an_episode_without_idle_stretches_is_not_trimmed(dataset):
    positions = np.linspace([0.4, 0.0, 0.3], [0.6, 0.1, 0.2], 40)
    index = _record(dataset, positions)
    with pytest.raises(DatasetError, match="nothing to trim"):
        trim_episode(dataset, index, CONFIG)
    assert dataset.episode_indices() == [index]


def test_by_default_a_pause_of_a_few_seconds_is_offered_for_trimming():
    """An operator who stops to look for 5 s has a stretch worth trimming with the window's own settings (8 s was
    never reached by keyboard demonstrations, so the trim was never offered); a 2 s pause is not."""
    for still_s, offered in ((5.0, True), (2.0, False)):
        monitor = IdleMonitor(IdleConfig())
        t = 0.0
        for x in np.linspace(0.4, 0.5, 20):  # 2 s of motion
            monitor.add(np.array([x, 0.0, 0.3]), 1.0, t)
            t += 0.1
        for _ in range(int(still_s / 0.1)):
            monitor.add(np.array([0.5, 0.0, 0.3]), 1.0, t)
            t += 0.1
        for x in np.linspace(0.5, 0.6, 40):  # 4 s of motion again
            monitor.add(np.array([x, 0.0, 0.3]), 1.0, t)
            t += 0.1
        assert monitor.worth_trimming() == offered, still_s
