#!/usr/bin/env python3
"""The Meta-World suite: ALT, the aligned and the landmark methods on several Meta-World tasks, beside a replay
oracle.

Per task (``--robot metaworld:<task>``): record ``--demos`` scripted demonstrations at the rig's training
placements, train the ALT policy once, build the aligned and the landmark methods on the same encoder and table
(when the recording suits them; otherwise the method's row says "not served" and why), then evaluate each method ``--episodes``
episodes per scenario in lock-step, on seeds the recording never used (``--seed`` + 1000 on). Beside them,
per scenario, the nearest-demonstration oracle: the demonstration whose scene variation (the rig's
``placement``) lies nearest the new scene's, replayed open loop, tick by tick, with no encoder and no gate
(benchmarks/replay_ceiling.py does the same on the mug rig). The same seeds, hence the same scenes, for every
method and the oracle.

It prints, per task, method and scenario: successes, OOD stops, stall stops and silent failures with Wilson
95% intervals, and the seconds each stage took; then writes ``summary.json`` and ``summary.md`` under
``--out`` with the date, the git commit, the machine and the command line.

Everything it makes goes under ``--out``::

    <out>/<task>/dataset/                 the demonstrations
    <out>/<task>/policy-alt/              the ALT policy
    <out>/<task>/policy-aligned/          the aligned method on the same encoder (when it is served)
    <out>/<task>/policy-landmarks/        the landmark method on the same encoder (when it is served)
    <out>/<task>/stages/*.json            one file per finished stage (record, train, aligned build, and one
                                          per method x scenario evaluation), written atomically
    <out>/summary.json, <out>/summary.md

A re-run resumes: every stage whose file is there (made with the same settings) is skipped; an evaluation is
resumed scenario by scenario. A stage whose settings changed is done again (the evaluations of a retrained
policy with it); a dataset recorded with other settings is refused (name another ``--out``).

    .venv/bin/python benchmarks/metaworld_suite.py                       # six tasks: hours on 2 CPU cores
    .venv/bin/python benchmarks/metaworld_suite.py --tasks reach-v3 --demos 10 --episodes 5 \\
        --scenarios in_distribution interpolate --out runs/mw-small
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.errors import DeviceError  # noqa: E402
from core.types import Action  # noqa: E402
from evaluation.evaluate import OUTCOMES, SUCCESS_HOLD_TICKS, evaluate_scenario, evaluation_robot  # noqa: E402
from evaluation.scenes import ALL, pick_scenarios  # noqa: E402
from evaluation.trials import wilson_interval  # noqa: E402
from policy.config import PRESETS  # noqa: E402
from recorder.dataset import DATASET_FILE, Dataset  # noqa: E402
from recorder.progress import progress_bar  # noqa: E402

DEFAULT_TASKS = ("pick-place-v3", "reach-v3", "button-press-topdown-v3", "drawer-open-v3", "door-open-v3",
                 "peg-insert-side-v3")
METHODS = ("alt", "aligned", "landmarks", "oracle")
#: The methods built on the ALT policy's encoder and table (each its own build stage).
BUILT_ON_ALT = ("aligned", "landmarks")
#: Bumped when a built method's fitting changes: its stage is built again.
METHOD_VERSIONS = {"landmarks": 18}
#: Evaluation seeds start here above --seed: the recording used --seed + episode index (0..demos-1).
EVAL_SEED_OFFSET = 1000
#: The oracle holds the replayed demonstration's last target this many ticks after it ends (a task judged
#: at rest), as benchmarks/replay_ceiling.py does.
SETTLE_TICKS = 10
#: A policy run may last at least this many ticks, and otherwise as long as its own time limit allows.
MIN_EVAL_TICKS = 200
PRESET = "cpu"


# -- stage files ----------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, payload: dict) -> None:
    """``payload`` as JSON at ``path``, complete or not at all: written beside it, flushed, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    return str(value)


