"""The policy's CLI verbs: train, eval, ood, demo."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from recorder.dataset import Dataset

from .config import PRESETS, PolicyConfig


def config_from_args(args: Namespace) -> PolicyConfig:
    config = PRESETS[args.preset]
    size = getattr(args, "image_size", None)
    config = config.with_overrides(epochs=args.epochs, batch_size=args.batch_size, frame_stride=args.frame_stride,
                                   chunk_length=args.chunk_length, seed=args.seed, learning_rate=args.lr,
                                   temperature=args.temperature, requery_every=args.requery_every,
                                   image_width=size, image_height=size,
                                   pretrained=args.pretrained, use_pose=True if args.pose else None)
    return config


def _jsonl(record: dict) -> None:
    print(json.dumps(record), flush=True)


def train_policy(dataset_dir: str, out: str, config: PolicyConfig, gamma: str = "auto", device: str | None = None,
                 overwrite: bool = False, progress: str = "bars", cancel: threading.Event | None = None,
                 source: dict | None = None):
    """Build and save a policy. ``progress``: "bars" (tqdm on stderr), "jsonl" (one JSON object per update on
    stdout, for the desktop app) or "none". ``source``: where the dataset was imported from (kept in the info)."""
    from tqdm import tqdm

    from .action_space import describe_actions
    from .data import dataset_views
    from .encoder import imagenet_weights_path
    from .policy import ALTPolicy

    bars: dict[str, tqdm] = {}

    def report(stage, value):
        if progress == "jsonl":
            if stage == "train":
                _jsonl({"stage": "train", "epoch": value.epoch, "epochs": value.epochs, "step": value.step,
                        "steps_per_epoch": value.steps_per_epoch, "loss": value.loss, "eta_s": value.eta_s,
                        "fraction": value.fraction})
            else:
                _jsonl({"stage": stage, "done": value[0], "total": value[1]})
            return
        if progress != "bars":
            return
        if stage == "train":
            bar = bars.get("train")
            if bar is None:
                bar = bars["train"] = tqdm(total=value.epochs * value.steps_per_epoch, desc="train", unit="step",
                                           file=sys.stderr)
            bar.update(1)
            bar.set_postfix(epoch=f"{value.epoch}/{value.epochs}", loss=f"{value.loss:.3f}",
                            eta=f"{value.eta_s / 60:.1f} min")
        else:
            done, total = value
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr)
            bar.n = done
            bar.refresh()

    with Dataset.open(dataset_dir) as dataset:
        config = config.with_overrides(views=dataset_views(dataset))  # one camera or two, as the dataset has
        policy = ALTPolicy.build(dataset, config, progress=report, device=device, cancel=cancel)
        policy.info["action"] = describe_actions(dataset.spec.action_names)
    policy.info["backbone"] = {"requested": config.pretrained, "init": policy.info["init"],
                               "weights_file": str(imagenet_weights_path()) if policy.info["init"] == "imagenet"
                               else None}
    if source:
        policy.info["source"] = source
    for bar in bars.values():
        bar.close()
    if cancel is not None and cancel.is_set():  # asked during the last stages: still save nothing
        from .train import TrainingCancelled

        raise TrainingCancelled("training was cancelled; nothing was saved")
    if gamma != "auto":
        policy.gamma = float(gamma)
    path = policy.save(out, overwrite=overwrite)
    if progress == "jsonl":
        _jsonl({"stage": "done", "path": str(path), "info": policy.info})
    return policy


LEROBOT_FLAGS = ("hand_key", "third_key", "action_key", "episodes", "lerobot_python", "import_dir")


def check_source_args(args: Namespace, positional: str, shown: str) -> None:
    """Exactly one of the positional source and --lerobot; the LeRobot flags only with --lerobot."""
    if (getattr(args, positional) is None) == (args.lerobot is None):
        raise ValueError(f"give either {shown} or --lerobot PATH_OR_REPO_ID")
    stray = [f"--{name.replace('_', '-')}" for name in LEROBOT_FLAGS if getattr(args, name) is not None]
    if args.lerobot is None and stray:
        raise ValueError(f"{', '.join(stray)} only apply with --lerobot PATH_OR_REPO_ID")


def import_lerobot_from_args(args: Namespace) -> tuple[str, dict]:
    """Import ``--lerobot SOURCE`` through LeRobot's environment; returns (dataset folder, source info)."""
    from .lerobot_source import import_lerobot

    bars = []  # made at the first frame, so that an early error stays one line

    def report(done, total):
        if args.progress == "jsonl":
            _jsonl({"stage": "import", "done": done, "total": total})
        elif args.progress == "bars":
            if not bars:
                from tqdm import tqdm

                bars.append(tqdm(total=total, desc="import", unit="frame", file=sys.stderr))
            bars[0].n = done
            bars[0].refresh()

    path = import_lerobot(args.lerobot, hand_key=args.hand_key, third_key=args.third_key, action_key=args.action_key,
                          episodes=args.episodes, out=args.import_dir, python=args.lerobot_python, progress=report)
    for bar in bars:
        bar.close()
    summary = json.loads((Path(path) / "lerobot_import.json").read_text())
    return str(path), {"lerobot": args.lerobot, "imported_to": str(Path(path).resolve()), **summary["summary"]}


