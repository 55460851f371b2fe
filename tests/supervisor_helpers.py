"""A fast rig for driving the supervisor: a kinematic arm that logs every driver call, synthetic cameras,
the real safety layer and real-time clock, and a real (untrained, tiny) ALT policy over synthetic frames."""

from __future__ import annotations

import threading
from dataclasses import replace
import time

import numpy as np
import torch

from policy.config import PolicyConfig
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder
from policy.calibration import embed_images
from policy.policy import ALTPolicy
from core.clock import RealTimeClock
from robot_drivers.fake import HOME_POSE, KinematicArm, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from core.types import Action, Pose

RATE_HZ = 50.0
IMAGE = 32


class LoggingArm(KinematicArm):
    """A kinematic arm that logs each driver call in order, and homes over ``home_s`` seconds in small steps
    that a ``stop()`` interrupts (as the real drivers' homing is)."""

    def __init__(self, home_s: float = 0.0):
        super().__init__()
        self.home_s = home_s
        self.log: list[tuple[str, float]] = []
        self._log_lock = threading.Lock()
        self._stops = 0
        self.homes_completed = 0

    def _note(self, kind: str) -> None:
        with self._log_lock:
            self.log.append((kind, time.monotonic()))

    def send_action(self, action: Action) -> Action:
        self._note("send")
        return super().send_action(action)

    def stop(self) -> float | None:
        self._stops += 1
        self._note("stop")
        return super().stop()

    def home(self) -> None:
        self._note("home")
        self._check()
        stops = self._stops
        start = self.get_state()
        steps = max(1, int(self.home_s / 0.01))
        for i in range(1, steps + 1):
            if self._stops != stops:
                return  # stopped while homing: stay where we are
            if self.home_s:
                time.sleep(self.home_s / steps)
            with self._lock:
                pos = start.ee_pose.position + (HOME_POSE.position - start.ee_pose.position) * i / steps
                self._pose, self._target = Pose(pos, HOME_POSE.orientation), None
        with self._lock:
            self._gripper = 1.0
        self.homes_completed += 1

    def motion_since(self, mark: int) -> list[str]:
        with self._log_lock:
            return [kind for kind, _ in self.log[mark:] if kind in ("send", "home")]

    def mark(self) -> int:
        with self._log_lock:
            return len(self.log)


def fake_rig(home_s: float = 0.0, watchdog: float = 0.5) -> Rig:
    arm = SafeArm(LoggingArm(home_s), SafetyConfig(watchdog_timeout=watchdog))
    cameras = {name: SyntheticCamera(name, IMAGE, IMAGE, fps=RATE_HZ, seed=i) for i, name in enumerate(("hand", "third"))}
    return Rig(arm, cameras, RealTimeClock(RATE_HZ), name="fake")


def rig_factory(home_s: float = 0.0, rigs: list | None = None):
    """A factory for the supervisor; every rig it builds is appended to ``rigs``."""

    def build():
        rig = fake_rig(home_s)
        if rigs is not None:
            rigs.append(rig)
        return rig, None

    return build


def tiny_policy(frames: int = 12, seed: int = 0) -> ALTPolicy:
    """A real ALTPolicy (untrained encoder) whose table holds synthetic frames and small motions near home."""
    torch.manual_seed(seed)
    config = PolicyConfig(image_width=IMAGE, image_height=IMAGE, chunk_length=5, requery_every=2, pretrained="none",
                          gamma=-1.0)
    encoder = ALTEncoder(config, pretrained="none")
    cams = [SyntheticCamera("x", IMAGE, IMAGE, seed=s) for s in (0, 1)]
    hands = [np.roll(cams[0]._base, i, axis=1) for i in range(frames)]
    thirds = [np.roll(cams[1]._base, i, axis=1) for i in range(frames)]
    embeddings = embed_images(encoder, hands, thirds)
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(frames):
        offsets = np.cumsum(rng.normal(0, 0.003, size=(config.chunk_length, 3)), axis=0)
        chunk = [np.concatenate([HOME_POSE.position + o, HOME_POSE.orientation, [0.0]]) for o in offsets]
        chunks.append(chunk)
    database = LookupDatabase(embeddings, np.zeros(frames, np.int64), np.arange(frames), np.asarray(chunks))
    return ALTPolicy(config, encoder, database, None, {"fps": RATE_HZ, "episodes": [0]})


def wait_until(predicate, timeout: float = 5.0, period: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def steady_policy(tmp_path) -> ALTPolicy:
    """The tiny policy, run until something ends it (no stall stop, no time limit within a test), saved nowhere
    but named as if it were at ``tmp_path / "tiny-policy"`` (the ledger records the path)."""
    policy = tiny_policy()
    policy.config = replace(policy.config, stall_seconds=3600.0, time_limit_factor=1000.0)
    policy.info["path"] = str(tmp_path / "tiny-policy")
    return policy
