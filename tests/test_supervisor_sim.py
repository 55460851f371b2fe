"""Handovers on the real-time simulated rig: what the arm holds stays held when the operator takes over."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from policy.config import PolicyConfig
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder
from policy.calibration import embed_images
from policy.policy import ALTPolicy
from recorder.dataset import Dataset
from robot_drivers.factory import make_rig
from supervisor import HALTED, TELEOP, Events, Supervisor
from recording_helpers import record_sim
from supervisor_helpers import wait_until

pytestmark = pytest.mark.timeout(300)
IMAGE = 48


def replaying_policy(dataset_root) -> ALTPolicy:
    """A real ALT policy over one scripted demonstration whose first chunk is the whole demonstration:
    started in that demonstration's scene, it grasps and lifts the mug."""
    torch.manual_seed(0)
    with Dataset.open(dataset_root) as dataset:
        actions = dataset.load_episode(0).actions
        hands = [dataset.frame(0, "hand", i) for i in range(len(actions))]
        thirds = [dataset.frame(0, "third", i) for i in range(len(actions))]
        fps = dataset.spec.fps
    n = len(actions)
    config = PolicyConfig(image_width=IMAGE, image_height=IMAGE, chunk_length=n, requery_every=n, gamma=-1.0,
                          pretrained="none")
    encoder = ALTEncoder(config, pretrained="none")
    embeddings = embed_images(encoder, hands, thirds)
    chunks = np.stack([np.concatenate([actions[i:], np.repeat(actions[-1:], i, axis=0)]) for i in range(n)])
    database = LookupDatabase(embeddings, np.zeros(n, np.int64), np.arange(n), chunks)
    return ALTPolicy(config, encoder, database, None, {"fps": fps, "episodes": [0]})


class _Events(Events):
    def __init__(self):
        self.halts = []

    def halted(self, halt):
        self.halts.append(halt)


def test_take_over_after_a_lift_keeps_the_mug_held(tmp_path):
    record_sim(tmp_path / "demo", 1, image_size=IMAGE)
    policy = replaying_policy(tmp_path / "demo")
    events = _Events()
    sup = Supervisor(lambda: (make_rig("sim", clock="realtime", image_size=IMAGE), None), events=events)
    try:
        assert sup.connect_rig().wait(60)
        assert wait_until(lambda: sup.mode == TELEOP, 30)
        assert not sup.reset_scene(0, training_index=0).refused
        sup.set_policy(policy)
        sup.start_autonomy().wait(10)
        assert wait_until(lambda: sup.halt is not None, 60), "the run did not end"
        assert sup.halt.reason == "done", sup.halt
        control = sup.rig.scene_control()
        assert control.task_succeeded()
        gripper = sup.rig.arm.last_gripper_command
        assert gripper is not None and gripper < 0.5
        take_over = sup.take_over()  # no key pressed
        assert take_over.wait(10) and not take_over.refused
        assert wait_until(lambda: sup.mode == TELEOP and not sup.rig.arm.stopped)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            assert control.task_succeeded(), "the mug dropped after the operator took over"
            time.sleep(0.1)
        assert sup.rig.arm.last_gripper_command == pytest.approx(gripper)
        assert sup.halt is None and sup.mode != HALTED
    finally:
        sup.shutdown()
