"""Evaluation on a simulated rig: success, OOD stops, retrieval accuracy and latency per scenario.

Which rig and task it runs on is the rig's business: scenes, the task check and the judgement of when an episode
went wrong all come through the rig's :class:`robot_drivers.scene.SceneControl`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from robot_drivers.rig import Rig

from evaluation.scenes import pick_scenarios, recorded_robot, scene_control_of
from policy.policy import ALTPolicy
from policy.probes import photos, synthetic_probes
from policy.runner import AutonomyResult, run_autonomous
from evaluation.detection import SHADOW_OUTCOMES  # a shadow episode's outcomes (nothing stopped it)
from evaluation.trials import wilson_interval

#: An episode ends early once the task has been achieved for this many consecutive ticks.
SUCCESS_HOLD_TICKS = 5

#: Every evaluated episode has exactly one of these outcomes.
OUTCOMES = ("success", "ood_stop", "stall_stop", "silent_failure", "device_stop")
#: Loop end reasons that are the rig's fault, not the policy's.
DEVICE_REASONS = ("camera_lost", "arm_error", "arm_stopped", "teleop_lost", "estop")


def classify(reason: str, success_after_run: bool, failed_before_stop: bool = False,
             done_before_stop: bool = False) -> str:
    """The episode's one outcome. A success is the task achieved (and held) when the run ended; a stop by
    the gate or the watchdog is a stop if it came before anything went wrong (a stop after the rig's
    ``went_wrong`` said so, e.g. an object knocked over or a grasp closed on air, asked too late: that is a
    silent failure); anything else that is not a success is silent.

    ``done_before_stop``: the task was achieved when the gate or the watchdog stopped the arm, and stayed
    achieved with the arm halted (:func:`settle_after_stop`): the run did the task, then stopped and asked; that is
    a success (counted apart as ``stopped_after_done``), whatever the stop said."""
    if reason in DEVICE_REASONS:
        return "device_stop"
    if reason in ("ood", "stall") and done_before_stop:
        return "success"
    if reason in ("ood", "stall"):
        if failed_before_stop:
            return "silent_failure"
        return "ood_stop" if reason == "ood" else "stall_stop"
    return "success" if success_after_run else "silent_failure"


@dataclass
class EpisodeResult:
    seed: int
    outcome: str  # one of OUTCOMES
    reason: str  # the loop's end reason ("done", "ood", "stall", "max_ticks", ...)
    message: str  # why it stopped, in words (the signal and its value for a stop)
    stop_signal: str | None  # "similarity", "hand_view", "third_view", "stall" or None
    ticks: int
    retrieval_accuracy: float | None  # share of retrievals from the demo at the nearest placement
    first_similarity: float
    min_similarity: float
    min_view_agreement: tuple[float, float] | None  # hand, third
    placement: list[float] | None  # the scene's variation vector (the rig's ``placement``; None: it has none)
    nearest_training_m: float | None  # distance of that vector to the nearest demonstration's scene
    gripper_closed: bool  # whether the gripper had closed when the run ended (a grasp was attempted)
    failed_before_stop: bool  # the rig's ``went_wrong`` when the run ended: a stop then came too late
    min_grasp_alignment: float | None = None  # lowest grasp-check value of the run (None: never checked)
    scene: dict | None = None  # the scene's record (``SceneControl.restore`` puts it back)
    # a shadow run (``eval --shadow``; None otherwise): the outcome with nothing stopping it (SHADOW_OUTCOMES),
    # the tick each signal first fired (absent: never; "gate": the gate's verdict, "any": the gate or the
    # watchdog), each signal's worst value, the thresholds, and the tick the gripper was first closed
    shadow_outcome: str | None = None
    first_alarm: dict | None = None
    signal_extremes: dict | None = None
    thresholds_in_force: dict | None = None
    first_close_tick: int | None = None
    alarm_messages: dict | None = None
    # the gate or the watchdog stopped the arm after the task was done, and it stayed done with the arm halted
    # (a success: ``classify``)
    done_before_stop: bool = False


@dataclass
class ScenarioReport:
    scenario: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    clock: str = "lockstep"
    shadow: bool = False  # shadow runs: every signal logged, none obeyed (outcomes are SHADOW_OUTCOMES)

    def count(self, outcome: str) -> int:
        return sum(e.outcome == outcome for e in self.episodes)

    @property
    def successes(self) -> int:
        return self.count("success")

    @property
    def ood_stops(self) -> int:
        return self.count("ood_stop")

    def summary(self) -> dict:
        n = len(self.episodes)
        acc = [e.retrieval_accuracy for e in self.episodes if e.retrieval_accuracy is not None]
        lat = np.asarray(self.latencies_ms)
        counts = {o: self.count(o) for o in (SHADOW_OUTCOMES if self.shadow else OUTCOMES)}
        by_signal: dict[str, int] = {}
        for e in self.episodes:
            if e.stop_signal and not e.done_before_stop:  # a stop after the task was done is a success
                by_signal[e.stop_signal] = by_signal.get(e.stop_signal, 0) + 1
        return {"scenario": self.scenario, "clock": self.clock, "shadow": self.shadow, "episodes": n, "counts": counts,
                "intervals_95": {o: wilson_interval(k, n) or (0.0, 1.0) for o, k in counts.items()},
                "stops_by_signal": by_signal,
                "stopped_after_done": sum(e.done_before_stop for e in self.episodes),
                "stops_too_late": sum(e.reason in ("ood", "stall") and e.outcome == "silent_failure"
                                      for e in self.episodes),
                "successes": counts["success"], "success_rate": counts["success"] / max(1, n),
                "ood_stops": counts.get("ood_stop", 0), "silent_failures": counts.get("silent_failure", 0),
                "retrieval_accuracy": float(np.mean(acc)) if acc else None,
                "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                "first_similarity_median": float(np.median([e.first_similarity for e in self.episodes]))
                if n else None,
                "thresholds": self.thresholds,
                "results": [asdict(e) for e in self.episodes]}


def _demo_placements(policy: ALTPolicy, control) -> dict[int, np.ndarray]:
    """The placement vector of each demonstration's stored scene (those the rig can read)."""
    scenes = policy.info.get("episode_scenes") or {}
    out = {}
    for e, record in scenes.items():
        vector = control.placement(record) if record else None
        if vector is not None:
            out[int(e)] = np.asarray(vector, dtype=float)
    return out