def cmd_train(args: Namespace) -> int:
    check_source_args(args, "dataset", "a DATASET folder")
    config = config_from_args(args)
    t0 = time.perf_counter()
    cancel = threading.Event()
    # SIGTERM (the desktop app's Cancel, a service manager) stops between two steps; nothing is saved.
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    dataset, source = (args.dataset, None) if args.lerobot is None else import_lerobot_from_args(args)
    policy = train_policy(dataset, args.out, config, gamma=args.gamma, device=args.device,
                          overwrite=args.overwrite, progress=args.progress, cancel=cancel, source=source)
    if args.progress == "jsonl":
        return 0
    info, cal = policy.info, policy.calibration
    print(f"policy saved to {args.out}")
    print(f"  {info['frames']} frames from {len(info['episodes'])} episodes; trained on {info['train_frames']} "
          f"({config.epochs} epochs, {config.image_width}x{config.image_height}, views {'+'.join(policy.config.views)}, "
          f"init {info['init']}, {info['device']})")
    print(f"  actions: {info['action']['kind']} ({info['action']['dim']}: {', '.join(info['action']['names'][:8])}"
          f"{', ...' if info['action']['dim'] > 8 else ''})")
    print(f"  training {info['train_seconds'] / 60:.1f} min, total {(time.perf_counter() - t0) / 60:.1f} min; "
          f"final loss {info['epoch_losses'][-1]:.3f}")
    print(f"  gamma {policy.gamma:.3f} ({'set by hand' if args.gamma != 'auto' else cal.method}); held-out "
          f"demo similarity p1 {cal.in_distribution['p1']:.3f}, unrelated images max {cal.unrelated['p100']:.3f}")
    print(f"  annoy: {info['annoy']['trees']} trees, search_k {info['annoy']['search_k']}, recall@1 "
          f"{info['annoy']['recall_at_1']:.3f} on {info['annoy']['probe_queries']} probe queries")
    return 0


def _scenario_table(rows: list[dict]) -> str:
    lines = [f"{'scenario':<16} {'success':>9} {'OOD stops':>9} {'retrieval':>9} {'latency p50':>11} "
             f"{'p99':>7}"]
    for r in rows:
        acc = "-" if r["retrieval_accuracy"] is None else f"{100 * r['retrieval_accuracy']:.0f}%"
        p50 = "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.1f} ms"
        p99 = "-" if r["latency_p99_ms"] is None else f"{r['latency_p99_ms']:.1f}"
        lines.append(f"{r['scenario']:<16} {r['successes']:>4}/{r['episodes']:<4} {r['ood_stops']:>9} {acc:>9} "
                     f"{p50:>11} {p99:>7}")
    return "\n".join(lines)


def evaluate_policy(policy_dir: str, scenarios: list[str], episodes: int, seed: int, clock: str = "lockstep",
                    json_path: str | None = None, max_ticks: int = 200) -> dict:
    from tqdm import tqdm

    from robot_drivers.factory import make_rig

    from .evaluate import evaluate_scenario, in_distribution_frame_report, unrelated_image_report
    from .policy import ALTPolicy

    policy = ALTPolicy.load(policy_dir)
    rig = make_rig("sim", clock=clock, image_size=128, rate_hz=policy.info.get("fps", 10.0))
    rows = []
    with rig:
        for scenario in scenarios:
            with tqdm(total=episodes, desc=f"eval {scenario}", unit="ep", file=sys.stderr) as bar:
                ok = [0]

                def progress(ep):
                    ok[0] += ep.success
                    bar.update(1)
                    bar.set_postfix(success=f"{ok[0]}/{bar.n}")

                rows.append(evaluate_scenario(policy, rig, scenario, episodes, seed, max_ticks, progress).summary())
    rig.close()
    payload = {"policy": str(policy_dir), "gamma": policy.gamma, "scenarios": rows,
               "unrelated_images": unrelated_image_report(policy, seed),
               "in_distribution_frames": in_distribution_frame_report(policy, policy.info.get("dataset", ""))}
    if json_path:
        from .evaluate import write_json

        write_json(json_path, payload)
    return payload


