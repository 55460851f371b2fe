"""The scripted operator of the Meta-World rig: the task's own expert (written by Meta-World's authors),
turned into the velocity commands every teleop device gives.

Each tick the expert looks at Meta-World's observation (as a person looks at the scene) and answers with a
delta action; its direction and size become a velocity (``speed`` m/s at full scale, scaled by a pace drawn
per episode), its gripper effort a gripper command. Once the task's own success check has held for a few
ticks the operator presses STOP; an episode that has not succeeded after ``max_ticks`` is stopped too (the
recorder then keeps it only if it succeeded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.types import RobotState, TeleopCommand
from robot_drivers.metaworld.env import MetaWorldEnv
from robot_drivers.teleop import Button, Teleop


@dataclass
class ExpertConfig:
    speed: float = 0.6  # m/s for a full-scale expert action
    max_speed: float = 1.5  # m/s: the bound on a commanded velocity (the safety layer limits each tick further)
    pace: tuple[float, float] = (0.85, 1.0)  # per-episode fraction of that speed
    # ticks the success check must hold before STOP: a demonstration shows the task done and held for 0.5 s at
    # 20 Hz, as an operator waits before pressing stop; a policy that replays it then ends on frames it has
    # seen (with 3, the last demonstrated frame came as the task was barely done, and every replay of
    # drawer-open ran past it into views no demonstration had: 31 of 31 stopped at the end)
    hold_ticks: int = 10
    max_ticks: int = 400  # STOP after this many ticks without success
    leash_m: float = 0.05  # how far the target may lead the hand: the experts push (pegs, doors) with it


class MetaWorldExpert(Teleop):
    name = "scripted"

    def __init__(self, env: MetaWorldEnv, seed: int = 0, config: ExpertConfig | None = None):
        self._env = env
        self.config = config or ExpertConfig()
        self.leash_m = self.config.leash_m
        self._rng = np.random.default_rng(seed)
        self._done = True
        self._ticks = self._held = 0
        self._pace = 1.0

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._pace = float(self._rng.uniform(*self.config.pace))
        self._done = False
        self._ticks = self._held = 0

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        if self._done:
            return TeleopCommand()
        c = self.config
        self._ticks += 1
        self._held = self._held + 1 if self._env.succeeded else 0
        if self._held >= c.hold_ticks or self._ticks > c.max_ticks:
            self._done = True
            return TeleopCommand(buttons=frozenset({Button.STOP}))
        action = self._env.expert_action()
        # Meta-World's experts are proportional controllers whose actions Meta-World clips to [-1, 1] per step:
        # the unclipped size says how hard they push (a peg into its hole), so it is kept, up to a bound
        velocity = action[:3] * c.speed * self._pace
        speed = float(np.linalg.norm(velocity))
        if speed > c.max_speed:
            velocity *= c.max_speed / speed
        gripper = float(np.clip((1.0 - action[3]) / 2.0, 0.0, 1.0))
        return TeleopCommand(velocity, np.zeros(3), gripper)

    @property
    def done(self) -> bool:
        return self._done
