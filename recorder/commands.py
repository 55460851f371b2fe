"""The recorder's CLI verbs: record, dataset info / delete, replay, export."""

from __future__ import annotations

import sys
from argparse import Namespace

from robot_drivers.factory import make_rig, make_teleop

from recorder.dataset import DATASET_FILE, Dataset, DatasetError, IntegrityReport
from recorder.outputs import DATASET, LEROBOT, check_output
from recorder.progress import progress_bar
from recorder.session import RecorderConfig, RecordingSession, scene_extra, spec_for_rig


def cmd_record(args: Namespace) -> int:
    # Before the rig is made or connected: a policy, an export, a folder of other files, ".", "" or the project
    # folder is refused here, naming it (an existing dataset is appended to).
    out = check_output(args.out, DATASET, append=True)
    if (out / DATASET_FILE).exists():
        Dataset.open(out).close()  # a malformed header is named now, not after the rig has connected
    rig = make_rig(args.robot, clock=args.clock, image_size=args.image_size, rate_hz=args.rate)
    teleop = make_teleop(args.teleop, rig, seed=args.seed)
    with rig:
        spec = spec_for_rig(rig, codec=args.codec)
        with Dataset.open_or_create(out, spec) as dataset:
            if dataset.interrupted():
                print(f"note: {len(dataset.interrupted())} interrupted episode(s) in {args.out} "
                      f"(see `dataset info`); new episodes get new indices", file=sys.stderr)
            session = RecordingSession(rig, dataset, teleop, RecorderConfig(task=args.task))
            scripted = args.teleop == "scripted"
            kept = attempts = 0
            with progress_bar(total=args.episodes, desc="record", unit="ep") as bar:
                while kept < args.episodes:
                    index = dataset.next_index()
                    attempts += 1
                    if attempts > 3 * args.episodes + 10:
                        print(f"error: gave up after {attempts - 1} attempts ({kept} episodes kept)", file=sys.stderr)
                        return 1
                    if scripted:
                        from robot_drivers.sim.task import training_scene

                        rig.reset(args.seed + index, scene=training_scene(rig.task, index))
                        teleop.reset(args.seed + index * 1009 + attempts)
                        accept = rig.success
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
            print(f"{kept} episodes recorded into {args.out}")
    return 0


class _LazyProgress:
    """A progress callback ``(done, total)`` whose bar appears at the first call (never, when not ``enabled``)."""

    def __init__(self, desc: str, unit: str, enabled: bool = True):
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = progress_bar(total=total, desc=self.desc, unit=self.unit)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_info(dataset: Dataset, report: IntegrityReport | None = None) -> str:
    """The episode table; with ``report`` (``Dataset.check``), the damaged and missing episodes and a verdict."""
    spec = dataset.spec
    cams = ", ".join(f"{c.name} {c.width}x{c.height}" for c in spec.cameras)
    lines = [f"dataset   {dataset.root}",
             f"robot     {spec.robot}, {spec.fps:g} Hz, cameras: {cams}, images: {spec.codec}"]
    names = [c.name for c in spec.cameras]
    header = f"{'ep':>4} {'steps':>5} {'dur s':>6} {'size':>9} {'late':>4} {'skip':>4} " + " ".join(
        f"{'drop/rep ' + n:>16}" for n in names) + f" {'rate':>6}  end"
    lines += ["", header]
    total_steps = total_bytes = count = 0
    total_dur = 0.0
    damaged = report.damaged if report is not None else {}
    for index in dataset.episode_indices():
        try:
            e = dataset.episode(index)
        except DatasetError:
            if report is None:
                raise
            lines.append(f"{index:>4} {'?':>5} {'?':>6} {'?':>9}  (meta.json unreadable: see below)")
            continue
        count += 1
        s = e.stats
        drops = s.get("dropped_frames", {})
        reps = s.get("repeated_frames", {})
        rate = s.get("achieved_rate_hz")
        flag = "" if s.get("rate_held", True) else " (rate not held)"
        flag += " DAMAGED" if index in damaged else ""
        drops = drops if isinstance(drops, dict) else {}
        reps = reps if isinstance(reps, dict) else {}
        rate = rate if isinstance(rate, (int, float)) else None
        lines.append(f"{e.index:>4} {e.length:>5} {e.duration_s:>6.1f} {_fmt_bytes(e.size_bytes):>9} "
                     f"{s.get('late_ticks', 0):>4} {s.get('skipped_ticks', 0):>4} "
                     + " ".join(f"{str(drops.get(n, 0)) + '/' + str(reps.get(n, 0)):>16}" for n in names)
                     + f" {str(rate if rate is None else round(rate, 2)):>6}  {e.end_reason}{flag}")
        total_steps += e.length
        total_bytes += e.size_bytes
        total_dur += e.duration_s
    lines.append(f"total: {count} episodes, {total_steps} steps, {total_dur:.1f} s, {_fmt_bytes(total_bytes)}")
    for path in dataset.interrupted():
        lines.append(f"interrupted: {path.name} (recording never finished; "
                     f"`dataset delete {dataset.root} --interrupted` removes it)")
    if report is not None:
        lines += [f"problem: {p}" for p in report.problems]
        for i in sorted(report.damaged):
            kind = "missing" if i in report.missing else "damaged"
            lines.append(f"{kind}: episode {i}: {report.damaged[i]}")
        checked = ("full check: every file's size and checksum, the step arrays, every frame decoded" if report.full
                   else "quick check: every file's size and checksum, the step arrays, the first frame of each "
                        "camera; `--full` decodes every frame")
        if report.healthy:
            lines.append(f"health: healthy ({checked})")
        else:
            first = min(report.damaged) if report.damaged else None
            fix = (f"`dataset delete {dataset.root} {first}` removes an episode (or forgets a missing one), or "
                   "restore it from a backup; " if first is not None else "")
            lines.append(f"health: DAMAGED: {len(report.damaged)} episode(s) ({checked}). {fix}train and export "
                         "refuse damaged episodes unless --skip-damaged")
    return "\n".join(lines)