def read_stage(path: Path, fingerprint: dict) -> dict | None:
    """The stage file at ``path`` when it is finished and was made with ``fingerprint``; None otherwise (a
    stage made with other settings is said so, and done again)."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not doc.get("done"):
        return None
    if doc.get("fingerprint") != json.loads(json.dumps(fingerprint, default=_json_default)):
        print(f"  {path.name}: made with other settings; doing it again", flush=True)
        return None
    return doc


def policy_digest(policy_dir: Path) -> str | None:
    """A digest of the policy's files as its manifest lists them (None: no complete policy there)."""
    try:
        files = json.loads((policy_dir / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the run's context ----------------------------------------------------------------------------------------
def git_commit() -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified_files": None if status is None else
            len([line for line in status.splitlines() if line.strip()])}


def machine() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = None
    import torch

    return {"cpu_count": os.cpu_count(), "cpu_model": model or platform.processor() or None,
            "memory_gib": memory_gib, "load_average_at_start": load, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


# -- the stages -----------------------------------------------------------------------------------------------
class Task:
    """One task's folders and stage files."""

    def __init__(self, out: Path, name: str):
        self.name = name
        self.robot = f"metaworld:{name}"
        self.root = out / name
        self.dataset = self.root / "dataset"
        self.stages = self.root / "stages"

    def policy_dir(self, method: str) -> Path:
        return self.root / f"policy-{method}"

    def stage(self, name: str) -> Path:
        return self.stages / f"{name}.json"

    def say(self, text: str) -> None:
        print(f"[{self.name}] {text}", flush=True)


def record_stage(task: Task, args) -> dict:
    from recorder.recording import record_scripted

    fingerprint = {"robot": task.robot, "demos": args.demos, "camera_size": args.camera_size, "seed": args.seed}
    path = task.stage("record")
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("fingerprint") != fingerprint:
            raise SystemExit(f"error: {task.dataset} was recorded with {doc.get('fingerprint')}, not {fingerprint}; "
                             f"give another --out (or delete {task.root})")
        if doc.get("done") and (task.dataset / DATASET_FILE).exists():
            task.say(f"record: skipped, {args.demos} demonstrations recorded earlier ({doc['seconds']:.1f} s then)")
            return {**doc, "this_run": False}
    # a pending file first: a dataset left half-recorded is resumed only with the settings it was begun with
    write_json_atomic(path, {"done": False, "fingerprint": fingerprint})
    task.say(f"record: {args.demos} scripted demonstrations at {args.camera_size} px (seed {args.seed})")
    t0 = time.perf_counter()
    if not record_scripted(task.dataset, args.demos, args.camera_size, args.seed, robot=task.robot):
        raise StageFailed(f"recording {args.demos} demonstrations failed")
    seconds = time.perf_counter() - t0
    with Dataset.open(task.dataset) as ds:
        lengths = [ds.episode(e).length for e in ds.episode_indices()]
        fps = ds.spec.fps
    doc = {"done": True, "fingerprint": fingerprint, "seconds": seconds, "finished_at": now_iso(),
           "episodes": len(lengths), "ticks_median": float(np.median(lengths)), "ticks_max": int(max(lengths)),
           "fps": fps}
    write_json_atomic(path, doc)
    task.say(f"record: done in {seconds:.1f} s ({len(lengths)} demonstrations, {np.median(lengths):.0f} ticks "
             f"median, {max(lengths)} max at {fps:g} Hz)")
    return {**doc, "this_run": True}


def training_overrides(args, extra: dict | None) -> dict:
    overrides = {"seed": args.seed}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.false_stop_rate is not None:
        overrides["run_false_stop_rate"] = args.false_stop_rate
    overrides.update(extra or {})
    return overrides


def train_stage(task: Task, args, record: dict, overrides: dict) -> dict:
    from policy.build import train_policy

    fingerprint = {"record": record["fingerprint"], "preset": PRESET, "overrides": overrides}
    policy_dir = task.policy_dir("alt")
    doc = read_stage(task.stage("train-alt"), fingerprint)
    if doc is not None and policy_digest(policy_dir) == doc.get("policy_digest"):
        task.say(f"train alt: skipped, trained earlier ({doc['seconds']:.1f} s then)")
        return {**doc, "this_run": False}
    config = PRESETS[PRESET].with_overrides(**overrides)
    task.say(f"train alt: {config.epochs} epochs, {config.image_width} px encoder input")
    t0 = time.perf_counter()
    policy = train_policy(str(task.dataset), str(policy_dir), config, overwrite=True)
    seconds = time.perf_counter() - t0
    cal = policy.calibration
    doc = {"done": True, "fingerprint": fingerprint, "seconds": seconds, "finished_at": now_iso(),
           "policy_digest": policy_digest(policy_dir), "gamma": float(policy.gamma),
           "epochs": config.epochs, "held_out_episodes": list(getattr(cal, "held_out_episodes", []) or []),
           "init": policy.info.get("init")}
    write_json_atomic(task.stage("train-alt"), doc)
    task.say(f"train alt: done in {seconds:.1f} s (gamma {policy.gamma:.3f})")
    del policy
    gc.collect()
    return {**doc, "this_run": True}


def _fallback_reason(built, asked: str = "aligned") -> str | None:
    """Why a build asked for ``asked`` gave another method instead (None: it is that method): the reason its
    info records under a "...fallback..." key, or which method it is."""
    method = getattr(getattr(built, "config", None), "method", None)
    if method == asked:
        return None
    for key, value in (getattr(built, "info", None) or {}).items():
        if "fallback" in str(key).lower() and value:
            if isinstance(value, dict):
                value = value.get("reason") or value.get("why") or json.dumps(value, default=str)
            return str(value)
    return f"the {asked} build gave the {method} method"


def _builder(method: str):
    """(build on an ALT policy, the error that says the recording does not suit the method)."""
    if method == "landmarks":
        from policy.landmarks.build import landmarks_from
        from policy.landmarks.model import LandmarkError

        return landmarks_from, LandmarkError
    from policy.aligned.alignment import AlignmentError
    from policy.aligned.build import aligned_from

    return aligned_from, AlignmentError


def aligned_stage(task: Task, args, train: dict, method: str = "aligned") -> dict:
    """``method`` (aligned or landmarks) on the ALT policy's encoder and table; ``served`` False (with the
    reason) when the recording does not suit it. A stage file is written for both answers; an unexpected error
    is reported and not written (the next run tries again)."""
    from policy.policy import ALTPolicy

    build, unsuited = _builder(method)
    fingerprint = {"train": train["fingerprint"], "policy_digest": train["policy_digest"]}
    if method != "aligned":
        fingerprint["method_version"] = METHOD_VERSIONS[method]
    out_dir = task.policy_dir(method)
    doc = read_stage(task.stage(f"build-{method}"), fingerprint)
    if doc is not None and (not doc["served"] or policy_digest(out_dir) == doc.get("policy_digest")):
        what = "built" if doc["served"] else "not served"
        task.say(f"{method}: skipped, {what} earlier ({doc['seconds']:.1f} s then)")
        return {**doc, "this_run": False}
    task.say(f"{method}: building on the ALT policy's encoder and table")
    t0 = time.perf_counter()
    reason = None
    try:
        policy = ALTPolicy.load(task.policy_dir("alt"))
        with Dataset.open(task.dataset) as ds:
            built = build(policy, ds)
        reason = _fallback_reason(built, method)
        if reason is None:
            built.save(out_dir, overwrite=True)
        del policy, built
    except unsuited as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one method's build must not end a suite of hours
        traceback.print_exc()
        seconds = time.perf_counter() - t0
        task.say(f"{method}: build failed ({type(exc).__name__}: {exc}); the next run tries again")
        return {"done": False, "served": False, "reason": f"build failed: {type(exc).__name__}: {exc}",
                "error": True, "seconds": seconds, "this_run": True}
    gc.collect()
    seconds = time.perf_counter() - t0
    doc = {"done": True, "fingerprint": fingerprint, "seconds": seconds, "finished_at": now_iso(),
           "served": reason is None, "reason": reason,
           "policy_digest": policy_digest(out_dir) if reason is None else None}
    write_json_atomic(task.stage(f"build-{method}"), doc)
    task.say(f"{method}: built in {seconds:.1f} s" if reason is None else
             f"{method}: not served ({seconds:.1f} s): {reason}")
    return {**doc, "this_run": True}


def eval_ticks(policy, floor: int = MIN_EVAL_TICKS) -> int:
    """The tick limit of a run: at least ``floor``, and room for the policy's own time limit to decide."""
    limit = policy.time_limit_seconds()
    fps = policy.info.get("fps")
    if not limit or not fps:
        return floor
    return max(floor, int(np.ceil(limit * float(fps))) + 2 * SUCCESS_HOLD_TICKS)


def finished_evals(task: "Task", stage: str, label: str, scenarios: list[str],
                   fingerprint: dict) -> tuple[dict, list]:
    """The scenarios whose evaluation is on disk with this fingerprint (their rows, said as skipped) and the
    others with their fingerprints, to run."""
    rows, todo = {}, []
    for scenario in scenarios:
        fp = {**fingerprint, "scenario": scenario}
        doc = read_stage(task.stage(f"{stage}-{scenario}"), fp)
        if doc is not None:
            task.say(f"{label} / {scenario}: skipped, done earlier ({_counts_line(doc['row'])})")
            rows[scenario] = {**doc["row"], "this_run": False}
        else:
            todo.append((scenario, fp))
    return rows, todo


def row_of(task: str, method: str, scenario: str, counts: dict, seconds: float) -> dict:
    n = sum(counts.values())
    return {"task": task, "method": method, "scenario": scenario, "served": True, "episodes": n,
            "counts": {o: int(counts.get(o, 0)) for o in OUTCOMES},
            "intervals_95": {o: wilson_interval(int(counts.get(o, 0)), n) for o in OUTCOMES},
            "seconds": seconds}


def shadow_row_of(task: str, method: str, scenario: str, detail: dict, seconds: float) -> dict:
    """A shadow evaluation's row: its outcomes (success, failure, device stop) and every episode's record."""
    n = detail["episodes"]
    return {"task": task, "method": method, "scenario": scenario, "served": True, "shadow": True, "episodes": n,
            "counts": dict(detail["counts"]), "results": detail["results"], "seconds": seconds}


def failed_row(task: Task, method: str, scenario: str, exc: Exception, seconds: float) -> dict:
    """The row of an evaluation that could not be done (e.g. a scenario the task has no scene for)."""
    traceback.print_exc()
    reason = f"{type(exc).__name__}: {exc}"
    task.say(f"{method} / {scenario}: failed ({reason}); the next run tries again")
    return {"task": task.name, "method": method, "scenario": scenario, "served": False, "error": True,
            "reason": f"failed: {reason}", "seconds": seconds, "this_run": True}


def eval_method_stage(task: Task, args, method: str, scenarios: list[str], policy_fp: dict,
                      shadow: bool = False) -> list[dict]:
    """``method``'s policy on each scenario: one stage file per scenario; the policy and the rig are made once,
    and only when some scenario is left to do. ``shadow``: shadow runs (nothing stops the arm, every signal
    logged; stage files ``shadow-<method>-<scenario>``), whose rows keep every episode for the detector figures."""
    stage = f"{'shadow' if shadow else 'eval'}-{method}"
    from policy.policy import ALTPolicy
    from robot_drivers.factory import make_rig

    policy_dir = task.policy_dir(method)
    eval_seed = args.seed + EVAL_SEED_OFFSET
    rows, todo = finished_evals(task, stage, stage.replace("-", " "), scenarios,
                                {**policy_fp, "episodes": args.episodes, "seed": eval_seed})
    if todo:
        policy = ALTPolicy.load(policy_dir)
        robot = evaluation_robot(policy, task.robot)
        size = (policy.info.get("camera_sizes") or {}).get("hand", [args.camera_size])[0]
        max_ticks = eval_ticks(policy)
        rig = make_rig(robot, clock="lockstep", image_size=int(size), rate_hz=policy.info.get("fps"))
        try:
            with rig:
                for scenario, fingerprint in todo:
                    task.say(f"{stage.replace('-', ' ')} / {scenario}: {args.episodes} episodes (seeds {eval_seed}-"
                             f"{eval_seed + args.episodes - 1}, at most {max_ticks} ticks each)")
                    t0 = time.perf_counter()
                    try:
                        with progress_bar(total=args.episodes, desc=f"  {task.name} {method} {scenario}",
                                          unit="ep") as bar:
                            report = evaluate_scenario(policy, rig, scenario, args.episodes, eval_seed, max_ticks,
                                                       progress=lambda ep: bar.update(1), shadow=shadow)
                    except (ValueError, RuntimeError) as exc:  # this scenario only; the next run tries again
                        rows[scenario] = failed_row(task, method, scenario, exc, time.perf_counter() - t0)
                        continue
                    seconds = time.perf_counter() - t0
                    detail = report.summary()
                    row = shadow_row_of(task.name, method, scenario, detail, seconds) if shadow else \
                        row_of(task.name, method, scenario, detail["counts"], seconds)
                    write_json_atomic(task.stage(f"{stage}-{scenario}"),
                                      {"done": True, "fingerprint": fingerprint, "finished_at": now_iso(),
                                       "max_ticks": max_ticks, "row": row, "detail": detail})
                    rows[scenario] = {**row, "this_run": True}
                    task.say(f"{stage.replace('-', ' ')} / {scenario}: {_counts_line(row)} in {seconds:.1f} s")
        finally:
            rig.close()
            del policy
            gc.collect()
    return [rows[s] for s in scenarios]


# -- the oracle -----------------------------------------------------------------------------------------------
def demonstrations(dataset_dir: Path, control) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each demonstration with a readable scene: (its placement vector, its actions [T, 8])."""
    out = {}
    with Dataset.open(dataset_dir) as ds:
        for e in ds.episode_indices():
            record = (ds.episode(e).extra or {}).get("scene")
            vector = control.placement(record) if record else None
            if vector is not None:
                out[int(e)] = (np.asarray(vector, np.float64), np.asarray(ds.load_episode(e).actions, np.float64))
    return out


def replay_episode(rig, control, demos: dict, scenario: str, seed: int) -> dict:
    """One oracle episode: the scene of ``seed``, the demonstration nearest it replayed open loop."""
    rig.arm.release()
    record = control.reset(seed, scenario)
    here = np.asarray(control.placement(record), np.float64)
    distance = {e: float(np.linalg.norm(p - here)) for e, (p, _) in demos.items() if p.shape == here.shape}
    if not distance:
        raise ValueError("no demonstration has a scene comparable with this one")
    nearest = min(distance, key=distance.get)
    actions = demos[nearest][1]
    rig.clock.start()
    held = ticks = 0
    outcome = "silent_failure"
    try:
        for action in list(actions) + [actions[-1]] * SETTLE_TICKS:
            rig.arm.send_action(Action.from_array(action))
            rig.clock.wait_next_tick()
            ticks += 1
            held = held + 1 if control.task_succeeded() else 0
            if held >= SUCCESS_HOLD_TICKS:
                outcome = "success"
                break
    except DeviceError as exc:
        outcome = f"device_stop: {exc}"
    return {"seed": seed, "outcome": outcome.split(":")[0], "message": outcome, "nearest_episode": nearest,
            "distance_m": distance[nearest], "ticks": ticks, "placement": here.tolist()}


def oracle_stage(task: Task, args, record: dict, scenarios: list[str]) -> list[dict]:
    from robot_drivers.factory import make_rig

    eval_seed = args.seed + EVAL_SEED_OFFSET
    rows, todo = finished_evals(task, "eval-oracle", "oracle", scenarios,
                                {"record": record["fingerprint"], "episodes": args.episodes, "seed": eval_seed,
                                 "settle_ticks": SETTLE_TICKS})
    if todo:
        # no camera: the oracle looks at the scene record, not at images (its rig renders nothing)
        rig = make_rig(task.robot, clock="lockstep", image_size=32, rate_hz=record.get("fps"))
        rig.cameras.clear()
        try:
            with rig:
                control = rig.scene_control()
                demos = demonstrations(task.dataset, control)
                for scenario, fingerprint in todo:
                    task.say(f"oracle / {scenario}: {args.episodes} episodes, the nearest of {len(demos)} "
                             "demonstrations replayed open loop")
                    t0 = time.perf_counter()
                    results = []
                    try:
                        with progress_bar(total=args.episodes, desc=f"  {task.name} oracle {scenario}",
                                          unit="ep") as bar:
                            for i in range(args.episodes):
                                results.append(replay_episode(rig, control, demos, scenario, eval_seed + i))
                                bar.update(1)
                    except (ValueError, RuntimeError) as exc:  # this scenario only; the next run tries again
                        rows[scenario] = failed_row(task, "oracle", scenario, exc, time.perf_counter() - t0)
                        continue
                    seconds = time.perf_counter() - t0
                    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
                    row = row_of(task.name, "oracle", scenario, counts, seconds)
                    write_json_atomic(task.stage(f"eval-oracle-{scenario}"),
                                      {"done": True, "fingerprint": fingerprint, "finished_at": now_iso(),
                                       "row": row, "results": results})
                    rows[scenario] = {**row, "this_run": True}
                    task.say(f"oracle / {scenario}: {_counts_line(row)} in {seconds:.1f} s")
        finally:
            rig.close()
    return [rows[s] for s in scenarios]


class StageFailed(RuntimeError):
    """A task's stage could not be done (the suite goes on with the next task)."""


# -- one task -------------------------------------------------------------------------------------------------
def run_task(task: Task, args, scenarios: list[str], overrides: dict) -> dict:
    """Every stage of one task; returns its rows and timings."""
    methods = args.methods
    timings: dict = {}
    info: dict = {}
    rows: list[dict] = []
    record = record_stage(task, args)
    info["demonstrations"] = {k: record.get(k) for k in ("episodes", "ticks_median", "ticks_max", "fps")}
    timings["record_s"] = record["seconds"]
    if any(m in methods for m in ("alt", *BUILT_ON_ALT)):
        train = train_stage(task, args, record, overrides)
        timings["train_alt_s"] = train["seconds"]
        info["policy"] = {k: train.get(k) for k in ("init", "epochs", "gamma")}
        policy_fps = {"alt": {"train": train["fingerprint"], "policy_digest": train["policy_digest"]}}
        for method in BUILT_ON_ALT:
            if method not in methods:
                continue
            built = aligned_stage(task, args, train, method)
            timings[f"build_{method}_s"] = built["seconds"]
            if built["served"]:
                policy_fps[method] = {"build": built["fingerprint"], "policy_digest": built["policy_digest"]}
            else:
                rows.append({"task": task.name, "method": method, "scenario": None, "served": False,
                             "reason": built["reason"], "error": bool(built.get("error"))})
        for method in ("alt", *BUILT_ON_ALT):
            if method in methods and method in policy_fps:
                method_rows = eval_method_stage(task, args, method, scenarios, policy_fps[method])
                timings[f"eval_{method}_s"] = sum(r.get("seconds", 0.0) for r in method_rows)
                rows += method_rows
        if getattr(args, "shadow", False):
            from evaluation.detection import detector_report

            info["detectors"] = {}
            for method in ("alt", *BUILT_ON_ALT):
                if method in methods and method in policy_fps:
                    shadow_rows = eval_method_stage(task, args, method, scenarios, policy_fps[method], shadow=True)
                    timings[f"shadow_{method}_s"] = sum(r.get("seconds", 0.0) for r in shadow_rows)
                    done = {r["scenario"]: r["results"] for r in shadow_rows if r.get("served") and "results" in r}
                    if done:
                        info["detectors"][method] = detector_report(done)
    if "oracle" in methods:
        oracle_rows = oracle_stage(task, args, record, scenarios)
        timings["eval_oracle_s"] = sum(r.get("seconds", 0.0) for r in oracle_rows)
        rows += oracle_rows
    order = {m: i for i, m in enumerate(METHODS)}
    rank = {s: i for i, s in enumerate(scenarios)}
    rows.sort(key=lambda r: (-1 if r["scenario"] is None else rank[r["scenario"]], order[r["method"]]))
    return {"task": task.name, "rows": rows, "timings": timings, **info}


# -- tables ---------------------------------------------------------------------------------------------------
def _ci(interval) -> str:
    return "" if not interval else f"[{100 * interval[0]:.0f}%, {100 * interval[1]:.0f}%]"


def _counts_line(row: dict) -> str:
    c, n = row["counts"], row["episodes"]
    if row.get("shadow"):
        return f"shadow runs: success {c['success']}/{n}, failed {c['failure']}, device stops {c['device_stop']}"
    after = sum(bool(e.get("done_before_stop")) for e in row.get("results") or [])
    line = (f"success {c['success']}/{n}" + (f" ({after} stopped after the task was done)" if after else "")
            + f", OOD stops {c['ood_stop']}, stall stops {c['stall_stop']}, silent failures {c['silent_failure']}")
    return line + (f", device stops {c['device_stop']}" if c.get("device_stop") else "")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | method | scenario | success k/n [95% CI] | OOD stops | stall stops | "
             "silent failures [95% CI] | device stops |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("served", True):
            what = r["reason"] if r.get("error") else f"not served: {r['reason']}"
            lines.append(f"| {r['task']} | {r['method']} | {r['scenario'] or 'all'} | {what} | | | | |")
            continue
        c, n, ci = r["counts"], r["episodes"], r["intervals_95"]
        method = "oracle (nearest demo, open loop)" if r["method"] == "oracle" else r["method"]
        lines.append(f"| {r['task']} | {method} | {r['scenario']} | {c['success']}/{n} {_ci(ci['success'])} | "
                     f"{c['ood_stop']} | {c['stall_stop']} | {c['silent_failure']}/{n} "
                     f"{_ci(ci['silent_failure'])} | {c['device_stop']} |")
    return "\n".join(lines)


TIMING_COLUMNS = (("record_s", "record"), ("train_alt_s", "train alt"), ("build_aligned_s", "build aligned"),
                  ("build_landmarks_s", "build landmarks"), ("eval_alt_s", "eval alt"),
                  ("eval_aligned_s", "eval aligned"), ("eval_landmarks_s", "eval landmarks"),
                  ("eval_oracle_s", "oracle"), ("shadow_alt_s", "shadow alt"), ("shadow_aligned_s", "shadow aligned"),
                  ("shadow_landmarks_s", "shadow landmarks"))


def timings_table(tasks: list[dict]) -> str:
    lines = ["| task | " + " | ".join(label for _, label in TIMING_COLUMNS) + " |",
             "|---|" + "---|" * len(TIMING_COLUMNS)]
    for t in tasks:
        cells = [f"{t['timings'][k]:.1f}" if k in t["timings"] else "-" for k, _ in TIMING_COLUMNS]
        lines.append(f"| {t['task']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _task_line(t: dict) -> str:
    d, p = t.get("demonstrations") or {}, t.get("policy") or {}
    line = f"- {t['task']}: {d.get('episodes')} demonstrations, {d.get('ticks_median')} ticks median " \
           f"({d.get('ticks_max')} max) at {d.get('fps')} Hz"
    if p:
        gamma = float(p.get("gamma") or "nan")
        line += f"; ALT policy: {p.get('epochs')} epochs, backbone init {p.get('init')}, gamma {gamma:.3f}"
    return line


def detector_section(tasks: list[dict]) -> list[str]:
    """The gate judged as a failure detector on each task's shadow runs (``--shadow``): per task and method, the
    detector table of evaluation/detection.py and its pooled lines."""
    from evaluation.detection import format_pooled_line, format_table

    text = []
    for t in tasks:
        for method, report in (t.get("detectors") or {}).items():
            text += ["", f"### {t['task']}, {method}: shadow runs", "", format_table(report), "",
                     f"- {format_pooled_line(report, 'gate')}", f"- {format_pooled_line(report, 'any')}"]
    return (["", "## The gate as a failure detector (shadow runs: nothing stopped the arm)"] + text) if text else []


def write_summary(out: Path, context: dict, tasks: list[dict], failed: dict) -> dict:
    rows = [r for t in tasks for r in t["rows"]]
    summary = {**context, "finished_at": now_iso(), "tasks": tasks, "rows": rows, "failed_tasks": failed}
    write_json_atomic(out / "summary.json", summary)
    m = context["machine"]
    git = context["git"]
    settings = context["settings"]
    text = [f"# Meta-World suite ({context['started_at']})", "",
            f"- command: `{context['command']}`",
            f"- git commit: {git['commit']}" + (f" ({git['modified_files']} tracked files modified)"
                                                 if git.get("modified_files") else ""),
            f"- machine: {m['cpu_count']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB; load average at start "
            f"{m['load_average_at_start']}; torch {m['torch']} ({m['torch_threads']} threads)",
            f"- settings: {settings['demos']} demonstrations per task at {settings['camera_size']} px, "
            f"{settings['episodes']} episodes per scenario, evaluation seeds {settings['eval_seeds']}, "
            f"training overrides {settings['training_overrides']} on the {PRESET} preset",
            "- oracle: the demonstration whose scene variation lies nearest the new scene's, replayed open loop "
            "(no encoder, no gate): a reference, not a method", "",
            *(_task_line(t) for t in tasks), "",
            markdown_table(rows), "", "Seconds per stage (as long as the run that did the stage took):", "",
            timings_table(tasks), *detector_section(tasks)]
    for name, why in failed.items():
        text.append(f"\n{name}: not finished: {why}")
    (out / "summary.md.tmp").write_text("\n".join(text) + "\n")
    os.replace(out / "summary.md.tmp", out / "summary.md")
    return summary


# -- main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), metavar="TASK",
                        help=f"Meta-World task names (default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--out", type=Path, default=Path("runs/metaworld-suite"),
                        help="everything goes here; a re-run resumes from what is there (default %(default)s)")
    parser.add_argument("--demos", type=int, default=30, help="scripted demonstrations per task (default 30)")
    parser.add_argument("--episodes", type=int, default=31, help="episodes per scenario and method (default 31)")
    parser.add_argument("--scenarios", nargs="+", default=[ALL], metavar="SCENARIO",
                        help="the rig's scenarios to evaluate (default: all of them)")
    parser.add_argument("--seed", type=int, default=0, help="recording and training seed; evaluation uses "
                        f"seeds from --seed + {EVAL_SEED_OFFSET} (default 0)")
    parser.add_argument("--camera-size", type=int, default=128, help="camera images (px, square; default 128)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--false-stop-rate", type=float, default=None, metavar="ALPHA",
                        help="train the gate for this false-stop rate per run (main.py train --false-stop-rate; "
                             "default: the per-frame rule); name another --out to keep both")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="what to evaluate (default: alt aligned oracle)")
    parser.add_argument("--shadow", action="store_true",
                        help="also shadow runs of each method (the same seeds; nothing stops the arm, every signal "
                             "is logged): the gate judged as a failure detector per task (evaluation/detection.py)")
    args = parser.parse_args(argv)
    for name in ("demos", "episodes", "camera_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.false_stop_rate is not None and not 0 < args.false_stop_rate < 1:
        parser.error("--false-stop-rate must lie between 0 and 1, e.g. 0.05")
    return args


def main(argv: list[str] | None = None, training_extra: dict | None = None) -> int:
    """Run the suite; ``training_extra``: more training settings over the preset (the tests' smaller encoder
    input). Returns the exit status: 0; 1 when a task, the aligned build or an evaluation could not be done (the
    others are done and summarised all the same); 2 for a task or scenario name that does not exist."""
    from robot_drivers.metaworld.env import check_task
    from robot_drivers.metaworld.scene_control import SCENARIOS, TRAINING_PLACEMENTS

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        tasks = [check_task(name) for name in dict.fromkeys(args.tasks)]
        scenarios = pick_scenarios(SCENARIOS, args.scenarios)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.methods = [m for m in METHODS if m in args.methods]
    overrides = training_overrides(args, training_extra)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    eval_seed = args.seed + EVAL_SEED_OFFSET
    context = {"started_at": now_iso(), "command": shlex.join([sys.executable, str(Path(__file__).resolve())]
                                                              + argv),
               "git": git_commit(), "machine": machine(),
               "settings": {"tasks": tasks, "methods": args.methods, "scenarios": scenarios, "demos": args.demos,
                            "episodes": args.episodes, "seed": args.seed, "camera_size": args.camera_size,
                            "shadow": args.shadow,
                            "eval_seeds": f"{eval_seed}-{eval_seed + args.episodes - 1}", "preset": PRESET,
                            "training_overrides": overrides}}
    print(f"Meta-World suite: {len(tasks)} task(s) ({', '.join(tasks)}), methods {', '.join(args.methods)}, "
          f"scenarios {', '.join(scenarios)}; {args.demos} demonstrations, {args.episodes} episodes per scenario "
          f"(seeds {context['settings']['eval_seeds']}). Everything goes to {out}/", flush=True)
    if args.demos < TRAINING_PLACEMENTS and {"in_distribution", "lighting"} & set(scenarios):
        print(f"note: {args.demos} demonstrations cover {args.demos} of the rig's {TRAINING_PLACEMENTS} training "
              "placements; in_distribution and lighting scenes are drawn near any of them", flush=True)
    t0 = time.perf_counter()
    done: list[dict] = []
    failed: dict[str, str] = {}
    for name in tasks:
        task = Task(out, name)
        started = time.perf_counter()
        try:
            done.append(run_task(task, args, scenarios, overrides))
        except (StageFailed, RuntimeError, ValueError, OSError) as exc:
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
            task.say(f"not finished: {failed[name]}")
        else:
            task.say(f"finished in {time.perf_counter() - started:.1f} s this run")
        write_summary(out, context, done, failed)  # after every task: a stopped suite still has its table
    summary = write_summary(out, context, done, failed)
    print("\n" + markdown_table(summary["rows"]))
    print("\nSeconds per stage (as long as the run that did the stage took):\n" + timings_table(done))
    print(f"\nsummary: {out / 'summary.md'}, {out / 'summary.json'} ({time.perf_counter() - t0:.1f} s this run)")
    errors = [r for r in summary["rows"] if r.get("error")]
    for r in errors:
        print(f"not finished: {r['task']} {r['method']} {r['scenario'] or ''}: {r['reason']}", file=sys.stderr)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
