#!/usr/bin/env python3
"""How the gate's persistence changes what it stops, measured on shadow runs of a Meta-World suite's policies (or
of any policy folders, on the rig they were recorded on).

Shadow runs (nothing stops the arm; policy/runner.py) of each task and scenario, with every signal's reading
kept per lookup (saved under ``--out`` and reused). Because nothing stopped the runs, the gate's verdict under
any persistence can be read off those readings exactly: for each persistence it prints, per task and scenario,
the runs that succeed without a stop, the successes the gate would stop (false alarms), the failures it would
catch, and the failures nothing would stop (the gate, the grip check, the method's own signals, the watchdog or
the time limit). The first close is taken from the shadow run (the close commands do not change with the gate). Whether a stop of a failing run would have come too late (the rig's ``went_wrong``) needs the
ordinary evaluation (``benchmarks/metaworld_suite.py``); this script does not judge it.

    MUJOCO_GL=egl .venv/bin/python benchmarks/gate_persistence.py --suite runs/grip --method landmarks \\
        --tasks pick-place-v3 drawer-open-v3 --scenarios in_distribution interpolate --out runs/persistence
    .venv/bin/python benchmarks/gate_persistence.py --policy runs/demo/policy runs/demo/policy-aligned \\
        --scenarios in_distribution interpolate extrapolate distractors lighting --out runs/persistence-mug
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.gate import GRASP_SIGNAL, Persistence, fails  # noqa: E402
from policy.grasp_check import commands_close  # noqa: E402

#: The watchdog's alarms (a stall stop in an ordinary run).
WATCHDOG = ("stall", "time_limit")


def stop_tick(readings: list[dict], persistence: int, closed_after: int | None = None,
              near: list[bool] | None = None) -> int | None:
    """The lookup at which the gate would stop a run with these per-lookup readings (signal -> (value,
    threshold)) at ``persistence``, judged as the runner judges (policy.gate.Persistence): nothing is held back
    from ``persistence`` - 1 lookups before the first close command (sent on lookup ``closed_after``: the runner
    sees it coming in the chunk it executes) and while the gripper holds what it grasped (a later release is not
    followed: stricter than the runner there); the grasp check is not held back on lookups whose chunk closes
    the gripper (``near``, per lookup: the frame it compared with was within a chunk of its demonstration's close;
    traces saved before it was kept have none). None: never."""
    rule = Persistence(persistence)
    for tick, row in enumerate(readings):
        deferred = rule.deferred(holding=closed_after is not None and tick >= closed_after - (persistence - 1))
        if near and tick < len(near) and near[tick]:
            deferred = deferred - {GRASP_SIGNAL}
        if any(fails(name, value, threshold) and name not in deferred for name, (value, threshold) in row.items()):
            return tick
        rule.count(row)
    return None


def shadow_traces(policy_dir: Path, name: str, scenario: str, episodes: int, seed: int, out: Path) -> list[dict]:
    """Shadow runs of the policy in ``policy_dir`` in ``scenario`` on the rig its demonstrations were recorded on,
    each with its readings per lookup (cached in ``out`` as ``name``-``scenario``.json)."""
    cache = out / f"{name}-{scenario}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from evaluation.evaluate import _rig_image_size, evaluation_robot, run_episode
    from policy.policy import ALTPolicy
    from robot_drivers.factory import make_rig

    policy = ALTPolicy.load(policy_dir)
    rig = make_rig(evaluation_robot(policy), image_size=_rig_image_size(policy), rate_hz=policy.info.get("fps"))
    runs = []
    with rig:
        for s in range(seed, seed + episodes):
            ep, result = run_episode(policy, rig, scenario, s, shadow=True)
            runs.append({"seed": s, "outcome": ep.shadow_outcome, "ticks": result.loop.ticks,
                         "first_close": ep.first_close_tick,
                         "watchdog": {k: ep.first_alarm[k] for k in WATCHDOG if k in ep.first_alarm},
                         "grasp_near": [commands_close(r.chunk) for r in result.retrievals],
                         "readings": [{k: [float(v[0]), None if v[1] is None else float(v[1])]
                                       for k, v in (r.readings or {}).items()} for r in result.retrievals]})
            print(f"  {name} {scenario} seed {s}: {ep.shadow_outcome}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(runs))
    return runs


def judge(runs: list[dict], persistence: int) -> dict[str, int]:
    """Counts of the runs as the gate at ``persistence`` (and the watchdog) would have judged them."""
    c = {"runs": len(runs), "succeeded": 0, "kept": 0, "false_alarms": 0, "failed": 0, "caught_by_gate": 0,
         "caught_by_watchdog": 0, "unstopped": 0, "gate_alarms_on_failures": 0}
    for run in runs:
        gate = stop_tick([{k: tuple(v) for k, v in row.items()} for row in run["readings"]], persistence,
                         run.get("first_close"), run.get("grasp_near"))
        if run["outcome"] == "success":
            c["succeeded"] += 1
            c["kept" if gate is None else "false_alarms"] += 1
            continue
        c["failed"] += 1
        c["gate_alarms_on_failures"] += gate is not None
        watchdog = min(run["watchdog"].values(), default=None)
        if gate is not None and (watchdog is None or gate <= watchdog):
            c["caught_by_gate"] += 1
        elif watchdog is not None:
            c["caught_by_watchdog"] += 1
        else:
            c["unstopped"] += 1
    return c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, help="a metaworld_suite.py output folder (its policies, with --tasks)")
    p.add_argument("--method", default="landmarks", choices=("alt", "aligned", "landmarks"))
    p.add_argument("--tasks", nargs="+", default=[])
    p.add_argument("--policy", type=Path, nargs="+", default=[], help="policy folders (instead of --suite)")
    p.add_argument("--scenarios", nargs="+", default=["in_distribution", "interpolate"])
    p.add_argument("--episodes", type=int, default=31)
    p.add_argument("--seed", type=int, default=1000, help="the first evaluation seed (the suite's: 1000)")
    p.add_argument("--persistence", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--out", type=Path, default=Path("runs/persistence"), help="where the shadow traces are kept")
    args = p.parse_args()
    if bool(args.suite) == bool(args.policy) or bool(args.suite) != bool(args.tasks):
        p.error("give --suite with --tasks, or --policy")
    policies = [(args.suite / t / f"policy-{args.method}", f"{t}-{args.method}") for t in args.tasks] + \
        [(d, "-".join(d.parts[-2:])) for d in args.policy]
    print("| policy | scenario | succeeded unstopped | " + " | ".join(
        f"persistence {k}: kept / false alarms / failures caught by gate, watchdog / unstopped"
        for k in args.persistence) + " |")
    print("|---|---|---|" + "---|" * len(args.persistence))
    pooled: dict[str, list[dict]] = {}
    for policy_dir, name in policies:
        for scenario in args.scenarios:
            runs = shadow_traces(policy_dir, name, scenario, args.episodes, args.seed, args.out)
            cells = []
            for k in args.persistence:
                c = judge(runs, k)
                cells.append(f"{c['kept']} / {c['false_alarms']} / {c['caught_by_gate']}, "
                             f"{c['caught_by_watchdog']} / {c['unstopped']}")
            c = judge(runs, 1)
            print(f"| {name} | {scenario} | {c['succeeded']}/{c['runs']} | " + " | ".join(cells) + " |", flush=True)
            pooled.setdefault(name, []).extend(runs)
    print("\nThe gate as a failure detector, all scenarios pooled (true alarms: failed runs the gate alarmed on at any "
          "tick; false alarms: successful runs it alarmed on; balanced accuracy: their mean of the true-alarm rate "
          "and one minus the false-alarm rate):")
    for name, runs in pooled.items():
        for k in args.persistence:
            c = judge(runs, k)
            tar = c["gate_alarms_on_failures"] / c["failed"] if c["failed"] else float("nan")
            far = c["false_alarms"] / c["succeeded"] if c["succeeded"] else float("nan")
            print(f"  {name}, persistence {k}: true alarms {c['gate_alarms_on_failures']}/{c['failed']}, false alarms "
                  f"{c['false_alarms']}/{c['succeeded']}, balanced accuracy {(tar + 1 - far) / 2:.2f}", flush=True)


if __name__ == "__main__":
    main()
