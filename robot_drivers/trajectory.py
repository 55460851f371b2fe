"""Time-stamped pose waypoints, interpolated for a servo loop that runs faster than the control loop.

The control loop sends one target per tick (10 Hz); a UR controller wants a
``servoL`` every 2-8 ms. Between the two sits a :class:`PoseTrajectory`: the
control loop schedules each target for a time, the servo loop reads the pose
for its own tick. Position is interpolated linearly, orientation by slerp;
before the first knot and after the last the pose is held.
"""

from __future__ import annotations

import bisect

import numpy as np

from core.transforms import quat_slerp
from core.types import Pose


class PoseTrajectory:
    """Knots (time, pose) in increasing time; scheduling replaces the plan from now on.

    The knots are an immutable tuple replaced in one assignment, so one thread may read poses while another
    schedules waypoints without a lock.
    """

    def __init__(self, pose: Pose, t: float):
        self._knots: tuple[tuple[float, Pose], ...] = ((float(t), pose),)

    @property
    def knots(self) -> tuple[tuple[float, Pose], ...]:
        return self._knots

    def at(self, t: float) -> Pose:
        return _pose_at(self._knots, t)

    def schedule(self, pose: Pose, t: float, now: float) -> bool:
        """Reach ``pose`` at time ``t``; False (and nothing changes) when ``t`` is not after ``now``.

        The trajectory continues from where it is at ``now``; waypoints already scheduled before ``t`` are
        kept, those at or after ``t`` are replaced by this one (the newest command wins).
        """
        t, now = float(t), float(now)
        if not np.isfinite(t) or t <= now:
            return False
        knots = self._knots
        kept = tuple(k for k in knots if now < k[0] < t)
        self._knots = ((now, _pose_at(knots, now)), *kept, (t, pose))
        return True


def _pose_at(knots: tuple[tuple[float, Pose], ...], t: float) -> Pose:
    i = bisect.bisect_right([k[0] for k in knots], t)
    if i == 0:
        return knots[0][1]
    if i == len(knots):
        return knots[-1][1]
    (t0, a), (t1, b) = knots[i - 1], knots[i]
    w = (t - t0) / (t1 - t0)
    return Pose(a.position + w * (b.position - a.position), quat_slerp(a.orientation, b.orientation, w))