def _ood_lines(payload: dict) -> list[str]:
    lines = []
    for group, r in payload["unrelated_images"].items():
        if r is None:
            lines.append(f"unrelated {group}: not available (install scikit-image for its sample photos)")
        else:
            lines.append(f"unrelated {group}: {r['flagged_ood']}/{r['images']} flagged OOD "
                         f"(max similarity {r['max_similarity']:.3f})")
    idf = payload.get("in_distribution_frames")
    if idf:
        lines.append(f"recorded demo frames: {idf['flagged_ood']}/{idf['frames']} flagged OOD "
                     f"(min similarity {idf['min_similarity']:.3f})")
    return lines


def cmd_eval(args: Namespace) -> int:
    from robot_drivers.sim.task import SCENARIOS

    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    payload = evaluate_policy(args.policy, scenarios, args.episodes, args.seed, args.clock, args.json)
    print(_scenario_table(payload["scenarios"]))
    print(f"gamma {payload['gamma']:.3f}")
    print("\n".join(_ood_lines(payload)))
    if args.json:
        print(f"report written to {args.json}")
    return 0


def cmd_ood(args: Namespace) -> int:
    import cv2

    from .policy import ALTPolicy

    policy = ALTPolicy.load(args.policy)
    status = 0
    for path in args.images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: error: not a readable image file", file=sys.stderr)
            status = 2
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pose = None
        if policy.config.use_pose:
            pose = np.asarray(policy.database.chunks[0, 0, :7])
        r = policy.retrieve(rgb, rgb, pose)
        verdict = "OUT OF DISTRIBUTION" if r.ood else "in distribution"
        print(f"{path}: similarity {r.similarity:.3f} (gamma {policy.gamma:.3f}) -> {verdict}; nearest: episode "
              f"{r.matches[0].episode} frame {r.matches[0].frame}")
    return status


def cmd_demo(args: Namespace) -> int:
    from recorder.commands import cmd_record
    from robot_drivers.sim.task import SCENARIOS

    root = Path(args.out)
    dataset_dir, policy_dir, report = root / "dataset", root / "policy", root / "report.json"
    if args.quick:
        demos, image_size, eval_episodes = 30, 64, 5
        config = PRESETS["cpu"].with_overrides(epochs=3, frame_stride=3, image_width=64, image_height=64)
        expected = "about 5 minutes"
    else:
        demos, image_size, eval_episodes = 30, 128, args.episodes
        config = PRESETS["cpu"]
        expected = "about 25 minutes"
    print(f"ALT Studio demo on the simulated rig ({expected} on 2 CPU cores): record {demos} scripted "
          f"demonstrations, train the ALT policy, evaluate {eval_episodes} episodes per scenario.\n"
          f"Everything goes to {root}/")
    t0 = time.perf_counter()
    if (dataset_dir / "dataset.json").exists():
        with Dataset.open(dataset_dir) as ds:
            have = len(ds.episode_indices())
    else:
        have = 0
    if have < demos:
        print(f"\n[1/3] recording {demos - have} demonstrations")
        rec = Namespace(robot="sim", teleop="scripted", episodes=demos - have, out=str(dataset_dir), seed=args.seed,
                        task="grasp the mug", rate=10.0, image_size=image_size, clock="lockstep", codec="jpeg")
        if cmd_record(rec) != 0:
            return 1
    else:
        print(f"\n[1/3] reusing the {have} demonstrations in {dataset_dir}")
    print("\n[2/3] training")
    t1 = time.perf_counter()
    policy = train_policy(str(dataset_dir), str(policy_dir), config, overwrite=True)
    train_min = (time.perf_counter() - t1) / 60
    print(f"trained in {train_min:.1f} min; gamma {policy.gamma:.3f} ({policy.calibration.method})")
    print(f"\n[3/3] evaluating {len(SCENARIOS)} scenarios x {eval_episodes} episodes")
    payload = evaluate_policy(str(policy_dir), list(SCENARIOS), eval_episodes, args.seed + 1000, "lockstep",
                              str(report))
    print("\nALT on the simulated rig (30 demonstrations)")
    print(_scenario_table(payload["scenarios"]))
    print("\n".join(_ood_lines(payload)))
    print(f"\ndataset  {dataset_dir}\npolicy   {policy_dir}\nreport   {report}\n"
          f"total    {(time.perf_counter() - t0) / 60:.1f} min (training {train_min:.1f} min)")
    payload["train_minutes"] = train_min
    report.write_text(json.dumps(payload, indent=1))
    return 0
