"""Stop, show me, carry on: the correction loop of ``main.py demo --corrections`` on a simulated rig.

The policy runs on a first set of held-out placements. At each OOD stop or stall stop that came before the
episode went wrong (the rig's ``went_wrong``: the scene still as the task needs it), the scripted operator takes
over from where the arm stands and finishes the task; the segment is recorded as an episode tagged as an
intervention, and kept only if the task was done. Each kept
correction is added to the policy at once (embedded with the current encoder, no retraining, a new version
folder) and the next run uses it. Then the final version runs on a second, *other* set of placements.

A run that went wrong before anything stopped it (an object knocked over, a grasp closed on air: a silent
failure) cannot be corrected from where it stands: it is counted, and no correction is recorded.

The second set is also run with the policy as it was before any correction (the *baseline*), so the
corrections' effect is measured on the same placements.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from recorder.dataset import Dataset
from recorder.session import RecorderConfig, RecordingSession, scene_extra

from evaluation.evaluate import EpisodeResult, ScenarioReport, run_episode
from evaluation.scenes import scene_control_of
from policy.policy import ALTPolicy
from policy.versions import INTERVENTION_KEY, extend_policy, policy_version

#: Outcomes the operator can take over from: the arm stopped before the episode went wrong.
CORRECTABLE = ("ood_stop", "stall_stop")


@dataclass
class Correction:
    seed: int  # the placement's
    halt: str  # the run's outcome that asked for it
    episode: int | None  # the recorded episode (None: not kept)
    kept: bool
    added_seconds: float | None  # how long adding it to the policy took (embed, index, save)
    version: int | None  # the policy version it made
    took_over_at: list[float] = field(default_factory=list)  # the hand's xyz (m) where the operator took over


@dataclass
class LoopReport:
    scenario: str
    before: ScenarioReport  # the first set, as the runs went (corrections joining along the way)
    after: ScenarioReport  # the second set, with the final version
    baseline: ScenarioReport  # the second set, with the policy before any correction
    corrections: list[Correction] = field(default_factory=list)
    first_version: int = 1
    final_version: int = 1
    final_policy: str = ""

    @property
    def added(self) -> list[Correction]:
        return [c for c in self.corrections if c.added_seconds is not None]

    def summary(self) -> dict:
        seconds = [c.added_seconds for c in self.added]
        return {"scenario": self.scenario, "before": self.before.summary(), "after": self.after.summary(),
                "baseline": self.baseline.summary(),
                "corrections": [asdict(c) for c in self.corrections], "corrections_added": len(seconds),
                "add_seconds_median": float(np.median(seconds)) if seconds else None,
                "add_seconds": seconds, "first_version": self.first_version, "final_version": self.final_version,
                "final_policy": self.final_policy}


def prepare_loop_folder(policy_dir: str | Path, out_dir: str | Path) -> tuple[ALTPolicy, Path]:
    """The loop works on a copy of the policy's dataset in ``out_dir`` (the corrections are recorded there, so
    the demonstrations the policy was trained from stay as they were): the policy, pointed at that copy."""
    policy = ALTPolicy.load(policy_dir)
    source = Path(policy.info.get("dataset", ""))
    if not (source / "dataset.json").exists():
        raise FileNotFoundError(f"the policy's dataset {source} is not there; the correction loop records into a "
                                "copy of it")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy = out / "dataset"
    shutil.copytree(source, copy, copy_function=_link_or_copy)
    policy.info["dataset"] = str(copy.resolve())
    policy.info["path"] = str(Path(policy_dir).resolve())
    return policy, copy


def _link_or_copy(src: str, dst: str) -> None:
    """Recorded files are never rewritten in place, so a hard link is a safe, free copy."""
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def correction_loop(policy: ALTPolicy, dataset_dir: Path, out_dir: Path, rig, teleop, *, first_seed: int,
                    second_seed: int, episodes: int, scenario: str = "interpolate", max_ticks: int = 200,
                    progress: Callable[[str], None] | None = None) -> LoopReport:
    """Run the loop (module docstring); policy versions go to ``out_dir/v<N>``."""
    say = progress or (lambda _: None)
    start = policy
    report = LoopReport(scenario, ScenarioReport(scenario, thresholds=policy.thresholds()),
                        ScenarioReport(scenario), ScenarioReport(scenario, thresholds=policy.thresholds()),
                        first_version=policy_version(policy))
    with Dataset.open(dataset_dir, writable=True) as dataset:
        session = RecordingSession(rig, dataset, teleop, RecorderConfig())
        for i in range(episodes):
            seed = first_seed + i
            ep, result = run_episode(policy, rig, scenario, seed, max_ticks)
            report.before.episodes.append(ep)
            line = f"first set {i + 1}/{episodes} seed {seed}: {ep.outcome}"
            if ep.outcome in CORRECTABLE:
                correction = _take_over(session, rig, teleop, policy, ep)
                report.corrections.append(correction)
                line += f"; operator took over, correction {'kept' if correction.kept else 'not done: discarded'}"
                if correction.kept:
                    t0 = time.perf_counter()
                    policy, _ = extend_policy(policy, dataset, [correction.episode])
                    folder = out_dir / f"v{policy_version(policy)}"
                    policy.save(folder, overwrite=True)
                    policy.info["path"] = str(folder.resolve())
                    correction.added_seconds = time.perf_counter() - t0
                    correction.version = policy_version(policy)
                    line += f", added in {correction.added_seconds:.1f} s (version {correction.version})"
            say(line)
    report.final_version, report.final_policy = policy_version(policy), str(policy.info.get("path", ""))
    report.after.thresholds = policy.thresholds()
    for i in range(episodes):
        ep, _ = run_episode(policy, rig, scenario, second_seed + i, max_ticks)
        report.after.episodes.append(ep)
        base, _ = run_episode(start, rig, scenario, second_seed + i, max_ticks)
        report.baseline.episodes.append(base)
        say(f"second set {i + 1}/{episodes} seed {second_seed + i}: {ep.outcome}; version {report.first_version} "
            f"(before the corrections): {base.outcome}")
    return report


def _take_over(session: RecordingSession, rig, teleop, policy: ALTPolicy, ep: EpisodeResult) -> Correction:
    """The scripted operator finishes the task from where the arm stands; kept if it did."""
    where = [float(v) for v in rig.arm.get_state().ee_pose.position]
    rig.arm.release()  # the operator releases the halt to take over
    teleop.reset(ep.seed * 7919 + 1)  # plans from the scene as it stands; starts from the arm's
    extra = scene_extra(rig)
    extra[INTERVENTION_KEY] = {"policy": str(policy.info.get("path", "")), "version": policy_version(policy),
                               "run": f"seed {ep.seed}", "halt_reason": ep.reason}
    outcome = session.record_episode(note=f"correction of the {ep.outcome} at seed {ep.seed}", extra=extra,
                                     accept=scene_control_of(rig, "the correction loop").task_succeeded)
    kept = outcome.kept is not None
    return Correction(ep.seed, ep.outcome, outcome.kept.index if kept else None, kept, None, None, where)