def cmd_dataset_info(args: Namespace) -> int:
    """Prints the episodes and checks them (quick, or every frame with --full); exit status 1 when anything is
    damaged or missing."""
    with Dataset.open(args.dir) as dataset:
        with _LazyProgress("check", "ep", sys.stderr.isatty()) as progress:
            report = dataset.check(full=getattr(args, "full", False), progress=progress)
        print(format_info(dataset, report))
    if not report.healthy:
        bad = sorted(report.damaged)
        what = (f"episode {bad[0]} is" if len(bad) == 1 else f"episodes {', '.join(map(str, bad))} are") + \
            " damaged or missing" if bad else "some of its files are damaged"
        print(f"error: {args.dir}: {what} (listed above)", file=sys.stderr)
        return 1
    return 0


def cmd_dataset_delete(args: Namespace) -> int:
    with Dataset.open(args.dir, writable=True) as dataset:
        if args.interrupted:
            removed = dataset.delete_interrupted()
            print(f"removed {len(removed)} interrupted episode folder(s)")
        if args.episode is not None:
            if dataset.delete_episode(args.episode):
                print(f"deleted episode {args.episode}")
            else:
                print(f"episode {args.episode}'s folder was already gone; it is no longer expected")
        if args.episode is None and not args.interrupted:
            print("error: name an EPISODE or --interrupted", file=sys.stderr)
            return 2
    return 0


def cmd_replay(args: Namespace) -> int:
    from recorder.replay import replay_episode, restore_scene

    with Dataset.open(args.dir) as dataset:
        info = dataset.episode(args.episode)
        rig = make_rig(args.robot, clock=args.clock, image_size=dataset.spec.cameras[0].width,
                       rate_hz=dataset.spec.fps)
        with rig:
            restore_scene(rig, info)
            result = replay_episode(rig, dataset, args.episode)
            print(f"replayed episode {args.episode}: {result.ticks} ticks, ended by {result.reason}")
            control = rig.scene_control()
            if control is not None:
                print(f"task success: {control.task_succeeded()}")
        rig.close()
    return 0 if result.ok else 2


def cmd_export(args: Namespace) -> int:
    from lerobot_bridge.export import export_lerobot

    if args.format != "lerobot":
        raise ValueError(f"unknown export format {args.format!r}; the supported one is 'lerobot'")
    overwrite = getattr(args, "overwrite", False)
    out = check_output(args.out, LEROBOT, overwrite=overwrite, inputs=(args.dir,))
    # The bar starts with the first frame written: a refusal before that (damaged episodes, nothing to
    # export) is one line on stderr.
    with _LazyProgress("export", "frame") as progress:
        with Dataset.open(args.dir) as dataset:
            report = export_lerobot(dataset, out, episodes=args.episodes, video_codec=args.codec,
                                    allow_gaps=args.allow_gaps, progress=progress,
                                    skip_damaged=getattr(args, "skip_damaged", False), overwrite=overwrite)
    print(report.summary())
    return 0
