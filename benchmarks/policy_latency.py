#!/usr/bin/env python3
"""ALT policy latency and size.

1. End-to-end inference (both views resized + encoded, retrieval, OOD check) for a policy,
   median and p99 over many observations, at the policy's image size (and at 128x128). Given several
   policies (``--policy runs/demo30 runs/demo30-aligned``), each is measured on the same frames (its
   dataset's, when on this machine); for the aligned method, both its first tick (the object located in
   the third-person view) and a replay tick (the grasp check against the replayed frame); for the landmark
   method, its first tick (the landmarks found) and a replay tick (the landmarks as found, a frame replayed).
2. Retrieval alone at 10^4, 10^5 and 10^6 entries: exact (one matrix-vector product) and
   annoy (tuned search_k, exact re-rank of its candidates), with recall@1 against exact.
   The databases are trajectory-shaped like real ones (demonstrations of a task follow a
   common smooth path on the unit sphere with per-demonstration deviations); the queries
   are frames of held-out demonstrations, i.e. new observations.
3. The size of the policy folder.

    .venv/bin/python benchmarks/policy_latency.py --policy runs/demo/policy
    .venv/bin/python benchmarks/policy_latency.py --policy runs/demo30 runs/demo30-aligned --sizes
    .venv/bin/python benchmarks/policy_latency.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.config import PolicyConfig  # noqa: E402
from policy.data import FrameTable, action_chunks  # noqa: E402
from policy.database import LookupDatabase  # noqa: E402
from policy.encoder import ALTEncoder  # noqa: E402
from policy.policy import ALTPolicy  # noqa: E402


def trajectory_database(n: int, dim: int = 128, frames_per_demo: int = 50, spread: float = 0.2,
                        tasks: int = 20, seed: int = 0):
    """n unit vectors shaped like real demonstration embeddings.

    Demonstrations of one task follow a common smooth path on the unit sphere
    and differ by a smooth per-demonstration deviation (``spread``), so, as in
    real databases, a frame's nearest neighbours in *other* demonstrations are
    very similar to it (median best cross-demonstration similarity about 0.96,
    like the 30-demo sim database).
    """
    rng = np.random.default_rng(seed)
    demos = max(1, n // frames_per_demo)

    def paths(count: int, step: float) -> np.ndarray:
        x = rng.normal(size=(count, dim)).astype(np.float32)
        v = rng.normal(size=(count, dim)).astype(np.float32) * step
        out = np.empty((count, frames_per_demo, dim), np.float32)
        for t in range(frames_per_demo):
            v = 0.9 * v + rng.normal(size=v.shape).astype(np.float32) * step * 0.4
            x = x + v
            out[:, t] = x
        return out

    base = paths(tasks, 0.05)
    base /= np.linalg.norm(base, axis=2, keepdims=True)
    task = rng.integers(0, tasks, size=demos)
    deviation = paths(demos, 0.05)
    deviation /= np.linalg.norm(deviation, axis=2, keepdims=True)
    x = base[task] + spread * deviation
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    episodes = np.repeat(np.arange(demos), frames_per_demo)
    return x.reshape(-1, dim)[:n].astype(np.float32), episodes[:n]


def stats_ms(times: list[float]) -> str:
    t = np.asarray(times) * 1000
    return f"median {np.median(t):.3f} ms, p99 {np.percentile(t, 99):.3f} ms"


def observation_frames(policy: ALTPolicy, count: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """First frames of the policy's demonstrations (its dataset, when on this machine), else noise."""
    root = policy.info.get("dataset")
    if root and Path(root).is_dir():
        from recorder.dataset import Dataset

        with Dataset.open(root) as ds:
            episodes = ds.episode_indices()[:count]
            return [(ds.frame(e, "hand", 0), ds.frame(e, "third", 0)) for e in episodes]
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
            for _ in range(count)]


