"""The grip check: once the hand has closed, its fingers' measured opening against the demonstrations'.

An object that slips out of the fingers, or a grasp that closed on its edge or on air, shows in the fingers before
a camera shows it: they close further than the object lets them. The demonstrations' fingers, ``k`` ticks after
the gripper was commanded closed, read no less than the band's low edge (the object's width and how the fingers
settle on it); a run whose fingers read below it by more than the demonstrations' own leave-one-out margin is
stopped (signal "grip"), whichever method drives the arm.

One-sided on purpose: fingers that read *wider* than every demonstration's hold something wider (the object
taken across another part, or turned), which is no sign of losing it. Measured on Meta-World (docs/method.md): the
stops for a wider reading (peg-insert-side 0.32-0.34 against 0.30-0.32) came on runs half of which succeed
without it; on pick-place and peg-insert-side every stop for a narrower one came on a run that failed or was
stopped anyway (pick-place's pucks slipping out: 0.37-0.44 against 0.40-0.48).

What a tick is: the gripper command sent on one tick and the measured opening observed at the next, as a recording
stores them (``action[i]``, then ``state[i + 1]``); closes are counted in order (the first close of a run is
compared with the demonstrations' first closes, the second with their second). Learnt from the recording alone:
nothing of a rig, gripper or object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy.grasp_check import GRIPPER_OPEN  # a command below it closes the hand (1 = open, 0 = closed)
#: A tick after closing is judged where at least this many of the demonstrations that made that close were still
#: closed (and at least MIN_DEMOS): beyond, too few demonstrations say what the fingers should read.
MIN_SHARE = 0.5
MIN_DEMOS = 5
#: The margin never goes below this (of the [0, 1] opening): a gripper's reading noise.
MARGIN_FLOOR = 0.01


def closed_stretches(commands: np.ndarray, openings: np.ndarray) -> list[np.ndarray]:
    """For each close of one episode (in order): the measured opening at each tick after the command closed, while
    the command stays closed (index 0 = one tick after the close was sent)."""
    closed = np.asarray(commands, np.float64) < GRIPPER_OPEN
    openings = np.asarray(openings, np.float64)
    out, i, n = [], 0, len(closed)
    while i < n:
        if closed[i] and (i == 0 or not closed[i - 1]):
            j = i
            while j < n and closed[j]:
                j += 1
            out.append(openings[i + 1:j + 1])  # the state at the first open command was still taken closed
            i = j
        else:
            i += 1
    return out


def _band(stretches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per tick after closing over ``stretches``; nan where too few demonstrations were still closed."""
    if not stretches:
        return np.zeros(0), np.zeros(0)
    length = max(len(s) for s in stretches)
    values = np.full((len(stretches), length), np.nan)
    for r, s in enumerate(stretches):
        values[r, :len(s)] = s
    count = np.sum(np.isfinite(values), axis=0)
    enough = count >= max(MIN_DEMOS, MIN_SHARE * len(stretches))
    with np.errstate(all="ignore"):
        low = np.where(enough, np.nanmin(np.where(np.isfinite(values), values, np.inf), axis=0), np.nan)
        high = np.where(enough, np.nanmax(np.where(np.isfinite(values), values, -np.inf), axis=0), np.nan)
    return low, high


def _excess(values: np.ndarray, low: np.ndarray) -> np.ndarray:
    """How far each value lies below its tick's low edge (0 above it; nan where the tick is not judged)."""
    n = min(len(values), len(low))
    with np.errstate(invalid="ignore"):
        return np.maximum(low[:n] - values[:n], 0.0)


@dataclass(frozen=True)
class GripCheck:
    """The demonstrations' band per close and tick after closing, and the margin a run may fall below it by."""

    low: np.ndarray  # [closes, ticks], nan where not judged
    high: np.ndarray  # [closes, ticks]
    margin: float

    def judge(self, close: int, tick: int, opening: float) -> tuple[float, float, float] | None:
        """(how far ``opening`` lies below the band, the band's low, its high) ``tick`` ticks after close number
        ``close`` (0-based; tick 1 = the observation after the close was sent); None where not judged."""
        if not 0 <= close < self.low.shape[0] or not 1 <= tick <= self.low.shape[1] \
                or not np.isfinite(opening):
            return None
        lo, hi = float(self.low[close, tick - 1]), float(self.high[close, tick - 1])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return None
        return max(lo - float(opening), 0.0), lo, hi

    def arrays(self) -> dict[str, np.ndarray]:
        return {"grip_low": self.low.astype(np.float32), "grip_high": self.high.astype(np.float32),
                "grip_margin": np.array([self.margin], np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "GripCheck | None":
        """The check as stored in database.npz (None: a policy folder made before it, or a recording without
        a measured gripper)."""
        if "grip_low" not in arrays:
            return None
        return cls(np.asarray(arrays["grip_low"], np.float64), np.asarray(arrays["grip_high"], np.float64),
                   float(np.asarray(arrays["grip_margin"]).ravel()[0]))


def fit_grip_check(episodes: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[GripCheck | None, str]:
    """The grip check from each demonstration's (gripper commands [T], measured openings [T]), and a line saying
    what it learnt (or why there is none: no demonstration closed the gripper, or too few did)."""
    per_episode = {int(e): closed_stretches(c, o) for e, (c, o) in episodes.items()}
    closes = max((len(s) for s in per_episode.values()), default=0)
    if closes == 0:
        return None, "no grip check: no demonstration closes the gripper"
    lows, highs, excess = [], [], []
    for k in range(closes):
        made = {e: s[k] for e, s in per_episode.items() if len(s) > k}
        low, high = _band(list(made.values()))
        if len(made) < MIN_DEMOS + 1 or not np.any(np.isfinite(low)):
            break  # too few demonstrations made this close: it and later ones are not judged
        lows.append(low)
        highs.append(high)
        for e, stretch in made.items():  # leave-one-out: how far each falls below the others' band
            lo, _ = _band([s for o, s in made.items() if o != e])
            excess.append(np.nan_to_num(_excess(stretch, lo), nan=0.0))
    if not lows:
        return None, f"no grip check: fewer than {MIN_DEMOS + 1} demonstrations close the gripper"
    width = max(len(x) for x in lows)
    low = np.full((len(lows), width), np.nan)
    high = np.full((len(lows), width), np.nan)
    for k, (lo, hi) in enumerate(zip(lows, highs)):
        low[k, :len(lo)], high[k, :len(hi)] = lo, hi
    worst = max((float(x.max()) for x in excess if len(x)), default=0.0)
    margin = max(MARGIN_FLOOR, worst)
    judged = int(np.sum(np.isfinite(low)))
    line = (f"grip check: {len(lows)} close(s), {judged} ticks after closing judged, margin {margin:.3f} "
            f"(the demonstrations' leave-one-out worst {worst:.3f})")
    return GripCheck(low, high, margin), line


def grip_check_from_dataset(dataset, episodes) -> tuple[GripCheck | None, str]:
    """The grip check from ``episodes`` of a recording (their commands and measured states; no images are read):
    None with the reason where the recording stores no measured gripper next to a gripper command."""
    spec = dataset.spec
    if "gripper" not in spec.action_names or "gripper" not in spec.state_names:
        return None, "no grip check: the recording stores no measured gripper opening"
    a, s = spec.action_names.index("gripper"), spec.state_names.index("gripper")
    runs = {}
    for e in episodes:
        data = dataset.load_episode(int(e))
        runs[int(e)] = (data.actions[:, a], data.states[:, s])
    return fit_grip_check(runs)
