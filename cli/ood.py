"""`ood`: the OOD gate's verdict for arbitrary images, and the signal that decided it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cli.options import from_args


@dataclass(frozen=True)
class OodConfig:
    policy: str
    images: tuple[str, ...]
    view: str = "both"  # both, hand or third


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ood", help="the OOD gate's verdict for arbitrary images, and the signal that decided it")
    p.add_argument("policy", help="policy folder")
    p.add_argument("images", nargs="+", help="image files to score, one verdict each (see --view)")
    p.add_argument("--view", choices=("both", "hand", "third"), default="both",
                   help="feed each image as both views (default) or as one view, the other being a recorded "
                        "frame of the policy's demonstrations")
    return p


def config_from_args(args: argparse.Namespace) -> OodConfig:
    return from_args(OodConfig, args)


def run(config: OodConfig) -> int:
    import cv2
    import numpy as np

    from recorder.dataset import Dataset, DatasetError

    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(config.policy)
    live = None
    if config.view != "both":  # the other view: a recorded frame of the policy's own demonstrations
        try:
            with Dataset.open(policy.info.get("dataset", "")) as ds:
                e = policy.info["episodes"][0]
                live = {"hand": ds.frame(e, "hand", 0), "third": ds.frame(e, "third", 0)}
        except (DatasetError, KeyError, IndexError) as exc:
            print(f"error: --view {config.view} needs the policy's dataset for the other view ({exc})", file=sys.stderr)
            return 2
    status = 0
    for path in config.images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: error: not a readable image file", file=sys.stderr)
            status = 2
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pose = None
        if policy.config.use_pose:
            pose = np.asarray(policy.database.chunks[0, 0, :7])
        hand = rgb if config.view in ("both", "hand") else live["hand"]
        third = rgb if config.view in ("both", "third") else live["third"]
        r = policy.retrieve(hand, third, pose)
        verdict = f"OUT OF DISTRIBUTION ({r.ood_reason})" if r.ood else "in distribution"
        agree = "" if np.isnan(r.view_agreement[0]) else (f", view agreement hand {r.view_agreement[0]:.3f} third "
                                                          f"{r.view_agreement[1]:.3f}")
        print(f"{path}: similarity {r.similarity:.3f} (gamma {policy.gamma:.3f}){agree} -> {verdict}; nearest: "
              f"episode {r.matches[0].episode} frame {r.matches[0].frame}")
    return status
