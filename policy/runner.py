"""Autonomous execution: the ALT policy drives the arm through the same control loop as teleoperation.

Per tick: observe, (re)query the policy every ``requery_every`` ticks, and
send the next action of the retrieved chunk through the safety layer. A best
similarity below gamma halts the arm at once and ends the run with reason
"ood", carrying the evidence (the observation, the best matches and their
similarities). Actions whose time has passed are skipped: if a query took
longer than a tick, execution resumes at the chunk entry for *now*.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from robot_drivers.control import ControlLoop, LoopResult, StepOutput, TickRecord
from robot_drivers.rig import Observation, Rig
from robot_drivers.types import Action

from .action_space import check_policy_fits_rig
from .policy import ALTPolicy, Retrieval


@dataclass(frozen=True)
class AutonomyEvent:
    """What the GUI shows each tick."""

    tick: int
    record: TickRecord
    retrieval: Retrieval  # this tick's lookup (its chunk became the executed one when ``queried``)
    queried: bool
    chunk_step: int  # which entry of the chunk was sent
    ood: bool
    tick_ms: float  # time spent in this tick's policy step (embedding + search when queried)


@dataclass
class AutonomyResult:
    loop: LoopResult
    retrievals: list[Retrieval] = field(default_factory=list)
    ood_evidence: Retrieval | None = None
    ood_observation: Observation | None = None

    @property
    def reason(self) -> str:
        return self.loop.reason

    def latencies_ms(self) -> np.ndarray:
        return np.array([r.embed_ms + r.search_ms for r in self.retrievals])


class PolicySource:
    """An ActionSource that executes retrieved chunks.

    The observation is embedded and looked up every tick, so the OOD gate and
    the display are always current; the chunk being executed is replaced by
    the newest retrieval every ``requery_every`` ticks (1 = every tick).
    Between replacements the chunk runs open loop, which carries the arm
    through stretches of a demonstration where consecutive frames look alike.
    """

    def __init__(self, policy: ALTPolicy, requery_every: int | None = None):
        self.policy = policy
        self.requery_every = requery_every or policy.config.requery_every
        self.current: Retrieval | None = None  # whose chunk is executing
        self.latest: Retrieval | None = None  # this tick's lookup
        self.retrievals: list[Retrieval] = []
        self._chunk_time = 0.0
        self._ticks_on_chunk = 0
        self.last_queried = False
        self.last_step = 0
        self.last_ms = 0.0
        self.ood_observation: Observation | None = None

    def begin(self, observation: Observation) -> None:
        self.current = self.latest = None
        self._ticks_on_chunk = 0

    def step(self, observation: Observation, dt: float) -> StepOutput:
        t0 = time.perf_counter()
        now = observation.state.host_time
        frames = observation.frames
        prefer = self.current.matches[0].episode if self.current is not None else None
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7], prefer_episode=prefer)
        self.retrievals.append(self.latest)
        if self.latest.ood:
            self.ood_observation = observation
            self.current = self.latest
            self.last_ms = (time.perf_counter() - t0) * 1000
            return StepOutput(None, halt="ood", info={"similarity": self.latest.similarity})
        switch = self.current is None or self._ticks_on_chunk >= self.requery_every
        self.last_queried = switch
        if switch:
            self.current = self.latest
            self._chunk_time = now
            self._ticks_on_chunk = 0
        # Stale-action dropping: the entry for the current time, not simply the next one.
        elapsed_ticks = int(round((now - self._chunk_time) / dt))
        index = min(max(elapsed_ticks, self._ticks_on_chunk), len(self.current.chunk) - 1)
        self._ticks_on_chunk += 1
        self.last_step = index
        self.last_ms = (time.perf_counter() - t0) * 1000
        return StepOutput(Action.from_array(self.current.chunk[index]),
                          info={"similarity": self.latest.similarity, "chunk_step": index})

    def sent(self, action: Action) -> None:
        pass


def run_autonomous(rig: Rig, policy: ALTPolicy, *, max_ticks: int | None = None,
                   requery_every: int | None = None,
                   on_event: Callable[[AutonomyEvent], None] | None = None,
                   stop_when: Callable[[], bool] | None = None,
                   cancel: threading.Event | None = None) -> AutonomyResult:
    """Run the policy on the rig until OOD, ``stop_when()`` holds, ``max_ticks``, cancel or a device error."""
    if abs(rig.clock.rate_hz - policy.info.get("fps", rig.clock.rate_hz)) > 1e-9:
        raise ValueError(f"the policy was trained on {policy.info['fps']:g} Hz demonstrations but the rig runs at "
                         f"{rig.clock.rate_hz:g} Hz; its action chunks would play at the wrong speed")
    check_policy_fits_rig(policy.info)  # e.g. joint positions from a LeRobot dataset on a pose-commanded arm
    source = PolicySource(policy, requery_every)
    stop = threading.Event()
    done = threading.Event()

    def on_tick(record: TickRecord) -> None:
        if on_event is not None and source.latest is not None:
            on_event(AutonomyEvent(record.timing.index, record, source.latest, source.last_queried,
                                   source.last_step, record.output.halt == "ood", source.last_ms))
        if stop_when is not None and stop_when():
            done.set()
            stop.set()
        if cancel is not None and cancel.is_set():
            stop.set()

    if cancel is not None and cancel.is_set():
        stop.set()
    loop = ControlLoop(rig).run(source, max_ticks=max_ticks, on_tick=on_tick, cancel=stop)
    if loop.reason == "cancelled" and done.is_set():
        loop.reason = "done"  # ended by stop_when, not by the caller
    result = AutonomyResult(loop, source.retrievals)
    if loop.reason == "ood":
        result.ood_evidence = source.current
        result.ood_observation = source.ood_observation
    return result
