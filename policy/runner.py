"""Autonomous execution: the ALT policy drives the arm through the same control loop as teleoperation.

Per tick: observe, (re)query the policy every ``requery_every`` ticks, and
send the next action of the retrieved chunk through the safety layer. When the
OOD gate says no (a best similarity below gamma, or a view that disagrees with
the retrieved frame) the arm halts at once and the run ends with reason "ood",
carrying the evidence (the observation, the best matches, the signal that
stopped it and why). A progress watchdog ends the run with reason "stall" when
the hand has not moved and the gripper has not changed for a while, or when the run has taken much longer
than any demonstration (``time_limit_factor``). Within the demonstration being executed, execution never
goes back in time: a retrieval of an earlier frame of it (the grasp settling, a still stretch that looks
alike) continues from where execution stands instead of replaying the wait. Actions
whose time has passed are skipped: if a query took longer than a tick,
execution resumes at the chunk entry for *now*. A chunk is anchored at its
observation's capture time, so the time from capture to action (frame
alignment, transport, lookup) is skipped the same way.

A method that replays otherwise (the aligned method: policy/aligned/source.py) subclasses
``PolicySource``; ``policy.make_source()`` picks the one for the policy's method.

A *shadow run* (``run_autonomous(..., shadow=True)``, simulated rigs only) computes every signal of the gate and
the watchdog each tick and logs when each first fired (:class:`ShadowLog`), but nothing stops the arm: the run goes
on to its end, so evaluation can tell which stops were needed (evaluation/detection.py judges the gate as a
failure detector from such runs).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from robot_drivers.control import ControlLoop, LoopResult, StepOutput, TickRecord
from robot_drivers.rig import Observation, Rig
from core.types import Action

from policy.action_space import check_policy_fits_rig
from policy.database import Match
from policy.gate import PERSISTENT_SIGNALS, UPPER_BOUND_SIGNALS, Persistence, fails
from policy.grasp_check import GRIPPER_OPEN
from policy.policy import ALTPolicy, Retrieval


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
    replay: "ReplayState | None" = None  # the aligned method: what is being replayed, and where it stands


@dataclass(frozen=True)
class ReplayState:
    """The aligned method's replay at one tick, for the window."""

    episode: int
    frame: int  # the demonstration's frame being executed
    bottleneck: int  # its bottleneck frame (the target frame the approach aligns to)
    correction: np.ndarray  # xy (m) the demonstration is shifted by once fully aligned
    applied: float  # share of the correction applied at this frame (0..1)
    aligning: bool = False  # held at the bottleneck, turning the hand to the object
    turn_deg: float = 0.0  # how far the demonstration's orientation is turned about the vertical

    @property
    def phase(self) -> str:
        return "align" if self.aligning else "approach" if self.applied < 1.0 else "replay"

    @property
    def remaining(self) -> np.ndarray:
        """The part of the correction still to be applied (m)."""
        return (1.0 - self.applied) * self.correction


@dataclass
class AutonomyResult:
    loop: LoopResult
    retrievals: list[Retrieval] = field(default_factory=list)
    ood_evidence: Retrieval | None = None
    ood_observation: Observation | None = None
    thresholds: dict = field(default_factory=dict)  # what the gate and the watchdog used (gamma at the start)
    gamma_changes: list[dict] = field(default_factory=list)  # gamma changed while it ran (policy.set_gamma)
    # "similarity", "hand_view", "third_view", "grasp_alignment" (reason "ood"), "stall" or "time_limit" (reason
    # "stall")
    stop_signal: str | None = None
    message: str = ""  # why it stopped, for the operator's halt box
    shadow: ShadowLog | None = None  # a shadow run's log (None: an ordinary run)

    @property
    def reason(self) -> str:
        return self.loop.reason

    def latencies_ms(self) -> np.ndarray:
        return np.array([r.embed_ms + r.search_ms for r in self.retrievals])


