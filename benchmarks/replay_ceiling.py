#!/usr/bin/env python3
"""The most that replaying recorded absolute poses can do on a correction loop's second set of placements.

The paper's ALT executes the retrieved demonstration's absolute end-effector poses, so a run can only succeed
where some recorded trajectory (a demonstration or a correction) grasps the mug *as it now stands*. This
script asks the simulator directly, with no encoder and no gate: for each placement of the loop's second set
it resets the scene to that placement and replays, tick by tick, the recorded actions of the ``--candidates``
recordings whose mug stood nearest (from the dataset's scene records), then checks the task.

It prints, per placement, the distance to each candidate and whether its replay grasped the mug, and in the
end two ceilings: an oracle that always retrieves the nearest recording, and one that could pick the better of
the nearest ``--candidates``. No retrieval and gate can beat the second.

    .venv/bin/python benchmarks/replay_ceiling.py runs/demo-loop/corrections-policy-interpolate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.dataset import Dataset  # noqa: E402
from robot_drivers.sim.rig import SimRig, SimRigConfig  # noqa: E402
from robot_drivers.sim.task import Placement, Scene  # noqa: E402
from core.types import Action  # noqa: E402

SETTLE_TICKS = 10  # the last target held after the recording ends, so a lifted mug is judged at rest


def recordings(dataset_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each episode with a scene record: (mug x, y, yaw), its actions [T, 8]."""
    out = {}
    with Dataset.open(dataset_dir) as dataset:
        for index in dataset.episode_indices():
            episode = dataset.load_episode(index)
            scene = (episode.info.extra or {}).get("scene") or {}
            if "mug" in scene:
                out[index] = (np.asarray(scene["mug"][:3], np.float64), np.asarray(episode.actions))
    return out


def replay_grasps(rig: SimRig, placement: np.ndarray, actions: np.ndarray, scenario: str) -> bool:
    rig.reset(0, scenario, scene=Scene(scenario, 0, Placement(*(float(v) for v in placement[:3]))))
    rig.clock.start()
    for action in list(actions) + [actions[-1]] * SETTLE_TICKS:
        rig.arm.send_action(Action.from_array(action))
        rig.clock.wait_next_tick()
    return rig.success()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", type=Path, help="a correction loop's folder (loop.json and dataset/)")
    parser.add_argument("--candidates", type=int, default=2, help="nearest recordings replayed per placement")
    parser.add_argument("--json", type=Path, help="also write the per-placement results here")
    args = parser.parse_args()
    report = json.loads((args.loop / "loop.json").read_text())
    scenario = report["scenario"]
    recorded = recordings(args.loop / "dataset")
    rig = SimRig(SimRigConfig())
    rig.connect()
    rows = []
    try:
        for result in report["after"]["results"]:
            # the mug's x, y, yaw: from the episode's scene record (older reports kept them as its placement)
            scene = result.get("scene") or {}
            placement = np.asarray(scene["mug"] if "mug" in scene else result["placement"], np.float64)
            nearest = sorted(recorded, key=lambda e: np.linalg.norm(recorded[e][0][:2] - placement[:2]))
            tries = []
            for episode in nearest[:args.candidates]:
                mug, actions = recorded[episode]
                distance = float(np.linalg.norm(mug[:2] - placement[:2]))
                tries.append({"episode": episode, "distance_cm": round(100 * distance, 2),
                              "yaw_difference_rad": round(float(placement[2] - mug[2]), 2),
                              "grasped": replay_grasps(rig, placement, actions, scenario)})
            rows.append({"seed": result["seed"], "policy_outcome": result["outcome"], "replays": tries})
            print(f"seed {result['seed']} (the policy: {result['outcome']}): " + ", ".join(
                f"episode {t['episode']} at {t['distance_cm']:.2f} cm {'grasped' if t['grasped'] else 'missed'}"
                for t in tries), flush=True)
    finally:
        rig.close()
    n = len(rows)
    nearest_ok = sum(r["replays"][0]["grasped"] for r in rows if r["replays"])
    any_ok = sum(any(t["grasped"] for t in r["replays"]) for r in rows)
    policy_ok = sum(r["policy_outcome"] == "success" for r in rows)
    print(f"\n{n} placements of the second set ({scenario}), {len(recorded)} recordings "
          f"(demonstrations and corrections)")
    rows_out = [("the policy (last version)", policy_ok), ("replaying the nearest recording (oracle)", nearest_ok),
                (f"the better of the nearest {args.candidates} (oracle)", any_ok)]
    for label, count in rows_out:
        print(f"{label + ':':<44} {count}/{n}")
    for low, high in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 99.0)):
        tries = [t["grasped"] for r in rows for t in r["replays"] if low <= t["distance_cm"] < high]
        if tries:
            print(f"  replays from {low:.0f}-{high:.0f} cm away: {sum(tries)}/{len(tries)} grasped")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
