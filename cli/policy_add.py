"""Embeds the episodes' frames with the policy's current encoder, appends them to its lookup table, rebuilds the index
and writes a NEW policy folder (version + 1); the parent is left as it was. gamma is kept unless --recalibrate."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cli.options import add_actions, add_skip_damaged, from_args


def _episode_tokens(text: str) -> str:
    """An episode index or a range like 30-35 (expanded by policy.versions.parse_episode_list)."""
    if not all(part.strip().isdigit() for chunk in text.split(",") if chunk for part in chunk.split("-", 1)):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an episode index nor a range like 30-35")
    return text


@dataclass(frozen=True)
class PolicyAddConfig:
    policy: str  # the parent policy folder
    dataset: str
    episodes: tuple[str, ...]  # indices or ranges, e.g. ("31", "32") or ("30-35",)
    out: str | None = None  # default: beside the parent, NAME-vVERSION
    recalibrate: bool = False
    include_incomplete: bool = False
    overwrite: bool = False
    skip_damaged: bool = False


def add_parser(subparsers) -> argparse.ArgumentParser:
    p, actions = add_actions(subparsers, "policy", "manage policy versions (add corrections without retraining)")
    q = actions.add_parser("add", help="add episodes (corrections) to a policy as a new version, no retraining",
                           description=__doc__)
    q.add_argument("policy", help="the parent policy folder")
    q.add_argument("dataset", help="the dataset the policy was built from, holding the new episodes")
    q.add_argument("--episodes", nargs="+", required=True, type=_episode_tokens, metavar="E",
                   help="episode indices or ranges, e.g. 31 32 or 30-35")
    q.add_argument("--out", default=None, help="new policy folder (default: beside the parent, NAME-vVERSION)")
    q.add_argument("--recalibrate", action="store_true", help="choose gamma again from the extended table")
    q.add_argument("--include-incomplete", action="store_true",
                   help="also add episodes that did not end with the stop button")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out policy folder (atomically)")
    add_skip_damaged(q, "add the undamaged episodes when some fail the integrity check (default: refuse)")
    return p


def config_from_args(args: argparse.Namespace) -> PolicyAddConfig:
    return from_args(PolicyAddConfig, args)


def run(config: PolicyAddConfig) -> int:
    from policy.versions import add_episodes, parse_episode_list

    episodes = parse_episode_list(list(config.episodes))
    result = add_episodes(config.policy, config.dataset, episodes, config.out, recalibrate=config.recalibrate,
                          include_incomplete=config.include_incomplete, overwrite=config.overwrite,
                          skip_damaged=config.skip_damaged)
    a = result.addition
    for line in a.skipped:
        print(f"skipped (damaged): {line}", file=sys.stderr)
    corrections = [e for e, v in a.interventions.items() if v]
    print(f"policy v{result.version} saved to {result.path} (parent v{result.parent_version} {config.policy} "
          "unchanged)")
    print(f"  added {len(a.episodes)} episode(s) {a.episodes} ({len(corrections)} correction(s)), {a.frames} frames; "
          f"table now {len(result.policy.database)} frames")
    gamma = (f"gamma {a.gamma_after:.3f} (recalibrated; was {a.gamma_before:.3f})" if a.recalibrated
             else f"gamma {a.gamma_after:.3f} (kept)")
    print(f"  {gamma}; embedding and indexing {a.seconds:.2f} s, total {result.seconds:.2f} s")
    return 0