#: The aggregates a shadow run logs beside each signal: "gate" (any of the OOD gate's signals) and "any" (the gate
#: or the watchdog: what an ordinary run would have stopped on).
GATE, ANY = "gate", "any"
#: The watchdog's signals (reason "stall").
WATCHDOG_SIGNALS = ("stall", "time_limit")
#: A gripper command below this closes the hand (1 = open, 0 = closed): the threshold the grasp and grip checks use.
CLOSE_BELOW = GRIPPER_OPEN


@dataclass
class ShadowLog:
    """What a shadow run's signals did: the tick (0-based) each first fired (absent: never), each signal's worst
    value over the run (the lowest; the highest for a signal that stops when above, e.g. "correction"), the
    threshold each was judged against when it fired first (or at the run's last lookup), and the tick the gripper
    was first commanded closed after having been open (None: never)."""

    first_alarm: dict = field(default_factory=dict)
    extremes: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    first_close_tick: int | None = None
    messages: dict = field(default_factory=dict)  # signal -> what it said when it first fired

    def fire(self, signal: str, tick: int, message: str = "", stops: bool = True) -> None:
        """``signal`` fired at ``tick``. ``stops``: an ordinary run would have stopped here (the gate's verdict or
        the watchdog's), so the aggregates fire too; False for one signal's reading crossing its threshold where
        the gate's verdict is logged on its own (a signal can cross where the gate does not judge it)."""
        if signal not in self.first_alarm:
            self.first_alarm[signal] = int(tick)
            if message:
                self.messages[signal] = message
        if stops and signal not in (GATE, ANY):
            if signal not in WATCHDOG_SIGNALS:
                self.first_alarm.setdefault(GATE, int(tick))
            self.first_alarm.setdefault(ANY, int(tick))

    def reading(self, name: str, value: float, threshold: float | None) -> None:
        if value is None or not np.isfinite(value):
            return
        worse = max if name in UPPER_BOUND_SIGNALS else min
        self.extremes[name] = float(worse(self.extremes.get(name, value), value))
        if threshold is not None and np.isfinite(threshold) and name not in self.first_alarm:
            self.thresholds[name] = float(threshold)


class ProgressWatchdog:
    """Stops an arm that makes no progress: over the last ``seconds``, the hand stayed within ``distance``
    (m) of where it was and the measured gripper opening changed less than ``gripper``."""

    def __init__(self, seconds: float, distance: float, gripper: float = 0.05):
        if seconds <= 0 or distance <= 0:
            raise ValueError("the progress watchdog needs a positive time and distance")
        self.seconds, self.distance, self.gripper = seconds, distance, gripper
        self._history: list[tuple[float, np.ndarray, float]] = []

    def reset(self) -> None:
        self._history.clear()

    def update(self, t: float, position: np.ndarray, gripper: float) -> str | None:
        """Feed one measurement; returns the stall message when the arm has made no progress."""
        self._history.append((t, np.asarray(position, float).copy(), float(gripper)))
        while len(self._history) > 1 and t - self._history[1][0] >= self.seconds:
            self._history.pop(0)  # keep exactly one sample at or before the window's start
        t0 = self._history[0][0]
        if t - t0 < self.seconds - 1e-9:
            return None
        start = self._history[0][1]
        moved = max(float(np.linalg.norm(p - start)) for _, p, _ in self._history)
        grip = [g for _, _, g in self._history]
        if moved < self.distance and max(grip) - min(grip) < self.gripper:
            return (f"no progress for {t - t0:.1f} s: the hand moved {1000 * moved:.0f} mm (< "
                    f"{1000 * self.distance:.0f} mm) and the gripper did not change")
        return None