def evaluate_scenario(policy: ALTPolicy, rig: Rig, scenario: str, episodes: int, seed: int = 0,
                      max_ticks: int = 200, progress: Callable[[EpisodeResult], None] | None = None,
                      shadow: bool = False) -> ScenarioReport:
    """Run ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) and judge each one after it ended
    (``shadow``: as shadow runs, see :func:`run_episode`)."""
    report = ScenarioReport(scenario, thresholds=policy.thresholds(),
                            clock="realtime" if rig.clock.is_realtime else "lockstep", shadow=shadow)
    for i in range(episodes):
        ep, result = run_episode(policy, rig, scenario, seed + i, max_ticks, shadow=shadow)
        report.episodes.append(ep)
        report.latencies_ms.extend(result.latencies_ms().tolist())
        if progress is not None:
            progress(ep)
    return report


def run_episode(policy: ALTPolicy, rig: Rig, scenario: str, seed: int,
                max_ticks: int = 200, shadow: bool = False) -> tuple[EpisodeResult, AutonomyResult]:
    """One episode: a new scene, the policy run until it ends, and the run judged. The rig is left as the run
    left it (an operator can take over from there).

    ``shadow``: a shadow run (simulated rigs only): every signal of the gate and the watchdog is logged with the
    tick it first fired, none stops the arm, and the episode runs until the task is done (and held) or
    ``max_ticks``; its outcome is one of SHADOW_OUTCOMES."""
    control = scene_control_of(rig, "evaluation")
    placements = _demo_placements(policy, control)
    rig.arm.release()  # a scene reset keeps a latched stop (the operator's); a scripted run lifts the last run's
    record = control.reset(seed, scenario)
    here = control.placement(record)
    here = None if here is None else np.asarray(here, dtype=float)
    nearest_demos: set[int] = set()
    nearest = None
    if placements and here is not None:
        d = {e: float(np.linalg.norm(p - here)) for e, p in placements.items() if p.shape == here.shape}
        if d:
            nearest = min(d.values())
            nearest_demos = {e for e, v in d.items() if v <= nearest + 1e-6}
    held = [0]

    def succeeded() -> bool:
        held[0] = held[0] + 1 if control.task_succeeded() else 0
        return held[0] >= SUCCESS_HOLD_TICKS

    if shadow:
        max_ticks = shadow_ticks(policy, max_ticks)
    result = run_autonomous(rig, policy, max_ticks=max_ticks, stop_when=succeeded, shadow=shadow)
    # judged after the run: the arm has stopped (or holds); the task must be achieved now
    done = result.reason == "done" and control.task_succeeded()
    done_before_stop = False
    if shadow:
        wrong, failed = None, False  # nothing stopped it: "too late" does not arise
        outcome = "device_stop" if result.reason in DEVICE_REASONS else "success" if done else "failure"
    else:
        if result.reason in ("ood", "stall"):
            # judged as the operator finds it: the arm halted and the scene settled (the halted hand comes to
            # rest, a knocked object stops rolling)
            done_before_stop = settle_after_stop(rig, control, held[0])
        wrong = control.what_went_wrong()
        failed = wrong is not None
        outcome = classify(result.reason, done, failed, done_before_stop)
    sims = [r.similarity for r in result.retrievals]
    agree = np.array([r.view_agreement for r in result.retrievals]) if result.retrievals else None
    grasp = np.array([r.grasp_alignment for r in result.retrievals])
    acc = None
    if nearest_demos and result.retrievals:
        acc = float(np.mean([r.matches[0].episode in nearest_demos for r in result.retrievals]))
    message = result.message or {"done": control.success_text, "max_ticks":
                                 f"not done after {result.loop.ticks} ticks"}.get(result.reason, result.reason)
    error = getattr(result.loop, "error", None)
    if result.reason in DEVICE_REASONS and error is not None and not result.message:
        message = f"{result.reason}: {error}"  # what the device said, not only that it failed
    if result.reason == "done" and not done:
        # the loop ended on the success check holding, and the check no longer held once the run had ended
        message = (f"the task came undone as the run ended: \"{control.success_text}\" held {SUCCESS_HOLD_TICKS} "
                   "ticks in a row, then no longer")
    if done_before_stop:
        message = (f"the task was done when the arm was stopped (\"{control.success_text}\" held {held[0]} tick(s) "
                   f"before the stop and {SUCCESS_HOLD_TICKS} more with the arm halted): {message}")
    elif result.reason in ("ood", "stall") and failed:
        message = f"stopped only after the episode had gone wrong (the simulator's judgement: {wrong}): {message}"
    ep = EpisodeResult(
        seed, outcome, result.reason, message, result.stop_signal, result.loop.ticks, acc,
        sims[0] if sims else float("nan"), min(sims) if sims else float("nan"),
        None if agree is None or np.isnan(agree).all() else tuple(float(v) for v in np.nanmin(agree, axis=0)),
        None if here is None else [float(v) for v in here], nearest,
        bool(rig.arm.get_state().gripper < 0.9), failed,
        float(np.nanmin(grasp)) if len(grasp) and not np.isnan(grasp).all() else None, record,
        done_before_stop=done_before_stop)
    if shadow:
        log = result.shadow
        ep.shadow_outcome = outcome
        ep.first_alarm = dict(log.first_alarm)
        ep.signal_extremes = dict(log.extremes)
        ep.thresholds_in_force = dict(log.thresholds)
        ep.first_close_tick = log.first_close_tick
        ep.alarm_messages = dict(log.messages)
        named = [(k, v) for k, v in log.first_alarm.items() if k not in ("gate", "any")]
        if named:
            first = min(named, key=lambda kv: kv[1])
            ep.message = f"{ep.message}; first alarm: {first[0]} at tick {first[1]}"
    return ep, result


