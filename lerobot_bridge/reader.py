"""Read a LeRobotDataset with LeRobot's own loader and write it in this project's dataset format.

Runs inside LeRobot's environment (see lerobot_bridge/source.py for why it is a separate one):

    .venv-lerobot/bin/python lerobot_bridge/reader.py --source PATH_OR_REPO_ID --out DIR [--hand-key K] ...

Frames are exactly what ``LeRobotDataset.__getitem__`` returns (float in [0, 1], times 255, rounded back to
uint8), stored as PNG (lossless) and shrunk only when larger than --max-side. Progress and the final summary are
JSON lines on stdout; a failure is one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from lerobot_bridge.source import (LeRobotSourceError, feature_names, is_local, read_info, resolve_keys)


def _open(source: str, episodes: list[int] | None):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if is_local(source):
        root = Path(source)
        total = int(read_info(root).get("total_episodes", 0))
        missing = sorted(set(episodes or ()) - set(range(total)))
        if missing:
            raise LeRobotSourceError(f"--episodes {missing} do not exist; the dataset has episodes 0..{total - 1}")
        return LeRobotDataset(repo_id=f"local/{root.name}", root=root, episodes=episodes)
    try:
        return LeRobotDataset(repo_id=source, episodes=episodes)
    except Exception as exc:  # noqa: BLE001 - the Hub client raises many types (offline, 404, auth, HTTP)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LeRobotSourceError(
            f"could not get the LeRobot dataset {source!r} from the Hugging Face Hub ({type(exc).__name__}: "
            f"{first[:200]}); check the repo id and the internet connection, or download it on a machine that is "
            f"online (`huggingface-cli download --repo-type dataset {source} --local-dir DIR`) and pass DIR") from None


def _to_uint8(image) -> np.ndarray:
    """LeRobot's float CHW image in [0, 1] -> uint8 HWC RGB."""
    x = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return np.clip(np.rint(x.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def read(source: str, out: Path, hand_key: str | None, third_key: str | None, action_key: str | None,
         episodes: list[int] | None, max_side: int) -> dict:
    from recorder.dataset import CameraSpec, Dataset, DatasetSpec, EpisodeWriter, StepRecord
    from core.types import Frame

    ds = _open(source, episodes)
    features = ds.meta.features
    keys = resolve_keys(features, hand_key, third_key, action_key)
    cameras = []
    for role, key in keys["cameras"].items():
        h, w = int(features[key]["shape"][0]), int(features[key]["shape"][1])
        if features[key].get("names", [None])[0] == "channels":  # CHW layout
            h, w = int(features[key]["shape"][1]), int(features[key]["shape"][2])
        fh, fw = _fit(np.zeros((h, w, 3), np.uint8), max_side).shape[:2]
        cameras.append(CameraSpec(role, fw, fh))
    action_names = tuple(feature_names(keys["action"], features[keys["action"]]))
    state_names = tuple(feature_names(keys["state"], features[keys["state"]])) if keys["state"] else ()
    spec = DatasetSpec(fps=float(ds.meta.fps), cameras=tuple(cameras), robot=f"lerobot:{ds.meta.robot_type}",
                       joint_count=0, action_names=action_names, state_names=state_names, codec="png")
    total = len(ds)
    writer: EpisodeWriter | None = None
    current = None
    kept, times = [], []

    def keep() -> None:
        # the rate is the one the timestamps show; late ticks and frame drops are not recorded by LeRobot
        achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else spec.fps
        kept.append(writer.keep("lerobot_import", {"nominal_rate_hz": spec.fps, "achieved_rate_hz": achieved,
                                                   "rate_held": abs(achieved - spec.fps) <= 0.01 * spec.fps}).index)
        times.clear()
    with Dataset.create(out, spec) as dataset:
        for i in range(total):
            item = ds[i]
            episode = int(item["episode_index"])
            if episode != current:
                if writer is not None:
                    keep()
                current = episode
                writer = EpisodeWriter(dataset, episode, task=item.get("task", ""),
                                       extra={"lerobot": {"source": source, "episode": episode, "keys": keys}})
            t = float(item["timestamp"])
            times.append(t)
            frame_index = int(item["frame_index"])
            frames = {role: Frame(_fit(_to_uint8(item[key]), max_side), t, t, frame_index, role)
                      for role, key in keys["cameras"].items()}
            action = np.asarray(item[keys["action"]], np.float32)
            state = np.asarray(item[keys["state"]], np.float32) if keys["state"] else np.zeros(0, np.float32)
            writer.add(StepRecord(tick=frame_index, t_scheduled=t, t_actual=t, state=state,
                                  joints=np.zeros(0, np.float32), action=action, requested=action, frames=frames))
            if i % 50 == 0 or i == total - 1:
                print(json.dumps({"stage": "import", "done": i + 1, "total": total}), flush=True)
        if writer is not None:
            keep()
    return {"stage": "done", "episodes": kept, "frames": total, "fps": float(ds.meta.fps),
            "cameras": keys["cameras"], "action_key": keys["action"], "action_names": list(action_names),
            "state_key": keys["state"], "robot_type": ds.meta.robot_type}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hand-key")
    p.add_argument("--third-key")
    p.add_argument("--action-key")
    p.add_argument("--episodes", type=int, nargs="+")
    p.add_argument("--max-side", type=int, default=320)
    args = p.parse_args(argv)
    try:
        summary = read(args.source, Path(args.out), args.hand_key, args.third_key, args.action_key, args.episodes,
                       args.max_side)
    except LeRobotSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
