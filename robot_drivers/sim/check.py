"""`sim-check`: the scripted expert on the simulated rig, in lock-step, with timing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from robot_drivers.control import ControlLoop, TeleopSource, TickRecord
from robot_drivers.sim.expert import ScriptedExpert
from robot_drivers.sim.rig import SimRig, SimRigConfig

MAX_EPISODE_TICKS = 300


@dataclass
class SimCheckReport:
    scenario: str
    episodes: int = 0
    successes: int = 0
    ticks: list = field(default_factory=list)  # per episode
    physics_ms: list = field(default_factory=list)  # per tick
    render_ms: list = field(default_factory=list)  # per tick, all cameras
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
            f"ticks/episode   median {med(self.ticks):.0f} (10 Hz control)",
            f"physics / tick  median {med(self.physics_ms):.2f} ms, p99 {p99(self.physics_ms):.2f} ms",
            f"render / tick   median {med(self.render_ms):.2f} ms, p99 {p99(self.render_ms):.2f} ms "
            f"({cameras} cameras at {image_size}x{image_size})",
            f"wall time       {self.wall_s:.1f} s",
        ]
        if self.failures:
            lines.append("failed seeds    " + ", ".join(f"{s} ({r})" for s, r in self.failures))
        return "\n".join(lines)


def run_sim_check(episodes: int, seed: int = 0, scenario: str = "in_distribution", image_size: int = 128,
                  cameras: bool = True, progress=None) -> SimCheckReport:
    config = SimRigConfig(clock="lockstep").with_image_size(image_size, image_size)
    if not cameras:
        config.cameras = []
    rig = SimRig(config)
    report = SimCheckReport(scenario=scenario)
    expert = ScriptedExpert(rig.world)
    loop = ControlLoop(rig)
    clock = rig.clock

    def on_tick(record: TickRecord) -> None:
        if record.timing.index > 0:
            report.physics_ms.append(clock.last_physics_s * 1000)
            report.render_ms.append(clock.last_render_s * 1000)

    start = time.perf_counter()
    with rig:
        for i in range(episodes):
            episode_seed = seed + i
            rig.reset(episode_seed, scenario)
            expert.reset(episode_seed)
            result = loop.run(TeleopSource(expert), max_ticks=MAX_EPISODE_TICKS, on_tick=on_tick)
            ok = rig.success()
            report.episodes += 1
            report.successes += int(ok)
            report.ticks.append(result.ticks)
            if not ok:
                report.failures.append((episode_seed, result.reason if result.reason != "stop_button"
                                        else "mug not held"))
            if progress is not None:
                progress(i + 1, episodes, report.successes)
    rig.close()
    report.wall_s = time.perf_counter() - start
    return report
