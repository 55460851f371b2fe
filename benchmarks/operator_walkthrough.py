#!/usr/bin/env python3
"""A first-time operator's walkthrough on the real-time simulated rig, without the window: halts by cause, attempts
against trials, and the load, for a given time.

Drives the supervisor (supervisor/supervisor.py) as the app does, in real time:
1. connect the simulated rig (128 px cameras, 10 Hz, as the app);
2. teleoperate with synthetic key presses (the keyboard teleop: W/A/S/D/R/F, G) for a few seconds;
3. record --episodes demonstrations (default 5): a scene reset to training spot i, Start, and a scripted hand
   (the simulated rig's scripted expert, fed through the teleop device as an operator's hand) that grasps and
   lifts the mug and presses Stop & keep;
4. train a cpu-preset policy with `main.py train` (the app's child process, normal priority) while the rig stays
   connected and idle, or load `--policy DIR`;
5. until --minutes (default 30) have passed since the start: attempts of the task. Each: a scene reset
   (in-distribution placement), a short key nudge every third time, Start; every third attempt is paused and
   resumed, every third (another one) is STOPped and resumed; an OOD or stall stop is resumed once, then the
   scripted hand takes over and finishes the grasp (every second take-over is recorded as a correction);
   a finished task is taken over and the next scene set.

It counts and prints halts by reason (camera_lost with the camera and its newest frame's age from the message
or the error that came with it), attempts started and the trials the ledger recorded for them (an attempt with
stops and resumes should be one trial), their outcomes, recording and training times, and the CPU load (load
average, machine busy share, the cores this process and its camera render processes used) per phase.
`--busy 2` runs two busy CPU workers (`python -c "while 1: pass"`) beside it. It ends cleanly (the supervisor
shut down, the rig disconnected, the workers and a training child killed) on its own, on Ctrl-C and on SIGTERM.

    .venv/bin/python benchmarks/operator_walkthrough.py --busy 2            # the acceptance run: 30 min
    .venv/bin/python benchmarks/operator_walkthrough.py --minutes 2 --episodes 2 --epochs 1
    .venv/bin/python benchmarks/operator_walkthrough.py --policy runs/policies/NAME --episodes 0

Everything it writes (dataset, policy, trials.jsonl, report.json) goes to --out (default a new folder under
data/walkthrough/).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from core.types import RobotState  # noqa: E402
from proc_cpu import children as _children, cpu_seconds as _cpu_seconds  # noqa: E402
from robot_drivers.teleop import Teleop, TeleopCommand  # noqa: E402
from supervisor import AUTONOMOUS, HALTED, RECORDING, TELEOP, Events, Supervisor  # noqa: E402

_CAMERA = re.compile(r"camera '([^']+)'")
_AGE = re.compile(r"(\d+(?:\.\d+)?) ms old")
OWN_HALTS = ("paused", "stop")  # halts this script causes itself


# ---------------------------------------------------------------------------------------------- the operator
class ScriptedHand(Teleop):
    """The operator's hand on the teleop device: idle until ``begin``; then the simulated rig's scripted expert
    plans from where the mug is, grasps and lifts it and presses STOP (Stop & keep while recording). The
    supervisor's ``reset`` at handovers does not start it (a person does not move because the scene changed)."""

    name = "scripted-hand"

    def __init__(self, expert):
        self.expert = expert
        self._lock = threading.Lock()
        self._active = False
        self._plan = False

    def begin(self) -> None:
        with self._lock:
            self._active = self._plan = True  # planned on the control thread, which owns the simulated world

    def halt(self) -> None:
        with self._lock:
            self._active = False

    @property
    def busy(self) -> bool:
        return self._active

    def reset(self) -> None:
        pass

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        with self._lock:
            if not self._active:
                return TeleopCommand()
            if self._plan:
                self._plan = False
                self.expert.reset()
            command = self.expert.get_command(state, dt)
            if self.expert.done:
                self._active = False
            return command