def settle_after_stop(rig: Rig, control, held_before: int) -> bool:
    """Let ``SUCCESS_HOLD_TICKS`` ticks pass with the arm halted after the gate or the watchdog stopped it (the rig's
    clock runs on; the stop holds the arm, and the fingers where it found them), so that the run is judged on the
    scene an operator taking over finds, not on an instant within a motion (a knocked object still falling, the
    halted hand still swinging). Returns whether the run had done the task: the
    task's success check held on the tick the arm was stopped (``held_before``: the ticks in a row it had held
    by then) and on each settling tick, so that a task held only by the moving arm, or one about to come undone
    (a door swinging back), does not count."""
    done = held_before >= 1 and control.task_succeeded()
    rig.clock.start()  # a fresh tick grid: on a real-time clock each of the ticks below then lasts its period
    for _ in range(SUCCESS_HOLD_TICKS):
        rig.clock.wait_next_tick()
        done = done and control.task_succeeded()
    return done


def shadow_ticks(policy: ALTPolicy, max_ticks: int) -> int:
    """How long a shadow run may go: ``max_ticks``, or less where the policy's own time limit ends an attempt
    sooner (an ordinary run stops there and asks, so nothing after it changes what the gate did): the ticks of
    the time limit, and room for it to fire and for a success to be held."""
    limit, fps = policy.time_limit_seconds(), policy.info.get("fps")
    if not limit or not fps:
        return max_ticks
    return min(max_ticks, int(np.ceil(limit * float(fps))) + SUCCESS_HOLD_TICKS + 1)


