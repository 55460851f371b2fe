"""The Meta-World rig's :class:`SceneControl`: the task's own variations, its success check, camera covers.

Scenarios (every one drawn from the episode's seed, deterministically):

* ``in_distribution``: a training variation (one of :data:`TRAINING_PLACEMENTS`, the ones scripted
  demonstrations are recorded at) with every position moved by up to :data:`NOISE_M`, as when a person puts
  the objects back on their marks;
* ``interpolate``: a new variation drawn from the task's own range;
* ``extrapolate``: a variation outside the task's range: one position the task varies (by at least
  :data:`VARIED_M`) :data:`EXTRAPOLATE_MARGIN_M` beyond it (within the arm's reach);
* ``lighting``: an in-distribution variation under other lights (dimmer or brighter, warmer or colder).

Meta-World has no props to scatter, so there is no ``distractors`` scenario on this rig.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from robot_drivers.metaworld.env import RejectedVariation
from robot_drivers.scene import CoverableSceneControl

if TYPE_CHECKING:
    from robot_drivers.metaworld.rig import MetaWorldRig

SCENARIOS = ("in_distribution", "interpolate", "extrapolate", "lighting")
#: the number of training variations (scripted demonstrations cycle through them)
TRAINING_PLACEMENTS = 30
#: seeds the training variations are drawn with; evaluation scenes use other streams of the same seed
TRAINING_STREAM, EVAL_STREAM = 7_001, 9_001
#: in_distribution: how far (m) each position may lie from its training variation's
NOISE_M = 0.005
#: extrapolate: how far (m) beyond the task's range the chosen position lies, at least and at most
EXTRAPOLATE_MARGIN_M = (0.03, 0.06)
#: extrapolate: a position is moved beyond its range only if the task varies it by at least this (m). A smaller
#: spread is a jitter about a fixed spot, not a variation: peg-insert-side's box stands on the table at a height
#: drawn within +-1 mm, and 3-6 cm beyond that the box hangs in the air, a scene no table holds
VARIED_M = 0.01
#: extrapolate: positions stay inside this box (Meta-World's world frame, m): the arm's reach over the table
REACH_LOW = np.array([-0.35, 0.45, 0.0])
REACH_HIGH = np.array([0.35, 0.95, 0.35])


class MetaWorldSceneControl(CoverableSceneControl):
    scenarios = SCENARIOS
    training_placements = TRAINING_PLACEMENTS

    def __init__(self, rig: "MetaWorldRig"):
        super().__init__(rig)
        task = rig.env.task
        self.task_name = f"{task} (Meta-World)"
        self.success_text = f"Meta-World's success check for {task} holds"
        self.task_hint = (f"Meta-World's {task}: do the task as its name says. The hand's orientation is fixed; "
                          "move it (W / S, A / D, R / F); G closes and opens the gripper. The simulator's own check "
                          "says when it is done.")
        self._training: dict[int, np.ndarray] = {}

    # -- variations ---------------------------------------------------------------------------------------
    def training_variation(self, index: int) -> np.ndarray:
        """Training variation ``index`` (0 <= index < TRAINING_PLACEMENTS): the same on every run."""
        if not 0 <= index < TRAINING_PLACEMENTS:
            raise ValueError(f"training placement {index} is out of range (0..{TRAINING_PLACEMENTS - 1})")
        if index not in self._training:
            self._training[index] = self._rig.env.draw(np.random.default_rng([TRAINING_STREAM, index]))
        return self._training[index]

    def _place(self, vec: np.ndarray, lighting=None) -> None:
        self._rig.place(vec, lighting)

    def _varied(self, rng: np.random.Generator, scenario: str) -> tuple[np.ndarray, int | None, tuple | None]:
        env = self._rig.env
        low, high = env.variation_low, env.variation_high
        free = high - low > 1e-9  # the positions the task varies
        for _ in range(200):
            index, lighting = None, None
            if scenario in ("in_distribution", "lighting"):
                index = int(rng.integers(TRAINING_PLACEMENTS))
                vec = self.training_variation(index) + np.where(free, rng.uniform(-NOISE_M, NOISE_M, low.shape), 0)
                vec = np.clip(vec, low, high)
                if scenario == "lighting":
                    brightness = float(rng.choice([rng.uniform(0.35, 0.6), rng.uniform(1.5, 2.0)]))
                    lighting = (brightness, float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.0, 0.15)))
            elif scenario == "interpolate":
                vec = rng.uniform(low, high)
            else:  # extrapolate: one varied position beyond its range, the others inside it
                vec = rng.uniform(low, high)
                dims = np.flatnonzero(high - low >= VARIED_M)
                if not len(dims):
                    raise ValueError(f"{env.task} has no variation to extrapolate")
                d = int(rng.choice(dims))
                margin = rng.uniform(*EXTRAPOLATE_MARGIN_M)
                vec[d] = low[d] - margin if rng.random() < 0.5 else high[d] + margin
                axis = d % 3
                if not REACH_LOW[axis] <= vec[d] <= REACH_HIGH[axis]:
                    continue
            try:
                self._place(vec, lighting)
                return vec, index, lighting
            except RejectedVariation:
                continue
        raise RuntimeError(f"{env.task}: no {scenario} variation accepted in 200 draws")

    # -- SceneControl -------------------------------------------------------------------------------------
    def reset(self, seed: int, scenario: str | None = None, training_index: int | None = None) -> dict:
        self._rig.check_can_reset()
        if training_index is not None:
            scenario = "training"
            vec, index, lighting = self.training_variation(training_index), training_index, None
            self._place(vec)
        else:
            scenario = scenario or "in_distribution"
            if scenario not in SCENARIOS:
                raise ValueError(f"unknown scenario {scenario!r} on the Meta-World rig; choose one of "
                                 f"{', '.join(SCENARIOS)}")
            vec, index, lighting = self._varied(np.random.default_rng([EVAL_STREAM, seed]), scenario)
        self._record = {"rig": self._rig.name, "scenario": scenario, "seed": int(seed), "training_index": index,
                        "variation": [float(v) for v in vec],
                        "lighting": None if lighting is None else [float(v) for v in lighting]}
        return dict(self._record)

    _record: dict | None = None

    def restore(self, record: dict) -> None:
        if record.get("rig", self._rig.name) != self._rig.name:
            raise ValueError(f"the scene was recorded on {record.get('rig')}, this rig is {self._rig.name}")
        self._rig.check_can_reset()
        lighting = record.get("lighting")
        self._place(np.asarray(record["variation"], dtype=float), None if lighting is None else tuple(lighting))
        self._record = dict(record)

    def record(self) -> dict | None:
        return None if self._record is None else dict(self._record)

    def task_succeeded(self) -> bool:
        return self._rig.env.succeeded

    def what_went_wrong(self) -> str | None:
        """The task's own expert, taking over from here, cannot finish the task (tried on a copy of the
        state: nothing of the try remains), though it could have from the scene as it was reset. Where the
        expert could not finish the scene from its start either (an extrapolated goal beyond its reach), or
        finishes it from its start but not from the hand's start moved a few millimetres
        (``MetaWorldEnv.expert_judges_scene``: a scene it finishes only by luck), its verdict says nothing about
        the run: the run went wrong only if it moved an object more than 1 cm (other
        than one it holds between its fingers as it stops: carried, not pushed, dropped or knocked) or turned it
        more than 15 degrees (``MetaWorldEnv.disturbed``). The words say which, what the run did to the objects
        and what touches what (``MetaWorldEnv.touching``)."""
        env = self._rig.env
        if env.recoverable():
            return None
        done_to = env.disturbed(held_excused=True)
        touching = "; ".join(env.touching())
        if env.finishable_from_start() is False:
            unjudged = "a scene the task's expert could not finish from its start either"
        elif env.expert_judges_scene() is False:
            unjudged = "a scene the task's expert finishes from its start but not from a few millimetres beside it"
        else:
            unjudged = None
        if unjudged is not None:
            return None if done_to is None else "; ".join(filter(None, (done_to, touching))) + f" ({unjudged})"
        return "; ".join(filter(None, ("the task's expert, taking over from here, cannot finish it (it could "
                                       "from the scene as reset)", done_to, touching)))

    def placement(self, record: dict | None) -> np.ndarray | None:
        if not record or "variation" not in record:
            return None
        return np.asarray(record["variation"], dtype=float)

    def describe(self, record: dict | None) -> str:
        if not record:
            return "no stored scene"
        where = " ".join(f"{v * 1000:.0f}" for v in record.get("variation", []))
        spot = f"training spot {record['training_index']}" if record.get("scenario") == "training" \
            else f"{record.get('scenario')} seed {record.get('seed')}"
        light = ", other lights" if record.get("lighting") else ""
        return f"{self._rig.env.task}: positions (mm) {where} ({spot}{light})"
