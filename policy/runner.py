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

The aligned method (policy/aligned/alignment.py) finds the object at the run's first tick, then replays the retrieved
demonstration from the matched frame on, shifted onto the object, in the demonstration's own time: the
lookup still runs every tick, for the gate and the display, and the grasp check compares the live hand view
with the frame being replayed. Its phases: ``approach`` (the correction ramping in), ``align`` (held at the
demonstration's bottleneck, the hand turned about the vertical until the object's silhouette in the hand view
sits as it sat in the demonstration's: the object may stand turned otherwise than the demonstration's did),
``replay`` (the rest, shifted and turned).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from robot_drivers.control import ControlLoop, LoopResult, StepOutput, TickRecord
from robot_drivers.rig import Observation, Rig
from core.transforms import quat_multiply, rotvec_to_quat, yaw_of
from core.types import Action

from policy.action_space import check_policy_fits_rig
from policy.database import Match
from policy.encoder import resize_view
from policy.policy import REPLAY_LAG_FRAMES, ALTPolicy, Retrieval


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

    @property
    def reason(self) -> str:
        return self.loop.reason

    def latencies_ms(self) -> np.ndarray:
        return np.array([r.embed_ms + r.search_ms for r in self.retrievals])


#: The align phase: the hand has reached the heading asked for within this; at most this many turns and ticks.
ARRIVED_RAD = np.radians(3.0)
ALIGN_MAX_TURNS = 3
ALIGN_MAX_TICKS = 30
#: The replay closes the gripper only once the hand is this near (m) where the shifted demonstration closed it:
#: on a loaded machine the arm trails the replayed frames, and a grasp closed on the way there misses.
GRASP_ARRIVAL_M = 0.015
#: The replay runs at most this many frames ahead of the frame whose (shifted) target the hand has reached:
#: an arm that trails (a loaded machine's late ticks, a slow arm) follows the demonstration's path instead of
#: cutting its corners, and the grasp check compares the hand view with frames near where the hand is (it also
#: looks this many frames back, ``policy.REPLAY_LAG_FRAMES``).
REPLAY_LEAD_FRAMES = REPLAY_LAG_FRAMES
#: Targets within this (m) of the nearest count as reached together (a pause in the demonstration).
REACHED_TIE_M = 0.002


