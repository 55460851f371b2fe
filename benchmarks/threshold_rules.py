#!/usr/bin/env python3
"""The gate's threshold rule against the sample minimum it replaced, on the same runs.

Before, each signal's threshold was its held-out quantile at rate / signals, which with fewer than ~1,500
held-out frames is simply the lowest held-out value; now (policy/gate.py) a model of the tail gives a threshold
at or below that minimum. Lower thresholds stop less: this script measures what that costs on a trained policy.

It runs the policy in lock-step (deterministic) with the thresholds it was saved with, over ``--episodes``
episodes of each ``--scenario``, and reads every lookup's signals. A run under the minimum rule is the same run
up to the first lookup where a signal falls below the minimum rule's threshold (nothing differs before a
stop), so one set of runs gives both: for each episode the outcome under the policy's own thresholds, and
whether the minimum rule would have stopped it earlier (and so turned a silent failure into a stop, or a
success into a stop).

    .venv/bin/python benchmarks/threshold_rules.py runs/demo30 --scenario extrapolate distractors --episodes 31

Prints, per scenario: the two rules' thresholds, silent failures under the policy's rule and how many of them
the minimum rule would have stopped first, and successes the minimum rule would have stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SIGNALS = ("similarity", "hand_view", "third_view")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy")
    parser.add_argument("--scenario", nargs="+", default=["in_distribution", "extrapolate", "distractors"])
    parser.add_argument("--episodes", type=int, default=31)
    parser.add_argument("--seed", type=int, default=7000, help="first episode seed (default 7000)")
    args = parser.parse_args()

    from evaluation.evaluate import _rig_image_size, run_episode
    from policy.policy import ALTPolicy
    from robot_drivers.factory import make_rig

    policy = ALTPolicy.load(args.policy)
    scores = policy.gate_scores()
    if scores is None:
        print("this policy keeps no held-out values (calibrated before they were kept): nothing to compare")
        return 2
    in_force = policy.gate_in_force()
    minimum = {k: float(np.min(v)) for k, v in scores.items() if k in in_force}
    print("thresholds  " + "  ".join(f"{k}: {in_force[k]:.3f} (minimum rule {minimum[k]:.3f})" for k in minimum))
    rig = make_rig("sim", clock="lockstep", image_size=_rig_image_size(policy), rate_hz=policy.info.get("fps", 10.0))
    with rig:
        for scenario in args.scenario:
            silent = caught = stopped_successes = successes = 0
            for i in range(args.episodes):
                ep, result = run_episode(policy, rig, scenario, args.seed + i)
                earlier = False
                for r in result.retrievals:
                    readings = r.readings or {}
                    values = {k: readings[k][0] for k in minimum if k in readings}
                    if any(np.isfinite(v) and v < minimum[k] for k, v in values.items()):
                        earlier = True
                        break
                if ep.outcome == "silent_failure":
                    silent += 1
                    caught += earlier
                if ep.outcome == "success":
                    successes += 1
                    stopped_successes += earlier
            print(f"{scenario:16s} {args.episodes} episodes: success {successes}, silent failures {silent} "
                  f"(the minimum rule would have stopped {caught} of them first); successes the minimum rule "
                  f"would have stopped: {stopped_successes}", flush=True)
    rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
