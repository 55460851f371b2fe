"""Drive an arm through a recorded episode's actions (the CLI's `replay` and the GUI's browser)."""

from __future__ import annotations

import threading
from typing import Callable

from robot_drivers.control import ControlLoop, LoopResult, StepOutput, TickRecord
from robot_drivers.rig import Observation, Rig
from robot_drivers.teleop import Button
from core.types import Action

from recorder.dataset import Dataset, DatasetError, EpisodeInfo


class ReplaySource:
    """Hands out the recorded absolute actions one per tick, then presses STOP."""

    def __init__(self, actions):
        self._actions = [Action.from_array(a) for a in actions]
        self._i = 0

    def begin(self, observation: Observation) -> None:
        self._i = 0

    def step(self, observation: Observation, dt: float) -> StepOutput:
        if self._i >= len(self._actions):
            return StepOutput(None, frozenset({Button.STOP}))
        action = self._actions[self._i]
        self._i += 1
        return StepOutput(action, info={"step": self._i - 1})

    def sent(self, action: Action) -> None:
        pass


def restore_scene(rig: Rig, info: EpisodeInfo) -> bool:
    """On the simulated rig, put the world back as it was when the episode was recorded."""
    scene = info.extra.get("scene")
    control = rig.scene_control()
    if scene is None or control is None:
        return False
    control.restore(scene)
    return True


def replay_episode(rig: Rig, dataset: Dataset, index: int, *, on_tick: Callable[[TickRecord], None] | None = None,
                   cancel: threading.Event | None = None) -> LoopResult:
    episode = dataset.load_episode(index)
    if abs(rig.clock.rate_hz - dataset.spec.fps) > 1e-9:
        raise DatasetError(f"episode {index} was recorded at {dataset.spec.fps:g} Hz but the rig runs at "
                           f"{rig.clock.rate_hz:g} Hz; replay at the recorded rate")
    return ControlLoop(rig).run(ReplaySource(episode.actions), on_tick=on_tick, cancel=cancel)
