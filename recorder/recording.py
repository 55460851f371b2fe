"""Recording demonstrations into a dataset on the command line: the `record` verb's loop, and the scripted
recordings of `demo` and the benchmarks (one implementation for all of them)."""

from __future__ import annotations

import sys
from pathlib import Path

from robot_drivers.factory import make_rig, make_teleop

from recorder.dataset import DATASET_FILE, Dataset
from recorder.outputs import DATASET, check_output
from recorder.progress import progress_bar
from recorder.session import RecorderConfig, RecordingSession, scene_extra, spec_for_rig

#: A scripted operator that fails a training placement this many times goes on with the next placement.
SCRIPTED_TRIES = 3


def record_episodes(out: str, *, robot: str = "sim", teleop: str = "scripted", episodes: int = 30, seed: int = 0,
                    task: str | None = None, rate: float | None = None, camera_size: int = 128,
                    clock: str = "lockstep", codec: str = "jpeg") -> int:
    """Record until ``episodes`` more episodes are kept in the dataset at ``out`` (created, or appended to), with
    a progress bar and one line per problem on stderr. ``teleop`` "scripted": the simulated rig's scripted
    operator at the rig's training placements (episode i at placement i, round and round), kept when the rig's
    task check says it succeeded; otherwise the operator starts and stops each episode on the device. ``task``
    None: the rig's own task name (``recorder.session.default_task``); ``rate`` None: the rig's own rate.
    Returns the exit status: 0, 1 (gave up after too many failed attempts) or 2 (an episode could not be kept,
    or a camera was lost)."""
    # Before the rig is made or connected: a policy, an export, a folder of other files, ".", "" or the project
    # folder is refused here, naming it (an existing dataset is appended to).
    folder = check_output(out, DATASET, append=True)
    if (folder / DATASET_FILE).exists():
        Dataset.open(folder).close()  # a malformed header is named now, not after the rig has connected
    rig = make_rig(robot, clock=clock, image_size=camera_size, rate_hz=rate)
    device = make_teleop(teleop, rig, seed=seed)
    scripted = teleop == "scripted"
    control = rig.scene_control()
    if scripted and (control is None or control.training_placements < 1):
        rig.close()
        raise ValueError(f"--teleop scripted records at a simulated rig's training placements, and {robot} has "
                         "none; record with a teleop device instead")
    with rig:
        spec = spec_for_rig(rig, codec=codec)
        with Dataset.open_or_create(folder, spec) as dataset:
            if dataset.interrupted():
                print(f"note: {len(dataset.interrupted())} interrupted episode(s) in {out} "
                      f"(see `dataset info`); new episodes get new indices", file=sys.stderr)
            session = RecordingSession(rig, dataset, device, RecorderConfig(task=task))
            kept = attempts = 0
            skipped: list[int] = []  # training placements the scripted operator failed at SCRIPTED_TRIES times
            failed_at: dict[int, int] = {}
            with progress_bar(total=episodes, desc="record", unit="ep") as bar:
                while kept < episodes:
                    index = dataset.next_index()
                    attempts += 1
                    if attempts > 3 * episodes + 10:
                        print(f"error: gave up after {attempts - 1} attempts ({kept} episodes kept)", file=sys.stderr)
                        return 1
                    if scripted:
                        placements = control.training_placements
                        if len(skipped) >= placements:
                            print(f"error: the scripted operator failed at every training placement "
                                  f"({kept} episodes kept)", file=sys.stderr)
                            return 1
                        placement = (index + len(skipped)) % placements
                        while placement in skipped:
                            placement = (placement + 1) % placements
                        rig.arm.release()  # a scene reset keeps a latched stop; a scripted run lifts the last one's
                        control.reset(seed + index, training_index=placement)
                        device.reset(seed + index * 1009 + attempts)
                        accept = control.task_succeeded
                    else:
                        reason = session.run_reset_phase()
                        if reason != "start_button":
                            print(f"stopped during reset ({reason})", file=sys.stderr)
                            break
                        accept = None
                    outcome = session.record_episode(extra=scene_extra(rig), accept=accept)
                    if outcome.error is not None and outcome.reason in ("write_error",):
                        message = str(outcome.error)
                        if "was NOT kept" not in message:
                            message = f"episode {index} was NOT kept: {message}"
                        bar.close()  # the error is the last line
                        print(f"error: {message} (the {kept} episode(s) this run kept are intact)", file=sys.stderr)
                        return 2
                    if scripted and outcome.kept is None:
                        failed_at[placement] = failed_at.get(placement, 0) + 1
                        if failed_at[placement] >= SCRIPTED_TRIES:  # the next placement: not the same one forever
                            skipped.append(placement)
                            print(f"note: the scripted operator did not finish the task at training placement "
                                  f"{placement} in {SCRIPTED_TRIES} tries; it goes on with the next one",
                                  file=sys.stderr)
                    if outcome.kept is not None:
                        kept += 1
                        bar.update(1)
                        bar.set_postfix(steps=outcome.steps, keep_ms=f"{1000 * outcome.kept.keep_seconds:.0f}",
                                        retries=attempts - kept)
                        if outcome.error is not None:
                            print(f"episode {outcome.kept.index} ended early ({outcome.reason}: {outcome.error}); "
                                  "kept what was recorded", file=sys.stderr)
                            if outcome.reason == "camera_lost":
                                return 2
            print(f"{kept} episodes recorded into {out}")
    return 0


def record_scripted(dataset_dir: Path, demos: int, camera_size: int, seed: int, robot: str = "sim",
                    rate: float | None = None) -> bool:
    """Record scripted demonstrations on the simulated rig ``robot`` (lock-step; ``rate`` None: the rig's own)
    until ``dataset_dir`` holds ``demos`` episodes; False on failure."""
    have = 0
    if (dataset_dir / DATASET_FILE).exists():
        with Dataset.open(dataset_dir) as ds:
            have = len(ds.episode_indices())
    if have >= demos:
        print(f"reusing the {have} demonstrations in {dataset_dir}")
        return True
    return record_episodes(str(dataset_dir), robot=robot, episodes=demos - have, seed=seed, rate=rate,
                           camera_size=camera_size) == 0
