"""Building the landmark method: on a table of frames, or on an already trained ALT policy (same encoder, table
and gate: comparing the two then compares the methods alone)."""

from __future__ import annotations

import numpy as np

from policy.config import PolicyConfig
from policy.landmarks.model import LandmarkError, LandmarkModel, fit_landmarks


def build_landmarks(table, config: PolicyConfig) -> LandmarkModel:
    """The landmark model of a table's demonstrations, from their first third-person frames at the camera's own
    size (LandmarkError says why it cannot be fitted)."""
    missing = [e for e in table.actions if e not in table.first_thirds]
    if missing:
        raise LandmarkError("the landmark method finds what moved in the third-person view; this table has no "
                            f"third-person frames for episode(s) {missing[:5]} (train with the third view)")
    hands = {}
    for e in table.actions:
        rows = np.flatnonzero(table.episode == e)
        rows = rows[np.argsort(table.frame[rows])]
        if len(rows) == len(table.actions[e]):  # every frame in the table (no stride): where the hand was
            hands[int(e)] = table.pose[rows, :3].numpy().astype(np.float64)
    return fit_landmarks({int(e): table.first_thirds[e] for e in table.actions}, table.actions, config.align_margin,
                         hands or None, table.image_codec)


def landmarks_from(policy, dataset):
    """The landmark method on an already trained ALT policy: the same encoder, table and gate."""
    from policy.calibration import Calibration
    from policy.data import load_frames
    from policy.landmarks.policy import LandmarkPolicy

    config = policy.config.with_overrides(method="landmarks")
    table = load_frames(dataset, config, episodes=[int(e) for e in policy.info["episodes"]])
    model = build_landmarks(table, config)
    calibration = None if policy.calibration is None else Calibration(**{**policy.calibration.__dict__})
    out = LandmarkPolicy(config, policy.encoder, policy.database, calibration, dict(policy.info),
                         policy.grasp_check, model)
    out.grip_check = policy.grip_check
    return out
