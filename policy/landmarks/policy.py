"""The landmark method as a policy: ALT's encoder, lookup table and gate; every retrieved chunk moved, frame by
frame, to where the scene's landmarks stand now (policy/landmarks/model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from policy.calibration import Calibration
from policy.config import PolicyConfig
from policy.aligned.policy import REPLAY_LAG_FRAMES
from policy.database import LookupDatabase, Match
from policy.encoder import ALTEncoder
from policy.grasp_check import GraspCheck
from policy.landmarks.model import COVERAGE_SLACK, Landmarks, LandmarkModel
from policy.policy import TIE_CANDIDATES, ALTPolicy, Placing, _latest_of_ties


class LandmarkPolicy(ALTPolicy):
    """ALT with the retrieved demonstration moved with the landmarks found at a run's start."""

    def __init__(self, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                 calibration: Calibration | None = None, info: dict | None = None,
                 grasp_check: GraspCheck | None = None, landmarks: LandmarkModel | None = None):
        if landmarks is None:
            from policy.artifact import PolicyArtifactError

            raise PolicyArtifactError("a landmark policy needs its landmark model; retrain it")
        self.landmarks = landmarks
        self._coverage = float("nan")  # the last lookup's (policy/landmarks/model.py: LandmarkModel.coverage)
        super().__init__(config, encoder, database, calibration, info, grasp_check)
        # while a moved demonstration is replayed the arm is off every recorded path, which lowers the best
        # match's similarity by itself (as in the aligned method): then the similarity stops the run only below
        # the lowest any demonstration's frame has to the other demonstrations; the views (with the frame being
        # replayed), the method's own signals and the watchdog still watch every tick
        self.replay_gamma = database.lowest_similarity_to_other_demonstrations()

    def thresholds(self) -> dict:
        out = super().thresholds()
        out["max_correction_m"] = self.landmarks.max_correction
        out["replay_gamma"] = self.replay_gamma
        return out

    def _gate_gamma(self, executing_row: int | None) -> float:
        if executing_row is None or not np.isfinite(self.replay_gamma):
            return self.gamma
        return min(self.gamma, self.replay_gamma)

    def method_thresholds(self) -> dict[str, float]:
        return {"correction": self.landmarks.max_correction, "coverage": COVERAGE_SLACK}

    # -- a lookup -----------------------------------------------------------
    def find_landmarks(self, third: np.ndarray) -> Landmarks:
        """The landmarks in a live third-person frame, as the camera gives it (the model brings it to the
        recording's size; not through the encoder's smaller one, which blurs a small marker)."""
        return self.landmarks.find(third)

    def episode_actions(self, episode: int) -> np.ndarray:
        """A demonstration's actions as recorded, frame by frame [T, 8]."""
        return self.landmarks.episode_actions[int(episode)]

    def moved_chunk(self, episode: int, frame: int, chunk: np.ndarray, features: np.ndarray) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
        """``episode``'s chunk from ``frame`` moved with the landmarks (``features``): the chunk and each entry's
        shift (m)."""
        actions = self.episode_actions(int(episode))
        # a chunk in a wait starts where the motion resumes (policy/data.py: resume_index): its own frame
        later = np.flatnonzero(np.all(np.abs(actions[frame:] - chunk[0]) < 1e-5, axis=1))
        start = frame + (int(later[0]) if len(later) else 0)
        shift = self.landmarks.corrections(int(episode), start + np.arange(len(chunk)), chunk[:, :3], features)
        out = np.array(chunk, copy=True)
        out[:, :3] += shift
        return out, shift

    def _view_agreement(self, best: Match, hv: np.ndarray, tv: np.ndarray,
                        executing_row: int | None) -> tuple[tuple[float, float], int | None]:
        agreement, replayed = super()._view_agreement(best, hv, tv, executing_row)
        views = self.database.view_embeddings
        if views is None or executing_row is None:
            return agreement, replayed
        # while replaying, a view may instead agree with the frame being replayed or the few before it (the arm
        # lags its commands): the replay moved the hand with the objects, so its views are the replayed frame's
        rows = self._replayed_rows(int(executing_row))
        return (max(agreement[0], float((views[rows, 0] @ hv).max())),
                max(agreement[1], float((views[rows, 1] @ tv).max()))), int(executing_row)

    def _replayed_rows(self, row: int) -> list[int]:
        db = self.database
        return [row - back for back in range(REPLAY_LAG_FRAMES + 1)
                if row - back >= 0 and db.episodes[row - back] == db.episodes[row]]

    def _grasp_row(self, best: Match, executing_row: int | None, check_grasp: bool) -> int:
        # no grasp check: it compares the hand view's table with the demonstration's, and a replay moved with the
        # objects shows the table elsewhere by design (it fired on 9 of 9 successful unseen placements of
        # pick-place); the view agreements with the replayed frame judge the replay instead
        return -1

    def _method_readings(self, cameras: tuple[float, float], correction: np.ndarray | None) -> dict:
        size = float("nan") if correction is None else float(np.linalg.norm(correction))
        return {"correction": (size, float(self.landmarks.max_correction)),
                "coverage": (self._coverage, COVERAGE_SLACK)}

    def _place(self, placing: Placing, third: np.ndarray | None, executing_row: int | None,
               allowed: np.ndarray | None, k: int, cameras: tuple[float, float]) -> Placing:
        target = placing.target
        if target is None and third is not None:
            target = self.find_landmarks(third)
        signal, reason = placing.signal, placing.reason
        self._coverage = float("nan")
        if target is None or target.features is None:
            if signal is None:
                missing = "the third-person view" if target is None else \
                    ", ".join(self.landmarks.name(i) for i in target.missing)
                signal, reason = "landmarks", (f"not found in the third-person view at the run's start: {missing} "
                                               "(what the demonstrations' scenes had and this one lacks, or hides)")
            return Placing(placing.z, placing.best, placing.matches, placing.chunk, target, None, signal, reason)
        self._coverage, outside = self.landmarks.coverage(target.features)
        if signal is None and self._coverage > COVERAGE_SLACK:
            signal, reason = "coverage", (
                f"{self.landmarks.name(outside)} stands beyond where the demonstrations had it ({100 * self._coverage:.0f}% of "
                f"their range outside it; at most {100 * COVERAGE_SLACK:.0f}% is trusted): the path would be "
                "extrapolated")
        best, matches, chunk = placing.best, placing.matches, placing.chunk
        if target.episode is not None and best.episode != target.episode:
            # the run replays the demonstration whose landmarks stood nearest: its frame that matches best (the
            # gate above judged the scene by the best match of all)
            own = self.database.best_in_episode(placing.z, target.episode, TIE_CANDIDATES, allowed)
            if own:
                best = _latest_of_ties(own)
                matches = [best] + [m for m in matches if m.row != best.row][:k - 1]
                chunk = self.database.chunks[best.row]
        chunk, shift = self.moved_chunk(best.episode, best.frame, chunk, target.features)
        correction = shift[int(np.argmax(np.linalg.norm(shift, axis=1)))]
        size = float(np.linalg.norm(correction))
        if signal is None and size > self.landmarks.max_correction:
            signal, reason = "correction", (
                f"the scene's landmarks stand where demonstration {best.episode}'s path must move "
                f"{100 * size:.1f} cm; beyond the {100 * self.landmarks.max_correction:.1f} cm the demonstrations "
                "cover (the most any needed to be moved onto its nearest neighbour, plus the margin)")
        return Placing(placing.z, best, matches, chunk, target, correction, signal, reason)

    # -- building, saving, loading, versions ----------------------------------
    @classmethod
    def _fit_method(cls, table, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                    held_out: list[int], calibration: Calibration) -> dict:
        from policy.landmarks.build import build_landmarks

        return {"landmarks": build_landmarks(table, config)}

    @classmethod
    def _load_method(cls, path: Path, doc: dict, arrays: dict) -> dict:
        if not doc.get("alignment") or doc["alignment"].get("kind") != "landmarks":
            from policy.artifact import PolicyArtifactError

            raise PolicyArtifactError(f"{path / 'config.json'}: field 'alignment' holds no landmark model: a "
                                      "landmark policy needs it; retrain it")
        return {"landmarks": LandmarkModel.from_json(doc["alignment"], arrays)}

    def _method_arrays(self) -> dict:
        return self.landmarks.arrays()

    def _method_json(self) -> dict:
        return self.landmarks.to_json()

    def extension_parts(self, table) -> dict:
        from policy.landmarks.build import build_landmarks

        return {"landmarks": build_landmarks(table, self.config)}

    def make_source(self, **kwargs):
        from policy.landmarks.source import LandmarkSource

        return LandmarkSource(self, **kwargs)
