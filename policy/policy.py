"""The ALT policy: encoder + lookup database + OOD threshold, built from a dataset, saved as one folder."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recorder.dataset import Dataset, DatasetError
from core.transforms import POSE_QUAT, quat_nearest, yaw_of

from policy.action_space import EE_POSE, action_kind, policy_actions
from policy.aligned.alignment import AlignmentError, Location, TargetLocator, fit_grasp_places, fit_locator, fit_turn, grasp_frame
from policy.artifact import (PolicyArtifactError, check_artifact, load_database_arrays, read_config_doc, reading,
                       save_database, write_artifact)
from policy.augment import augment
from policy.aligned.camera_check import NEGATIVES, fit_camera_check
from policy.config import PolicyConfig
from policy.data import action_chunks, load_frames
from policy.database import LookupDatabase, Match, probe_queries
from policy.encoder import ALTEncoder, resize_view
from policy.gate import SIGNALS, GateEvidence, make_negatives, procedural_texture, quantile_threshold, thresholds_for_rate
from policy.grasp_check import GraspCheck, cross_demo_alignment, pre_grasp_rows, table_thumbnails, thumbnail
from policy.probes import synthetic_probes
from policy.train import TrainProgress, embed_table_views, train_encoder

log = logging.getLogger(__name__)


#: Frames of one demonstration that look identical (the arm waiting, the gripper closing) have equal
#: similarity; of those, the latest is taken so that execution moves on instead of replaying the wait.
TIE_CANDIDATES = 8
#: The aligned method's grasp check compares the live hand view with the replayed frame and the few before it:
#: the arm trails its commands by a tick or two (more in real time).
REPLAY_LAG_FRAMES = 3
TIE_TOLERANCE = 1e-4
#: A measured gripper opening at least this is fully open: nothing held (``retrieve``'s ``gripper``).
FULLY_OPEN = 0.9
#: The third-person camera check is fitted on each demonstration's frames before this one (the arm still at
#: its start pose).
START_FRAMES = 3


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
    target: Location | None = None
    correction: np.ndarray | None = None


@dataclass
class Calibration:
    """How the gate's thresholds were chosen, kept in the artefact so the choice can be audited."""

    gamma: float
    method: str
    in_distribution: dict = field(default_factory=dict)  # percentiles of held-out frames' similarity
    unrelated: dict = field(default_factory=dict)  # percentiles of unrelated images' similarity
    view_thresholds: dict = field(default_factory=dict)  # "hand_view"/"third_view" -> threshold
    false_stop_rate: float | None = None  # asked for, per held-out frame
    held_out_stop_rate: float | None = None  # measured on the held-out frames with all thresholds
    held_out_episodes: list = field(default_factory=list)
    negatives: dict = field(default_factory=dict)  # kind -> {"count", "stopped", "by_signal"}
    # the grasp check: its threshold and how it was chosen ({} when the policy has none)
    grasp: dict = field(default_factory=dict)
    # the aligned method's gate: the object may stand anywhere in the demonstrated area, so its thresholds come
    # from held-out frames matched to *other* demonstrations only ({} for the alt method)
    aligned: dict = field(default_factory=dict)


def _percentiles(x: np.ndarray) -> dict:
    return {f"p{q}": float(np.percentile(x, q)) for q in (0, 1, 5, 50, 95, 99, 100)}


