"""Compares two `main.py eval --json` reports episode by episode: a refactoring must not change any outcome.

    .venv/bin/python scripts/compare_evals.py BEFORE.json AFTER.json

Prints one line per scenario (episodes, outcomes) and every episode whose outcome, reason, stop signal, message,
tick count or similarities differ; exits 1 if any does.
"""

from __future__ import annotations

import json
import sys

FIELDS = ("outcome", "reason", "stop_signal", "message", "ticks", "first_similarity", "min_similarity",
          "min_grasp_alignment", "gripper_closed")


def episodes(report: dict) -> dict[tuple[str, int], dict]:
    return {(s["scenario"], r["seed"]): r for s in report["scenarios"] for r in s["results"]}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (json.loads(open(path).read()) for path in argv)
    a, b = episodes(before), episodes(after)
    differences = 0
    if set(a) != set(b):
        print(f"different episodes: only before {sorted(set(a) - set(b))}, only after {sorted(set(b) - set(a))}")
        differences += 1
    for scenario in dict.fromkeys(s for s, _ in a):
        keys = [k for k in a if k[0] == scenario and k in b]
        outcomes = [a[k]["outcome"] for k in keys]
        print(f"{scenario}: {len(keys)} episodes, " + ", ".join(f"{o} {outcomes.count(o)}" for o in sorted(set(outcomes))))
        for key in keys:
            changed = [f for f in FIELDS if a[key].get(f) != b[key].get(f)]
            if changed:
                differences += 1
                print(f"  seed {key[1]}: " + "; ".join(f"{f} {a[key].get(f)!r} -> {b[key].get(f)!r}" for f in changed))
    print("identical" if not differences else f"{differences} difference(s)")
    return int(bool(differences))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
