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

from policy.aligned.alignment import coarse_map_warning
from policy.config import PRESETS, PolicyConfig


def config_from_args(args: Namespace) -> PolicyConfig:
    config = PRESETS[args.preset]
    size = getattr(args, "image_size", None)
    config = config.with_overrides(epochs=args.epochs, batch_size=args.batch_size, frame_stride=args.frame_stride,
                                   chunk_length=args.chunk_length, seed=args.seed, learning_rate=args.lr,
                                   temperature=args.temperature, requery_every=args.requery_every,
                                   image_width=size, image_height=size,
                                   pretrained=args.pretrained, use_pose=True if args.pose else None,
                                   method=getattr(args, "method", None))
    return config


def _jsonl(record: dict) -> None:
    print(json.dumps(record), flush=True)


def train_policy(dataset_dir: str, out: str, config: PolicyConfig, gamma: str = "auto", device: str | None = None,
                 overwrite: bool = False, progress: str = "bars", cancel: threading.Event | None = None,
                 source: dict | None = None, skip_damaged: bool = False):
    """Build and save a policy. ``progress``: "bars" (tqdm on stderr; plain lines when it is not a terminal),
    "jsonl" (one JSON object per update on stdout, for the desktop app) or "none". ``source``: where the dataset
    was imported from (kept in the info). The episodes are checked first (``Dataset.require_intact``): damaged ones
    are refused by name, or left out with ``skip_damaged``."""
    from recorder.outputs import POLICY, check_output
    from recorder.progress import progress_bar

    from policy.action_space import describe_actions
    from policy.data import choose_episodes, dataset_views
    from policy.encoder import imagenet_weights_path
    from policy.policy import ALTPolicy

    check_output(out, POLICY, overwrite=overwrite, inputs=(dataset_dir,))  # before any work, not after it
    bars: dict = {}

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
                bar = bars["train"] = progress_bar(total=value.epochs * value.steps_per_epoch, desc="train",
                                                   unit="step")
            bar.update(1)
            bar.set_postfix(epoch=f"{value.epoch}/{value.epochs}", loss=f"{value.loss:.3f}",
                            eta=f"{value.eta_s / 60:.1f} min")
        else:
            done, total = value
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = progress_bar(total=total, desc=stage, unit="frame")
            bar.update(done - bar.n)

    with Dataset.open(dataset_dir) as dataset:
        config = config.with_overrides(views=dataset_views(dataset))  # one camera or two, as the dataset has
        episodes, skipped = dataset.require_intact(choose_episodes(dataset, config), skip_damaged)
        for line in skipped:
            print(f"skipped (damaged): {line}", file=sys.stderr)
        policy = ALTPolicy.build(dataset, config, progress=report, device=device, cancel=cancel, episodes=episodes)
        if skipped:
            policy.info["skipped_damaged"] = skipped
        policy.info["action"] = describe_actions(dataset.spec.action_names)
    policy.info["backbone"] = {"requested": config.pretrained, "init": policy.info["init"],
                               "weights_file": str(imagenet_weights_path()) if policy.info["init"] == "imagenet"
                               else None}
    if source:
        policy.info["source"] = source
    for bar in bars.values():
        bar.close()
    if cancel is not None and cancel.is_set():  # asked during the last stages: still save nothing
        from policy.train import TrainingCancelled

        raise TrainingCancelled("training was cancelled; nothing was saved")
    if gamma != "auto":
        policy.gamma = float(gamma)
    path = policy.save(out, overwrite=overwrite)
    if progress == "jsonl":
        _jsonl({"stage": "done", "path": str(path), "info": policy.info, "gamma": policy.gamma,
                "gamma_method": "set by hand" if gamma != "auto" else getattr(policy.calibration, "method", None)})
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
    from lerobot_bridge.source import import_lerobot

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
    from recorder.outputs import POLICY, check_output

    check_source_args(args, "dataset", "a DATASET folder")
    check_output(args.out, POLICY, overwrite=args.overwrite, inputs=(args.dataset, args.import_dir))
    config = config_from_args(args)
    t0 = time.perf_counter()
    cancel = threading.Event()
    # SIGTERM (the desktop app's Cancel, a service manager) stops between two steps; nothing is saved.
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    dataset, source = (args.dataset, None) if args.lerobot is None else import_lerobot_from_args(args)
    policy = train_policy(dataset, args.out, config, gamma=args.gamma, device=args.device,
                          overwrite=args.overwrite, progress=args.progress, cancel=cancel, source=source,
                          skip_damaged=args.skip_damaged)
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
    gate = "the alt method's gate: " if policy.locator is not None else ""
    print(f"  {gate}gamma {cal.gamma if policy.locator is not None else policy.gamma:.3f} "
          f"({'set by hand' if args.gamma != 'auto' else cal.method}); held-out "
          f"demo similarity p1 {cal.in_distribution['p1']:.3f}, unrelated images max {cal.unrelated['p100']:.3f}")
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
            if hc.get("used"):
                print(f"  {what} check (a run's first lookup): agreement {hc['threshold']:.3f}, halfway between "
                      f"the demonstrations' lowest {hc['demonstrations']['min']:.3f} and the highest of "
                      f"{hc['unrelated_images']} synthetic unrelated images {hc['unrelated_max']:.3f}")
            else:
                print(f"  {what} check: left out ({hc.get('why', 'not fitted')})")
        places = fit.get("grasp_places") or {}
        if places.get("used"):
            print(f"  grasp check's second opinion: the object in the hand view within {places['tolerance_px']:.1f} px "
                  f"of where the demonstration had it, area ratio {places['area_ratio'][0]:.2f}-"
                  f"{places['area_ratio'][1]:.2f} ({places['pairs']} pairs of demonstration frames)")
        else:
            print(f"  grasp check's second opinion: left out ({places.get('why', 'not fitted')})")
    print(f"  annoy: {info['annoy']['trees']} trees, search_k {info['annoy']['search_k']}, recall@1 "
          f"{info['annoy']['recall_at_1']:.3f} on {info['annoy']['probe_queries']} probe queries")
    return 0


