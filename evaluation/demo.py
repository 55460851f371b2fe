"""`demo`: the main job end to end on a simulated rig: record scripted demonstrations, train the ALT policy
(and the aligned method on the same encoder), evaluate both in every scenario of the rig, then the correction
loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from recorder.dataset import Dataset
from recorder.recording import record_scripted

from evaluation.detection import format_pooled_line, format_table
from evaluation.evaluate import evaluate_policy
from evaluation.scenes import ALL, pick_scenario, robot_scenarios
from evaluation.tables import ood_lines, scenario_table, side_by_side
from policy.aligned.alignment import coarse_map_warning
from policy.build import train_policy
from policy.config import PRESETS


#: Shadow episodes per scenario in the demo (fewer than the ordinary evaluation's: a failed one runs to its end).
SHADOW_EPISODES = 10


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, episodes: int = 31, seed: int = 0,
             corrections: bool = False, method: str = "alt", scenario: str = "interpolate",
             robot: str = "sim") -> int:
    """Record, train (both methods on one encoder), evaluate every scenario of the simulated rig ``robot`` and run
    the correction loop, printing as it goes; everything goes to ``out``. ``corrections``: only the correction
    loop (``method`` on ``episodes`` ``scenario`` placements), reusing the recording and the policy already in
    ``out``. Returns the exit status."""
    root = Path(out)
    if corrections:  # named before the recording and the training, not half an hour later
        pick_scenario(robot_scenarios(robot), scenario, "the correction loop")
    dataset_dir, check_dir, policy_dir = root / "dataset", root / "check", root / "policy"
    aligned_dir = root / "policy-aligned"
    report, realtime_report = root / "report.json", root / "report_realtime.json"
    if quick:
        # fewer epochs, frames and episodes, but the full-size images: at 64 px the aligned method locates the
        # object to a pixel of the third view (up to 12 mm) and can tip an object the gate does not see
        demos, camera_size, eval_episodes = 30, 128, 5
        config = PRESETS["cpu"].with_overrides(epochs=3, frame_stride=3)
        expected = "about 8 minutes"
    else:
        demos, camera_size, eval_episodes = 30, 128, episodes
        config = PRESETS["cpu"]
        expected = "about 30 minutes"
    realtime_scenarios = ["in_distribution", "interpolate"]  # those of them the rig has
    if corrections:
        print(f"ALT Studio correction loop on the simulated rig {robot}: record {demos} scripted demonstrations "
              f"and train (both reused when {root} has them), then the loop with the {method} method on "
              f"{eval_episodes} + {eval_episodes} {scenario} placements.\nEverything goes to {root}/")
    else:
        print(f"ALT Studio demo on the simulated rig {robot} ({expected} on 2 CPU cores): record {demos} scripted "
              f"demonstrations, train the ALT policy (and, on the same encoder, the aligned method), evaluate both, "
              f"{eval_episodes} episodes per scenario in lock-step and {', '.join(realtime_scenarios)} in real "
              f"time, shadow runs of both (nothing stopping the arm: the gate judged as a failure detector), then the "
              f"correction loop.\nEverything goes to {root}/")
    t0 = time.perf_counter()
    steps = 3 if corrections else 6
    print(f"\n[1/{steps}] recording {demos} demonstrations (and 8 check demonstrations the policy never sees)")
    if not (record_scripted(dataset_dir, demos, camera_size, seed, robot=robot)
            and record_scripted(check_dir, 8, camera_size, seed + 9001, robot=robot)):
        return 1
    print(f"\n[2/{steps}] training")
    t1 = time.perf_counter()
    if corrections and _trained_on(policy_dir, dataset_dir):
        from policy.policy import ALTPolicy

        policy = ALTPolicy.load(policy_dir)
        print(f"reusing the policy in {policy_dir}: it was trained on these demonstrations")
    else:
        policy = train_policy(str(dataset_dir), str(policy_dir), config, overwrite=True)
    train_min = (time.perf_counter() - t1) / 60
    if corrections:
        print(f"\n[3/{steps}] the correction loop ({method} method, {scenario})")
        looped = policy_dir
        if method == "aligned":
            from policy.aligned.alignment import AlignmentError
            from policy.aligned.build import aligned_from

            try:
                with Dataset.open(dataset_dir) as ds:
                    aligned_from(policy, ds).save(aligned_dir, overwrite=True)
                looped = aligned_dir
            except AlignmentError as exc:  # the recording does not suit it: say so, loop the paper's method
                print(f"{exc}; the correction loop runs the paper's method (alt) instead")
        loop = _correction_loop_step(looped, root, eval_episodes, seed + 3000, scenario, robot)
        print(f"\ntotal    {(time.perf_counter() - t0) / 60:.1f} min")
        return 0 if loop is not None else 1
    cal = policy.calibration
    print(f"trained in {train_min:.1f} min; gamma {policy.gamma:.3f}, view agreement "
          f"{', '.join(f'{k} {v:.3f}' for k, v in cal.view_thresholds.items())} ({cal.method}); held out "
          f"{len(cal.held_out_episodes)} demonstrations for that, then added them to the table")
    from policy.aligned.alignment import AlignmentError
    from policy.aligned.build import aligned_from

    aligned = None
    try:
        with Dataset.open(dataset_dir) as ds:
            aligned = aligned_from(policy, ds)
    except AlignmentError as exc:  # the recording does not suit the aligned method: one line, then alt alone
        print(f"{exc}; only the paper's method (alt) is evaluated")
    if aligned is not None:
        aligned.save(aligned_dir, overwrite=True)
        fit = aligned.locator.report
        print(f"aligned method: the object located in the third-person view, table map from "
              f"{fit['demonstrations']} demonstrations (leave-one-out error "
              f"{1000 * fit['map_error_loo_m']['p50']:.1f} mm median, {1000 * fit['map_error_loo_m']['max']:.1f} mm "
              f"max); largest correction {100 * aligned.locator.max_correction:.1f} cm; gamma {aligned.gamma:.3f}")
        if (coarse := coarse_map_warning(fit)) is not None:
            print(coarse)
    eval_seed = seed + 1000
    print(f"\n[3/{steps}] evaluating every scenario of {robot} x {eval_episodes} episodes in lock-step (seeds "
          f"{eval_seed}-{eval_seed + eval_episodes - 1})")
    payload = evaluate_policy(str(policy_dir), [ALL], eval_episodes, eval_seed, "lockstep", str(report),
                              check_data=str(check_dir), robot=robot)
    aligned_payload = None if aligned is None else evaluate_policy(
        str(aligned_dir), [ALL], eval_episodes, eval_seed, "lockstep", str(root / "report_aligned.json"),
        check_data=str(check_dir), robot=robot)
    evaluated = [row["scenario"] for row in payload["scenarios"]]
    shadow_episodes = min(eval_episodes, SHADOW_EPISODES)
    print(f"\n[4/{steps}] shadow runs: every scenario x {shadow_episodes} episodes with nothing stopping the arm "
          "(seeds as above), to judge the gate as a failure detector")
    shadows = {"alt": _shadow_step(policy_dir, root / "report_shadow.json", shadow_episodes, eval_seed, robot)}
    if aligned is not None:
        shadows["aligned"] = _shadow_step(aligned_dir, root / "report_aligned_shadow.json", shadow_episodes,
                                          eval_seed, robot)
    realtime_scenarios = [s for s in realtime_scenarios if s in evaluated] or evaluated[:1]
    print(f"\n[5/{steps}] evaluating {', '.join(realtime_scenarios)} x {eval_episodes} episodes in real time")
    realtime = evaluate_policy(str(policy_dir), realtime_scenarios, eval_episodes, eval_seed, "realtime",
                               str(realtime_report), robot=robot)
    methods = {"alt": payload["scenarios"] + realtime["scenarios"]}
    if aligned is not None:
        aligned_realtime = evaluate_policy(str(aligned_dir), realtime_scenarios, eval_episodes, eval_seed,
                                           "realtime", str(root / "report_aligned_realtime.json"), robot=robot)
        methods["aligned"] = aligned_payload["scenarios"] + aligned_realtime["scenarios"]
    for name, rows in methods.items():
        silent = sum(r["counts"]["silent_failure"] for r in rows)
        total = sum(r["episodes"] for r in rows)
        print(f"\n{name} method on the simulated rig {robot} ({demos} demonstrations): {silent} silent failures in "
              f"{total} episodes")
        print(scenario_table(rows))
    if aligned is not None:
        print("\nside by side (the same encoder, table and demonstrations; OOD includes stall stops):")
        print(side_by_side(methods))
    print("\n".join(ood_lines(payload)))
    if aligned_payload is not None:
        print("aligned method:\n" + "\n".join(ood_lines(aligned_payload)))
    for name, detector in shadows.items():
        print(f"{name} method, shadow runs: {format_pooled_line(detector, 'gate')}")
    print(f"\n[6/{steps}] the correction loop")
    loop = _correction_loop_step(policy_dir, root, eval_episodes, seed + 3000, robot=robot)
    print(f"\ndataset  {dataset_dir}\npolicies {policy_dir}, {aligned_dir}\nreports  {report}, {realtime_report} "
          f"(and report_aligned*.json)\n"
          f"total    {(time.perf_counter() - t0) / 60:.1f} min (training {train_min:.1f} min)")
    payload["train_minutes"] = train_min
    payload["realtime"] = realtime["scenarios"]
    payload["aligned"] = None if aligned is None else {"lockstep": aligned_payload["scenarios"],
                                                       "realtime": aligned_realtime["scenarios"]}
    payload["correction_loop"] = loop
    payload["shadow"] = shadows
    report.write_text(json.dumps(payload, indent=1))
    return 0


def _shadow_step(policy_dir: Path, report: Path, episodes: int, seed: int, robot: str) -> dict:
    """Shadow runs of one policy in every scenario (evaluation/evaluate.py: nothing stops the arm, every signal is
    logged); prints the gate's detector table and returns its figures (evaluation/detection.py)."""
    payload = evaluate_policy(str(policy_dir), [ALL], episodes, seed, "lockstep", str(report), robot=robot,
                              shadow=True)
    print(format_table(payload["detector"]))
    print(f"ROC curves: {payload['roc_png']}")
    return payload["detector"]


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
                          scenario: str = "interpolate", robot: str = "sim") -> dict | None:
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
    rig = make_rig(robot, clock="lockstep", image_size=size, rate_hz=policy.info.get("fps"))
    teleop = make_teleop("scripted", rig, seed=seed)
    with rig:
        report = correction_loop(policy, dataset_dir, loop_dir, rig, teleop, first_seed=first, second_seed=second,
                                 episodes=episodes, scenario=scenario, progress=lambda line: print("  " + line))
    rig.close()
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