def _wrap_half_turn(angle: float) -> float:
    """An angle in [-pi/2, pi/2): the gripper closes the same way turned half a turn."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)


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
                 watchdog: ProgressWatchdog | None = None, time_limit: float | None = None):
        self.policy = policy
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
        self.replay: ReplayState | None = None
        self._replay_start: tuple[int, int, float] | None = None  # episode, frame, capture time of the aligned run
        self._held = 0  # ticks the replay was held at the bottleneck to align
        self._aligned = False
        self._turn = 0.0  # rad about the vertical, applied to the demonstration's orientations
        self._turn_goal: float | None = None  # the hand heading last commanded by the align phase
        self._turns = 0
        self._at_grasp = False  # the hand has reached the shifted grasp pose: the replay may close the gripper
        self._reached = 0  # the replayed frame whose shifted target the hand has come nearest

    def begin(self, observation: Observation) -> None:
        self.current = self.latest = None
        self.replay, self._replay_start = None, None
        self._held, self._aligned, self._turn, self._turn_goal, self._turns = 0, False, 0.0, None, 0
        self._at_grasp = False
        self._start_time = None
        self._ticks_on_chunk = 0
        self.stop_signal, self.message = None, ""
        if self.watchdog is not None:
            self.watchdog.reset()

    def step(self, observation: Observation, dt: float) -> StepOutput:
        t0 = time.perf_counter()
        now = observation.latest_state.host_time
        frames = observation.frames
        if self.policy.locator is not None:
            return self._aligned_step(observation, dt, t0)
        prefer = self.current.matches[0].episode if self.current is not None else None
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7], prefer_episode=prefer,
                                           gripper=observation.state.gripper if self.current is None else None)
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
        pass

    def _gate_and_watch(self, observation: Observation, now: float, t0: float,
                        keep_current: bool = False) -> StepOutput | None:
        """Record this tick's lookup and stop on what the gate, the time limit or the progress watchdog says
        (None: go on). ``keep_current``: an OOD stop keeps what was executing as the evidence's context (the
        aligned replay's object location) instead of the new lookup."""
        self.retrievals.append(self.latest)
        if self.latest.ood:
            self.ood_observation = observation
            self.current = (self.current if keep_current else None) or self.latest
            return self._halt("ood", self.latest.ood_signal, self.latest.ood_reason, t0)
        if self._start_time is None:
            self._start_time = now
        if self.time_limit is not None and now - self._start_time > self.time_limit:
            return self._halt("stall", "time_limit", f"not finished after {now - self._start_time:.1f} s, "
                              f"{self.policy.config.time_limit_factor:g} times the longest demonstration", t0)
        if self.watchdog is not None:
            stalled = self.watchdog.update(now, observation.state.ee_array()[:3], observation.state.gripper)
            if stalled:
                return self._halt("stall", "stall", stalled, t0)
        return None

    def _aligned_step(self, observation: Observation, dt: float, t0: float) -> StepOutput:
        """Retrieve (first tick), align, replay: the demonstration's frames in its own time, shifted."""
        now = observation.latest_state.host_time
        db = self.policy.database
        executing = None
        if self._replay_start is not None:
            episode, first, start_time = self._replay_start
            self._ticks_on_chunk += 1
            frame = first + max(int(round((now - start_time) / dt)), self._ticks_on_chunk) - self._held
            last = int(db.frames[db.episodes == episode].max())
            if self._must_align(episode, first, frame):
                frame = self.policy.locator.bottlenecks[episode]
            frame = self._wait_for_grasp_pose(observation, episode, frame)
            frame = self._within_reach(observation, episode, min(frame, last))
            executing = db.row_of(episode, min(frame, last))
        frames = observation.frames
        target = self.current.target if self.current is not None else None
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7],
                                           prefer_episode=None if executing is None else self._replay_start[0],
                                           target=target, executing_row=executing,
                                           # while turning, and once turned (the table and the fingers no longer
                                           # line up with the demonstration's view; the silhouette was checked)
                                           check_grasp=not (self._aligning(executing) or self._turns),
                                           gripper=observation.state.gripper if executing is None else None)
        halted = self._gate_and_watch(observation, now, t0, keep_current=True)
        if halted is not None:
            return halted
        self.last_queried = self._replay_start is None
        if self._replay_start is None:  # the first tick: the retrieved demonstration and the object's place
            self.current = self.latest
            m = self.latest.matches[0]
            self._replay_start = (m.episode, m.frame, observation.capture_time)
            self._reached = m.frame
            self._ticks_on_chunk = 0
            executing = m.row
        episode = self._replay_start[0]
        locator = self.policy.locator
        frame = int(db.frames[executing])
        bottleneck = locator.bottlenecks.get(episode, 0)
        aligning = self._aligning(executing)
        if aligning:
            self._held += 1
            halt = self._align_turn(observation, episode, executing)
            if halt is not None:
                return self._halt("ood", "alignment", halt, t0)
            aligning = not self._aligned
        correction = locator.correction(self.current.target.xy, episode)
        applied = locator.ramp(episode, frame)
        action = np.array(db.chunks[executing][0], copy=True)  # past the end: its last target, held
        action[:2] += applied * correction
        if self._turn:
            action[3:7] = quat_multiply(rotvec_to_quat([0.0, 0.0, self._turn]), action[3:7])
        self.replay = ReplayState(episode, frame, bottleneck, correction, applied, aligning,
                                  float(np.degrees(self._turn)))
        self.last_step = frame - self._replay_start[1]
        self.last_ms = (time.perf_counter() - t0) * 1000
        return StepOutput(Action.from_array(action), info={"similarity": self.latest.similarity,
                                                           "chunk_step": self.last_step})

    def _wait_for_grasp_pose(self, observation: Observation, episode: int, frame: int) -> int:
        """The frame to replay: ``frame``, or the one before the demonstration's grasp while the hand has not yet
        reached the shifted grasp pose (the replay is held there; the watchdog stops a hand that never gets there,
        with the gripper still open)."""
        close = self.policy.close_frames().get(episode)
        if close is None or frame < close or self._at_grasp:
            return frame
        if np.linalg.norm(observation.state.ee_array()[:3] - self._shifted_position(episode, close)) <= \
                GRASP_ARRIVAL_M:
            self._at_grasp = True
            return frame
        self._held += frame - (close - 1)
        return close - 1

    def _within_reach(self, observation: Observation, episode: int, frame: int) -> int:
        """The frame to replay: ``frame``, or at most ``REPLAY_LEAD_FRAMES`` past the last frame whose shifted
        target the hand has reached (the replay is held there until the arm catches up)."""
        hand = observation.state.ee_array()[:3]
        reached = {f: float(np.linalg.norm(hand - p)) for f in range(self._reached, frame + 1)
                   if (p := self._shifted_position(episode, f)) is not None}
        if reached:
            nearest = min(reached.values())
            self._reached = max(f for f, d in reached.items() if d <= nearest + REACHED_TIE_M)
        allowed = self._reached + REPLAY_LEAD_FRAMES
        if frame <= allowed:
            return frame
        self._held += frame - allowed
        return allowed

    def _shifted_position(self, episode: int, frame: int) -> np.ndarray | None:
        """Where the replay sends the hand at ``frame`` of ``episode``: the recorded target moved by the part of
        the correction applied there (None: the table has no such frame)."""
        db, locator = self.policy.database, self.policy.locator
        row = db.row_of(episode, frame)
        if row is None:
            return None
        position = np.array(db.chunks[row][0][:3], copy=True)
        position[:2] += locator.ramp(episode, frame) * locator.correction(self.current.target.xy, episode)
        return position

    def _must_align(self, episode: int, first: int, frame: int) -> bool:
        """The replay has reached the bottleneck of a demonstration it started before, and has not aligned yet."""
        locator = self.policy.locator
        bottleneck = locator.bottlenecks.get(episode, 0)
        return (not self._aligned and locator.rotation_slope is not None and first < bottleneck <= frame)

    def _aligning(self, row: int | None) -> bool:
        if row is None or self._replay_start is None:
            return False
        db = self.policy.database
        episode, first, _ = self._replay_start
        return self._must_align(episode, first, int(db.frames[row]))

    def _align_turn(self, observation: Observation, episode: int, row: int) -> str | None:
        """One tick of the align phase: once the hand has reached the heading last asked for, measure how far
        it must still turn and ask for that, until it is within what the demonstrations disagree by. Returns
        why it stops (the object not in the hand view, or no convergence), else None."""
        locator = self.policy.locator
        heading = yaw_of(observation.state.ee_array()[3:7])
        if self._turn_goal is not None and abs(_wrap_half_turn(heading - self._turn_goal)) > ARRIVED_RAD:
            if self._held > ALIGN_MAX_TICKS:
                return (f"the hand did not reach the heading the alignment asked for within {ALIGN_MAX_TICKS} ticks "
                        f"({np.degrees(_wrap_half_turn(heading - self._turn_goal)):.0f} degrees short)")
            return None  # still turning
        need = locator.turn_needed(resize_view(observation.frames["hand"].image, self.policy.config), episode)
        if need is None:
            return (f"at episode {episode}'s bottleneck (frame {locator.bottlenecks.get(episode)}) the object is not "
                    "in the hand view: the alignment has nothing to turn to")
        degrees, score = need
        if not abs(degrees) > locator.rotation_deadband:  # (nan: nothing to measure with) within the demos' spread
            if self._turns and score < locator.silhouette_threshold:
                return (f"after turning the hand {np.degrees(self._turn):.0f} degrees the object's silhouette in the "
                        f"hand view still does not match the demonstration's (correlation {score:.2f} < "
                        f"{locator.silhouette_threshold:.2f})")
            self._aligned = True
            return None
        self._turns += 1
        if self._turns > ALIGN_MAX_TURNS:
            return (f"the object still looks turned by {degrees:.0f} degrees after {ALIGN_MAX_TURNS} turns of the hand "
                    "at the bottleneck: the alignment does not converge")
        demo_heading = yaw_of(self.policy.database.chunks[row][0][3:7])
        self._turn_goal = heading + np.radians(degrees)
        self._turn = float(_wrap_half_turn(self._turn_goal - demo_heading))
        return None

    def _halt(self, reason: str, signal: str | None, message: str, t0: float) -> StepOutput:
        """Stop the run with ``reason`` ("ood" or "stall"), naming the signal and, for a watchdog, what was
        executing."""
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
                   watchdog: ProgressWatchdog | None | bool = True) -> AutonomyResult:
    """Run the policy on the rig until OOD, a stall, ``stop_when()`` holds, ``max_ticks``, cancel or a device
    error. ``watchdog``: True for the policy's configured one, False/None for none, or your own."""
    if abs(rig.clock.rate_hz - policy.info.get("fps", rig.clock.rate_hz)) > 1e-9:
        raise ValueError(f"the policy was trained on {policy.info['fps']:g} Hz demonstrations but the rig runs at "
                         f"{rig.clock.rate_hz:g} Hz; its action chunks would play at the wrong speed")
    check_policy_fits_rig(policy.info)  # e.g. joint positions from a LeRobot dataset on a pose-commanded arm
    if watchdog is True:
        watchdog = ProgressWatchdog(policy.config.stall_seconds, policy.config.stall_distance)
    source = PolicySource(policy, requery_every, watchdog or None, policy.time_limit_seconds())
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
                            gamma_changes=policy.gamma_changes[changes_before:])
    if loop.reason == "ood":
        result.ood_evidence = source.current
        result.ood_observation = source.ood_observation
    if loop.reason in ("ood", "stall"):
        result.stop_signal, result.message = source.stop_signal, source.message
    return result