def _pct(k: int, n: int, interval: tuple[float, float]) -> str:
    return f"{k}/{n} [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}%]"


def _scenario_table(rows: list[dict]) -> str:
    """Outcome counts per scenario (95% Wilson intervals); silent failures, the safety figure, first."""
    lines = [f"{'scenario':<16} {'clock':<9} {'silent failures':>17} {'success':>15} {'OOD stops':>9} "
             f"{'stall stops':>11} {'device':>6} {'retrieval':>9} {'p50 / p99 ms':>13}"]
    for r in rows:
        n, c, ci = r["episodes"], r["counts"], r["intervals_95"]
        acc = "-" if r["retrieval_accuracy"] is None else f"{100 * r['retrieval_accuracy']:.0f}%"
        lat = "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f}"
        lines.append(f"{r['scenario']:<16} {r['clock']:<9} {_pct(c['silent_failure'], n, ci['silent_failure']):>17} "
                     f"{_pct(c['success'], n, ci['success']):>15} {c['ood_stop']:>9} {c['stall_stop']:>11} "
                     f"{c['device_stop']:>6} {acc:>9} {lat:>13}")
    return "\n".join(lines)


def _side_by_side(methods: dict[str, list[dict]]) -> str:
    """Per scenario and clock, each method's success / OOD stops / silent failures (of the episodes)."""
    names = list(methods)
    head = f"{'scenario':<16} {'clock':<9} " + " ".join(f"{m + ': success / OOD / silent':>30}" for m in names)
    lines = [head]
    for i, row in enumerate(methods[names[0]]):
        cells = []
        for m in names:
            r = methods[m][i]
            c = r["counts"]
            cells.append(f"{c['success']:>2}/{r['episodes']} / {c['ood_stop'] + c['stall_stop']:>2} / "
                         f"{c['silent_failure']:>2}")
        lines.append(f"{row['scenario']:<16} {row['clock']:<9} " + " ".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def _rig_image_size(policy) -> int:
    """The camera size the policy's demonstrations were recorded at (the eval rig must match them)."""
    sizes = policy.info.get("camera_sizes")
    if not sizes:
        try:
            with Dataset.open(policy.info.get("dataset", "")) as ds:
                sizes = {c.name: [c.width, c.height] for c in ds.spec.cameras}
        except Exception:  # noqa: BLE001 - the dataset moved: fall back to the recorder's default
            return 128
    widths = {tuple(v) for v in sizes.values()}
    if len(widths) != 1 or next(iter(widths))[0] != next(iter(widths))[1]:
        raise ValueError(f"the simulated rig renders square cameras of one size; the policy's demonstrations "
                         f"were recorded at {sizes}")
    return int(next(iter(widths))[0])


def evaluate_policy(policy_dir: str, scenarios: list[str], episodes: int, seed: int, clock: str = "lockstep",
                    json_path: str | None = None, max_ticks: int = 200, check_data: str | None = None,
                    quiet: bool = False) -> dict:
    """Evaluate on the simulated rig; the payload records the thresholds used and every episode."""
    from recorder.progress import progress_bar

    from robot_drivers.factory import make_rig

    from evaluation.evaluate import evaluate_scenario, in_distribution_frame_report, live_frames, unrelated_image_report
    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(policy_dir)
    rig = make_rig("sim", clock=clock, image_size=_rig_image_size(policy), rate_hz=policy.info.get("fps", 10.0))
    rows = []
    with rig:
        for scenario in scenarios:
            with progress_bar(total=episodes, desc=f"eval {scenario} ({clock})", unit="ep", disable=quiet) as bar:
                tally = {"success": 0, "silent_failure": 0}

                def progress(ep):
                    if ep.outcome in tally:
                        tally[ep.outcome] += 1
                    bar.update(1)
                    bar.set_postfix(success=f"{tally['success']}/{bar.n}", silent=tally["silent_failure"])

                rows.append(evaluate_scenario(policy, rig, scenario, episodes, seed, max_ticks, progress).summary())
        live = live_frames(rig, 8, seed + 50_000)
    rig.close()
    payload = {"policy": str(policy_dir), "clock": clock, "seed": seed, "episodes_per_scenario": episodes,
               "gamma": policy.gamma, "thresholds": policy.thresholds(),
               "calibration": None if policy.calibration is None else policy.calibration.__dict__,
               "scenarios": rows, "unrelated_images": unrelated_image_report(policy, live, seed),
               "in_distribution_frames": in_distribution_frame_report(policy, check_data) if check_data else None}
    if json_path:
        from evaluation.evaluate import write_json

        write_json(json_path, payload)
    return payload


def _ood_lines(payload: dict) -> list[str]:
    lines = []
    for group, feeds in payload["unrelated_images"].items():
        if feeds is None:
            lines.append(f"unrelated {group}: not available (install scikit-image and matplotlib for their sample "
                         "photos)")
            continue
        for feed, r in feeds.items():
            signals = ", ".join(f"{k} {v}" for k, v in sorted(r["by_signal"].items()))
            lines.append(f"unrelated {group}, {feed}: {r['flagged_ood']}/{r['images']} flagged OOD "
                         f"(max similarity {r['max_similarity']:.3f}; by {signals or 'none'})")
    idf = payload.get("in_distribution_frames")
    if idf:
        lines.append(f"demo frames not in the table ({idf['dataset']}): {idf['flagged_ood']}/{idf['frames']} "
                     f"flagged OOD (min similarity {idf['min_similarity']:.3f})")
    th = payload["thresholds"]
    views = ", ".join(f"{k} {th[k]:.3f}" for k in ("hand_view", "third_view") if th.get(k) is not None)
    grasp = th.get("grasp_alignment")
    limit = th.get("time_limit_s")
    lines.append(f"gate: gamma {th['gamma']:.3f} (calibrated {th['calibrated_gamma']:.3f})"
                 + (f", view agreement {views}" if views else "")
                 + (f", grasp alignment {grasp:.3f}" if grasp is not None else "")
                 + f"; watchdog {th['stall_seconds']:g} s / {1000 * th['stall_distance_m']:.0f} mm"
                 + (f", time limit {limit:.1f} s" if limit else ""))
    return lines


def cmd_eval(args: Namespace) -> int:
    from robot_drivers.sim.task import SCENARIOS

    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    payload = evaluate_policy(args.policy, scenarios, args.episodes, args.seed, args.clock, args.json,
                              check_data=args.check_data)
    print(_scenario_table(payload["scenarios"]))
    print("\n".join(_ood_lines(payload)))
    if args.json:
        print(f"report written to {args.json}")
    return 0


def cmd_ood(args: Namespace) -> int:
    import cv2

    from recorder.dataset import DatasetError

    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(args.policy)
    live = None
    if args.view != "both":  # the other view: a recorded frame of the policy's own demonstrations
        try:
            with Dataset.open(policy.info.get("dataset", "")) as ds:
                e = policy.info["episodes"][0]
                live = {"hand": ds.frame(e, "hand", 0), "third": ds.frame(e, "third", 0)}
        except (DatasetError, KeyError, IndexError) as exc:
            print(f"error: --view {args.view} needs the policy's dataset for the other view ({exc})", file=sys.stderr)
            return 2
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
        hand = rgb if args.view in ("both", "hand") else live["hand"]
        third = rgb if args.view in ("both", "third") else live["third"]
        r = policy.retrieve(hand, third, pose)
        verdict = f"OUT OF DISTRIBUTION ({r.ood_reason})" if r.ood else "in distribution"
        agree = "" if np.isnan(r.view_agreement[0]) else (f", view agreement hand {r.view_agreement[0]:.3f} third "
                                                          f"{r.view_agreement[1]:.3f}")
        print(f"{path}: similarity {r.similarity:.3f} (gamma {policy.gamma:.3f}){agree} -> {verdict}; nearest: "
              f"episode {r.matches[0].episode} frame {r.matches[0].frame}")
    return status


def _record_scripted(dataset_dir: Path, demos: int, image_size: int, seed: int) -> bool:
    """Record scripted demonstrations until ``dataset_dir`` holds ``demos`` episodes; False on failure."""
    from recorder.commands import cmd_record

    have = 0
    if (dataset_dir / "dataset.json").exists():
        with Dataset.open(dataset_dir) as ds:
            have = len(ds.episode_indices())
    if have >= demos:
        print(f"reusing the {have} demonstrations in {dataset_dir}")
        return True
    rec = Namespace(robot="sim", teleop="scripted", episodes=demos - have, out=str(dataset_dir), seed=seed,
                    task="grasp the mug", rate=10.0, image_size=image_size, clock="lockstep", codec="jpeg")
    return cmd_record(rec) == 0


def cmd_demo(args: Namespace) -> int:
    from robot_drivers.sim.task import SCENARIOS

    root = Path(args.out)
    dataset_dir, check_dir, policy_dir = root / "dataset", root / "check", root / "policy"
    aligned_dir = root / "policy-aligned"
    report, realtime_report = root / "report.json", root / "report_realtime.json"
    if args.quick:
        # fewer epochs, frames and episodes, but the full-size images: at 64 px the aligned method locates the
        # object to a pixel of the third view (up to 12 mm) and can tip a mug the gate does not see
        demos, image_size, eval_episodes = 30, 128, 5
        config = PRESETS["cpu"].with_overrides(epochs=3, frame_stride=3)
        expected = "about 8 minutes"
    else:
        demos, image_size, eval_episodes = 30, 128, args.episodes
        config = PRESETS["cpu"]
        expected = "about 30 minutes"
    realtime_scenarios = ["in_distribution", "interpolate"]
    if args.corrections:
        print(f"ALT Studio correction loop on the simulated rig: record {demos} scripted demonstrations and train "
              f"(both reused when {root} has them), then the loop with the {args.method} method on {eval_episodes} "
              f"+ {eval_episodes} {args.scenario} placements.\nEverything goes to {root}/")
    else:
        print(f"ALT Studio demo on the simulated rig ({expected} on 2 CPU cores): record {demos} scripted "
              f"demonstrations, train the ALT policy (and, on the same encoder, the aligned method), evaluate both, "
              f"{eval_episodes} episodes per scenario in lock-step and {', '.join(realtime_scenarios)} in real "
              f"time, then the correction loop.\nEverything goes to {root}/")
    t0 = time.perf_counter()
    steps = 3 if args.corrections else 5
    print(f"\n[1/{steps}] recording {demos} demonstrations (and 8 check demonstrations the policy never sees)")
    if not (_record_scripted(dataset_dir, demos, image_size, args.seed)
            and _record_scripted(check_dir, 8, image_size, args.seed + 9001)):
        return 1
    print(f"\n[2/{steps}] training")
    t1 = time.perf_counter()
    if args.corrections and _trained_on(policy_dir, dataset_dir):
        from policy.policy import ALTPolicy

        policy = ALTPolicy.load(policy_dir)
        print(f"reusing the policy in {policy_dir}: it was trained on these demonstrations")
    else:
        policy = train_policy(str(dataset_dir), str(policy_dir), config, overwrite=True)
    train_min = (time.perf_counter() - t1) / 60
    if args.corrections:
        print(f"\n[3/{steps}] the correction loop ({args.method} method, {args.scenario})")
        looped = policy_dir
        if args.method == "aligned":
            from policy.policy import aligned_from

            with Dataset.open(dataset_dir) as ds:
                aligned_from(policy, ds).save(aligned_dir, overwrite=True)
            looped = aligned_dir
        loop = _correction_loop_step(looped, root, eval_episodes, args.seed + 3000, args.scenario)
        print(f"\ntotal    {(time.perf_counter() - t0) / 60:.1f} min")
        return 0 if loop is not None else 1
    cal = policy.calibration
    print(f"trained in {train_min:.1f} min; gamma {policy.gamma:.3f}, view agreement "
          f"{', '.join(f'{k} {v:.3f}' for k, v in cal.view_thresholds.items())} ({cal.method}); held out "
          f"{len(cal.held_out_episodes)} demonstrations for that, then added them to the table")
    from policy.policy import aligned_from

    with Dataset.open(dataset_dir) as ds:
        aligned = aligned_from(policy, ds)
    aligned.save(aligned_dir, overwrite=True)
    fit = aligned.locator.report
    print(f"aligned method: the object located in the third-person view, table map from {fit['demonstrations']} "
          f"demonstrations (leave-one-out error {1000 * fit['map_error_loo_m']['p50']:.1f} mm median, "
          f"{1000 * fit['map_error_loo_m']['max']:.1f} mm max); largest correction "
          f"{100 * aligned.locator.max_correction:.1f} cm; gamma {aligned.gamma:.3f}")
    if (coarse := coarse_map_warning(fit)) is not None:
        print(coarse)
    eval_seed = args.seed + 1000
    print(f"\n[3/{steps}] evaluating {len(SCENARIOS)} scenarios x {eval_episodes} episodes in lock-step (seeds "
          f"{eval_seed}-{eval_seed + eval_episodes - 1})")
    payload = evaluate_policy(str(policy_dir), list(SCENARIOS), eval_episodes, eval_seed, "lockstep", str(report),
                              check_data=str(check_dir))
    aligned_payload = evaluate_policy(str(aligned_dir), list(SCENARIOS), eval_episodes, eval_seed, "lockstep",
                                      str(root / "report_aligned.json"), check_data=str(check_dir))
    print(f"\n[4/{steps}] evaluating {', '.join(realtime_scenarios)} x {eval_episodes} episodes in real time")
    realtime = evaluate_policy(str(policy_dir), realtime_scenarios, eval_episodes, eval_seed, "realtime",
                               str(realtime_report))
    aligned_realtime = evaluate_policy(str(aligned_dir), realtime_scenarios, eval_episodes, eval_seed, "realtime",
                                       str(root / "report_aligned_realtime.json"))
    methods = {"alt": payload["scenarios"] + realtime["scenarios"],
               "aligned": aligned_payload["scenarios"] + aligned_realtime["scenarios"]}
    for name, rows in methods.items():
        silent = sum(r["counts"]["silent_failure"] for r in rows)
        total = sum(r["episodes"] for r in rows)
        print(f"\n{name} method on the simulated rig ({demos} demonstrations): {silent} silent failures in {total} "
              f"episodes")
        print(_scenario_table(rows))
    print("\nside by side (the same encoder, table and demonstrations; OOD includes stall stops):")
    print(_side_by_side(methods))
    print("\n".join(_ood_lines(payload)))
    print("aligned method:\n" + "\n".join(_ood_lines(aligned_payload)))
    print(f"\n[5/{steps}] the correction loop")
    loop = _correction_loop_step(policy_dir, root, eval_episodes, args.seed + 3000)
    print(f"\ndataset  {dataset_dir}\npolicies {policy_dir}, {aligned_dir}\nreports  {report}, {realtime_report} "
          f"(and report_aligned*.json)\n"
          f"total    {(time.perf_counter() - t0) / 60:.1f} min (training {train_min:.1f} min)")
    payload["train_minutes"] = train_min
    payload["realtime"] = realtime["scenarios"]
    payload["aligned"] = {"lockstep": aligned_payload["scenarios"], "realtime": aligned_realtime["scenarios"]}
    payload["correction_loop"] = loop
    report.write_text(json.dumps(payload, indent=1))
    return 0


def _trained_on(policy_dir: Path, dataset_dir: Path) -> bool:
    """Whether ``policy_dir`` holds a policy trained on exactly the episodes ``dataset_dir`` has now."""
    doc = policy_dir / "config.json"
    if not doc.exists() or not (dataset_dir / "dataset.json").exists():
        return False
    info = json.loads(doc.read_text()).get("info") or {}
    with Dataset.open(dataset_dir) as ds:
        return sorted(int(e) for e in info.get("episodes", [])) == ds.episode_indices() and \
            Path(info.get("dataset", "")).resolve() == dataset_dir.resolve()


def _correction_loop_step(policy_dir: Path, root: Path, episodes: int, seed: int,
                          scenario: str = "interpolate") -> dict | None:
    """The correction loop (evaluation/correction_loop.py) on ``episodes`` placements of ``scenario`` and then on
    ``episodes`` other ones; prints the figures and writes ``root/corrections-<method>-<scenario>/loop.json``."""
    from robot_drivers.factory import make_rig, make_teleop

    from evaluation.correction_loop import correction_loop, prepare_loop_folder

    loop_dir = root / f"corrections-{Path(policy_dir).name}-{scenario}"
    policy, dataset_dir = prepare_loop_folder(policy_dir, loop_dir)
    first, second = seed, seed + 500
    print(f"the policy runs on {episodes} {scenario} placements (seeds {first}-{first + episodes - 1}); at each "
          f"stop the scripted operator takes over from where the arm stands and the correction is added at once; "
          f"then it runs on {episodes} other placements (seeds {second}-{second + episodes - 1}). Corrections are "
          f"recorded into {dataset_dir}, policy versions go to {loop_dir}/")
    size = policy.info.get("camera_sizes", {}).get("hand", [128, 128])[0]
    rig = make_rig("sim", clock="lockstep", image_size=size, rate_hz=policy.info.get("fps", 10.0))
    teleop = make_teleop("scripted", rig, seed=seed)
    with rig:
        report = correction_loop(policy, dataset_dir, loop_dir, rig, teleop, first_seed=first, second_seed=second,
                                 episodes=episodes, scenario=scenario, progress=lambda line: print("  " + line))
    summary = report.summary()
    (loop_dir / "loop.json").write_text(json.dumps(summary, indent=1, default=str))
    before, after, base = summary["before"]["counts"], summary["after"]["counts"], summary["baseline"]["counts"]
    seconds = summary["add_seconds"]
    print(f"\ncorrection loop (version {report.first_version} -> {report.final_version}, {report.final_policy}):")
    print(f"  first set, as the runs went:   {before['success']}/{episodes} success, "
          f"{before['silent_failure']} silent failures")
    print(f"  corrections added: {len(seconds)} of {len(report.corrections)} take-overs kept; seconds each "
          f"addition took: median {np.median(seconds):.1f}, max {max(seconds):.1f}" if seconds else
          f"  corrections added: none ({len(report.corrections)} take-overs)")
    for name, counts in ((f"version {report.final_version}", after), (f"version {report.first_version}", base)):
        print(f"  second set, other placements, {name}: {counts['success']}/{episodes} success, "
              f"{counts['silent_failure']} silent failures, {counts['ood_stop'] + counts['stall_stop']} stopped "
              "and asked")
    return summary