def calibrate_gamma(held_out: GateEvidence, negatives: dict[str, GateEvidence], false_stop_rate: float,
                    views: bool = True, held_out_episodes: list[int] | None = None) -> Calibration:
    """Thresholds for a stated false-stop rate on held-out demonstration frames, and what they catch.

    Each signal's threshold is the quantile of the held-out values at ``false_stop_rate`` divided over the
    signals, so together they stop at most that share of held-out frames. The negatives (near: one view
    altered; far: unrelated images) are not used to place the thresholds, only measured against them.
    """
    if len(held_out.similarity) == 0:
        raise ValueError("no held-out frames to calibrate on; record more demonstrations")
    th = thresholds_for_rate(held_out, false_stop_rate, views)
    chosen = th.as_dict()
    report = {}
    for kind, ev in negatives.items():
        stopped = ev.stopped(chosen)
        report[kind] = {"count": int(len(stopped)), "stopped": int(stopped.sum()),
                        "by_signal": {k: int(np.sum(ev.signal(k) < v)) for k, v in chosen.items()}}
        if len(stopped) and not stopped.all():
            log.warning("OOD calibration: %d of %d '%s' negatives pass the gate", int((~stopped).sum()),
                        len(stopped), kind)
    far = [negatives[k].similarity for k in negatives if k.endswith("_both")]
    signals = ", ".join(chosen)
    return Calibration(
        th.similarity, f"each of {signals} at the {100 * false_stop_rate / len(chosen):.2g}% quantile of held-out "
                       f"demonstration frames (false-stop rate {100 * false_stop_rate:.2g}% per frame)",
        _percentiles(held_out.similarity), _percentiles(np.concatenate(far)) if far else {},
        {k: v for k, v in chosen.items() if k != "similarity"}, false_stop_rate,
        float(held_out.stopped(chosen).mean()), sorted(int(e) for e in (held_out_episodes or [])), report)


def choose_held_out(episodes: list[int], fraction: float) -> list[int]:
    """Evenly spread episodes to keep out of encoder training (none with fewer than two episodes)."""
    n = int(round(fraction * len(episodes)))
    if fraction > 0 and len(episodes) >= 2:
        n = max(1, n)
    n = min(n, len(episodes) - 1)
    if n <= 0:
        return []
    picks = np.linspace(0, len(episodes), n, endpoint=False) + len(episodes) / (2 * n)
    return sorted({episodes[int(i)] for i in picks})


