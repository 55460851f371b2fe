"""Running the landmark method: the landmarks are found once, in the first third-person frame of a run (later
the arm crosses the view and the objects move); the demonstration whose landmarks stood nearest is replayed
frame by frame on the path the model gives for this scene (policy/landmarks/model.py). The replay follows the
arm: it runs at most LEAD_FRAMES ahead of the frame the hand has done (it is where the demonstration's own hand
got to on that frame's command, moved the same way: the command leads the hand, or where the command sends
it), and before the gripper changes (a grasp, a release) it waits until the hand has arrived. Every tick is still looked up, for the gate
and the window."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from core.types import Action
from policy.database import Match
from policy.landmarks.model import gripper_changes
from policy.runner import PolicySource
from robot_drivers.control import StepOutput
from robot_drivers.rig import Observation

#: The replay runs at most this many frames ahead of the frame whose target the hand has reached.
LEAD_FRAMES = 3
#: A frame's target is reached within this (m).
REACH_M = 0.01
#: Before a gripper change the hand must be within this (m) of the target of the frame before it.
ARRIVAL_M = 0.015


class LandmarkSource(PolicySource):
    def begin(self, observation: Observation) -> None:
        super().begin(observation)
        self.landmarks = None
        self.episode: int | None = None
        self._plan: np.ndarray | None = None
        self._hands: np.ndarray | None = None  # where the demonstration's hand got to on each frame, moved
        self._frame = 0
        self._reached = 0

    def step(self, observation: Observation, dt: float) -> StepOutput:
        t0 = time.perf_counter()
        now = observation.latest_state.host_time
        frames = observation.frames
        if self.landmarks is None:
            self.landmarks = self.policy.find_landmarks(frames["third"].image)
        first = self._plan is None
        # after the first tick the gate compares the live views with the frame being replayed too (the hand has
        # moved with the objects, so its view is the replayed one's)
        executing = None if first else self.policy.database.row_of(self.episode, self._frame)
        self.latest = self.policy.retrieve(frames["hand"].image, frames["third"].image,
                                           observation.state.ee_array()[:7],
                                           prefer_episode=self.episode if self.episode is not None
                                           else self.landmarks.episode, target=self.landmarks,
                                           executing_row=executing,
                                           gripper=observation.state.gripper if first else None,
                                           deferred=self.deferred())
        halted = self._gate_and_watch(observation, now, t0)
        if halted is not None:
            return halted
        hand = observation.state.ee_array()[:3]
        if first:
            # the demonstration the lookup placed the run in (the nearest by landmarks, unless none were found:
            # then only a shadow run gets here, replaying the best match as recorded), from its matched frame
            match = self.latest.matches[0]
            self.episode = match.episode
            model = self.policy.landmarks
            if self.landmarks.features is not None and self.episode in model.episode_actions:
                self._plan, self._hands = model.plan_with_hands(self.episode, self.landmarks.features)
            else:
                self._plan = self.policy.episode_actions(self.episode)
                self._hands = self._plan[:, :3]
            self._frame = self._reached = min(match.frame, len(self._plan) - 1)
        else:
            self._frame = self._next_frame(hand)
        self.last_queried = first
        self.current = self._executing()
        self.last_step = self._frame
        self.last_ms = (time.perf_counter() - t0) * 1000
        return StepOutput(Action.from_array(self._plan[self._frame]),
                          info={"similarity": self.latest.similarity, "chunk_step": self._frame})

    def _upcoming_grippers(self, ticks: int) -> np.ndarray:
        """The replayed plan's gripper commands from the frame being replayed on (it may be held there until the
        hand arrives: a close comes no sooner than that)."""
        if self._plan is None:
            return np.zeros(0)
        return self._plan[self._frame:self._frame + ticks + 1, 7]

    def _next_frame(self, hand: np.ndarray) -> int:
        plan, frame = self._plan, self._frame
        # the latest frame the hand has done: it is where the demonstration's own hand got to on that frame's
        # command (moved with the plan), or where the command sends it
        for f in range(frame, self._reached - 1, -1):
            if self._off(f, hand) <= REACH_M:
                self._reached = f
                break
        following = min(frame + 1, self._reached + LEAD_FRAMES, len(plan) - 1)
        if following > frame and gripper_changes(plan[frame, 7], plan[following, 7]) and \
                self._off(frame, hand) > ARRIVAL_M:
            return frame  # the gripper changes next: not before the hand is there
        return following

    def _off(self, frame: int, hand: np.ndarray) -> float:
        """How far the hand is from having done ``frame``: from where the demonstration's hand got to on it, or
        from the frame's command, whichever is nearer (a moved grasp the table stops short of is still reached
        where the command has the hand settle)."""
        return float(min(np.linalg.norm(self._hands[frame] - hand), np.linalg.norm(self._plan[frame, :3] - hand)))

    def _executing(self):
        """This tick's lookup as the replay executes it: the replayed frame as the match, the plan from it on as
        the chunk (what the window and a stop's message show)."""
        db = self.policy.database
        frame = self._frame
        row = db.row_of(self.episode, frame)
        while row is None and frame > 0:  # a frame the table left out (frame_stride): the one before
            frame -= 1
            row = db.row_of(self.episode, frame)
        if row is None:
            return self.latest
        z = self.latest.embedding
        similarity = float(db.embeddings[row] @ z) if z is not None else float("nan")
        chunk = self._plan[self._frame:self._frame + self.policy.config.chunk_length]
        return replace(self.latest, matches=[Match(row, self.episode, self._frame, similarity)] +
                       [m for m in self.latest.matches if m.row != row][1:], chunk=chunk)