def _reference_pose(policy: ALTPolicy) -> np.ndarray | None:
    """A pose to feed with images that come without one (pose policies): the first recorded target."""
    return np.asarray(policy.database.chunks[0, 0, :7]) if policy.config.use_pose else None


def unrelated_image_report(policy: ALTPolicy, live: list[tuple[np.ndarray, np.ndarray]] | None = None,
                           seed: int = 0) -> dict:
    """How often images unrelated to the scene are flagged OOD: fed as both views, and (with ``live``
    frame pairs from the rig) as one view while the other view is live. Per group and way of feeding: the
    count flagged, the highest similarity, and which signal flagged them."""
    size = (policy.config.image_width, policy.config.image_height)
    pose = _reference_pose(policy)
    groups = {"noise and patterns": [(f"synthetic-{i}", im) for i, im in enumerate(synthetic_probes(60, size,
                                                                                                     seed=seed + 99))],
              "photos": photos(size)}
    out = {}
    for group, images in groups.items():
        if not images:
            out[group] = None
            continue
        feeds = {"both views": [(im, im) for _, im in images]}
        if live:
            pairs = [live[i % len(live)] for i in range(len(images))]
            feeds["as hand view, third live"] = [(im, t) for (_, im), (_, t) in zip(images, pairs)]
            feeds["as third view, hand live"] = [(h, im) for (_, im), (h, _) in zip(images, pairs)]
        out[group] = {}
        for feed, obs in feeds.items():
            rs = [policy.retrieve(h, t, pose) for h, t in obs]
            passed = [name for (name, _), r in zip(images, rs) if not r.ood]
            signals: dict[str, int] = {}
            for r in rs:
                if r.ood_signal:
                    signals[r.ood_signal] = signals.get(r.ood_signal, 0) + 1
            out[group][feed] = {"images": len(rs), "flagged_ood": int(sum(r.ood for r in rs)),
                                "max_similarity": float(max(r.similarity for r in rs)),
                                "median_similarity": float(np.median([r.similarity for r in rs])),
                                "by_signal": signals, "not_flagged": passed}
    return out


