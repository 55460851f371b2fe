"""Trains the contrastive encoder, embeds every frame into the lookup database, builds the annoy index and calibrates
the OOD threshold gamma. The result is one policy folder. With --lerobot it trains on a LeRobotDataset v3.0, read
through LeRobot's own loader in LeRobot's environment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from cli.options import (LerobotOptions, PolicyOptions, add_lerobot_options, add_policy_options, add_skip_damaged,
                         from_args)


def _gamma(text: str) -> str:
    """'auto' or a cosine similarity; checked before a long training run, not after it."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a number") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a similarity in [-1, 1]")
    return text


@dataclass(frozen=True)
class TrainConfig:
    out: str
    dataset: str | None = None  # an ALT Studio dataset folder, or None with lerobot.lerobot
    lerobot: LerobotOptions = field(default_factory=LerobotOptions)
    policy: PolicyOptions = field(default_factory=PolicyOptions)
    gamma: str = "auto"  # or a similarity in [-1, 1]
    device: str | None = None
    overwrite: bool = False
    skip_damaged: bool = False
    progress: str = "bars"  # bars, jsonl or none
    strict_method: bool = False  # --method aligned on a recording that breaks its assumptions: refuse, not alt


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train an ALT policy on a dataset", description=__doc__)
    p.add_argument("dataset", nargs="?", help="an ALT Studio dataset folder (or use --lerobot)")
    p.add_argument("--out", required=True, help="policy folder to write")
    add_lerobot_options(p)
    add_policy_options(p)
    p.add_argument("--gamma", type=_gamma, default="auto",
                   help="OOD threshold: 'auto' (calibrated from the data, default) or a similarity in [-1, 1]")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing policy folder (atomically)")
    add_skip_damaged(p, "train on the undamaged episodes when some fail the integrity check (default: refuse)")
    p.add_argument("--progress", choices=("bars", "jsonl", "none"), default="bars",
                   help="progress as bars on stderr (default), JSON lines on stdout (machine-readable), or none")
    p.add_argument("--strict-method", action="store_true",
                   help="with --method aligned or landmarks: refuse (nothing trained or saved) when the recording "
                        "breaks one of the method's assumptions (aligned: no grasp, not one object, a table map "
                        "that does not fit, demonstrations that go different ways after the grasp; landmarks: "
                        "nothing seen to move between the demonstrations, fewer than 6 that show every landmark); "
                        "by default the paper's method (alt) is built instead, and the policy and the summary say "
                        "why")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return from_args(TrainConfig, args, lerobot=LerobotOptions.from_args(args), policy=PolicyOptions.from_args(args))


def run(config: TrainConfig) -> int:
    import signal
    import threading
    import time

    from recorder.outputs import POLICY, check_output

    from policy.build import train_policy

    lerobot = config.lerobot
    lerobot.check(config.dataset, "a DATASET folder")
    check_output(config.out, POLICY, overwrite=config.overwrite, inputs=(config.dataset, lerobot.import_dir))
    policy_config = config.policy.policy_config()
    t0 = time.perf_counter()
    cancel = threading.Event()
    # SIGTERM (the desktop app's Cancel, a service manager) stops between two steps; nothing is saved.
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    dataset, source = (config.dataset, None) if lerobot.lerobot is None else lerobot.import_source(config.progress)
    from policy.aligned.alignment import AlignmentError
    from policy.landmarks.model import LandmarkError

    try:
        policy = train_policy(dataset, config.out, policy_config, gamma=config.gamma, device=config.device,
                              overwrite=config.overwrite, progress=config.progress, cancel=cancel, source=source,
                              skip_damaged=config.skip_damaged, fallback=not config.strict_method)
    except (AlignmentError, LandmarkError) as exc:
        if not config.strict_method:
            raise
        raise AlignmentError(f"{exc}; nothing was saved (without --strict-method, train builds the paper's method "
                             "(alt) instead)") from None
    if config.progress == "jsonl":
        return 0
    print(f"policy saved to {config.out}")
    _print_summary(policy, policy_config, config.gamma, t0)
    return 0


