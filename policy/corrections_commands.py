"""CLI verbs for corrections, coverage and trials: `policy add`, `trials`, `coverage`."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from evaluation.trials import TrialLedger, default_ledger_path, format_marks, format_summary


def cmd_policy_add(args: Namespace) -> int:
    from policy.versions import add_episodes, parse_episode_list

    episodes = parse_episode_list(args.episodes)
    result = add_episodes(args.policy, args.dataset, episodes, args.out, recalibrate=args.recalibrate,
                          include_incomplete=args.include_incomplete, overwrite=args.overwrite,
                          skip_damaged=args.skip_damaged)
    a = result.addition
    corrections = [e for e, v in a.interventions.items() if v]
    print(f"policy v{result.version} saved to {result.path} (parent v{result.parent_version} {args.policy} unchanged)")
    print(f"  added {len(a.episodes)} episode(s) {a.episodes} ({len(corrections)} correction(s)), {a.frames} frames; "
          f"table now {len(result.policy.database)} frames")
    gamma = (f"gamma {a.gamma_after:.3f} (recalibrated; was {a.gamma_before:.3f})" if a.recalibrated
             else f"gamma {a.gamma_after:.3f} (kept)")
    print(f"  {gamma}; embedding and indexing {a.seconds:.2f} s, total {result.seconds:.2f} s")
    return 0


def _ledger(args: Namespace) -> TrialLedger:
    path = Path(args.ledger) if args.ledger else default_ledger_path()
    if not path.exists():
        raise FileNotFoundError(f"no trial ledger at {path}; autonomous runs write it (pass --ledger FILE)")
    return TrialLedger(path)


def cmd_trials(args: Namespace) -> int:
    ledger = _ledger(args)
    if args.mark:
        trial_id, outcome = args.mark
        trial = ledger.mark(trial_id, outcome)
        print(f"trial {trial.id} marked {outcome} by the operator (the run itself ended {trial.outcome}"
              + (f": {trial.reason})" if trial.reason else ")"))
    rows = ledger.summary(args.policy)
    print(f"trials in {ledger.path} (success rate over decided trials, Wilson 95% interval; a trial the operator "
          "marked counts by the mark)")
    print(format_summary(rows))
    marks = format_marks(ledger.trials(args.policy))
    if marks:
        print(marks)
    if args.csv:
        n = ledger.write_csv(args.csv, args.policy)
        print(f"{n} trial(s) written to {args.csv}")
    return 0


def cmd_coverage(args: Namespace) -> int:
    from evaluation.coverage import build_coverage, render_png
    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(args.policy)
    path = Path(args.ledger) if args.ledger else default_ledger_path()
    ledger = TrialLedger(path) if path.exists() else None
    cov = build_coverage(policy, args.policy, ledger, max_trajectories=args.trajectories)
    out = render_png(cov, args.out)
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
