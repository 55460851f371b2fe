"""kill -9 during `train --overwrite` and `policy add --overwrite` at random moments: is a policy always loadable?

    .venv/bin/python benchmarks/kill_overwrite.py [--tries 20] [--seed 22] [--work DIR]

Records a tiny simulated dataset (3 episodes, 32 px), trains a policy on two of them, then for each verb runs the
real command line `tries` times, each killed with SIGKILL at a random moment drawn uniformly over one full run's
duration (measured first), and loads the policy at --out after every kill. Prints, per verb, how many kills left
a loadable policy, and whether it was the old or the new one (told apart by the manifest's checksums), and how
many temporary folders were left over once the next run had cleaned up.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), *args]


def _fingerprint(policy: Path) -> str:
    return json.dumps(json.loads((policy / "manifest.json").read_text())["files"], sort_keys=True)


def _run_timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _trial(cmd: list[str], out: Path, duration: float, rng: random.Random) -> tuple[bool, str]:
    from policy.artifact import PolicyArtifactError
    from policy.policy import ALTPolicy

    before = _fingerprint(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, duration))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        ALTPolicy.load(out)
    except PolicyArtifactError as exc:
        print(f"  NOT LOADABLE: {exc}")
        return False, "none"
    state = "old" if _fingerprint(out) == before else "new"
    return True, state + (" (run had finished)" if finished else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kill-overwrite-"))
    rng = random.Random(args.seed)
    from recorder.dataset import Dataset
    from recording_helpers import record_sim

    data = work / "ds"
    train = ["--epochs", "1", "--input-size", "32", "--frame-stride", "2", "--backbone-weights", "none",
             "--progress", "none"]
    policy, parent, added = work / "policy", work / "parent", work / "added"
    if not data.exists():  # two demonstrations, a parent policy on them, then the episode `policy add` adds
        record_sim(data, 2, image_size=32)
        subprocess.run(_cli("train", str(data), "--out", str(parent), "--overwrite", *train), check=True)
        record_sim(data, 1, image_size=32, seed=5)
    with Dataset.open(data) as ds:
        last = ds.episode_indices()[-1]
    commands = {
        "train --overwrite": _cli("train", str(data), "--out", str(policy), "--overwrite", *train),
        "policy add --overwrite": _cli("policy", "add", str(parent), str(data), "--episodes", str(last),
                                       "--out", str(added), "--overwrite"),
    }
    print(f"work folder {work}; {args.tries} tries per verb, seed {args.seed}")
    status = 0
    for verb, cmd in commands.items():
        out = policy if verb.startswith("train") else added
        if not out.exists():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        duration = _run_timed(cmd)
        counts: dict[str, int] = {}
        loadable = 0
        for _ in range(args.tries):
            ok, state = _trial(cmd, out, duration, rng)
            loadable += ok
            counts[state] = counts.get(state, 0) + 1
        _run_timed(cmd)  # the next run cleans what the last kill left
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        print(f"{verb}: one run {duration:.1f} s; {loadable}/{args.tries} kills left a loadable policy "
              f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); leftovers after the next run: "
              f"{len(leftovers)}")
        status |= loadable != args.tries or bool(leftovers)
    if args.work is None:
        shutil.rmtree(work)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