class ALTPolicy:
    def __init__(self, config: PolicyConfig, encoder: ALTEncoder, database: LookupDatabase,
                 calibration: Calibration | None = None, info: dict | None = None,
                 grasp_check: GraspCheck | None = None, locator: TargetLocator | None = None):
        if config.method == "aligned" and locator is None:
            raise PolicyArtifactError("an aligned policy needs its object locator; retrain it")
        self.config = config
        self.grasp_check = grasp_check
        self.locator = locator if config.method == "aligned" else None
        self.encoder = encoder.eval()
        self.database = database
        self._close_cache: tuple[int, dict[int, int]] | None = None  # (table rows, close_frames())
        self.calibration = calibration
        self.info = dict(info or {})
        self.gamma = self.calibrated_gamma
        self.view_thresholds: dict[str, float] = {}
        if calibration is not None:
            source = calibration.aligned if self.locator is not None else calibration.view_thresholds
            self.view_thresholds = {k: float(source[k]) for k in ("hand_view", "third_view") if k in source}
        self.gamma_changes: list[dict] = []  # every set_gamma, for the run records
        self._device = next(encoder.parameters()).device

    # -- the gate's thresholds, audited ------------------------------------
    @property
    def method(self) -> str:
        return self.config.method

    @property
    def calibrated_gamma(self) -> float:
        if self.calibration is None:
            return self.config.gamma
        if self.locator is not None:
            return float(self.calibration.aligned["gamma"])
        return self.calibration.gamma

    def thresholds(self) -> dict:
        """Everything the gate and the runner decide with, for the record of a run or an evaluation."""
        return {"gamma": self.gamma, "calibrated_gamma": self.calibrated_gamma, **self.view_thresholds,
                "false_stop_rate": None if self.calibration is None else self.calibration.false_stop_rate,
                "grasp_alignment": None if self.grasp_check is None else self.grasp_check.threshold,
                "method": self.method,
                "replay_gamma": None if self.locator is None else self.calibration.aligned.get("replay_gamma"),
                "max_correction_m": None if self.locator is None else self.locator.max_correction,
                "stall_seconds": self.config.stall_seconds, "stall_distance_m": self.config.stall_distance,
                "time_limit_s": self.time_limit_seconds(),
                "episode_hysteresis": self.config.episode_hysteresis, "requery_every": self.config.requery_every}

    def gamma_needs_confirmation(self, value: float) -> bool:
        """Lowering gamma below the calibrated value lets more unfamiliar scenes through: ask first."""
        return value < self.calibrated_gamma - 1e-9

    def set_gamma(self, value: float, by: str = "operator") -> dict:
        """Change gamma (the runner reads it at its next lookup) and log the change; returns the record."""
        value = float(value)
        if not -1 <= value <= 1:
            raise ValueError(f"gamma {value} must be a cosine similarity in [-1, 1]")
        change = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "by": by,
                  "from": self.gamma, "to": value, "calibrated": self.calibrated_gamma,
                  "below_calibrated": self.gamma_needs_confirmation(value)}
        (log.warning if change["below_calibrated"] else log.info)(
            "gamma changed by %s from %.3f to %.3f (calibrated %.3f)", by, self.gamma, value, self.calibrated_gamma)
        self.gamma = value
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
                 k: int | None = None, prefer_episode: int | None = None, target: Location | None = None,
                 executing_row: int | None = None, check_grasp: bool = True,
                 gripper: float | None = None) -> Retrieval:
        """Look the observation up and gate it. ``prefer_episode``: the demonstration being executed; it is
        kept unless another one matches better by more than ``config.episode_hysteresis`` (no flip-flopping
        between two neighbouring demonstrations mid-motion). Of frames that look alike (a wait, the grasp
        settling), the latest is taken, so execution moves on instead of replaying the wait.

        The aligned method also finds the object in ``third`` (or takes ``target``, where it was found at the
        start of a run: later the arm is in the picture) and returns the matched chunk shifted onto it;
        ``executing_row``: the table row being replayed, which the grasp check then compares with;
        ``check_grasp`` False while the hand turns to the object (the align phase).

        ``gripper``: the measured opening as a run starts. Fully open, the run starts from a frame before its
        demonstration's grasp: a view that looks like one after the grasp (clutter can make a start view look
        like one at the mug) would otherwise replay the closing gripper far from the object."""
        t0 = time.perf_counter()
        if hand is not None:  # at the encoder's size once: the embedding and the grasp check both use it
            hand = resize_view(hand, self.config)
        z, hv, tv = self.embed_views(hand, third, pose)
        t1 = time.perf_counter()
        k = k or self.config.top_k
        matches = self.database.search(z, k + TIE_CANDIDATES)
        allowed = self._open_rows() if gripper is not None and gripper >= FULLY_OPEN else None
        best = _latest_of_ties(matches)
        if allowed is not None and not allowed[best.row]:
            own = self.database.best_in_episode(z, best.episode, TIE_CANDIDATES, allowed)
            if own:
                best = _latest_of_ties(own)
        if prefer_episode is not None and best.episode != prefer_episode:
            own = self.database.best_in_episode(z, prefer_episode, TIE_CANDIDATES, allowed)
            if own and own[0].similarity >= best.similarity - self.config.episode_hysteresis:
                best = _latest_of_ties(own)
        t2 = time.perf_counter()
        matches = [best] + [m for m in matches if m.row != best.row][:k - 1]
        agreement = (float("nan"), float("nan"))
        views = self.database.view_embeddings
        replayed = None
        if views is not None:
            agreement = (float(views[best.row, 0] @ hv), float(views[best.row, 1] @ tv))
            if self.locator is not None and executing_row is not None:
                # while replaying, a view may instead agree with the frame being replayed (or the few before it:
                # the arm lags its commands): clutter can make another demonstration's frame the best match,
                # one the run is not following and whose views look nothing like the live ones
                db, replayed = self.database, int(executing_row)
                rows = [replayed - back for back in range(REPLAY_LAG_FRAMES + 1)
                        if replayed - back >= 0 and db.episodes[replayed - back] == db.episodes[replayed]]
                agreement = (max(agreement[0], float((views[rows, 0] @ hv).max())),
                             max(agreement[1], float((views[rows, 1] @ tv).max())))
        grasp = hand_camera = third_camera = float("nan")
        object_in_place = False
        compared = best.row if executing_row is None else int(executing_row)
        if self.locator is not None:  # only once aligned: during the approach the views differ by design
            db = self.database
            aligned = executing_row is not None and self.locator.ramp(int(db.episodes[compared]),
                                                                      int(db.frames[compared])) >= 1.0
            compared = compared if aligned and check_grasp else -1
            if executing_row is None:
                # the first lookup of a run: are these the cameras? (later the object covers the fingers' region
                # and the arm crosses the third view in ways no demonstration showed; the replay's checks take over)
                if hand is not None and self.locator.hand_camera is not None:
                    hand_camera = self.locator.hand_camera.agreement(hand)
                if third is not None and self.locator.third_camera is not None:
                    third_camera = self.locator.third_camera.agreement(third)
        if self.grasp_check is not None and self.grasp_check.applies(compared) and hand is not None:
            live = thumbnail(hand)
            grasp = self.grasp_check.alignment(live, compared)
            if executing_row is not None:  # the arm lags its commands: the frame it is at may be a few back
                for back in range(1, REPLAY_LAG_FRAMES + 1):
                    row = compared - back
                    if self.grasp_check.applies(row) and self.database.episodes[row] == self.database.episodes[
                            compared] and self.locator.ramp(int(self.database.episodes[row]),
                                                            int(self.database.frames[row])) >= 1.0:
                        grasp = max(grasp, self.grasp_check.alignment(live, row))
            if grasp < self.grasp_check.threshold and self.locator is not None:
                # a second opinion: the view's edges disagree (clutter, a shadow), but is the object where it was?
                frames = [int(self.database.frames[compared]) - back for back in range(REPLAY_LAG_FRAMES + 1)]
                object_in_place = self.locator.object_in_place(hand, int(self.database.episodes[compared]), frames)
        gamma = self.gamma
        if self.locator is not None and executing_row is not None:
            gamma = min(gamma, float(self.calibration.aligned.get("replay_gamma", gamma)))
        signal, reason = self._gate(best, agreement, grasp, gamma, object_in_place, replayed)
        similarity = best.similarity  # what the gate judged
        chunk, correction = self.database.chunks[best.row], None
        if self.locator is not None:
            if target is None and third is not None:
                target = self.locator.locate(third)
            if target is not None and executing_row is None:
                # which demonstration to replay: of those whose object stood nearest, the one whose object
                # looks the same, from its frame that matches best (the gate above judged the scene by the best
                # match of all)
                nearest = self.locator.choose_demo(target)
                if nearest != best.episode:
                    own = self.database.best_in_episode(z, nearest, TIE_CANDIDATES, allowed)
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
                signal, reason = self._alignment_gate(episode, target, correction, hand_camera, third_camera)
        return Retrieval(matches, similarity, signal is not None, chunk,
                         (t1 - t0) * 1000, (t2 - t1) * 1000, agreement, signal, reason, grasp, z, target, correction)

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

    def _gate(self, best: Match, agreement: tuple[float, float], grasp: float,
              gamma: float, object_in_place: bool = False, replayed: int | None = None) -> tuple[str | None, str]:
        if best.similarity < gamma:
            return "similarity", (f"similarity {best.similarity:.3f} < gamma {gamma:.3f}: nothing in the "
                                  "demonstrations looks like this")
        also = "" if replayed is None else \
            f" and with the frame being replayed (frame {int(self.database.frames[replayed])})"
        for i, (name, view) in enumerate((("hand_view", "hand"), ("third_view", "third"))):
            limit = self.view_thresholds.get(name)
            if limit is not None and agreement[i] < limit:
                return name, (f"the {view} view disagrees with the retrieved frame (episode {best.episode} frame "
                              f"{best.frame}){also}: agreement {agreement[i]:.3f} < {limit:.3f}")
        if self.grasp_check is not None and grasp < self.grasp_check.threshold and not object_in_place:
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
        held_out = choose_held_out(sorted(int(e) for e in table.actions), config.holdout_fraction)
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
        locator = None
        if config.method == "aligned":
            locator = build_locator(table, config)
            calibration.aligned = calibrate_aligned(trained.encoder, table, database, held_out, config)
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
        return cls(config, trained.encoder, database, calibration, info, grasp_check, locator)

    # -- persistence ------------------------------------------------------
    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        def write(tmp: Path) -> None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            save_file(state, str(tmp / "encoder.safetensors"))
            db = self.database
            extra = {} if self.grasp_check is None else self.grasp_check.arrays()
            if self.locator is not None:
                extra.update(self.locator.arrays())
            save_database(tmp / "database.npz", db.embeddings, db.episodes, db.frames, db.chunks,
                          db.view_embeddings, **extra)
            if not db.has_annoy:
                db.build_annoy(self.config.annoy_trees, seed=self.config.seed)
            db.save_annoy(tmp / "index.ann")
            doc = {"config": self.config.to_json(), "gamma": self.gamma,
                   "calibration": None if self.calibration is None else self.calibration.__dict__,
                   "info": self.info, "annoy_search_k": db.search_k,
                   "alignment": None if self.locator is None else self.locator.to_json()}
            (tmp / "config.json").write_text(json.dumps(doc, indent=1))

        return write_artifact(Path(out), write, overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "ALTPolicy":
        """Load a policy folder; a damaged or incomplete one raises PolicyArtifactError naming the file and field."""
        path = Path(path)
        check_artifact(path)
        doc = read_config_doc(path)
        with reading(path / "config.json", "config"):
            config = PolicyConfig.from_json(doc["config"])
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
        with reading(path / "config.json", "alignment"):
            locator = TargetLocator.from_json(doc["alignment"], arrays) if doc["alignment"] else None
        with reading(path / "config.json", "calibration"):
            cal = doc["calibration"]
            calibration = Calibration(**cal) if cal else None
            grasp_check = GraspCheck.from_arrays(arrays, (calibration.grasp.get("threshold") if calibration else None))
        with reading(path / "config.json"):
            policy = cls(config, encoder.to(device or "cpu"), database, calibration, doc["info"], grasp_check,
                         locator)
        policy.gamma = float(doc["gamma"])
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


def embed_images(encoder: ALTEncoder, hands: list[np.ndarray], thirds: list[np.ndarray],
                 pose: np.ndarray | None = None) -> np.ndarray:
    """Fused unit embeddings [N, D] of image pairs (any size)."""
    return embed_image_views(encoder, hands, thirds, pose)[0]


@torch.inference_mode()
def embed_image_views(encoder: ALTEncoder, hands: list[np.ndarray], thirds: list[np.ndarray],
                      pose: np.ndarray | None = None, batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused embeddings [N, D] and per-view features [N, V] (hand, third) of image pairs (any size)."""
    encoder.eval()
    dev = next(encoder.parameters()).device
    out: list[list[np.ndarray]] = [[], [], []]
    for i in range(0, len(hands), batch):
        h = torch.from_numpy(np.stack([resize_view(x, encoder.config) for x in hands[i:i + batch]])).to(dev)
        t = torch.from_numpy(np.stack([resize_view(x, encoder.config) for x in thirds[i:i + batch]])).to(dev)
        p = None
        if encoder.pose is not None:
            if pose is None:
                raise ValueError("this encoder uses the end-effector pose; pass one")
            p = torch.as_tensor(np.asarray(pose, np.float32)[:7]).expand(len(h), 7).to(dev)
        for acc, part in zip(out, encoder.forward_views(h, t, p)):
            acc.append(part.cpu().numpy())
    return tuple(np.concatenate(acc) for acc in out)


def gate_evidence(database: LookupDatabase, z: np.ndarray, hv: np.ndarray, tv: np.ndarray,
                  exclude: np.ndarray | None = None) -> GateEvidence:
    """The gate's three signals for query embeddings against the database (best match by similarity);
    ``exclude`` [N, rows] bool: rows each query may not match (itself, its own episode)."""
    sims = z @ database.embeddings.T
    if exclude is not None:
        sims = np.where(exclude, -2.0, sims)
    best = np.argmax(sims, axis=1)
    similarity = sims[np.arange(len(z)), best]
    views = database.view_embeddings
    if views is None:
        nan = np.full(len(z), np.nan)
        return GateEvidence(similarity, nan, nan)
    return GateEvidence(similarity, np.einsum("nd,nd->n", views[best, 0], hv),
                        np.einsum("nd,nd->n", views[best, 1], tv))


def calibrate_on_held_out(encoder: ALTEncoder, table, database: LookupDatabase, held_out: list[int],
                          config: PolicyConfig, negatives_per_kind: int = 40) -> Calibration:
    """Gate thresholds from the held-out demonstrations (the encoder never trained on them).

    In-distribution evidence: every held-out frame looked up with itself taken out of the table (its
    nearest remaining entry is usually its neighbour in time, a step away: a live replay falls between
    recorded frames). Negatives: held-out frames with one view blanked, swapped with another episode's,
    occluded, shifted, recoloured or replaced by a procedural texture, and both views replaced by
    textures or synthetic patterns. Without held-out episodes (one demonstration) every frame serves,
    which flatters the encoder: the log says so.
    """
    rows = np.flatnonzero(np.isin(table.episode, held_out)) if held_out else np.arange(len(table))
    if not held_out:
        log.warning("OOD calibration: too few demonstrations to hold any out; calibrating on training frames")
    z = database.embeddings[rows]
    views = database.view_embeddings[rows]
    exclude = np.zeros((len(rows), len(database)), bool)
    exclude[np.arange(len(rows)), rows] = True
    positives = gate_evidence(database, z, views[:, 0], views[:, 1], exclude)
    hands = [table.hand[r].numpy() for r in rows]
    thirds = [table.third[r].numpy() for r in rows]
    pose = table.pose.mean(0).numpy()
    negatives = {}
    for neg in make_negatives(hands, thirds, table.episode[rows], negatives_per_kind, seed=config.seed + 1):
        nz, nh, nt = embed_image_views(encoder, neg.hands, neg.thirds, pose)
        negatives[neg.kind] = gate_evidence(database, nz, nh, nt)
    return calibrate_gamma(positives, negatives, config.false_stop_rate, held_out_episodes=held_out)


def build_grasp_check(table, database: LookupDatabase, config: PolicyConfig,
                      calibration: Calibration | None) -> GraspCheck | None:
    """The grasp check for a table (None when it is switched off, the policy has no hand view or no gripper
    channel, or there is only one demonstration to compare with); its calibration goes into
    ``calibration.grasp``."""
    if not config.grasp_check or "hand" not in config.views:
        return None
    rows = pre_grasp_rows(table.episode, table.frame, table.actions)
    if len(rows) == 0 or len(np.unique(table.episode[rows])) < 2:
        log.warning("grasp check: needs pose + gripper actions and two demonstrations with a grasp; left out")
        return None
    thumbs = table_thumbnails(table, rows)
    values = cross_demo_alignment(rows, thumbs, table.episode, database.embeddings)
    threshold = quantile_threshold(values, config.grasp_check_quantile)
    if calibration is not None:
        calibration.grasp = {
            "threshold": threshold, "quantile": config.grasp_check_quantile, "frames": int(len(values)),
            "method": f"the {100 * config.grasp_check_quantile:.3g}% quantile of the edge alignment between each "
                      "demonstration's pre-grasp hand views and the nearest pre-grasp frame of another demonstration",
            "cross_demo": _percentiles(values)}
    log.info("grasp check: threshold %.3f from %d pre-grasp frames (cross-demonstration p1 %.3f, p50 %.3f)",
             threshold, len(values), np.percentile(values, 1), np.percentile(values, 50))
    return GraspCheck(rows, thumbs, threshold)


def aligned_from(policy: ALTPolicy, dataset: Dataset) -> ALTPolicy:
    """The aligned method on an already trained ALT policy: the same encoder, table and gate, with the object
    locator and the aligned gate's thresholds calibrated on the same held-out demonstrations (``dataset``: the
    one the policy was built from). Comparing the two then compares the methods alone."""
    config = policy.config.with_overrides(method="aligned")
    table = load_frames(dataset, config, episodes=[int(e) for e in policy.info["episodes"]])
    locator = build_locator(table, config)
    calibration = Calibration(**{**policy.calibration.__dict__}) if policy.calibration is not None else None
    if calibration is None:
        raise AlignmentError("this policy has no gate calibration; retrain it with --method aligned")
    calibration.aligned = calibrate_aligned(policy.encoder, table, policy.database,
                                            policy.info.get("held_out_episodes") or [],
                                            config)
    return ALTPolicy(config, policy.encoder, policy.database, calibration, dict(policy.info), policy.grasp_check,
                     locator)


def first_third_frames(table) -> dict[int, np.ndarray]:
    """Each episode's first third-person frame (the aligned method's empty scene and object positions)."""
    firsts = {}
    for e in table.actions:
        rows = np.flatnonzero(table.episode == e)
        firsts[int(e)] = table.third[int(rows[np.argmin(table.frame[rows])])].numpy()
    return firsts


def build_locator(table, config: PolicyConfig) -> TargetLocator:
    """The aligned method's object locator, from each demonstration's first third-person frame and actions."""
    if "third" not in config.views:
        raise AlignmentError("the aligned method finds the object in the third-person view; this dataset has none")
    if not table.actions or next(iter(table.actions.values())).shape[1] != 8:
        raise AlignmentError("the aligned method shifts end-effector pose actions; this dataset's actions are not "
                             "pose + gripper")
    locator = fit_locator(first_third_frames(table), {int(e): a for e, a in table.actions.items()},
                          config.align_radius, config.align_margin)
    hands, yaws = {}, {}
    for e in table.actions:
        rows = np.flatnonzero(table.episode == e)
        rows = rows[np.argsort(table.frame[rows])][:locator.bottlenecks.get(int(e), -1) + 1]
        if len(rows):
            hands[int(e)] = [table.hand[int(r)].numpy() for r in rows]
            yaws[int(e)] = np.array([yaw_of(table.pose[int(r)].numpy()[3:7]) for r in rows])
    fit_turn(locator, hands, yaws)
    size = (config.image_width, config.image_height)
    negatives = synthetic_probes(NEGATIVES // 2, size, seed=config.seed + 7) + \
        [procedural_texture(np.random.default_rng(config.seed + i), size) for i in range(NEGATIVES // 2)]
    locator.hand_camera, locator.report["hand_camera"] = fit_camera_check(
        [h for frames in hands.values() for h in frames], negatives, "gripper")
    closes = {int(e): grasp_frame(a) for e, a in table.actions.items()}
    approach = {}  # from the bottleneck to the grasp: the grasp check's second opinion
    for e, close in closes.items():
        bottleneck = locator.bottlenecks.get(e)
        if close is not None and bottleneck is not None:
            approach[e] = [(int(table.frame[r]), table.hand[int(r)].numpy()) for r in np.flatnonzero(table.episode == e)
                           if bottleneck <= table.frame[r] < close]
    fit_grasp_places(locator, approach, closes, config.grasp_check_quantile)
    starts = [table.third[int(r)].numpy() for r in np.flatnonzero(table.frame < START_FRAMES)]
    locator.third_camera, locator.report["third_camera"] = fit_camera_check(starts, negatives, "table and arm")
    r = locator.report
    log.info("alignment: table map from %d demonstrations, leave-one-out error %.1f mm median, %.1f mm max; "
             "largest correction %.1f cm", r["demonstrations"], 1000 * r["map_error_loo_m"]["p50"],
             1000 * r["map_error_loo_m"]["max"], 100 * locator.max_correction)
    return locator


def calibrate_aligned(encoder: ALTEncoder, table, database: LookupDatabase, held_out: list[int],
                      config: PolicyConfig) -> dict:
    """The aligned method's gate thresholds: each held-out frame is looked up among the *other*
    demonstrations only (its own taken out), as a live scene with the object somewhere new is, and again
    ``config.calibration_augments`` times as the encoder was taught to see it (the training's colour jitter,
    crop, shadows and pasted patches): clutter and other light the encoder learned to look past are then no
    reason to stop. What tells an unrelated view from the scene at a run's start is the cameras' structural
    checks (policy/aligned/camera_check.py), which these thresholds do not replace."""
    rows = np.flatnonzero(np.isin(table.episode, held_out)) if held_out else np.arange(len(table))
    views = database.view_embeddings[rows]
    exclude = database.episodes[None, :] == table.episode[rows][:, None]
    evidence = [gate_evidence(database, database.embeddings[rows], views[:, 0], views[:, 1], exclude)]
    gen = torch.Generator().manual_seed(config.seed + 17)
    pose = table.pose.mean(0).numpy()

    def augmented(images: torch.Tensor) -> list[np.ndarray]:
        x = augment(images, config.color_jitter, config.crop_scale, gen, config.shadow_probability,
                    config.paste_probability)
        return list((x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())

    for _ in range(config.calibration_augments if len(rows) else 0):
        z, hv, tv = embed_image_views(encoder, augmented(table.hand[rows]), augmented(table.third[rows]), pose)
        evidence.append(gate_evidence(database, z, hv, tv, exclude))
    pooled = GateEvidence(*(np.concatenate([e.signal(s) for e in evidence]) for s in SIGNALS))
    chosen = thresholds_for_rate(pooled, config.false_stop_rate).as_dict()
    own = database.episodes[None, :] == database.episodes[:, None]
    lowest = float(np.where(own, -2.0, database.embeddings @ database.embeddings.T).max(1).min())
    for _ in range(config.calibration_augments if len(table) else 0):  # every frame, as the encoder saw it
        z, hv, tv = embed_image_views(encoder, augmented(table.hand), augmented(table.third), pose)
        lowest = min(lowest, float(gate_evidence(database, z, hv, tv, own).similarity.min()))
    return {"gamma": chosen["similarity"], **{k: v for k, v in chosen.items() if k != "similarity"},
            "method": "each signal at its quantile of held-out frames matched to other demonstrations only, as "
                      f"recorded and {config.calibration_augments} times augmented as in training (false-stop rate "
                      f"{100 * config.false_stop_rate:.2g}% per frame)",
            "in_distribution": _percentiles(evidence[0].similarity),
            # while a shifted demonstration is replayed the arm is off every recorded path, which lowers the
            # similarity by itself: then only a scene as unlike the demonstrations as none of theirs is from
            # the others (as recorded, or as the encoder was taught to see them: clutter and other light) stops
            # it; the views, the grasp check and the watchdog still watch every tick
            "replay_gamma": lowest,
            "replay_method": "the lowest similarity of any demonstration frame to the other demonstrations, as "
                             f"recorded and {config.calibration_augments} times augmented as in training"}
