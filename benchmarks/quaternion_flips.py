#!/usr/bin/env python3
"""Quaternion sign flips per scripted episode: in the stored files, after loading and in the LeRobot export.

A flip is a tick where the quaternion [qx qy qz qw] jumps by more than 0.5 (Euclidean) from the previous
tick; a sign flip of the same rotation jumps by 2.0. Records ``--episodes`` scripted demonstrations on the
simulated rig (lock-step clock) into a temporary folder, then counts flips of the state, the action sent
and the requested action in each place.

    .venv/bin/python benchmarks/quaternion_flips.py --episodes 5
    .venv/bin/python benchmarks/quaternion_flips.py --dataset data/demos   # count an existing dataset instead
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.dataset import STEPS_FILE, Dataset  # noqa: E402
from lerobot_bridge.export import export_lerobot  # noqa: E402
from recorder.session import RecorderConfig, RecordingSession, scene_extra, spec_for_rig  # noqa: E402
from robot_drivers.factory import make_rig, make_teleop  # noqa: E402
from robot_drivers.sim.task import training_scene  # noqa: E402

JUMP = 0.5
KEYS = ("state", "action", "requested")


def flips(rows: np.ndarray) -> int:
    q = np.asarray(rows, np.float64)[:, 3:7]
    return int(np.sum(np.linalg.norm(np.diff(q, axis=0), axis=1) > JUMP))


def record(root: Path, episodes: int, seed: int, image_size: int) -> None:
    rig = make_rig("sim", image_size=image_size)
    teleop = make_teleop("scripted", rig, seed=seed)
    with rig, Dataset.open_or_create(root, spec_for_rig(rig)) as dataset:
        session = RecordingSession(rig, dataset, teleop, RecorderConfig())
        attempts = 0
        while len(dataset.episode_indices()) < episodes and attempts < 3 * episodes:
            attempts += 1
            index = dataset.next_index()
            rig.reset(seed + index, scene=training_scene(rig.task, index))
            teleop.reset(seed + index)
            session.record_episode(extra=scene_extra(rig), accept=rig.success)
    rig.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--dataset", help="count flips in this dataset (read only) instead of recording one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dataset) if args.dataset else Path(tmp) / "ds"
        if not args.dataset:
            record(root, args.episodes, args.seed, args.image_size)
        import pyarrow.parquet as pq

        export_lerobot(root, Path(tmp) / "lerobot", allow_gaps=True)
        exported = pq.read_table(Path(tmp) / "lerobot/data/chunk-000/file-000.parquet").to_pydict()
        ex_episode = np.asarray(exported["episode_index"])
        print(f"{'episode':>7} {'ticks':>5} | stored: {'state':>5} {'action':>6} {'request':>7} | "
              f"loaded: {'state':>5} {'action':>6} | export: {'state':>5} {'action':>6}")
        totals = np.zeros(7, int)
        with Dataset.open(root) as dataset:
            for n, index in enumerate(dataset.episode_indices()):
                with np.load(dataset.episode(index).path / STEPS_FILE, allow_pickle=False) as z:
                    stored = [flips(z[k]) for k in KEYS]
                loaded = dataset.load_episode(index)
                rows = ex_episode == n
                row = stored + [flips(loaded.states), flips(loaded.actions),
                                flips(np.asarray(exported["observation.state"])[rows]),
                                flips(np.asarray(exported["action"])[rows])]
                totals += row
                print(f"{index:>7} {loaded.info.length:>5} | {'':>7} {row[0]:>5} {row[1]:>6} {row[2]:>7} | "
                      f"{'':>7} {row[3]:>5} {row[4]:>6} | {'':>7} {row[5]:>5} {row[6]:>6}")
        print(f"{'total':>7} {'':>5} | {'':>7} {totals[0]:>5} {totals[1]:>6} {totals[2]:>7} | "
              f"{'':>7} {totals[3]:>5} {totals[4]:>6} | {'':>7} {totals[5]:>5} {totals[6]:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
