#!/usr/bin/env python3
"""How long adding one correction to a 30-demonstration policy takes (`main.py policy add`).

Times :func:`policy.versions.add_episodes` end to end (load and verify the parent
folder, read and embed the new episode's frames with the current encoder, build
its action chunks, rebuild and tune the annoy index, write and fsync the new
policy folder) several times and prints the median. Target: <= 5 s on a 2-core CPU.

Without --policy it sets itself up once under data/bench-policy-add/: 31 scripted
demonstrations on the simulated rig (about 3 minutes), and a cpu-preset policy
over the first 30 of them whose encoder is trained for a single epoch (the
encoder's weights do not change the cost of an addition; its size and the
table's do). The 31st episode (~50 frames) plays the correction.

    .venv/bin/python benchmarks/policy_add.py
    .venv/bin/python benchmarks/policy_add.py --policy runs/demo/policy --dataset runs/demo/dataset --episodes 31
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.config import PRESETS  # noqa: E402
from policy.data import action_chunks, load_frames  # noqa: E402
from policy.database import LookupDatabase, probe_queries  # noqa: E402
from policy.calibration import calibrate_on_held_out  # noqa: E402
from policy.policy import ALTPolicy  # noqa: E402
from policy.train import embed_table_views, train_encoder  # noqa: E402
from policy.versions import add_episodes  # noqa: E402
from recorder.dataset import Dataset  # noqa: E402

HOME = Path("data/bench-policy-add")


def ensure_dataset(path: Path, episodes: int) -> None:
    have = 0
    if (path / "dataset.json").exists():
        with Dataset.open(path) as ds:
            have = len(ds.episode_indices())
    if have < episodes:
        from recorder.recording import record_episodes

        print(f"recording {episodes - have} scripted demonstrations into {path}", file=sys.stderr)
        record_episodes(str(path), episodes=episodes - have, rate=10.0, camera_size=128)


def build_base_policy(dataset_dir: Path, out: Path, episodes: list[int]) -> None:
    """A cpu-preset policy over ``episodes``: the same steps as ALTPolicy.build, one training epoch."""
    config = PRESETS["cpu"].with_overrides(epochs=1)
    print(f"building a {len(episodes)}-demonstration policy in {out} (one training epoch)", file=sys.stderr)
    with Dataset.open(dataset_dir) as ds:
        table = load_frames(ds, config, episodes)
        fps = ds.spec.fps
    trained = train_encoder(table, config)
    embeddings, views = embed_table_views(trained.encoder, table)
    db = LookupDatabase(embeddings, table.episode, table.frame, action_chunks(table, config.chunk_length), views)
    db.build_annoy(config.annoy_trees, seed=config.seed)
    db.tune_search_k(probe_queries(embeddings, table.episode, min(2000, 4 * len(embeddings)), seed=config.seed))
    info = {"dataset": str(dataset_dir.resolve()), "episodes": episodes, "fps": fps,
            "episode_fingerprints": {str(e): f for e, f in table.fingerprints.items()},
            "pose_reference": table.pose_reference.tolist(), "frames": len(table)}
    calibration = calibrate_on_held_out(trained.encoder, table, db, [], config)
    ALTPolicy(config, trained.encoder, db, calibration, info).save(out, overwrite=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="a policy folder (default: built once under data/bench-policy-add/)")
    parser.add_argument("--dataset", help="its dataset (default: recorded once under data/bench-policy-add/)")
    parser.add_argument("--episodes", type=int, nargs="+", help="episodes to add (default: the last one)")
    parser.add_argument("--runs", type=int, default=5, help="repetitions (default 5)")
    args = parser.parse_args()
    dataset_dir = Path(args.dataset) if args.dataset else HOME / "dataset"
    if args.policy:
        policy_dir = Path(args.policy)
    else:
        ensure_dataset(dataset_dir, 31)
        policy_dir = HOME / "policy-30"
        if not (policy_dir / "manifest.json").exists():
            build_base_policy(dataset_dir, policy_dir, list(range(30)))
    parent = ALTPolicy.load(policy_dir)
    with Dataset.open(dataset_dir) as ds:
        candidates = [e for e in ds.episode_indices() if e not in set(parent.info.get("episodes", []))]
        episodes = args.episodes or candidates[-1:]
        if not episodes:
            print(f"error: every episode of {dataset_dir} is already in {policy_dir}; record one more", file=sys.stderr)
            return 2
        frames = sum(ds.episode(e).length for e in episodes)
    print(f"parent: {policy_dir}, {len(parent.database)} frames from {len(parent.info.get('episodes', []))} episodes, "
          f"{parent.config.image_width}x{parent.config.image_height}; adding episode(s) {episodes} ({frames} frames)")
    totals, inner = [], []
    with tempfile.TemporaryDirectory(prefix="policy-add-", dir=policy_dir.parent) as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"v{i}"
            t0 = time.perf_counter()
            result = add_episodes(policy_dir, dataset_dir, episodes, out)
            totals.append(time.perf_counter() - t0)
            inner.append(result.addition.seconds)
            print(f"  run {i + 1}: {totals[-1]:.2f} s (embed + index {inner[-1]:.2f} s) -> v{result.version}, "
                  f"{len(result.policy.database)} frames")
            shutil.rmtree(out)
    print(f"adding {frames} frames to a {len(parent.database)}-frame policy: median {statistics.median(totals):.2f} s "
          f"(min {min(totals):.2f}, max {max(totals):.2f}; embed + index median {statistics.median(inner):.2f} s) "
          f"over {args.runs} runs; target <= 5 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
