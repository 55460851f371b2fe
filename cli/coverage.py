"""Projects the lookup table's embeddings to 2-D (PCA), draws demonstrations and corrections, the latest runs'
trajectories and every OOD stop from the trial ledger, and lists the stops not yet covered (record here next)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_ledger_option, from_args, positive_int


@dataclass(frozen=True)
class CoverageConfig:
    policy: str
    out: str  # PNG file to write
    ledger: str | None = None  # default runs/trials.jsonl
    trajectories: int = 5  # latest run trajectories to draw


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("coverage", help="draw the policy's coverage map (embeddings, runs, OOD stops) as a PNG",
                              description=__doc__)
    p.add_argument("policy", help="policy folder whose table and runs are mapped")
    add_ledger_option(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--trajectories", type=positive_int, default=5,
                   help="latest run trajectories to draw (default 5)")
    return p


def config_from_args(args: argparse.Namespace) -> CoverageConfig:
    return from_args(CoverageConfig, args)


def run(config: CoverageConfig) -> int:
    from pathlib import Path

    from evaluation.coverage import build_coverage, render_png
    from evaluation.trials import TrialLedger, default_ledger_path
    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(config.policy)
    path = Path(config.ledger) if config.ledger else default_ledger_path()
    ledger = TrialLedger(path) if path.exists() else None
    cov = build_coverage(policy, config.policy, ledger, max_trajectories=config.trajectories)
    out = render_png(cov, config.out)
    covered = sum(s.covered for s in cov.stops)
    print(f"coverage map written to {out}: {len(cov.points)} frames ({len(cov.corrections)} correction episode(s)), "
          f"{len(cov.trajectories)} run trajectory(ies), {len(cov.stops)} OOD stop(s), {covered} covered")
    if ledger is None:
        print(f"no trial ledger at {path}: no runs or OOD stops drawn")
    for why in cov.skipped:
        print(f"  not drawn: {why}")
    if cov.suggestions:
        print("record here next:")
        for i, s in enumerate(cov.suggestions, 1):
            frames = ", ".join(f"{c} {p}" for c, p in sorted(s.frames.items())) or "no frames kept"
            print(f"  {i}. trial {s.trial} (v{s.version}, {s.started_at}): similarity {s.similarity_now:.3f} < gamma "
                  f"{cov.gamma:.3f}, nearest episode {s.nearest[0]} frame {s.nearest[1]}; {frames}")
    return 0