def _print_summary(policy, config, gamma: str, t0: float) -> None:
    """What training built: data, actions, time, the gate's thresholds, the aligned method's fit, the index."""
    import time

    from policy.aligned.alignment import coarse_map_warning

    info, cal = policy.info, policy.calibration
    method = info.get("method") or {}
    if method.get("reason"):
        print(f"  {method['reason']}")
    if method.get("assumptions"):
        from policy.aligned.build import summary_line

        print(f"  aligned method's assumptions: {summary_line(method['assumptions'])}")
    print(f"  {info['frames']} frames from {len(info['episodes'])} episodes; trained on {info['train_frames']} "
          f"({config.epochs} epochs, {config.image_width}x{config.image_height}, views {'+'.join(policy.config.views)}, "
          f"init {info['init']}, {info['device']})")
    print(f"  actions: {info['action']['kind']} ({info['action']['dim']}: {', '.join(info['action']['names'][:8])}"
          f"{', ...' if info['action']['dim'] > 8 else ''})")
    print(f"  training {info['train_seconds'] / 60:.1f} min, total {(time.perf_counter() - t0) / 60:.1f} min; "
          f"final loss {info['epoch_losses'][-1]:.3f}")
    gate = "the alt method's gate: " if policy.locator is not None else ""
    print(f"  {gate}gamma {cal.gamma if policy.locator is not None else policy.gamma:.3f} "
          f"({'set by hand' if gamma != 'auto' else cal.method}); held-out "
          f"demo similarity p1 {cal.in_distribution['p1']:.3f}, unrelated images max {cal.unrelated['p100']:.3f}")
    if cal.run:
        from policy.conformal import describe_run_rate

        print(f"  {describe_run_rate(cal.run)}")
    if info.get("grip_check"):
        print(f"  {info['grip_check']}")
    if cal.grasp:
        print(f"  grasp check: alignment {cal.grasp['threshold']:.3f} ({cal.grasp['method']}, "
              f"{cal.grasp['frames']} frames; median {cal.grasp['cross_demo']['p50']:.3f})")
    if policy.locator is not None:
        fit, al = policy.locator.report, cal.aligned
        print(f"  aligned method: table map from {fit['demonstrations']} demonstrations' first third-person frames, "
              f"leave-one-out error {1000 * fit['map_error_loo_m']['p50']:.1f} mm median, "
              f"{1000 * fit['map_error_loo_m']['max']:.1f} mm max; largest correction "
              f"{100 * policy.locator.max_correction:.1f} cm; gate gamma {al['gamma']:.3f} at the start, "
              f"{al['replay_gamma']:.3f} while replaying ({al['method']})")
        if (coarse := coarse_map_warning(fit)) is not None:
            print(f"  {coarse}")
        for name in ("hand_camera", "third_camera"):
            hc, what = fit.get(name) or {}, name.replace("_", " ")
            print(_fitted(hc, f"  {what} check", lambda: (
                f"  {what} check (a run's first lookup): agreement {hc['threshold']:.3f}, halfway between the "
                f"demonstrations' lowest {hc['demonstrations']['min']:.3f} and the highest of "
                f"{hc['unrelated_images']} synthetic unrelated images {hc['unrelated_max']:.3f}")))
        places = fit.get("grasp_places") or {}
        print(_fitted(places, "  grasp check's second opinion", lambda: (
            f"  grasp check's second opinion: the object in the hand view within {places['tolerance_px']:.1f} px "
            f"of where the demonstration had it, area ratio {places['area_ratio'][0]:.2f}-"
            f"{places['area_ratio'][1]:.2f} ({places['pairs']} pairs of demonstration frames)")))
    landmarks = getattr(policy, "landmarks", None)
    if landmarks is not None:
        r = landmarks.report
        whole = " and the changed part of the scene as a whole" if r.get("changes_as_a_whole") else ""
        print(f"  landmark method: {r['landmarks']} landmark(s){whole} found in {r['demonstrations']} of {r['of']} "
              f"demonstrations' first third-person frames; path in {r['segments']} segment(s), leave-one-out error "
              f"{100 * r['loo_error_m']['p50']:.1f} cm median ({100 * r['loo_segment_end_error_m']['p50']:.1f} cm "
              f"at segment ends), {100 * r['loo_error_m']['max']:.1f} cm max; largest correction "
              f"{100 * landmarks.max_correction:.1f} cm")
    print(f"  annoy: {info['annoy']['trees']} trees, search_k {info['annoy']['search_k']}, recall@1 "
          f"{info['annoy']['recall_at_1']:.3f} on {info['annoy']['probe_queries']} probe queries")


def _fitted(part: dict, what: str, used) -> str:
    """``used()`` when the aligned method's ``part`` was fitted, else why it was left out."""
    return used() if part.get("used") else f"{what}: left out ({part.get('why', 'not fitted')})"