def live_frames(rig: Rig, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(hand, third) frames of in-distribution scenes straight from the rig's cameras (the rig's first scenario
    when it has no ``in_distribution``)."""
    control = scene_control_of(rig, "live frames")
    scenario = "in_distribution" if "in_distribution" in control.scenarios else control.scenarios[0]
    out = []
    for i in range(count):
        rig.arm.release()
        control.reset(seed + i, scenario)
        if not rig.clock.is_realtime:
            rig.clock.start()  # lock-step cameras render on the clock's ticks: render the new scene now
        obs = rig.observe()
        out.append((obs.frames["hand"].image.copy(), obs.frames["third"].image.copy()))
    return out


def in_distribution_frame_report(policy: ALTPolicy, dataset_root: str | Path, stride: int = 1) -> dict | None:
    """How often recorded in-distribution frames that are NOT in the lookup table are (wrongly) flagged OOD.

    ``dataset_root``: demonstrations recorded apart from the policy's (e.g. a few more scripted demos at the
    training placements with another seed). Refused if any of its episodes is in the table: a frame looked
    up against itself cannot fail.
    """
    from recorder.dataset import Dataset, DatasetError

    try:
        ds = Dataset.open(dataset_root)
    except DatasetError:
        return None
    with ds:
        same = Path(dataset_root).resolve() == Path(policy.info.get("dataset", "")).resolve()
        if same:
            raise ValueError(f"{dataset_root} is the dataset the policy was built from; its frames are in the "
                             "lookup table. Record separate check demonstrations (main.py record --out ...)")
        sims, flagged, signals = [], 0, {}
        for e in ds.episode_indices():
            data = ds.load_episode(e)
            for f in range(0, data.info.length, stride):
                pose = data.states[f, :7] if policy.config.use_pose else None
                r = policy.retrieve(ds.frame(e, "hand", f), ds.frame(e, "third", f), pose)
                sims.append(r.similarity)
                flagged += r.ood
                if r.ood_signal:
                    signals[r.ood_signal] = signals.get(r.ood_signal, 0) + 1
    sims = np.asarray(sims)
    return {"dataset": str(dataset_root), "frames": len(sims), "flagged_ood": int(flagged), "by_signal": signals,
            "min_similarity": float(sims.min()), "median_similarity": float(np.median(sims))}


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as JSON, atomically (a reader never sees half a report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _rig_image_size(policy) -> int:
    """The camera size the policy's demonstrations were recorded at (the eval rig must match them)."""
    from recorder.dataset import Dataset

    sizes = policy.info.get("camera_sizes")
    if not sizes:
        try:
            with Dataset.open(policy.info.get("dataset", "")) as ds:
                sizes = {c.name: [c.width, c.height] for c in ds.spec.cameras}
        except Exception:  # noqa: BLE001 - the dataset moved: fall back to the recorder's default
            return 128
    widths = {tuple(v) for v in sizes.values()}
    if len(widths) != 1 or next(iter(widths))[0] != next(iter(widths))[1]:
        raise ValueError(f"a simulated rig renders square cameras of one size; the policy's demonstrations "
                         f"were recorded at {sizes}")
    return int(next(iter(widths))[0])