class PolicySource:
    """An ActionSource that executes retrieved chunks.

    The observation is embedded and looked up every tick, so the OOD gate and
    the display are always current; the chunk being executed is replaced by
    the newest retrieval every ``requery_every`` ticks (1 = every tick).
    Between replacements the chunk runs open loop, which carries the arm
    through stretches of a demonstration where consecutive frames look alike.
    """

    def __init__(self, policy: ALTPolicy, requery_every: int | None = None,
                 watchdog: ProgressWatchdog | None = None, time_limit: float | None = None,
                 shadow: bool = False):
        self.policy = policy
        self.shadow = shadow  # log every signal, stop on none (simulated rigs only: run_autonomous checks)
        self.shadow_log: ShadowLog | None = None
        self._was_open = False
        # the grip check: which close of the run the gripper is in (-1: none yet), how many ticks since it was
        # sent (None: open now), and whether the last command sent was closed
        self._closes, self._since_close, self._closed = -1, None, False
        self._tick_time = self._close_time = None  # the latest tick's time, the close's (the rig's clock)
        self._grasping = False  # the gripper closed after this run had it open (it may hold what it closed on)
        self.time_limit = time_limit
        self._start_time: float | None = None
        self.requery_every = requery_every or policy.config.requery_every
        self.watchdog = watchdog
        self.stop_signal: str | None = None
        self.message = ""
        self.current: Retrieval | None = None  # whose chunk is executing
        self.latest: Retrieval | None = None  # this tick's lookup
        self.retrievals: list[Retrieval] = []
        self._chunk_time = 0.0
        self._ticks_on_chunk = 0
        self.last_queried = False
        self.last_step = 0
        self.last_ms = 0.0
        self.ood_observation: Observation | None = None
        self.replay: ReplayState | None = None  # a replaying method's state at this tick (the window shows it)
        self._persistence = Persistence(policy.config.gate_persistence)

    def begin(self, observation: Observation) -> None:
        self.current = self.latest = None
        self.replay = None
        self._start_time = None
        self._ticks_on_chunk = 0
        self.stop_signal, self.message = None, ""
        if self.watchdog is not None:
            self.watchdog.reset()
        self.shadow_log = ShadowLog() if self.shadow else None
        self._was_open = False
        self._closes, self._since_close, self._closed = -1, None, False
        self._tick_time = self._close_time = None
        self._grasping = False
        self._persistence = Persistence(self.policy.config.gate_persistence)

    def deferred(self) -> frozenset[str]:
        """The signals (the views', the grasp check's) that may not stop this tick's lookup though they fail
        (policy.gate.Persistence). None is held back while the gripper holds something, closed on what it closed
        on in this run (commanded closed after the run had it open; a gripper closed from the run's start, as the
        demonstrations started (a press with closed fingers), holds nothing the run picked up), nor while it is
        about to close: a close due within the ticks a stop could be held back for would grasp under a view the
        gate doubts (a grasp closed on air, or on the object off its centre, is not undone by stopping after
        it)."""
        return self._persistence.deferred(holding=self._grasping or self._closing())

    def _closing(self) -> bool:
        """Whether the open gripper is due to be commanded closed within the next ``gate_persistence`` ticks (as
        far as the executing chunk says)."""
        ticks = self._persistence.lookups
        return ticks > 1 and self._close_ahead(ticks)

    def _close_ahead(self, ticks: int | None = None) -> bool:
        """Whether the executing chunk commands the open gripper closed within the next ``ticks`` ticks (default
        what is left of it, ``chunk_length`` at most). Asked of what is left (``step``): the hand is descending
        onto its demonstration's grasp, and another demonstration's chunk would move it sideways beside the object
        (a mug pushed 2.7 cm by the fingers as the run changed demonstrations three ticks before the close); the
        demonstration is kept, and the gate judges the lookup on it."""
        if self._closed:
            return False
        upcoming = self._upcoming_grippers(self.policy.config.chunk_length if ticks is None else ticks)
        return bool(len(upcoming) and np.any(upcoming < CLOSE_BELOW))

    def _held_back_before_a_close(self, now: float, dt: float) -> bool:
        """Whether this tick's lookup failed on a signal held back (``Retrieval.held_back``) while the chunk it
        brings replaces the executing one now (``requery_every``; as :meth:`_no_rewind` makes it) and commands the
        open gripper closed within the ``gate_persistence`` ticks the signal was held back for (:meth:`deferred`
        looked at the executing chunk only: this close comes with the new one)."""
        latest = self.latest
        if latest is None or latest.held_back is None or latest.chunk is None or self._closed:
            return False
        if self.current is not None and self._ticks_on_chunk < self.requery_every:
            return False  # the executing chunk goes on: deferred() judged it
        chunk = self._no_rewind(latest, now, dt).chunk
        return bool(np.any(np.asarray(chunk[:self._persistence.lookups, 7]) < CLOSE_BELOW))

    def _upcoming_grippers(self, ticks: int) -> np.ndarray:
        """The gripper commands of the actions the next ``ticks`` ticks are due to send, from the executing
        chunk (empty before the first lookup)."""
        if self.current is None or self.current.chunk is None:
            return np.zeros(0)
        return np.asarray(self.current.chunk[self.last_step + 1:self.last_step + 1 + ticks, 7])

    def step(self, observation: Observation, dt: float) -> StepOutput:
        t0 = time.perf_counter()
        now = observation.latest_state.host_time
        frames = observation.frames
        prefer = self.current.matches[0].episode if self.current is not None else None
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7], prefer_episode=prefer,
                                           hold_episode=self._close_ahead(),
                                           gripper=observation.state.gripper if self.current is None else None,
                                           deferred=self.deferred())
        if self._held_back_before_a_close(now, dt):
            # this lookup's own chunk takes over now and closes the gripper within the ticks its failing signal
            # was held back for: it stops as if nothing had been held back (no close under a doubted view)
            signal, reason = self.latest.held_back
            self.latest = replace(self.latest, ood=True, ood_signal=signal, ood_reason=reason, held_back=None)
        halted = self._gate_and_watch(observation, now, t0)
        if halted is not None:
            return halted
        switch = self.current is None or self._ticks_on_chunk >= self.requery_every
        self.last_queried = switch
        if switch:
            self.current = self._no_rewind(self.latest, now, dt)
            self._chunk_time = observation.capture_time  # entry 0 belongs to when the frames were taken
            self._ticks_on_chunk = 0
        index = self._due_index(now, dt)
        self._ticks_on_chunk += 1
        self.last_step = index
        self.last_ms = (time.perf_counter() - t0) * 1000
        return StepOutput(Action.from_array(self.current.chunk[index]),
                          info={"similarity": self.latest.similarity, "chunk_step": index})

    def sent(self, action: Action) -> None:
        closed = action.gripper < CLOSE_BELOW
        if closed and not self._closed:
            self._closes, self._since_close = self._closes + 1, 1  # the next observation: one tick after the close
            self._close_time = self._tick_time  # the tick it was sent on (a clock of the rig's)
        elif closed:
            self._since_close += 1
        else:
            self._since_close = None
        self._grasping = closed and (self._grasping or self._was_open)
        self._closed = closed
        if action.gripper >= CLOSE_BELOW:
            self._was_open = True
        if self.shadow_log is None:
            return
        if closed and self._was_open and self.shadow_log.first_close_tick is None:
            self.shadow_log.first_close_tick = len(self.retrievals) - 1

    def _gate_and_watch(self, observation: Observation, now: float, t0: float,
                        keep_current: bool = False) -> StepOutput | None:
        """Record this tick's lookup and stop on what the gate, the time limit or the progress watchdog says
        (None: go on). ``keep_current``: an OOD stop keeps what was executing as the evidence's context (the
        aligned replay's object location) instead of the new lookup. In a shadow run every check is made and
        logged (``_halt`` logs and returns None), and each signal's reading too."""
        self._tick_time = now
        grip = self._grip(observation)
        self.retrievals.append(self.latest)
        self._persistence.count(self.latest.readings or {})
        if self.shadow_log is not None:
            self._log_readings()
        if self.latest.ood:
            reason = self.latest.ood_reason
            streak = self._persistence.doubted if self.latest.ood_signal in PERSISTENT_SIGNALS else 0
            own = self._persistence.streaks.get(self.latest.ood_signal, 0)
            if streak > 1:
                reason = f"{reason} ({streak} lookups in a row" + \
                    (")" if own == streak else f" failing, this signal on the last {own})")
            halted = self._ood_halt(observation, self.latest.ood_signal, reason, keep_current, t0)
            if halted is not None:
                return halted
        if grip is not None:
            halted = self._ood_halt(observation, "grip", grip, keep_current, t0)
            if halted is not None:
                return halted
        if self._start_time is None:
            self._start_time = now
        if self.time_limit is not None and now - self._start_time > self.time_limit:
            halted = self._halt("stall", "time_limit", f"not finished after {now - self._start_time:.1f} s, "
                                f"{self.policy.config.time_limit_factor:g} times the longest demonstration", t0)
            if halted is not None:
                return halted
        if self.watchdog is not None:
            stalled = self.watchdog.update(now, observation.state.ee_array()[:3], observation.state.gripper)
            if stalled:
                return self._halt("stall", "stall", stalled, t0)
        return None

    def _ood_halt(self, observation: Observation, signal: str, message: str, keep_current: bool,
                  t0: float) -> StepOutput | None:
        """Stop on a gate signal (reason "ood"), keeping the observation and what was executing as the evidence."""
        if self.shadow_log is None:
            self.ood_observation = observation
            self.current = (self.current if keep_current else None) or self.latest
        return self._halt("ood", signal, message, t0)

    def _grip(self, observation: Observation) -> str | None:
        """The grip check on this tick's measured opening (policy/grip_check.py): its reading joins this tick's
        lookup's readings; the reason to stop in words where it fails (None: it passes or does not apply)."""
        check = getattr(self.policy, "grip_check", None)
        if check is None or self._since_close is None:
            return None
        opening = observation.state.gripper
        tick = self._ticks_since_close(observation)
        judged = check.judge(self._closes, tick, opening)
        if judged is None:
            return None
        excess, low, high = judged
        self.latest = replace(self.latest, readings={**(self.latest.readings or {}), "grip": (excess, check.margin)})
        if not fails("grip", excess, check.margin):
            return None
        close = "the gripper's close" if self._closes == 0 else f"close {self._closes + 1}"
        return (f"the fingers closed further than in any demonstration: {tick} ticks after {close} "
                f"they read {opening:.3f} open, the demonstrations {low:.3f} to {high:.3f} (margin "
                f"{check.margin:.3f}); the object is slipping out, or the grasp missed it")

    def _ticks_since_close(self, observation: Observation) -> int:
        """Ticks from the close to this measurement, as the recording counts them: the ticks sent since, or, where
        the loop ran late (real time: a tick of 100 ms that took 250), the time elapsed in recorded ticks, whichever
        is more (the fingers kept closing while the loop was late; in lock-step the two agree)."""
        fps = self.policy.info.get("fps")
        if not fps or self._close_time is None:
            return self._since_close
        elapsed = (observation.state.host_time - self._close_time) * float(fps)
        return max(self._since_close, int(round(elapsed)))

    def _log_readings(self) -> None:
        """A shadow run's tick: each signal's value, and where it crossed its threshold (a reading can cross
        where the gate does not judge it: the gate's own verdict is logged by ``_halt``)."""
        log, tick = self.shadow_log, len(self.retrievals) - 1
        for name, (value, threshold) in (self.latest.readings or {}).items():
            log.reading(name, value, threshold)
            if fails(name, value, threshold):
                log.fire(name, tick, stops=False)

    def _halt(self, reason: str, signal: str | None, message: str, t0: float) -> StepOutput | None:
        """Stop the run with ``reason`` ("ood" or "stall"), naming the signal and, for a watchdog, what was
        executing. In a shadow run the signal is logged and None returned: the run goes on."""
        if self.shadow_log is not None:
            self.shadow_log.fire(signal or reason, len(self.retrievals) - 1, message)
            return None
        if reason == "stall":
            m = (self.current or self.latest).matches[0]
            message = f"{message}; it was executing episode {m.episode} from frame {m.frame}"
        self.stop_signal, self.message = signal, message
        self.last_ms = (time.perf_counter() - t0) * 1000
        return StepOutput(None, halt=reason, info={"similarity": self.latest.similarity})

    def _due_index(self, now: float, dt: float) -> int:
        """Stale-action dropping: the executing chunk's entry for the current time, not simply the next one."""
        elapsed_ticks = int(round((now - self._chunk_time) / dt))
        return min(max(elapsed_ticks, self._ticks_on_chunk), len(self.current.chunk) - 1)

    def _no_rewind(self, latest: Retrieval, now: float, dt: float) -> Retrieval:
        """``latest``, unless it is an earlier frame of the demonstration being executed: then that
        demonstration's entry for where execution stands now (its frame counts on with the chunk)."""
        if self.current is None:
            return latest
        executing, new = self.current.matches[0], latest.matches[0]
        if new.episode != executing.episode:
            return latest
        position = executing.frame + self._due_index(now, dt)
        if new.frame >= position:
            return latest
        row = self.policy.database.row_of(executing.episode, position)
        while row is None and position > new.frame + 1:  # past the demonstration's end: its last frame
            position -= 1
            row = self.policy.database.row_of(executing.episode, position)
        if row is None:
            return latest
        db = self.policy.database
        moved = Match(row, executing.episode, int(db.frames[row]), float(db.embeddings[row] @ db.embeddings[new.row]))
        return replace(latest, matches=[moved] + list(latest.matches[1:]), chunk=db.chunks[row])


