"""The aligned method as a policy of its own: the ALT lookup, then the retrieved demonstration replayed shifted
onto the object found in the third-person view, with the aligned gate (structural camera checks at a run's
start, the replay's own thresholds, the grasp check's second opinion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from policy.aligned.alignment import Location, TargetLocator
from policy.calibration import Calibration
from policy.config import PolicyConfig
from policy.database import LookupDatabase, Match
from policy.encoder import ALTEncoder
from policy.grasp_check import GraspCheck
from policy.policy import TIE_CANDIDATES, ALTPolicy, Placing, _latest_of_ties

#: The aligned method's grasp check compares the live hand view with the replayed frame and the few before it:
#: the arm trails its commands by a tick or two (more in real time).
REPLAY_LAG_FRAMES = 3


class AlignedPolicy(ALTPolicy):
    """ALT's encoder, table and gate, plus an object locator: the retrieved demonstration is replayed shifted
    onto the object (policy/aligned/alignment.py); the run itself is driven by AlignedPolicySource."""

    def __init__(self, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                 calibration: Calibration | None = None, info: dict | None = None,
                 grasp_check: GraspCheck | None = None, locator: TargetLocator | None = None):
        if locator is None:
            from policy.artifact import PolicyArtifactError

            raise PolicyArtifactError("an aligned policy needs its object locator; retrain it")
        self.locator = locator
        super().__init__(config, encoder, database, calibration, info, grasp_check)

    # -- thresholds ---------------------------------------------------------
    def _calibrated_gamma(self, calibration: Calibration) -> float:
        return float(calibration.aligned["gamma"])

    def _view_threshold_source(self, calibration: Calibration) -> dict:
        return calibration.aligned

    @classmethod
    def _calibrated_gate(cls, calibration: Calibration) -> dict[str, float]:
        a = calibration.aligned
        return {"similarity": float(a["gamma"]), **{k: float(a[k]) for k in ("hand_view", "third_view")
                                                     if a.get(k) is not None}}

    @classmethod
    def _set_calibrated_gate(cls, calibration: Calibration, thresholds: dict[str, float]) -> None:
        calibration.aligned.update({"gamma" if k == "similarity" else k: float(v) for k, v in thresholds.items()})
        calibration.aligned["method"] = "per run (conformal; see the calibration's run record)"

    def _score_source(self, calibration: Calibration) -> dict:
        return calibration.aligned.get("scores") or {}

    def _method_readings(self, cameras: tuple[float, float], correction: np.ndarray | None) -> dict:
        # the structural camera checks judge a run's first lookup only (nan later); the correction, in m, stops
        # when it is larger than the demonstrations cover
        out = {}
        for value, check, name in ((cameras[0], self.locator.hand_camera, "hand_camera"),
                                   (cameras[1], self.locator.third_camera, "third_camera")):
            if check is not None:
                out[name] = (float(value), float(check.threshold))
        size = float("nan") if correction is None else float(np.linalg.norm(correction))
        out["correction"] = (size, float(self.locator.max_correction))
        return out

    def thresholds(self) -> dict:
        out = super().thresholds()
        out.update(replay_gamma=self.calibration.aligned.get("replay_gamma"),
                   max_correction_m=self.locator.max_correction)
        return out

    # -- a lookup -----------------------------------------------------------
    def _view_agreement(self, best: Match, hv: np.ndarray, tv: np.ndarray,
                        executing_row: int | None) -> tuple[tuple[float, float], int | None]:
        agreement, replayed = super()._view_agreement(best, hv, tv, executing_row)
        views = self.database.view_embeddings
        if views is not None and executing_row is not None:
            # while replaying, a view may instead agree with the frame being replayed (or the few before it:
            # the arm lags its commands): clutter can make another demonstration's frame the best match,
            # one the run is not following and whose views look nothing like the live ones
            db, replayed = self.database, int(executing_row)
            rows = [replayed - back for back in range(REPLAY_LAG_FRAMES + 1)
                    if replayed - back >= 0 and db.episodes[replayed - back] == db.episodes[replayed]]
            agreement = (max(agreement[0], float((views[rows, 0] @ hv).max())),
                         max(agreement[1], float((views[rows, 1] @ tv).max())))
        return agreement, replayed

    def _aligned_at(self, row: int) -> bool:
        db = self.database
        return self.locator.ramp(int(db.episodes[row]), int(db.frames[row])) >= 1.0

    def _grasp_row(self, best: Match, executing_row: int | None, check_grasp: bool) -> int:
        # only once aligned: during the approach the views differ by design
        compared = super()._grasp_row(best, executing_row, check_grasp)
        aligned = executing_row is not None and self._aligned_at(compared)
        return compared if aligned and check_grasp else -1

    def _lagged_grasp(self, live: np.ndarray, compared: int, executing_row: int | None) -> list[float]:
        if executing_row is None:
            return []
        db, out = self.database, []
        for back in range(1, REPLAY_LAG_FRAMES + 1):  # the arm lags its commands: it may be a few frames back
            row = compared - back
            if self.grasp_check.applies(row) and db.episodes[row] == db.episodes[compared] and self._aligned_at(row):
                out.append(self.grasp_check.alignment(live, row))
        return out

    def _object_in_place(self, hand: np.ndarray, compared: int) -> bool:
        # a second opinion: the view's edges disagree (clutter, a shadow), but is the object where it was?
        frames = [int(self.database.frames[compared]) - back for back in range(REPLAY_LAG_FRAMES + 1)]
        return self.locator.object_in_place(hand, int(self.database.episodes[compared]), frames)

    def _camera_checks(self, hand: np.ndarray | None, third: np.ndarray | None,
                       executing_row: int | None) -> tuple[float, float]:
        hand_camera = third_camera = float("nan")
        if executing_row is None:
            # the first lookup of a run: are these the cameras? (later the object covers the fingers' region
            # and the arm crosses the third view in ways no demonstration showed; the replay's checks take over)
            if hand is not None and self.locator.hand_camera is not None:
                hand_camera = self.locator.hand_camera.agreement(hand)
            if third is not None and self.locator.third_camera is not None:
                third_camera = self.locator.third_camera.agreement(third)
        return hand_camera, third_camera

    def _gate_gamma(self, executing_row: int | None) -> float:
        if executing_row is None:
            return self.gamma
        return min(self.gamma, float(self.calibration.aligned.get("replay_gamma", self.gamma)))

    def _place(self, placing: Placing, third: np.ndarray | None, executing_row: int | None,
               allowed: np.ndarray | None, k: int, cameras: tuple[float, float]) -> Placing:
        best, matches, chunk, target = placing.best, placing.matches, placing.chunk, placing.target
        signal, reason, correction = placing.signal, placing.reason, None
        if target is None and third is not None:
            target = self.locator.locate(third)
        if target is not None and executing_row is None:
            # which demonstration to replay: of those whose object stood nearest, the one whose object
            # looks the same, from its frame that matches best (the gate above judged the scene by the best
            # match of all)
            nearest = self.locator.choose_demo(target)
            if nearest != best.episode:
                own = self.database.best_in_episode(placing.z, nearest, TIE_CANDIDATES, allowed)
                if own:
                    best = _latest_of_ties(own)
                    matches = [best] + [m for m in matches if m.row != best.row][:k - 1]
                    chunk = self.database.chunks[best.row]
        # the demonstration that is moved: the one being replayed, else the match
        episode = best.episode if executing_row is None else int(self.database.episodes[executing_row])
        if target is not None:
            correction = self.locator.correction(target.xy, episode)
            chunk = self.shifted_chunk(best.episode, best.frame, chunk,
                                       self.locator.correction(target.xy, best.episode))
        if signal is None:
            signal, reason = self._alignment_gate(episode, target, correction, *cameras)
        return Placing(placing.z, best, matches, chunk, target, correction, signal, reason)

    def shifted_chunk(self, episode: int, frame: int, chunk: np.ndarray, correction: np.ndarray) -> np.ndarray:
        """A chunk of ``episode`` starting at ``frame`` with ``correction`` (xy, m) ramped in over the
        demonstration's approach (policy/aligned/alignment.py)."""
        out = np.array(chunk, copy=True)
        ramp = np.array([self.locator.ramp(episode, frame + i) for i in range(len(out))])
        out[:, :2] += ramp[:, None] * np.asarray(correction)[None, :2]
        return out

    def _alignment_gate(self, episode: int, target: Location | None, correction: np.ndarray | None,
                        hand_camera: float, third_camera: float) -> tuple[str | None, str]:
        check = self.locator.hand_camera
        if check is not None and hand_camera < check.threshold:
            return "hand_camera", (f"the hand view does not show the gripper where every demonstration's hand view "
                                   f"has it (agreement {hand_camera:.3f} < {check.threshold:.3f}): is the hand "
                                   "camera covered, moved, or another camera?")
        check = self.locator.third_camera
        if check is not None and third_camera < check.threshold:
            return "third_camera", (f"the third-person view does not show the table and the arm where every "
                                    f"demonstration started (agreement {third_camera:.3f} < {check.threshold:.3f}): "
                                    "is the camera covered, moved, or another camera, or the arm not at its start?")
        if target is None:
            return "target", ("the object was not found in the third-person view (nothing there differs from the "
                              "demonstrations' empty scene in the object's size and colour); nothing to align to")
        size = float(np.linalg.norm(correction))
        if size > self.locator.max_correction:
            return "correction", (f"the object stands {100 * size:.1f} cm from where the retrieved "
                                  f"demonstration (episode {episode}) had it; beyond the "
                                  f"{100 * self.locator.max_correction:.1f} cm the demonstrations cover "
                                  "(their spread plus the margin)")
        return None, ""


    # -- building, saving, loading, versions ----------------------------------
    @classmethod
    def _fit_method(cls, table, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                    held_out: list[int], calibration: Calibration) -> dict:
        from policy.aligned.build import build_locator, calibrate_aligned

        locator = build_locator(table, config)
        calibration.aligned = calibrate_aligned(encoder, table, database, held_out, config)
        return {"locator": locator}

    @classmethod
    def _load_method(cls, path: Path, doc: dict, arrays: dict) -> dict:
        if not doc["alignment"]:
            from policy.artifact import PolicyArtifactError

            raise PolicyArtifactError(f"{path / 'config.json'}: field 'alignment' is empty: an aligned policy needs "
                                      "its object locator; retrain it")
        return {"locator": TargetLocator.from_json(doc["alignment"], arrays)}

    def _method_arrays(self) -> dict:
        return self.locator.arrays()

    def _method_json(self) -> dict:
        return self.locator.to_json()

    def extension_parts(self, table) -> dict:
        # the aligned method replays the added episodes too: where their object stood
        from policy.aligned.build import first_third_frames

        return {"locator": self.locator.extended(first_third_frames(table), table.actions, self.config.align_radius)}

    def recalibrated_method(self, table, database: LookupDatabase, held_out: list[int],
                            calibration: Calibration) -> float:
        from policy.aligned.build import calibrate_aligned

        calibration.aligned = calibrate_aligned(self.encoder, table, database, held_out, self.config)
        return calibration.aligned["gamma"]

    def make_source(self, **kwargs):
        from policy.aligned.source import AlignedPolicySource

        return AlignedPolicySource(self, **kwargs)
