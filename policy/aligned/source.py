"""The aligned method's run: find the object at the run's first tick, then replay the retrieved demonstration
from the matched frame on, shifted onto the object, in the demonstration's own time.

The lookup still runs every tick, for the gate and the display, and the grasp check compares the live hand view
with the frame being replayed. Its phases: ``approach`` (the correction ramping in), ``align`` (held at the
demonstration's bottleneck, the hand turned about the vertical until the object's silhouette in the hand view
sits as it sat in the demonstration's: the object may stand turned otherwise than the demonstration's did),
``replay`` (the rest, shifted and turned).
"""

from __future__ import annotations

import time

import numpy as np

from core.transforms import quat_multiply, rotvec_to_quat, wrap_half_turn, yaw_of
from core.types import Action
from policy.aligned.policy import REPLAY_LAG_FRAMES, AlignedPolicy
from policy.encoder import resize_view
from policy.runner import PolicySource, ProgressWatchdog, ReplayState
from robot_drivers.control import StepOutput
from robot_drivers.rig import Observation

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
#: looks this many frames back, ``REPLAY_LAG_FRAMES``).
REPLAY_LEAD_FRAMES = REPLAY_LAG_FRAMES
#: Targets within this (m) of the nearest count as reached together (a pause in the demonstration).
REACHED_TIE_M = 0.002


class AlignedPolicySource(PolicySource):
    """PolicySource for the aligned method: the first lookup chooses the demonstration and finds the object; the
    replay then follows that demonstration's frames, shifted (and, past its bottleneck, turned) onto it."""

    def __init__(self, policy: AlignedPolicy, requery_every: int | None = None,
                 watchdog: ProgressWatchdog | None = None, time_limit: float | None = None, shadow: bool = False):
        super().__init__(policy, requery_every, watchdog, time_limit, shadow)
        self._replay_start: tuple[int, int, float] | None = None  # episode, frame, capture time of the run
        self._held = 0  # ticks the replay was held at the bottleneck to align
        self._aligned = False
        self._turn = 0.0  # rad about the vertical, applied to the demonstration's orientations
        self._turn_goal: float | None = None  # the hand heading last commanded by the align phase
        self._turns = 0
        self._at_grasp = False  # the hand has reached the shifted grasp pose: the replay may close the gripper
        self._reached = 0  # the replayed frame whose shifted target the hand has come nearest

    def begin(self, observation: Observation) -> None:
        super().begin(observation)
        self._replay_start = None
        self._held, self._aligned, self._turn, self._turn_goal, self._turns = 0, False, 0.0, None, 0
        self._at_grasp = False
        self._executing_row = None

    def step(self, observation: Observation, dt: float) -> StepOutput:
        """Retrieve (first tick), align, replay: the demonstration's frames in its own time, shifted."""
        t0 = time.perf_counter()
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
        self._executing_row = executing
        frames = observation.frames
        target = self.current.target if self.current is not None else None
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7],
                                           prefer_episode=None if executing is None else self._replay_start[0],
                                           target=target, executing_row=executing,
                                           # while turning, and once turned (the table and the fingers no longer
                                           # line up with the demonstration's view; the silhouette was checked)
                                           check_grasp=not (self._aligning(executing) or self._turns),
                                           gripper=observation.state.gripper if executing is None else None,
                                           deferred=self.deferred())
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
                halted = self._halt("ood", "alignment", halt, t0)
                if halted is not None:
                    return halted
                self._aligned = True  # a shadow run goes on as turned so far: would the replay have worked?
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

    def _upcoming_grippers(self, ticks: int) -> np.ndarray:
        """The replayed demonstration's gripper commands from the frame this tick replays on."""
        if self._executing_row is None:
            return np.zeros(0)
        return np.asarray(self.policy.database.chunks[self._executing_row][:ticks, 7])

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
        if self._turn_goal is not None and abs(wrap_half_turn(heading - self._turn_goal)) > ARRIVED_RAD:
            if self._held > ALIGN_MAX_TICKS:
                return (f"the hand did not reach the heading the alignment asked for within {ALIGN_MAX_TICKS} ticks "
                        f"({np.degrees(wrap_half_turn(heading - self._turn_goal)):.0f} degrees short)")
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
        self._turn = float(wrap_half_turn(self._turn_goal - demo_heading))
        return None
