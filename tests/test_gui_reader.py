"""The dataset reader refuses to show a policy's retrieved frame from an episode that changed since training."""

from __future__ import annotations

from functools import partial

from gui.workers import DatasetReader
from policy.policy import check_source_episode
from recorder.dataset import Dataset
from recording_helpers import record_sim


def test_a_retrieved_frame_from_a_changed_episode_is_refused(qtbot, tmp_path):
    record_sim(tmp_path / "demos", 1)
    with Dataset.open(tmp_path / "demos") as dataset:
        fingerprints = {"0": dataset.episode_fingerprint(0)}
    check = partial(check_source_episode, fingerprints)
    reader = DatasetReader()
    root = str(tmp_path / "demos")
    with qtbot.waitSignal(reader.frame_ready, timeout=10_000) as shown:
        reader.request_frame("live-hand", root, 0, "hand", 3, check)
    assert shown.args[2].shape == (32, 32, 3)

    with Dataset.open(root, writable=True) as dataset:  # the episode is deleted and another one recorded
        dataset.delete_episode(0)
    record_sim(tmp_path / "demos", 1)
    reader.forget(root)
    with qtbot.waitSignal(reader.frame_refused, timeout=10_000) as refused:
        reader.request_frame("live-hand", root, 0, "hand", 3, check)
    assert "deleted" in refused.args[2] or "changed" in refused.args[2] or "not one" in refused.args[2]
