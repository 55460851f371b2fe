"""The simulated rig's :class:`SceneControl`: scenarios, training placements, the task check, camera covers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from robot_drivers.scene import CoverableSceneControl
from robot_drivers.sim.task import SCENARIOS, Placement, Scene, training_scene

if TYPE_CHECKING:
    from robot_drivers.sim.rig import SimRig


class SimSceneControl(CoverableSceneControl):
    scenarios = SCENARIOS

    def __init__(self, rig: "SimRig"):
        super().__init__(rig)

    task_name = "grasp the mug"
    success_text = "the mug is lifted and held"

    @property
    def training_placements(self) -> int:
        return self._rig.task.n_training_placements

    task_hint = ("Lift the mug: turn the gripper (Q / E) until the fingers close at right angles to the handle "
                 "(the handle points out beside a finger, not between them), lower the open fingers around the "
                 "mug's body (F), close (G), then lift (R).")

    def reset(self, seed: int, scenario: str | None = None, training_index: int | None = None) -> dict:
        rig = self._rig
        if training_index is not None:
            rig.reset(seed, scene=training_scene(rig.task, training_index), release=False)
        else:
            rig.reset(seed, scenario or "in_distribution", release=False)
        return self.record()

    def restore(self, record: dict) -> None:
        scene = Scene(record["scenario"], record["seed"], Placement(*record["mug"]),
                      training_index=record.get("training_index"))
        self._rig.reset(record["seed"], scene=scene, release=False)

    def record(self) -> dict | None:
        scene = self._rig.scene
        if scene is None:
            return None
        return {"scenario": scene.scenario, "seed": scene.seed, "training_index": scene.training_index,
                "mug": [scene.mug.x, scene.mug.y, scene.mug.yaw]}

    def task_succeeded(self) -> bool:
        return self._rig.success()

    def what_went_wrong(self) -> str | None:
        return self._rig.what_went_wrong()

    def placement(self, record: dict | None) -> np.ndarray | None:
        if not record or "mug" not in record:
            return None
        return np.asarray(record["mug"][:2], dtype=float)

    def describe(self, record: dict | None) -> str:
        if not record:
            return "no stored scene"
        x, y, yaw = record["mug"]
        spot = f"training spot {record['training_index']}" if record.get("training_index") is not None \
            else f"{record['scenario']} seed {record['seed']}"
        return f"mug at x {x * 1000:.0f} mm, y {y * 1000:.0f} mm, yaw {np.degrees(yaw):.0f} deg ({spot})"