def run_autonomous(rig: Rig, policy: ALTPolicy, *, max_ticks: int | None = None,
                   requery_every: int | None = None,
                   on_event: Callable[[AutonomyEvent], None] | None = None,
                   stop_when: Callable[[], bool] | None = None,
                   cancel: threading.Event | None = None,
                   watchdog: ProgressWatchdog | None | bool = True, shadow: bool = False) -> AutonomyResult:
    """Run the policy on the rig until OOD, a stall, ``stop_when()`` holds, ``max_ticks``, cancel or a device
    error. ``watchdog``: True for the policy's configured one, False/None for none, or your own.

    ``shadow``: a shadow run: every signal is computed and logged (``AutonomyResult.shadow``) but none stops the
    arm; it ends only by ``stop_when``, ``max_ticks``, cancel or a device error. Refused on a real rig (one without
    a scene control): there a stop the gate called for must stop the arm."""
    if shadow and rig.scene_control() is None:
        raise ValueError("a shadow run lets the arm go on past every stop the gate calls for: it runs on a simulated "
                         "rig only, never on a real arm")
    if shadow and max_ticks is None and stop_when is None:
        raise ValueError("a shadow run needs an end: give max_ticks or stop_when")
    if abs(rig.clock.rate_hz - policy.info.get("fps", rig.clock.rate_hz)) > 1e-9:
        raise ValueError(f"the policy was trained on {policy.info['fps']:g} Hz demonstrations but the rig runs at "
                         f"{rig.clock.rate_hz:g} Hz; its action chunks would play at the wrong speed")
    check_policy_fits_rig(policy.info)  # e.g. joint positions from a LeRobot dataset on a pose-commanded arm
    if watchdog is True:
        watchdog = ProgressWatchdog(policy.config.stall_seconds, policy.config.stall_distance)
    source = policy.make_source(requery_every=requery_every, watchdog=watchdog or None,
                                time_limit=policy.time_limit_seconds(), shadow=shadow)
    thresholds = policy.thresholds()
    changes_before = len(policy.gamma_changes)
    stop = threading.Event()
    done = threading.Event()

    def on_tick(record: TickRecord) -> None:
        if on_event is not None and source.latest is not None:
            on_event(AutonomyEvent(record.timing.index, record, source.latest, source.last_queried,
                                   source.last_step, record.output.halt == "ood", source.last_ms, source.replay))
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
    result = AutonomyResult(loop, source.retrievals, thresholds=thresholds,
                            gamma_changes=policy.gamma_changes[changes_before:], shadow=source.shadow_log)
    if loop.reason == "ood":
        result.ood_evidence = source.current
        result.ood_observation = source.ood_observation
    if loop.reason in ("ood", "stall"):
        result.stop_signal, result.message = source.stop_signal, source.message
    return result