def evaluation_robot(policy: ALTPolicy, robot: str | None = None) -> str:
    """The built-in robot to evaluate ``policy`` on: ``robot``, or (None) the rig its demonstrations were recorded
    on (the ``"rig"`` of their stored scenes; "sim" when they stored none). A policy only runs on the rig and
    task it was shown, so a ``robot`` that disagrees with the recorded one is a ValueError naming both."""
    recorded = recorded_robot(policy.info.get("episode_scenes"))
    if robot is None:
        return recorded or "sim"
    if recorded is not None and robot != recorded:
        raise ValueError(f"the policy's demonstrations were recorded on --robot {recorded}, not on --robot {robot}: "
                         f"a policy replays what it was shown on its own rig and task; leave --robot out (or give "
                         f"--robot {recorded}) to evaluate it there")
    return robot


def evaluate_policy(policy_dir: str, scenarios: list[str], episodes: int, seed: int, clock: str = "lockstep",
                    json_path: str | None = None, max_ticks: int = 200, check_data: str | None = None,
                    quiet: bool = False, robot: str | None = None, shadow: bool = False,
                    roc_path: str | None = None) -> dict:
    """Evaluate on a simulated rig: ``robot`` (None: the rig the policy's demonstrations were recorded on, see
    :func:`evaluation_robot`), at the policy's recording rate; ``scenarios`` are names of the rig's scenarios
    (``all``: every one), checked once the rig is made. The payload records the robot, the thresholds used and
    every episode.

    ``shadow``: shadow runs (:func:`run_episode`); the payload then also holds the gate judged as a failure
    detector (``"detector"``: evaluation/detection.py), per scenario and pooled, and its ROC curves are drawn to
    ``roc_path`` (default: beside ``json_path``, else ``runs/shadow-roc.png``)."""
    from recorder.progress import progress_bar

    from robot_drivers.factory import make_rig

    policy = ALTPolicy.load(policy_dir)
    robot = evaluation_robot(policy, robot)
    rig = make_rig(robot, clock=clock, image_size=_rig_image_size(policy), rate_hz=policy.info.get("fps"))
    rows = []
    header = {"policy": str(policy_dir), "robot": robot, "clock": clock, "seed": seed,
              "episodes_per_scenario": episodes, "shadow": shadow}
    try:
        scenarios = pick_scenarios(scene_control_of(rig, "evaluation").scenarios, scenarios)
        with rig:
            for scenario in scenarios:
                with progress_bar(total=episodes, desc=f"eval {scenario} ({clock})", unit="ep",
                                  disable=quiet) as bar:
                    bad = "failure" if shadow else "silent_failure"
                    tally = {"success": 0, bad: 0}

                    def progress(ep):
                        if ep.outcome in tally:
                            tally[ep.outcome] += 1
                        bar.update(1)
                        bar.set_postfix(**{"success": f"{tally['success']}/{bar.n}",
                                           ("failed" if shadow else "silent"): tally[bad]})

                    rows.append(evaluate_scenario(policy, rig, scenario, episodes, seed, max_ticks,
                                                  progress, shadow=shadow).summary())
                if json_path:  # each scenario kept as it finishes: a long evaluation stopped loses only its last
                    write_json(json_path, {**header, "complete": False, "scenarios": rows})
            live = live_frames(rig, 8, seed + 50_000)
    finally:
        rig.close()
    payload = {**header, "gamma": policy.gamma, "thresholds": policy.thresholds(),
               "calibration": None if policy.calibration is None else policy.calibration.__dict__,
               "scenarios": rows, "unrelated_images": unrelated_image_report(policy, live, seed),
               "in_distribution_frames": in_distribution_frame_report(policy, check_data) if check_data else None,
               "complete": True}
    if shadow:
        from evaluation.detection import detector_report, write_roc_png

        payload["detector"] = detector_report({r["scenario"]: r["results"] for r in rows})
        roc = Path(roc_path) if roc_path else (Path(json_path).with_name(Path(json_path).stem + "-roc.png")
                                               if json_path else Path("runs") / "shadow-roc.png")
        roc.parent.mkdir(parents=True, exist_ok=True)
        payload["roc_png"] = str(write_roc_png(payload["detector"], roc))
    if json_path:
        write_json(json_path, payload)
    return payload
