"""`sim-check`: a simulated rig's scripted operator in lock-step, per scenario: its success rate and the time a tick
spends in physics and rendering.

It checks the rig before any policy is judged on it: a scenario the scripted operator cannot do is not one to
evaluate a policy on. Any simulated rig: scenes and the task check come through its scene control, the
demonstrator through ``rig.scripted_operator``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from robot_drivers.control import ControlLoop, TeleopSource, TickRecord
from robot_drivers.rig import Rig

from evaluation.scenes import scene_control_of

MAX_EPISODE_TICKS = 300


@dataclass
class ExpertCheckReport:
    scenario: str
    rate_hz: float = 10.0
    episodes: int = 0
    successes: int = 0
    ticks: list = field(default_factory=list)  # per episode
    physics_ms: list = field(default_factory=list)  # per tick (when the rig's clock reports it)
    render_ms: list = field(default_factory=list)  # per tick, all cameras (when the rig's clock reports it)
    wall_s: float = 0.0
    failures: list = field(default_factory=list)  # (seed, reason)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def summary(self, cameras: int, image_size: int) -> str:
        med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
        p99 = lambda xs: float(np.percentile(xs, 99)) if xs else float("nan")  # noqa: E731
        lines = [
            f"scenario        {self.scenario}",
            f"success         {self.successes}/{self.episodes} ({100 * self.success_rate:.1f}%)",
            f"ticks/episode   median {med(self.ticks):.0f} ({self.rate_hz:g} Hz control)",
            f"physics / tick  median {med(self.physics_ms):.2f} ms, p99 {p99(self.physics_ms):.2f} ms",
            f"render / tick   median {med(self.render_ms):.2f} ms, p99 {p99(self.render_ms):.2f} ms "
            f"({cameras} cameras at {image_size}x{image_size})",
            f"wall time       {self.wall_s:.1f} s",
        ]
        if self.failures:
            lines.append("failed seeds    " + ", ".join(f"{s} ({r})" for s, r in self.failures))
        return "\n".join(lines)


def make_check_rig(robot: str, image_size: int = 128, cameras: bool = True) -> Rig:
    """``robot`` in lock-step at its own rate, not connected. ``cameras`` False: physics only (its cameras are left
    out before connecting, so none renders)."""
    from robot_drivers.factory import make_rig

    rig = make_rig(robot, clock="lockstep", image_size=image_size)
    if not cameras:
        rig.cameras.clear()  # a camera renders only once connected, and connecting the rig connects these
    return rig


def run_expert_check(rig: Rig, episodes: int, seed: int = 0, scenario: str = "in_distribution",
                     progress=None) -> ExpertCheckReport:
    """``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) of ``scenario`` on the connected lock-step ``rig``,
    each demonstrated by its scripted operator and judged by its task check."""
    control = scene_control_of(rig, "sim-check")
    expert = rig.scripted_operator(0)
    if expert is None:
        raise ValueError("this rig has no scripted operator to check")
    report = ExpertCheckReport(scenario=scenario, rate_hz=rig.clock.rate_hz)
    loop = ControlLoop(rig)
    clock = rig.clock

    def on_tick(record: TickRecord) -> None:
        physics, render = getattr(clock, "last_physics_s", None), getattr(clock, "last_render_s", None)
        if record.timing.index > 0 and physics is not None and render is not None:
            report.physics_ms.append(physics * 1000)
            report.render_ms.append(render * 1000)

    start = time.perf_counter()
    for i in range(episodes):
        episode_seed = seed + i
        rig.arm.release()  # a scene reset keeps a latched stop; a scripted run lifts the last episode's
        control.reset(episode_seed, scenario)
        expert.reset(episode_seed)
        result = loop.run(TeleopSource(expert), max_ticks=MAX_EPISODE_TICKS, on_tick=on_tick)
        ok = control.task_succeeded()
        report.episodes += 1
        report.successes += int(ok)
        report.ticks.append(result.ticks)
        if not ok:
            report.failures.append((episode_seed, result.reason if result.reason != "stop_button"
                                    else "task not done"))
        if progress is not None:
            progress(i + 1, episodes, report.successes)
    report.wall_s = time.perf_counter() - start
    return report