# ------------------------------------------------------------------------------------------- what it sees
class Seen(Events):
    def __init__(self, stale_log: "StaleLog"):
        self.stale_log = stale_log
        self.lock = threading.Lock()
        self.halts: list[dict] = []
        self.errors: list[tuple[float, str]] = []
        self.episodes: list = []
        self.trials: list = []
        self.mode = None
        self.phase = "connect"

    def mode_changed(self, mode):
        self.mode = mode

    def error(self, text):
        with self.lock:
            self.errors.append((time.monotonic(), text))

    def episode_finished(self, outcome):
        with self.lock:
            self.episodes.append(outcome)

    def trial_ended(self, trial):
        with self.lock:
            self.trials.append(trial)

    def halted(self, halt):
        now = time.monotonic()
        with self.lock:
            recent = " ".join(text for t, text in self.errors if now - t < 2.0)
        recent += " " + " ".join(text for t, text in self.stale_log.lines if now - t < 2.0)
        entry = {"t": now, "reason": halt.reason, "message": halt.message, "phase": self.phase}
        if halt.reason == "camera_lost" or "camera" in halt.message.lower():
            for text in (halt.message, recent):
                cam, age = _CAMERA.search(text), _AGE.search(text)
                if cam and "camera" not in entry:
                    entry["camera"] = cam.group(1)
                if age and "age_ms" not in entry:
                    entry["age_ms"] = float(age.group(1))
        with self.lock:
            self.halts.append(entry)
        print(f"  [{self.phase}] {time.strftime('%H:%M:%S')} halt: {halt.reason}: {halt.message}"
              + (f" (camera {entry.get('camera', '?')}, frame {entry.get('age_ms', '?')} ms old)"
                 if halt.reason == "camera_lost" else ""), flush=True)


class StaleLog(logging.Handler):
    """Every log line about a camera's stale or missing frame (the supervisor logs what the halt says)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record):
        text = record.getMessage()
        if "ms old" in text or "stopped delivering" in text:
            self.lines.append((time.monotonic(), text))


# ----------------------------------------------------------------------------------------------- CPU load
def _machine_busy() -> tuple[float, float]:
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class LoadMeter(threading.Thread):
    """Every 2 s: load average, machine busy share, the cores this process and its render processes used,
    booked to the walkthrough's current phase."""

    def __init__(self, seen: Seen, skip: set[int]):
        super().__init__(name="load-meter", daemon=True)
        self.seen, self.skip = seen, skip  # skip: pids not counted as the rig's (burners, the training child)
        self.stop_event = threading.Event()
        self.phases: dict[str, dict] = {}

    def run(self):
        me = os.getpid()
        last_t, last_busy = time.monotonic(), _machine_busy()
        last_cpu: dict[int, float] = {}
        while not self.stop_event.wait(2.0):
            now, busy = time.monotonic(), _machine_busy()
            kids = [p for p in _children(me) if p not in self.skip]
            cpu = {p: v for p in [me, *kids] if (v := _cpu_seconds(p)) is not None}
            dt = now - last_t
            row = self.phases.setdefault(self.seen.phase, {"seconds": 0.0, "load": 0.0, "busy": 0.0, "self": 0.0,
                                                           "renderers": 0.0})
            row["seconds"] += dt
            row["load"] += os.getloadavg()[0] * dt
            total = busy[1] - last_busy[1]
            row["busy"] += ((busy[0] - last_busy[0]) / total if total else 0.0) * dt
            row["self"] += cpu.get(me, 0.0) - last_cpu.get(me, cpu.get(me, 0.0))
            row["renderers"] += sum(v - last_cpu[p] for p, v in cpu.items() if p != me and p in last_cpu)
            last_t, last_busy, last_cpu = now, busy, cpu

    def summary(self) -> list[str]:
        lines = []
        for phase, r in self.phases.items():
            s = max(r["seconds"], 1e-9)
            lines.append(f"  {phase:<10} {s:6.0f} s: load average {r['load'] / s:.1f}, machine busy "
                         f"{100 * r['busy'] / s:.0f}%, this process {r['self'] / s:.2f} cores, camera render "
                         f"processes {r['renderers'] / s:.2f} cores")
        return lines