def bench_end_to_end(policy: ALTPolicy, runs: int) -> None:
    frames = observation_frames(policy)
    aligned = policy.locator is not None
    landmarks = hasattr(policy, "find_landmarks")  # the landmark method: a run finds them at its first tick only
    for hand, third in frames[:3]:
        policy.retrieve(hand, third)  # warm up
    total, embed, search, replay = [], [], [], []
    for i in range(runs):
        hand, third = frames[i % len(frames)]
        t = time.perf_counter()
        r = policy.retrieve(hand, third)
        total.append(time.perf_counter() - t)
        embed.append(r.embed_ms / 1000)
        search.append(r.search_ms / 1000)
        if aligned and r.target is not None:  # a later tick: the object's place kept, a pre-grasp frame replayed
            row = int(policy.grasp_check.rows[-1]) if policy.grasp_check is not None else r.matches[0].row
            t = time.perf_counter()
            policy.retrieve(hand, third, target=r.target, executing_row=row)
            replay.append(time.perf_counter() - t)
        elif landmarks:  # a later tick: the landmarks as found at the first, a frame of their demonstration replayed
            found = policy.find_landmarks(third)
            t = time.perf_counter()
            policy.retrieve(hand, third, target=found, executing_row=r.matches[0].row)
            replay.append(time.perf_counter() - t)
    c = policy.config
    print(f"  {policy.method} method, encoder input {c.image_width}x{c.image_height} (camera frames "
          f"{frames[0][0].shape[1]}x{frames[0][0].shape[0]}), database {len(policy.database)}:")
    print(f"    end to end  {stats_ms(total)}" + ("  (first tick: the object located)" if aligned else
                                                  "  (first tick: the landmarks found)" if landmarks else ""))
    if replay:
        print(f"    replay tick {stats_ms(replay)}")
    print(f"    encode      {stats_ms(embed)}")
    print(f"    retrieval   {stats_ms(search)}")


def untrained_policy(size: int, frames: int) -> ALTPolicy:
    config = PolicyConfig(image_width=size, image_height=size, pretrained="none")
    encoder = ALTEncoder(config).eval()
    emb, episodes = trajectory_database(frames)
    table = FrameTable(hand=torch.zeros(0), third=torch.zeros(0), pose=torch.zeros(0), episode=episodes,
                       frame=np.arange(frames) % 50, actions={int(e): np.zeros((50, 8), np.float32)
                                                               for e in np.unique(episodes)})
    return ALTPolicy(config, encoder, LookupDatabase(emb, episodes, table.frame, action_chunks(table, 10)))


def bench_retrieval(n: int, queries: int, trees_list: list[int]) -> None:
    # Queries are the frames of demonstrations held out of the database: new observations of the same tasks.
    everything, all_episodes = trajectory_database(n + queries)
    emb, episodes = everything[:n], all_episodes[:n]
    q = np.ascontiguousarray(everything[n:n + queries])
    db = LookupDatabase(emb, episodes, np.zeros(n), np.zeros((n, 1, 8), np.float32))
    truth = np.array([db.search_exact(v)[0].row for v in q])
    times = []
    for v in q[:200]:
        t = time.perf_counter()
        db.search_exact(v)
        times.append(time.perf_counter() - t)
    print(f"  {n:>8} entries  exact: {stats_ms(times)}, recall@1 1.000")
    tune, test = q[: queries // 2], q[queries // 2:]
    for trees in trees_list:
        t = time.perf_counter()
        db.build_annoy(trees)
        build_s = time.perf_counter() - t
        for target in (0.99, 1.0):
            search_k, _ = db.tune_search_k(tune, target_recall=target)
            got, times = [], []
            for v in test:
                t = time.perf_counter()
                got.append(db.search_annoy(v, 1)[0].row)
                times.append(time.perf_counter() - t)
            recall = float(np.mean(np.asarray(got) == truth[queries // 2:]))  # no ties in synthetic data
            print(f"  {'':>8}          annoy {trees:>2} trees, search_k {search_k:>6} (tuned for recall {target}): "
                  f"{stats_ms(times)}, recall@1 {recall:.3f} on {len(test)} held-out queries, build {build_s:.0f} s")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", nargs="+", help="trained policy folders, measured one after the other on the same "
                                               "frames (default: an untrained encoder, same cost)")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--trees", type=int, nargs="+", default=[16, 64])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("end-to-end inference (two views + retrieval + OOD check):")
    if args.policy:
        for path in args.policy:
            bench_end_to_end(ALTPolicy.load(path), args.runs)
            print(f"  policy folder size: {folder_size(Path(path)) / 1e6:.1f} MB")
    else:
        for size in (96, 128):
            bench_end_to_end(untrained_policy(size, 1600), args.runs)
    print("retrieval alone:")
    for n in args.sizes:
        bench_retrieval(n, args.queries, args.trees)


if __name__ == "__main__":
    main()
