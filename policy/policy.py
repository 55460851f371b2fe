"""The ALT policy: encoder + lookup database + OOD threshold, built from a dataset, saved as one folder."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.transforms import POSE_QUAT, quat_nearest
from policy.action_space import EE_POSE, action_kind, policy_actions
from policy.artifact import (PolicyArtifactError, check_artifact, load_database_arrays, read_config_doc, reading,
                             save_database, write_artifact)
from policy.calibration import (Calibration, build_grasp_check, calibrate_on_held_out, finish_run_calibration,
                                held_out_for)
from policy.config import PolicyConfig
from policy.data import action_chunks, load_frames
from policy.database import LookupDatabase, Match, probe_queries
from policy.encoder import ALTEncoder, resize_view
from policy.gate import GRASP_SIGNAL, implied_rates, thresholds_from_scores
from policy.grasp_check import GraspCheck, commands_close, grasp_frame, thumbnail
from policy.grip_check import GripCheck, grip_check_from_dataset
from policy.train import TrainProgress, embed_table_views, train_encoder
from recorder.dataset import Dataset, DatasetError

if TYPE_CHECKING:
    from policy.aligned.alignment import Location

log = logging.getLogger(__name__)


#: Frames of one demonstration that look identical (the arm waiting, the gripper closing) have equal
#: similarity; of those, the latest is taken so that execution moves on instead of replaying the wait.
TIE_CANDIDATES = 8
TIE_TOLERANCE = 1e-4
#: Matches whose fused similarity lies within this of the best one's are near-ties, and of those the one whose
#: views (hand, third) agree best with the live ones is taken: the fusion layer blurs what each view tells apart
#: (reach-v3: a training scene's own demonstration ranked first by each view alone, third by the fused embedding,
#: from the same start pose), and the gate then judges each view against the frame taken.
VIEW_TIE_MARGIN = 0.02
#: A measured gripper opening at least this is fully open: nothing held (``retrieve``'s ``gripper``).
FULLY_OPEN = 0.9


@dataclass(frozen=True)
class Placing:
    """What a lookup executes, as a method places it: the match, the chunk, the object found and the shift."""

    z: np.ndarray
    best: Match
    matches: list[Match]
    chunk: np.ndarray
    target: "Location | None"
    correction: np.ndarray | None
    signal: str | None
    reason: str


def _latest_of_ties(matches: list[Match]) -> Match:
    best = matches[0]
    ties = [m for m in matches if m.episode == best.episode and m.similarity >= best.similarity - TIE_TOLERANCE]
    return max(ties, key=lambda m: m.frame)


@dataclass(frozen=True)
class Retrieval:
    """One lookup: the best matches, whether it is out of distribution (and which signal said so), and the
    chunk to execute."""

    matches: list[Match]  # best first
    similarity: float  # of the best match
    ood: bool
    chunk: np.ndarray  # [L, 8] absolute actions from the matched frame on
    embed_ms: float
    search_ms: float
    # cosine agreement of each live view with the same view of the retrieved frame (nan: not available)
    view_agreement: tuple[float, float] = (float("nan"), float("nan"))
    ood_signal: str | None = None  # "similarity", "hand_view", "third_view" or "grasp_alignment": what stopped it
    ood_reason: str = ""  # the same in words, for the operator
    # before a demonstration's grasp: how well the live hand view lines up with the retrieved frame's
    # (policy/grasp_check.py); nan where the check does not apply
    grasp_alignment: float = float("nan")
    embedding: np.ndarray | None = None  # the observation's unit embedding (the coverage map draws runs with it)
    # the aligned method: where the object was found, and the xy shift that moves the matched demonstration
    # onto it (None: the alt method, or not found)
    target: "Location | None" = None
    correction: np.ndarray | None = None
    # every signal the gate judged this lookup by: name -> (value, threshold in force); nan: did not apply.
    # "correction" (m) stops when above its threshold, every other signal when below (policy.gate.fails)
    readings: dict = field(default_factory=dict)
    # a signal that failed but was held back (``deferred``): (signal, reason), as the gate would have stopped on
    # it; None: none was
    held_back: tuple[str, str] | None = None


def policy_class(method: str) -> type["ALTPolicy"]:
    """The policy class of a method: ``alt`` (the paper's), ``aligned`` (policy/aligned/) or ``landmarks``
    (policy/landmarks/)."""
    if method == "landmarks":
        from policy.landmarks.policy import LandmarkPolicy

        return LandmarkPolicy
    if method == "aligned":
        from policy.aligned.policy import AlignedPolicy

        return AlignedPolicy
    return ALTPolicy


def make_policy(config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                calibration: Calibration | None = None, info: dict | None = None,
                grasp_check: GraspCheck | None = None, **method_parts) -> "ALTPolicy":
    """The policy of ``config.method`` with its method's own parts (the aligned method's ``locator``)."""
    return policy_class(config.method)(config, encoder, database, calibration, info, grasp_check, **method_parts)


class ALTPolicy:
    """The paper's method: retrieve the nearest demonstration frame and replay its chunk as recorded.

    A method that replays differently (policy/aligned/) subclasses it and fills in the hooks marked
    "method hook": the rest (embedding, search, the gate, persistence) is shared."""

    locator = None  # the alt method finds no object (the aligned method's subclass has one)

    def __init__(self, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                 calibration: Calibration | None = None, info: dict | None = None,
                 grasp_check: GraspCheck | None = None):
        if type(self) is ALTPolicy and config.method != "alt":
            raise PolicyArtifactError(f"a {config.method!r} policy is made by make_policy, not ALTPolicy")
        self.config = config
        self.grasp_check = grasp_check
        # the fingers' measured opening after a close against the demonstrations' (policy/grip_check.py; the
        # runner judges it); None: a recording without a measured gripper, or a policy folder made before it
        self.grip_check: GripCheck | None = None
        self.encoder = encoder.eval()
        self.database = database
        self._close_cache: tuple[int, dict[int, int]] | None = None  # (table rows, close_frames())
        self.calibration = calibration
        self.info = dict(info or {})
        self.gamma = self.calibrated_gamma
        self.view_thresholds: dict[str, float] = {}
        if calibration is not None:
            source = self._view_threshold_source(calibration)
            self.view_thresholds = {k: float(source[k]) for k in ("hand_view", "third_view") if k in source}
        self.gamma_changes: list[dict] = []  # every set_gamma / set_thresholds, for the run records
        # the false-stop rate the gate was last set to as a whole (set_thresholds(rate=...)); None: set by hand
        self.gate_rate: float | None = None if calibration is None else calibration.false_stop_rate
        self._device = next(encoder.parameters()).device

    # -- the gate's thresholds, audited ------------------------------------
    @property
    def method(self) -> str:
        return self.config.method

    @property
    def calibrated_gamma(self) -> float:
        if self.calibration is None:
            return self.config.gamma
        return self._calibrated_gamma(self.calibration)

    # method hooks: where the method's calibrated gate is kept, as a whole (for the calibration per run)
    @classmethod
    def _calibrated_gate(cls, calibration: Calibration) -> dict[str, float]:
        views = calibration.view_thresholds
        return {"similarity": float(calibration.gamma), **{k: float(views[k]) for k in ("hand_view", "third_view")
                                                           if views.get(k) is not None}}

    @classmethod
    def _set_calibrated_gate(cls, calibration: Calibration, thresholds: dict[str, float]) -> None:
        calibration.gamma = float(thresholds["similarity"])
        calibration.view_thresholds.update({k: float(v) for k, v in thresholds.items() if k != "similarity"})

    # method hooks: where the method's thresholds are kept
    def _calibrated_gamma(self, calibration: Calibration) -> float:
        return calibration.gamma

    def _view_threshold_source(self, calibration: Calibration) -> dict:
        return calibration.view_thresholds

    def thresholds(self) -> dict:
        """Everything the gate and the runner decide with, for the record of a run or an evaluation."""
        return {"gamma": self.gamma, "calibrated_gamma": self.calibrated_gamma, **self.view_thresholds,
                "false_stop_rate": None if self.calibration is None else self.calibration.false_stop_rate,
                "gate_rate": self.gate_rate,
                "grasp_alignment": None if self.grasp_check is None else self.grasp_check.threshold,
                "grip": None if self.grip_check is None else self.grip_check.margin,
                "method": self.method,
                "replay_gamma": None, "max_correction_m": None,
                "stall_seconds": self.config.stall_seconds, "stall_distance_m": self.config.stall_distance,
                "time_limit_s": self.time_limit_seconds(),
                "episode_hysteresis": self.config.episode_hysteresis, "requery_every": self.config.requery_every,
                "gate_persistence": self.config.gate_persistence}

    def method_thresholds(self) -> dict[str, float]:
        """Method hook: the method's own gate signals and their thresholds (the alt method: none)."""
        return {}

    def gate_in_force(self) -> dict[str, float]:
        """The thresholds ``set_thresholds`` moves, as they are now: similarity (gamma) and each view's."""
        return {"similarity": self.gamma, **self.view_thresholds}

    def calibrated_thresholds(self) -> dict[str, float]:
        """The same, as calibrated."""
        if self.calibration is None:
            return {"similarity": self.calibrated_gamma}
        return self._calibrated_gate(self.calibration)

    # method hook: where the method keeps its held-out values
    def _score_source(self, calibration: Calibration) -> dict:
        return calibration.scores

    def gate_scores(self) -> dict[str, list[float]] | None:
        """Each gate signal's held-out values the thresholds were read from (None: a policy calibrated before
        they were kept; its gate is then moved by gamma alone)."""
        if self.calibration is None:
            return None
        scores = {k: v for k, v in (self._score_source(self.calibration) or {}).items()
                  if k in self.gate_in_force() and len(v)}
        return scores if "similarity" in scores else None

    def thresholds_at_rate(self, rate: float) -> dict[str, float]:
        """The gate's thresholds for a false-stop rate on the held-out frames (the calibration's rule: the rate
        split evenly over the signals, each at its quantile). ValueError without kept held-out values."""
        scores = self.gate_scores()
        if scores is None:
            raise ValueError("this policy was calibrated before its held-out values were kept; retrain it to set "
                             "the gate by its false-stop rate (gamma can still be set)")
        calibrated = self.calibration.false_stop_rate if self.calibration is not None else None
        if calibrated is not None and abs(float(rate) - float(calibrated)) <= 1e-12:
            return self.calibrated_thresholds()  # exactly as calibrated (the kept values are rounded and thinned)
        return thresholds_from_scores(scores, rate)

    def implied_rates(self, thresholds: dict | None = None) -> dict[str, float] | None:
        """The share of held-out values each threshold (default: those in force) stops, and ``"gate"`` (their
        sum, capped at 1); None without kept held-out values."""
        scores = self.gate_scores()
        return None if scores is None else implied_rates(scores, thresholds or self.gate_in_force())

    def implied_run_rate(self, thresholds: dict | None = None) -> dict | None:
        """What ``thresholds`` (default: those in force) do to the held-out demonstrations replayed as runs: how
        many they stop and the conformal bound on a new run's stop probability (policy.conformal.implied_run_rate);
        None for a policy calibrated before runs were kept."""
        run = None if self.calibration is None else self.calibration.run
        if not run or not run.get("minima"):
            return None
        from policy.conformal import implied_run_rate

        minima = {int(e): {s: (float("nan") if v is None else float(v)) for s, v in row.items()}
                  for e, row in run["minima"].items()}
        signals = {s for row in minima.values() for s in row}
        wanted = {k: v for k, v in (thresholds or self.gate_in_force()).items() if k in signals and v is not None}
        return implied_run_rate(minima, wanted) if wanted else None

    def gamma_needs_confirmation(self, value: float) -> bool:
        """Lowering gamma below the calibrated value lets more unfamiliar scenes through: ask first."""
        return value < self.calibrated_gamma - 1e-9

    def thresholds_need_confirmation(self, thresholds: dict) -> bool:
        """Any threshold below its calibrated value lets more unfamiliar scenes through: ask first."""
        calibrated = self.calibrated_thresholds()
        # 1e-5: the kept held-out values are rounded to 5 decimals; a threshold read from them is "calibrated"
        return any(name in calibrated and float(value) < calibrated[name] - 1e-5 for name, value in thresholds.items())

    def set_gamma(self, value: float, by: str = "operator") -> dict:
        """Change gamma (the runner reads it at its next lookup) and log the change; returns the record."""
        return self.set_thresholds({"similarity": value}, by=by)

    def set_thresholds(self, thresholds: dict, by: str = "operator", rate: float | None = None) -> dict:
        """Change any of the gate's thresholds (``"similarity"`` is gamma, ``"hand_view"``, ``"third_view"``):
        the runner reads them at its next lookup. ``rate``: the false-stop rate they were read at (the gate set
        as a whole), None when set by hand. Every change is logged (``gamma_changes``) with what it was before;
        a value that is not a cosine similarity, or a signal this policy does not have, is a ValueError and
        changes nothing."""
        now = self.gate_in_force()
        new = {}
        for name, value in dict(thresholds).items():
            if name not in now:
                raise ValueError(f"this policy's gate has no threshold {name!r} (it has {', '.join(now)})")
            value = float(value)
            if not -1 <= value <= 1:
                raise ValueError(f"{name} threshold {value} must be a cosine similarity in [-1, 1]")
            new[name] = value
        if not new:
            raise ValueError("no threshold to set")
        if rate is not None and not 0 < float(rate) < 1:
            raise ValueError(f"false-stop rate {rate} must be in (0, 1)")
        after = {**now, **new}
        change = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "by": by,
                  "from": self.gamma, "to": after["similarity"], "calibrated": self.calibrated_gamma,
                  "below_calibrated": self.thresholds_need_confirmation(new),
                  "thresholds_from": now, "thresholds": after,
                  "false_stop_rate": None if rate is None else float(rate)}
        (log.warning if change["below_calibrated"] else log.info)(
            "gate changed by %s%s: %s (calibrated %s)", by, "" if rate is None else f" to false-stop rate {rate:.3g}",
            ", ".join(f"{k} {now[k]:.3f} -> {after[k]:.3f}" for k in after),
            ", ".join(f"{k} {v:.3f}" for k, v in self.calibrated_thresholds().items()))
        self.gamma = after["similarity"]
        self.view_thresholds.update({k: v for k, v in new.items() if k != "similarity"})
        self.gate_rate = None if rate is None else float(rate)
        self.gamma_changes.append(change)
        return change

    def time_limit_seconds(self) -> float | None:
        """How long a run may take before it stops and asks: ``time_limit_factor`` times the longest
        demonstration in the table (None without a known rate)."""
        fps = self.info.get("fps")
        if not fps:
            return None
        db = self.database
        longest = max(int(db.frames[db.episodes == e].max()) + 1 for e in np.unique(db.episodes))
        return self.config.time_limit_factor * longest / float(fps)

    # -- run time ---------------------------------------------------------
    @torch.inference_mode()
    def embed_views(self, hand: np.ndarray | None, third: np.ndarray | None,
                    pose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit embedding of one observation (RGB uint8 frames of any size; None for a view the policy does not
        use) and its per-view features."""
        h, t = (None if x is None else torch.from_numpy(np.ascontiguousarray(resize_view(x, self.config)))[None]
                .to(self._device) for x in (hand, third))
        p = None
        if self.encoder.pose is not None:
            if pose is None:
                raise ValueError("this policy uses the end-effector pose; pass it")
            p = torch.as_tensor(self.pose_input(pose))[None].to(self._device)
        z, hv, tv = self.encoder.forward_views(h, t, p)
        return z[0].cpu().numpy(), hv[0].cpu().numpy(), tv[0].cpu().numpy()

    def embed(self, hand: np.ndarray, third: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """Unit embedding of one observation (RGB uint8 frames of any size)."""
        return self.embed_views(hand, third, pose)[0]

    def pose_input(self, pose) -> np.ndarray:
        """The (7,) pose the encoder sees: the quaternion in the hemisphere the training poses were put in
        (``info["pose_reference"]``), so the same rotation is one input whichever sign the arm reports.
        Policies built before the reference was kept get the pose as it is."""
        p = np.array(np.asarray(pose, np.float32)[:7])
        reference = self.info.get("pose_reference")
        if reference is not None:
            p[POSE_QUAT] = quat_nearest(p[POSE_QUAT], reference)
        return p

    def check_source_episode(self, dataset: Dataset, episode: int) -> "SourceEpisodeCheck":
        """May frames of ``episode`` of ``dataset`` be shown as what this policy retrieved? See
        :func:`check_source_episode`."""
        return check_source_episode(self.info.get("episode_fingerprints"), dataset, episode)

    def retrieve(self, hand: np.ndarray, third: np.ndarray, pose: np.ndarray | None = None,
                 k: int | None = None, prefer_episode: int | None = None, target: "Location | None" = None,
                 executing_row: int | None = None, check_grasp: bool = True,
                 gripper: float | None = None, deferred: frozenset[str] = frozenset(),
                 hold_episode: bool = False) -> Retrieval:
        """Look the observation up and gate it. ``prefer_episode``: the demonstration being executed; it is
        kept unless another one matches better by more than ``config.episode_hysteresis`` (no flip-flopping
        between two neighbouring demonstrations mid-motion); ``hold_episode``: it is kept however another one
        matches (the gate then judges it: a stop, not a switch). Of frames that look alike (a wait, the grasp
        settling), the latest is taken, so execution moves on instead of replaying the wait.

        The aligned method also finds the object in ``third`` (or takes ``target``, where it was found at the
        start of a run: later the arm is in the picture) and returns the matched chunk shifted onto it;
        ``executing_row``: the table row being replayed, which the grasp check then compares with;
        ``check_grasp`` False while the hand turns to the object (the align phase).

        ``gripper``: the measured opening as a run starts. Fully open, the run starts from a frame before its
        demonstration's grasp: a view that looks like one after the grasp (clutter can make a start view look
        like one at the mug) would otherwise replay the closing gripper far from the object.

        ``deferred``: gate signals (of ``policy.gate.PERSISTENT_SIGNALS``) that do not stop this lookup though
        they fail (a run's source holds them back until ``config.gate_persistence`` lookups in a row have had one
        of them failing); their readings are kept, and the gate's other signals judge the lookup."""
        t0 = time.perf_counter()
        if hand is not None:  # at the encoder's size once: the embedding and the grasp check both use it
            hand = resize_view(hand, self.config)
        z, hv, tv = self.embed_views(hand, third, pose)
        t1 = time.perf_counter()
        k = k or self.config.top_k
        matches = self._views_break_ties(self.database.search(z, k + TIE_CANDIDATES), hv, tv)
        allowed = self._open_rows() if gripper is not None and gripper >= FULLY_OPEN else None
        best = _latest_of_ties(matches)
        if allowed is not None and not allowed[best.row]:
            own = self.database.best_in_episode(z, best.episode, TIE_CANDIDATES, allowed)
            if own:
                best = _latest_of_ties(own)
        if prefer_episode is not None and best.episode != prefer_episode:
            own = self.database.best_in_episode(z, prefer_episode, TIE_CANDIDATES, allowed)
            if own and (hold_episode or own[0].similarity >= best.similarity - self.config.episode_hysteresis):
                best = _latest_of_ties(own)
        t2 = time.perf_counter()
        matches = [best] + [m for m in matches if m.row != best.row][:k - 1]
        agreement, replayed = self._view_agreement(best, hv, tv, executing_row)
        grasp, object_in_place = self._grasp_signal(hand, best, executing_row, check_grasp)
        if GRASP_SIGNAL in deferred and self._closes_within_a_chunk(self._grasp_row(best, executing_row,
                                                                                    check_grasp)):
            deferred = deferred - {GRASP_SIGNAL}  # the approach's end (policy.gate.GRASP_SIGNAL)
        cameras = self._camera_checks(hand, third, executing_row)
        gate_gamma = self._gate_gamma(executing_row)
        signal, reason = self._gate(best, agreement, grasp, gate_gamma, object_in_place, replayed, deferred)
        held_back = None  # what the gate would have stopped on, had nothing been held back
        if signal is None and deferred:
            undeferred = self._gate(best, agreement, grasp, gate_gamma, object_in_place, replayed)
            held_back = undeferred if undeferred[0] in deferred else None
        similarity = best.similarity  # what the gate judged
        readings = {"similarity": (float(similarity), float(gate_gamma))}
        readings.update({name: (float(agreement[i]), self.view_thresholds.get(name))
                         for i, name in enumerate(("hand_view", "third_view"))})
        if self.grasp_check is not None:
            # the object found in place after all: the grasp check did not judge this lookup (shown as "-")
            shown = float("nan") if object_in_place else float(grasp)
            readings["grasp_alignment"] = (shown, float(self.grasp_check.threshold))
        placed = self._place(Placing(z, best, matches, self.database.chunks[best.row], target, None, signal, reason),
                             third, executing_row, allowed, k, cameras)
        best, matches, chunk, target, correction = placed.best, placed.matches, placed.chunk, placed.target, \
            placed.correction
        signal, reason = placed.signal, placed.reason
        readings.update(self._method_readings(cameras, correction))
        return Retrieval(matches, similarity, signal is not None, chunk,
                         (t1 - t0) * 1000, (t2 - t1) * 1000, agreement, signal, reason, grasp, z, target, correction,
                         readings, held_back)

    def _views_break_ties(self, matches: list[Match], hv: np.ndarray, tv: np.ndarray) -> list[Match]:
        """``matches`` (best first by fused similarity) with, of those within VIEW_TIE_MARGIN of the best, the one
        whose views agree best with the live views (the sum of the two cosines; a view the policy does not use
        counts nothing) put first; the rest keep their order."""
        views = self.database.view_embeddings
        if views is None or len(matches) < 2:
            return matches
        near = [m for m in matches if m.similarity >= matches[0].similarity - VIEW_TIE_MARGIN]
        if len(near) < 2:
            return matches
        rows = np.array([m.row for m in near])
        agree = np.nan_to_num(views[rows, 0] @ hv) + np.nan_to_num(views[rows, 1] @ tv)
        first = near[int(np.argmax(agree))]
        return [first] + [m for m in matches if m.row != first.row]

    def _method_readings(self, cameras: tuple[float, float], correction: np.ndarray | None) -> dict:
        """Method hook: the method's own signals of a lookup, name -> (value, threshold) (the alt method: none)."""
        return {}

    # -- method hooks of a lookup (the alt method: the matched frame as it is) ------------------------------
    def _view_agreement(self, best: Match, hv: np.ndarray, tv: np.ndarray,
                        executing_row: int | None) -> tuple[tuple[float, float], int | None]:
        """Each live view's agreement with the same view of the retrieved frame, and the row being replayed
        that it may also agree with (None)."""
        views = self.database.view_embeddings
        if views is None:
            return (float("nan"), float("nan")), None
        return (float(views[best.row, 0] @ hv), float(views[best.row, 1] @ tv)), None

    def _grasp_row(self, best: Match, executing_row: int | None, check_grasp: bool) -> int:
        """The table row the grasp check compares the live hand view with (-1: none)."""
        return best.row if executing_row is None else int(executing_row)

    def _closes_within_a_chunk(self, row: int) -> bool:
        """Whether table row ``row``'s chunk (its demonstration's next ``chunk_length`` actions) commands the
        gripper closed (-1: no row)."""
        return row >= 0 and commands_close(self.database.chunks[row])

    def _grasp_signal(self, hand: np.ndarray | None, best: Match, executing_row: int | None,
                      check_grasp: bool) -> tuple[float, bool]:
        """(grasp alignment, the object found in place after all) for the grasp check (nan: it does not apply)."""
        compared = self._grasp_row(best, executing_row, check_grasp)
        if self.grasp_check is None or not self.grasp_check.applies(compared) or hand is None:
            return float("nan"), False
        live = thumbnail(hand)
        grasp = max([self.grasp_check.alignment(live, compared),
                     *self._lagged_grasp(live, compared, executing_row)])
        object_in_place = grasp < self.grasp_check.threshold and self._object_in_place(hand, compared)
        return grasp, object_in_place

    def _lagged_grasp(self, live: np.ndarray, compared: int, executing_row: int | None) -> list[float]:
        """Alignments with the frames just before ``compared`` (a replay's arm lags its commands)."""
        return []

    def _object_in_place(self, hand: np.ndarray, compared: int) -> bool:
        """A second opinion when the grasp check fails: is the object where the demonstration had it?"""
        return False

    def _camera_checks(self, hand: np.ndarray | None, third: np.ndarray | None,
                       executing_row: int | None) -> tuple[float, float]:
        """Structural agreement of each camera with the demonstrations' (nan: not checked)."""
        return float("nan"), float("nan")

    def _gate_gamma(self, executing_row: int | None) -> float:
        return self.gamma

    def _place(self, placing: "Placing", third: np.ndarray | None, executing_row: int | None,
               allowed: np.ndarray | None, k: int, cameras: tuple[float, float]) -> "Placing":
        """Where the retrieved chunk is executed: the alt method replays it as recorded."""
        return placing

    def make_source(self, **kwargs):
        """The ActionSource that runs this policy (policy/runner.py; a replaying method brings its own)."""
        from policy.runner import PolicySource

        return PolicySource(self, **kwargs)

    def close_frames(self) -> dict[int, int]:
        """Each episode's frame of its gripper's first close command, from the table's actions (episodes that
        never close from open, and tables without a gripper, have none)."""
        db = self.database
        if self._close_cache is None or self._close_cache[0] != len(db.episodes):
            closes = {}
            if db.chunks.ndim == 3 and db.chunks.shape[2] == 8:
                for episode in np.unique(db.episodes):
                    rows = np.flatnonzero(db.episodes == episode)
                    rows = rows[np.argsort(db.frames[rows])]
                    index = grasp_frame(db.chunks[rows][:, 0, :])
                    if index is not None:
                        closes[int(episode)] = int(db.frames[rows[index]])
            self._close_cache = (len(db.episodes), closes)
        return self._close_cache[1]

    def _open_rows(self) -> np.ndarray:
        """Rows of frames that come before their demonstration's first gripper close command."""
        db, closes = self.database, self.close_frames()
        limit = np.array([closes.get(int(e), np.iinfo(np.int64).max) for e in db.episodes])
        return db.frames < limit

    def _gate(self, best: Match, agreement: tuple[float, float], grasp: float,
              gamma: float, object_in_place: bool = False, replayed: int | None = None,
              deferred: frozenset[str] = frozenset()) -> tuple[str | None, str]:
        if best.similarity < gamma and "similarity" not in deferred:
            return "similarity", (f"similarity {best.similarity:.3f} < gamma {gamma:.3f}: nothing in the "
                                  "demonstrations looks like this")
        also = "" if replayed is None else \
            f" and with the frame being replayed (frame {int(self.database.frames[replayed])})"
        for i, (name, view) in enumerate((("hand_view", "hand"), ("third_view", "third"))):
            limit = self.view_thresholds.get(name)
            if limit is not None and agreement[i] < limit and name not in deferred:
                return name, (f"the {view} view disagrees with the retrieved frame (episode {best.episode} frame "
                              f"{best.frame}){also}: agreement {agreement[i]:.3f} < {limit:.3f}")
        if self.grasp_check is not None and grasp < self.grasp_check.threshold and not object_in_place and \
                "grasp_alignment" not in deferred:
            return "grasp_alignment", (f"before the grasp, the hand view does not line up with the demonstration's "
                                       f"(episode {best.episode} frame {best.frame}): alignment {grasp:.3f} < "
                                       f"{self.grasp_check.threshold:.3f}; the object is not where that "
                                       "demonstration had it, so its grasp would miss or knock it")
        return None, ""

    # -- building ---------------------------------------------------------
    @classmethod
    def build(cls, dataset: Dataset, config: PolicyConfig, *,
              progress: Callable[[str, TrainProgress | tuple[int, int]], None] | None = None,
              cancel: threading.Event | None = None, device: str | None = None,
              episodes: list[int] | None = None) -> "ALTPolicy":
        """Load frames, train the encoder, embed every frame, build the index, calibrate gamma. ``episodes``:
        which to build from (default: every complete one)."""
        report = (lambda stage, value: progress(stage, value)) if progress else (lambda *a: None)
        t0 = time.perf_counter()
        table = load_frames(dataset, config, episodes, progress=lambda d, n: report("load", (d, n)))
        held_out = held_out_for(sorted(int(e) for e in table.actions), config)
        trained = train_encoder(table, config, progress=lambda p: report("train", p), cancel=cancel, device=device,
                                exclude_episodes=held_out)
        embeddings, views = embed_table_views(trained.encoder, table, progress=lambda d, n: report("embed", (d, n)))
        # The held-out demonstrations join the lookup table once the gate has been calibrated on them.
        database = LookupDatabase(embeddings, table.episode, table.frame, action_chunks(table, config.chunk_length),
                                  views, pose_actions=action_kind(dataset.spec.action_names) == EE_POSE)
        database.build_annoy(config.annoy_trees, seed=config.seed)
        queries = probe_queries(embeddings, table.episode, min(2000, 4 * len(embeddings)), seed=config.seed)
        search_k, recall = database.tune_search_k(queries)
        calibration = calibrate_on_held_out(trained.encoder, table, database, held_out, config)
        grasp_check = build_grasp_check(table, database, config, calibration)
        kind = policy_class(config.method)
        parts = kind._fit_method(table, config, trained.encoder, database, held_out, calibration)
        finish_run_calibration(kind, table, database, held_out, config, calibration)
        info = {
            "dataset": str(Path(dataset.root).resolve()),
            "episodes": sorted(int(e) for e in table.actions),
            # what each episode was when its frames were read, so the window can refuse to show a
            # "retrieved frame" from an episode that has changed since (check_source_episode)
            "episode_fingerprints": {str(e): table.fingerprints[e] for e in sorted(table.fingerprints)},
            "pose_reference": None if table.pose_reference is None else table.pose_reference.tolist(),
            "frames": len(table), "train_frames": trained.train_frames, "device": trained.device,
            "held_out_episodes": held_out,
            "init": trained.encoder.init, "train_seconds": trained.seconds,
            "build_seconds": time.perf_counter() - t0, "epoch_losses": trained.epoch_losses,
            "annoy": {"trees": config.annoy_trees, "search_k": search_k, "recall_at_1": recall,
                      "probe_queries": len(queries)},
            "fps": dataset.spec.fps, "cameras": [c.name for c in dataset.spec.cameras],
            "camera_sizes": {c.name: [c.width, c.height] for c in dataset.spec.cameras},
            # where each demonstration's object was (simulated datasets), for retrieval-accuracy reports
            "episode_scenes": {str(e): dataset.episode(int(e)).extra.get("scene") for e in sorted(table.actions)},
        }
        policy = kind(config, trained.encoder, database, calibration, info, grasp_check, **parts)
        policy.grip_check, policy.info["grip_check"] = grip_check_from_dataset(dataset, sorted(table.actions)) \
            if config.grip_check else (None, "no grip check: switched off (grip_check = False)")
        return policy

    @classmethod
    def _fit_method(cls, table, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                    held_out: list[int], calibration: Calibration) -> dict:
        """Method hook: the method's own parts, fitted on the demonstrations (the alt method has none)."""
        return {}

    @classmethod
    def _load_method(cls, path: Path, doc: dict, arrays: dict) -> dict:
        """Method hook: the method's own parts, read from the policy folder."""
        return {}

    def _method_arrays(self) -> dict:
        """Method hook: the method's own arrays for database.npz."""
        return {}

    def _method_json(self) -> dict | None:
        """Method hook: the method's own part of config.json ("alignment")."""
        return None

    def extension_parts(self, table) -> dict:
        """Method hook: the method's own parts for a new version with the episodes of ``table`` added."""
        return {}

    def recalibrated_method(self, table, database: LookupDatabase, held_out: list[int],
                            calibration: Calibration) -> float | None:
        """Method hook: recalibrate the method's own gate on a new table; its gamma (None: the alt gate's)."""
        return None

    # -- persistence ------------------------------------------------------
    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        def write(tmp: Path) -> None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            save_file(state, str(tmp / "encoder.safetensors"))
            db = self.database
            extra = {} if self.grasp_check is None else self.grasp_check.arrays()
            extra.update({} if self.grip_check is None else self.grip_check.arrays())
            extra.update(self._method_arrays())
            save_database(tmp / "database.npz", db.embeddings, db.episodes, db.frames, db.chunks,
                          db.view_embeddings, **extra)
            if not db.has_annoy:
                db.build_annoy(self.config.annoy_trees, seed=self.config.seed)
            db.save_annoy(tmp / "index.ann")
            doc = {"config": self.config.to_json(), "gamma": self.gamma,
                   "calibration": None if self.calibration is None else self.calibration.__dict__,
                   "info": self.info, "annoy_search_k": db.search_k,
                   "alignment": self._method_json()}
            (tmp / "config.json").write_text(json.dumps(doc, indent=1))

        return write_artifact(Path(out), write, overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "ALTPolicy":
        """Load a policy folder; a damaged or incomplete one raises PolicyArtifactError naming the file and field."""
        path = Path(path)
        manifest = check_artifact(path)
        doc = read_config_doc(path)
        with reading(path / "config.json", "config"):
            config = PolicyConfig.from_json(doc["config"], saved_at=manifest.get("created_at"))
        with reading(path / "encoder.safetensors"):
            encoder = ALTEncoder(config, pretrained="none")
            encoder.load_state_dict(load_file(str(path / "encoder.safetensors")))
        with reading(path / "database.npz"):
            arrays = load_database_arrays(path / "database.npz")
            pose_actions = policy_actions(doc["info"])["kind"] == EE_POSE
            database = LookupDatabase(arrays["embeddings"], arrays["episodes"], arrays["frames"], arrays["chunks"],
                                      arrays.get("view_embeddings"), pose_actions=pose_actions)
        with reading(path / "index.ann"):
            database.load_annoy(path / "index.ann", config.annoy_trees, int(doc["annoy_search_k"]))
        kind = policy_class(config.method)
        with reading(path / "config.json", "alignment"):
            parts = kind._load_method(path, doc, arrays)
        with reading(path / "config.json", "calibration"):
            cal = doc["calibration"]
            calibration = Calibration(**cal) if cal else None
            grasp_check = GraspCheck.from_arrays(arrays, (calibration.grasp.get("threshold") if calibration else None))
        with reading(path / "config.json"):
            policy = kind(config, encoder.to(device or "cpu"), database, calibration, doc["info"], grasp_check, **parts)
        policy.grip_check = GripCheck.from_arrays(arrays)
        policy.gamma = float(doc["gamma"])
        if abs(policy.gamma - policy.calibrated_gamma) > 1e-9:
            policy.gate_rate = None  # gamma set by hand at training time: not the calibrated rate
        return policy


@dataclass(frozen=True)
class SourceEpisodeCheck:
    """Whether a training episode on disk is still the one a policy was built from."""

    show: bool  # its frames may be shown as the policy's retrieved frames
    verified: bool  # a fingerprint was recorded at build time and matches the episode now
    message: str  # for the operator: why it is not shown, or why it could not be checked ("" when verified)


def check_source_episode(fingerprints: dict | None, dataset: Dataset, episode: int) -> SourceEpisodeCheck:
    """Compare episode ``episode`` of ``dataset`` with the fingerprint the policy recorded for it
    (``policy.info["episode_fingerprints"]``). Deleted, re-recorded or altered episodes, and episodes the
    policy was not built from, are not shown. Policies built before fingerprints were recorded
    (``fingerprints`` None) cannot be checked: their frames are shown, flagged as unverified."""
    if fingerprints is None:
        return SourceEpisodeCheck(True, False, "this policy was built before episode fingerprints were kept, so its "
                                               "retrieved frames cannot be checked against the dataset; retrain it "
                                               "to have them checked")
    retrain = "retrain the policy on the dataset as it is now"
    recorded = fingerprints.get(str(episode))
    if recorded is None:
        return SourceEpisodeCheck(False, False, f"episode {episode} is not one this policy was built from "
                                                f"(it knows {len(fingerprints)} episodes); the frame is not shown")
    if episode not in dataset.episode_indices():
        return SourceEpisodeCheck(False, False, f"episode {episode} was deleted from {dataset.root} after this policy "
                                                f"was built; its retrieved frame is not shown ({retrain})")
    try:
        now = dataset.episode_fingerprint(episode)
    except DatasetError as exc:
        return SourceEpisodeCheck(False, False, f"episode {episode} cannot be checked ({exc}); its retrieved frame is "
                                                "not shown")
    if now != recorded:
        return SourceEpisodeCheck(False, False, f"episode {episode} of {dataset.root} has changed since this policy "
                                                f"was built (recorded again or its files altered); its retrieved "
                                                f"frame is not shown ({retrain})")
    return SourceEpisodeCheck(True, True, "")