# ------------------------------------------------------------------------------------------------- helpers
def wait_until(predicate, timeout: float, poll: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def answered(ticket, what: str, timeout: float = 30.0) -> bool:
    if not ticket.wait(timeout):
        print(f"  {what}: no answer within {timeout:.0f} s", flush=True)
        return False
    if ticket.refused:
        print(f"  {what}: refused ({ticket.refusal})", flush=True)
        return False
    return True


def nudge(sup: Supervisor, keys: str = "wa", seconds: float = 0.4) -> None:
    """Synthetic key input: hold each key for ``seconds`` (the window feeds the keyboard teleop the same way)."""
    for key in keys:
        sup.keyboard.press(key)
        time.sleep(seconds)
        sup.keyboard.release(key)


def new_halt(seen: Seen, since: int, ignore=OWN_HALTS):
    with seen.lock:
        for h in seen.halts[since:]:
            if h["reason"] not in ignore:
                return h
    return None


# ------------------------------------------------------------------------------------------------- phases
def record(sup: Supervisor, seen: Seen, hand: ScriptedHand, dataset: Path, episodes: int) -> None:
    seen.phase = "record"
    if not answered(sup.open_dataset(str(dataset)), "open dataset"):
        raise SystemExit("cannot open the dataset")
    kept = 0
    for i in range(episodes * 3):
        if kept >= episodes:
            break
        if sup.mode == HALTED:
            answered(sup.take_over(), "take over")
        if not answered(sup.reset_scene(i, training_index=i % 30), "reset scene"):
            continue
        wait_until(lambda: sup.mode == TELEOP, 10)
        before = len(seen.episodes)
        if not answered(sup.start_episode(), "start episode"):
            continue
        wait_until(lambda: sup.mode == RECORDING, 10)
        hand.begin()
        if not wait_until(lambda: len(seen.episodes) > before, 90):
            print("  the episode did not end within 90 s: discarding it", flush=True)
            hand.halt()
            sup.discard_episode()
            wait_until(lambda: len(seen.episodes) > before, 10)
            continue
        outcome = seen.episodes[-1]
        kept += outcome.kept is not None
        print(f"  episode {i}: {outcome.reason}, {outcome.steps} steps, "
              f"{'kept' if outcome.kept is not None else 'not kept'}", flush=True)
    if kept < episodes:
        print(f"  only {kept} of {episodes} episodes kept", flush=True)


def train(dataset: Path, out: Path, epochs: int | None, seen: Seen, skip: set[int], children: list) -> float:
    seen.phase = "train"
    argv = [sys.executable, str(ROOT / "main.py"), "train", str(dataset), "--out", str(out), "--preset", "cpu",
            "--progress", "none"]
    if epochs:
        argv += ["--epochs", str(epochs)]
    t0 = time.monotonic()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children.append(child)
    skip.add(child.pid)
    _, err = child.communicate()
    seconds = time.monotonic() - t0
    if child.returncode != 0:
        raise SystemExit(f"training failed: {(err or '').strip().splitlines()[-1:]}")
    print(f"  trained in {seconds:.0f} s (rig connected and idle)", flush=True)
    return seconds


def attempt(sup: Supervisor, seen: Seen, hand: ScriptedHand, k: int, stats: Counter, deadline: float) -> None:
    seen.phase = "autonomy"
    if sup.mode == HALTED or (sup.rig is not None and sup.rig.arm.stopped):
        answered(sup.take_over(), "take over")
        wait_until(lambda: sup.mode == TELEOP, 10)
    hand.halt()
    if not answered(sup.reset_scene(1000 + k, scenario="in_distribution"), "reset scene"):
        stats["scene resets refused"] += 1
        return
    wait_until(lambda: sup.mode == TELEOP, 10)
    if k % 3 == 0:
        nudge(sup, "rf", 0.3)  # up and back down: the operator fiddles before pressing Start
    since = len(seen.halts)
    if not answered(sup.start_autonomy(), "start"):
        stats["starts refused"] += 1
        return
    stats["attempts"] += 1
    wait_until(lambda: sup.mode == AUTONOMOUS, 5)
    interrupt = {1: "pause", 2: "stop"}.get(k % 3)
    interrupt_at = time.monotonic() + 1.0
    resumed_after_stop = False
    end = min(deadline + 60.0, time.monotonic() + 90.0)
    while time.monotonic() < end:
        halt = new_halt(seen, since)
        if halt is None:
            if (interrupt and time.monotonic() >= interrupt_at and sup.mode == AUTONOMOUS
                    and sup.halt is None):
                mark = len(seen.halts)
                (sup.pause if interrupt == "pause" else sup.emergency_stop)()
                stats[f"{interrupt}s"] += 1
                interrupt = None
                wait_until(lambda: len(seen.halts) > mark, 5)
                with seen.lock:
                    mine = [i for i, h in enumerate(seen.halts) if i >= mark and h["reason"] in OWN_HALTS]
                if mine and new_halt(seen, since) is None:  # halted by us, not by the policy just before
                    time.sleep(1.0)  # the operator looks, then goes on
                    if answered(sup.resume(), "resume"):
                        stats["resumes"] += 1
                    since = mine[0] + 1
            time.sleep(0.05)
            continue
        since = seen.halts.index(halt) + 1
        reason = halt["reason"]
        if reason == "done":
            stats["attempts done (task check)"] += 1
            return
        if reason in ("ood", "stall") and not resumed_after_stop:
            resumed_after_stop = True
            time.sleep(1.0)
            if answered(sup.resume(), "resume after a stop"):
                stats["resumes"] += 1
                continue
        # A stop resumed once already, or a fault: the operator takes over (every second time recording it).
        record_it = reason in ("ood", "stall") and stats["take-overs"] % 2 == 1 and sup.dataset is not None
        ticket = sup.take_over_and_record() if record_it else sup.take_over()
        stats["take-overs"] += 1
        stats["corrections recorded"] += record_it
        if answered(ticket, "take over"):
            hand.begin()
            wait_until(lambda: not hand.busy or sup.mode == HALTED, 60)
            if record_it:
                before = len(seen.episodes)
                wait_until(lambda: len(seen.episodes) > before or sup.mode != RECORDING, 10)
        return
    stats["attempts that ran out of time"] += 1
    sup.pause()


# ---------------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the walkthrough from connecting "
                    "(default 30)")
    ap.add_argument("--episodes", type=int, default=5, help="demonstrations to record (default 5)")
    ap.add_argument("--policy", help="load this policy folder instead of training one")
    ap.add_argument("--epochs", type=int, help="training epochs (default: the cpu preset's)")
    ap.add_argument("--busy", type=int, default=0, help="busy CPU workers beside it (default 0)")
    ap.add_argument("--camera-size", type=int, default=128, help="camera side in pixels (default 128, the app's)")
    ap.add_argument("--out", help="folder for the dataset, policy, ledger and report")
    args = ap.parse_args()

    from evaluation.trials import TrialLedger
    from policy.policy import ALTPolicy
    from recorder.session import RecorderConfig
    from robot_drivers.factory import make_rig

    out = Path(args.out or ROOT / "data" / "walkthrough" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    stale_log = StaleLog()
    logging.getLogger().addHandler(stale_log)
    logging.getLogger().setLevel(logging.INFO)
    for name in ("robot_drivers", "supervisor", "core"):
        logging.getLogger(name).setLevel(logging.INFO)

    seen = Seen(stale_log)
    hands: list[ScriptedHand] = []

    def factory():
        rig = make_rig("sim", clock="realtime", image_size=args.camera_size)
        hand = ScriptedHand(rig.scripted_operator(0))
        hands[:] = [hand]
        return rig, hand

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    burners: list[subprocess.Popen] = []
    children: list[subprocess.Popen] = []
    skip: set[int] = set()
    stats: Counter = Counter()
    times: dict[str, float] = {}
    meter = LoadMeter(seen, skip)
    sup = None
    t_start = time.monotonic()
    deadline = t_start + 60 * args.minutes
    interrupted = False
    try:
        burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
        skip.update(p.pid for p in burners)
        meter.start()
        sup = Supervisor(factory, RecorderConfig(task="grasp the mug"), events=seen,
                         ledger=TrialLedger(out / "trials.jsonl"))
        print(f"connecting the simulated rig ({args.busy} busy CPU worker(s) beside it; output in {out})", flush=True)
        if not answered(sup.connect_rig(), "connect", 120) or not wait_until(lambda: sup.mode == TELEOP, 60):
            raise SystemExit(f"the rig did not connect: {seen.errors[-1:]}")
        hand = hands[0]
        seen.phase = "teleop"
        nudge(sup, "wasdrf", 0.5)
        sup.keyboard.toggle_gripper()
        time.sleep(0.5)
        sup.keyboard.toggle_gripper()
        policy_dir = Path(args.policy) if args.policy else out / "policy"
        if args.episodes:
            t0 = time.monotonic()
            record(sup, seen, hand, out / "demos", args.episodes)
            times["record_s"] = time.monotonic() - t0
            if sup.mode == HALTED:
                answered(sup.take_over(), "take over")
        if not args.policy:
            times["train_s"] = train(out / "demos", policy_dir, args.epochs, seen, skip, children)
        policy = ALTPolicy.load(str(policy_dir))
        policy.info["path"] = str(policy_dir.resolve())
        answered(sup.set_policy(policy), "load policy")
        print(f"policy {policy_dir} loaded (gamma {policy.gamma:.3f}); autonomy until "
              f"{args.minutes:.0f} min have passed", flush=True)
        k = 0
        while time.monotonic() < deadline:
            attempt(sup, seen, hand, k, stats, deadline)
            k += 1
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: shutting down", flush=True)
    finally:
        seen.phase = "shutdown"
        for hand in hands:
            hand.halt()
        if sup is not None:
            sup.emergency_stop()
            sup.shutdown()
        for p in [*children, *burners]:
            if p.poll() is None:
                p.kill()
            p.wait()
        meter.stop_event.set()
        meter.join(5)

    # -- the report -----------------------------------------------------------------------------------
    elapsed = time.monotonic() - t_start
    halts = Counter(h["reason"] for h in seen.halts if h["phase"] != "shutdown")
    camera_halts = [h for h in seen.halts if h["reason"] == "camera_lost"]
    trials = TrialLedger(out / "trials.jsonl").trials() if (out / "trials.jsonl").exists() else []
    outcomes = Counter(t.status for t in trials)
    print(f"\nwalkthrough: {elapsed / 60:.1f} min on the simulated rig, {args.busy} busy CPU worker(s), "
          f"{os.cpu_count()} CPU(s){' (interrupted)' if interrupted else ''}")
    for key, value in times.items():
        print(f"  {key}: {value:.0f}")
    print(f"halts by reason: {dict(halts) or 'none'} (pauses and STOPs are the script's own)")
    print(f"camera-stall halts: {len(camera_halts)}")
    for h in camera_halts:
        print(f"  at {(h['t'] - t_start) / 60:.1f} min ({h['phase']}): camera {h.get('camera', '?')}, newest frame "
              f"{h.get('age_ms', '?')} ms old: {h['message']}")
    if stale_log.lines:
        print(f"camera log lines: {len(stale_log.lines)}; last: {stale_log.lines[-1][1]}")
    print(f"attempts: {stats['attempts']} started; {dict((k, v) for k, v in stats.items() if k != 'attempts')}")
    print(f"trials in the ledger: {len(trials)} ({dict(outcomes)}); "
          f"{'one per attempt' if len(trials) == stats['attempts'] else 'NOT one per attempt'}")
    kept = sum(o.kept is not None for o in seen.episodes)
    print(f"episodes: {len(seen.episodes)} ended, {kept} kept")
    print("CPU load by phase:")
    for line in meter.summary():
        print(line)
    report = {"minutes": elapsed / 60, "busy": args.busy, "cpus": os.cpu_count(), "interrupted": interrupted,
              "times": times, "halts": dict(halts), "camera_halts": [{k: v for k, v in h.items() if k != "t"}
                                                                     for h in camera_halts],
              "attempts": dict(stats), "trials": len(trials), "trial_outcomes": dict(outcomes),
              "episodes_kept": kept, "load": meter.phases}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"report: {out / 'report.json'}")
    return 130 if interrupted else (1 if camera_halts else 0)


if __name__ == "__main__":
    sys.exit(main())
