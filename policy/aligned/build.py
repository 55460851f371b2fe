"""Building the aligned method: the object locator fitted on the demonstrations, the aligned gate's thresholds,
and the aligned method on an already trained ALT policy (the same encoder and table).

Before any of it, ``check_recording`` (``check_assumptions``) measures whether the recording suits the aligned
method at all, assumption by assumption, each with the number that shows it: ``train --method aligned`` builds
the paper's method instead when one does not hold (policy/build.py), and ``build_locator`` refuses to build it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core.transforms import yaw_of
from policy.aligned.alignment import (MIN_GRASPS, AlignmentError, TargetLocator, _regions, empty_scene,
                                      fit_grasp_places, fit_locator, fit_turn, grasp_frame)
from policy.aligned.camera_check import NEGATIVES, fit_camera_check
from policy.augment import augment
from policy.calibration import (Calibration, _percentiles, embed_image_views, finish_run_calibration, gate_evidence,
                                rule_text)
from policy.config import PolicyConfig
from policy.data import load_frames
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder
from policy.grasp_check import GRIPPER_OPEN
from policy.gate import SIGNALS, GateEvidence, procedural_texture, score_record, thresholds_for_rate
from policy.aligned.policy import AlignedPolicy
from policy.policy import ALTPolicy
from policy.probes import synthetic_probes
from recorder.dataset import Dataset

log = logging.getLogger(__name__)

#: The third-person camera check is fitted on each demonstration's frames before this one (the arm still at
#: its start pose).
START_FRAMES = 3


# -- does the recording suit the aligned method? ----------------------------------------------------------
# Its assumptions, measured on the demonstrations before it is built.
#
# The aligned method (alignment.py) finds one object in the third-person view and replays one demonstration
# shifted by how far the object stands from where that demonstration had it. That reaches the goal only when the
# recording is like the one it was designed on (lift a mug): the demonstrations grasp; they start from one arm
# pose; what they do after the grasp is the same for all of them up to that shift; the third-person camera sees
# one object; and the object's pixel position maps onto where it is grasped (the table map). Each is measured here
# with the number that shows it, against a bound set between what the mug rig's recordings give and what
# recordings that break it give (docs/method.md, "Does a recording suit the aligned method?"):
#
# * `grasp`, `start_pose`, `motion_after_grasp`: from the demonstrations' actions and measured poses alone,
#   no camera (any rig records them; a scene record is simulation's, and rig-specific);
# * `one_object`, `table_map`: from the demonstrations' first third-person frames, as the locator itself is
#   fitted (those are camera assumptions: the method locates the object with that camera).
#
# `check_assumptions` measures them all it can (one that needs an earlier one is "not measured" when that one
# fails) and keeps the fitted locator, so building the method does not fit it twice.

GRASP = "grasp"
START_POSE = "start_pose"
MOTION = "motion_after_grasp"
ONE_OBJECT = "one_object"
TABLE_MAP = "table_map"

#: The arm's measured start positions may lie this far (m) from their median. Both rigs start every
#: demonstration at one pose (0.0 mm); the empty scene is the median of the first frames, and an arm that
#: stands elsewhere by a few cm shows in it as a region the size of the object.
START_SPREAD_M = 0.02
#: After the grasp, replaying the nearest other demonstration (by grasp position) shifted by the object must
#: end within this (m) of where each demonstration ended (the median over the demonstrations). The mug rig:
#: 0.13-0.18 cm (lift straight up); Meta-World pick-place and peg-insert-side (the goal moves independently of
#: the object): 11.7-12.0 cm.
MOTION_RESIDUAL_M = 0.03
#: A region that differs from the empty scene and is at least this share of the largest one's size is a second
#: object; at most this share of the demonstrations' first frames may show one. The mug rig: 0 of 30 (one
#: first frame of data/five has a speck 3% the mug's size); Meta-World: 30 of 30 (pick-place: the goal marker
#: beside the puck; the articulated tasks: their parts).
SECOND_REGION_SHARE = 0.3
SECOND_OBJECT_DEMOS = 0.5
#: The fitted object model must find the object again in its own demonstrations' first frames, within
#: LOCATED_M of where the fit put it, in at least this share of them.
LOCATED_M = 0.01
LOCATED_SHARE = 0.8
#: The table map's leave-one-out error (median over the demonstrations) may be at most this (m). The mug rig
#: at 96 px: 2.7 mm with 15 or 30 demonstrations, 20 mm with 5 (each left-one-out map is then fitted on 4
#: points, exactly); Meta-World peg-insert-side (the region found is the box, not the peg grasped): 78 mm.
#: Beyond 10 mm the map is already too coarse to trust a grasp to: ``coarse_map_warning`` says so.
MAP_LOO_M = 0.03


@dataclass(frozen=True)
class Finding:
    """One assumption, measured: whether it holds (None: not measured), the number and its bound, what it
    shows (``brief``, for a summary) and, when it fails, why the aligned method cannot work (``why``)."""

    assumption: str
    holds: bool | None
    value: float | None = None
    bound: float | None = None
    brief: str = ""
    why: str = ""

    def to_json(self) -> dict:
        return {"assumption": self.assumption, "holds": self.holds, "value": self.value, "bound": self.bound,
                "brief": self.brief, "why": self.why}


@dataclass
class AssumptionCheck:
    """The aligned method's assumptions on one recording (``findings``: grasp, start pose, motion after the
    grasp, one object, table map) and the locator fitted on the way (None where it could not be fitted)."""

    findings: list[Finding]
    locator: TargetLocator | None = field(default=None, repr=False)

    @property
    def holds(self) -> bool:
        return all(f.holds is not False for f in self.findings)

    @property
    def failure(self) -> Finding | None:
        """The first assumption that does not hold (None: all that could be measured hold)."""
        return next((f for f in self.findings if f.holds is False), None)

    @property
    def failed(self) -> list[str]:
        return [f.assumption for f in self.findings if f.holds is False]

    def fallback_line(self) -> str:
        """The one line ``train`` prints when it builds the paper's method instead."""
        return f"aligned method not used: {self.failure.why}; built the paper's method (alt) instead"

    def refusal(self) -> str:
        """The one line when the aligned method is asked for and cannot be built (nothing falls back)."""
        return f"aligned method refused: {self.failure.why}"

    def summary(self) -> str:
        return summary_line(self.to_json())

    def to_json(self) -> dict:
        return {"holds": self.holds, "failed": self.failed, "findings": [f.to_json() for f in self.findings]}


def summary_line(doc: dict) -> str:
    """Every assumption's number on one line, from ``AssumptionCheck.to_json``: 'grasp in 30/30 demonstrations
    ok; ...; table map 78.5 mm > 30 mm FAILS'."""
    marks = {True: "ok", False: "FAILS", None: "not measured"}
    return "; ".join(f"{f['brief'] or f['assumption'].replace('_', ' ')} {marks[f['holds']]}"
                     for f in doc["findings"])


def _gripper_story(actions: dict[int, np.ndarray]) -> str:
    """What the gripper command did in demonstrations without a grasp: 'stays at 0.00 (closed) throughout'."""
    g = np.concatenate([a[:, 7] for a in actions.values()])
    lo, hi = float(g.min()), float(g.max())
    if hi - lo < 0.01:
        return f"stays at {lo:.2f} ({'open' if lo >= GRIPPER_OPEN else 'closed'}) throughout"
    return f"ranges over {lo:.2f}-{hi:.2f} without closing from open"


def check_grasp(actions: dict[int, np.ndarray]) -> Finding:
    closes = sum(grasp_frame(a) is not None for a in actions.values())
    brief = f"grasp in {closes}/{len(actions)} demonstrations"
    if closes >= MIN_GRASPS:
        return Finding(GRASP, True, closes, MIN_GRASPS, brief)
    return Finding(GRASP, False, closes, MIN_GRASPS, brief,
                   f"no grasp in the demonstrations: the gripper closes from open in {closes} of {len(actions)} "
                   f"(at least {MIN_GRASPS} must; its command {_gripper_story(actions)}): the aligned method "
                   "learns where the object is from where the demonstrations grasp it")


def check_start_pose(starts: dict[int, np.ndarray] | None) -> Finding:
    if not starts or len(starts) < 2:
        return Finding(START_POSE, None, brief="start pose (no measured pose recorded)")
    p = np.array([np.asarray(s, np.float64)[:3] for s in starts.values()])
    spread = float(np.linalg.norm(p - np.median(p, axis=0), axis=1).max())
    brief = f"start pose within {100 * spread:.1f} cm"
    if spread <= START_SPREAD_M:
        return Finding(START_POSE, True, spread, START_SPREAD_M, brief)
    return Finding(START_POSE, False, spread, START_SPREAD_M, brief + f" > {100 * START_SPREAD_M:.0f} cm",
                   f"the demonstrations start from different arm poses (up to {100 * spread:.1f} cm from their "
                   f"median > {100 * START_SPREAD_M:.0f} cm): the aligned method's empty scene is the first "
                   "third-person frames with the arm at one start pose")


def motion_residuals(actions: dict[int, np.ndarray]) -> np.ndarray:
    """For each demonstration that grasps: how far from where it ended the nearest other one (by grasp
    position) ends when replayed shifted by the difference of their grasp positions, as the aligned method
    replays it (the shift is lateral: the height is replayed as recorded). m."""
    grasps, ends = [], []
    for a in actions.values():
        close = grasp_frame(a)
        if close is not None:
            grasps.append(np.asarray(a[close, :3], np.float64))
            ends.append(np.asarray(a[-1, :3], np.float64))
    if len(grasps) < 2:
        return np.zeros(0)
    grasps, ends = np.array(grasps), np.array(ends)
    gaps = np.linalg.norm(grasps[:, None, :2] - grasps[None, :, :2], axis=2)
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.argmin(1)
    shifted = ends[nearest].copy()
    shifted[:, :2] += grasps[:, :2] - grasps[nearest, :2]
    return np.linalg.norm(shifted - ends, axis=1)


def check_motion(actions: dict[int, np.ndarray]) -> Finding:
    residuals = motion_residuals(actions)
    if len(residuals) < 2:
        return Finding(MOTION, None, brief="motion after the grasp")
    value = float(np.median(residuals))
    brief = f"motion after the grasp {100 * value:.1f} cm"
    if value <= MOTION_RESIDUAL_M:
        return Finding(MOTION, True, value, MOTION_RESIDUAL_M, brief)
    return Finding(MOTION, False, value, MOTION_RESIDUAL_M, brief + f" > {100 * MOTION_RESIDUAL_M:.0f} cm",
                   f"after the grasp the demonstrations move to different places (the nearest other demonstration, "
                   f"shifted by the object, ends {100 * value:.1f} cm from where each ended, median of "
                   f"{len(residuals)} > {100 * MOTION_RESIDUAL_M:.0f} cm): the aligned method replays one "
                   "demonstration shifted by the object and cannot reach them")


def second_regions(first_thirds: dict[int, np.ndarray]) -> tuple[int, int]:
    """How many of the first third-person frames show a second region that differs from the empty scene (at
    least SECOND_REGION_SHARE the size of the largest), of how many."""
    frames = np.stack(list(first_thirds.values())).astype(np.float32)
    background, threshold = empty_scene(frames)
    seconds = 0
    for f in frames:
        areas = sorted((r.area for r in _regions(f, background, threshold)), reverse=True)
        seconds += len(areas) > 1 and areas[1] >= SECOND_REGION_SHARE * areas[0]
    return seconds, len(frames)


def check_object(first_thirds: dict[int, np.ndarray], actions: dict[int, np.ndarray], radius: float,
                 margin: float, grasps_hold: bool) -> tuple[Finding, TargetLocator | None]:
    """One object in the first third-person frames (the grasping demonstrations', when there are enough to fit
    the locator on; else every demonstration's), and the locator fitted on them (None: not fitted). The
    locator is fitted even when a second object shows, so that its table map is measured too."""
    grasping = {e: f for e, f in first_thirds.items() if grasp_frame(actions[e]) is not None}
    frames = grasping if grasps_hold else first_thirds
    if len(frames) < 3:
        return Finding(ONE_OBJECT, None, brief="one object (fewer than 3 first frames)"), None
    seconds, total = second_regions(frames)
    brief = f"second object in {seconds}/{total} first frames"
    failed = None
    if seconds > SECOND_OBJECT_DEMOS * total:
        brief += f" > {SECOND_OBJECT_DEMOS:.0%}"
        failed = Finding(ONE_OBJECT, False, seconds / total, SECOND_OBJECT_DEMOS, brief,
                         f"not one object: {seconds} of {total} demonstrations' first third-person frames show a "
                         f"second region that differs from the empty scene (at least {SECOND_REGION_SHARE:.0%} the "
                         f"size of the largest; at most {SECOND_OBJECT_DEMOS:.0%} of the frames may): the aligned "
                         "method locates one object and shifts the replay by it")
    if not grasps_hold:
        return failed or Finding(ONE_OBJECT, True, seconds / total, SECOND_OBJECT_DEMOS, brief), None
    try:
        locator = fit_locator(first_thirds, actions, radius, margin)
    except AlignmentError as exc:
        if "table plane" in str(exc):  # found, but the map cannot be fitted: check_map says so
            return failed or Finding(ONE_OBJECT, True, seconds / total, SECOND_OBJECT_DEMOS, brief), None
        return failed or Finding(ONE_OBJECT, False, None, None, "one object not found", f"not one object: {exc}"), \
            None
    located = 0
    for e, target in locator.demo_targets.items():
        found = locator.locate(first_thirds[e])
        located += found is not None and float(np.linalg.norm(found.xy - target)) <= LOCATED_M
    n = len(locator.demo_targets)
    brief += f", object found again in {located}/{n}"
    if failed is not None:
        return replace(failed, brief=brief), locator
    if located < LOCATED_SHARE * n:
        return Finding(ONE_OBJECT, False, located / n, LOCATED_SHARE, brief + f" < {LOCATED_SHARE:.0%}",
                       f"not one object: the object model fitted on the demonstrations' first third-person frames "
                       f"finds it again in only {located} of {n} of them (within {100 * LOCATED_M:.0f} cm; at least "
                       f"{LOCATED_SHARE:.0%} must): what differs from the empty scene is not one object of one "
                       "size and colour"), locator
    return Finding(ONE_OBJECT, True, seconds / total, SECOND_OBJECT_DEMOS, brief), locator


def check_map(locator: TargetLocator | None, object_found: bool) -> Finding:
    if locator is None:
        if object_found:  # the object was found in every first frame; its positions determine no plane
            return Finding(TABLE_MAP, False, None, MAP_LOO_M, "table map not determined",
                           "the table map does not fit: the object's positions in the demonstrations' first frames "
                           "do not determine the table plane (all in a line?): record demonstrations with the "
                           "object spread out")
        return Finding(TABLE_MAP, None, brief="table map")
    loo = locator.report["map_error_loo_m"]
    value, n = float(loo["p50"]), int(locator.report["demonstrations"])
    brief = f"table map {1000 * value:.1f} mm"
    if value <= MAP_LOO_M:
        return Finding(TABLE_MAP, True, value, MAP_LOO_M, brief)
    return Finding(TABLE_MAP, False, value, MAP_LOO_M, brief + f" > {1000 * MAP_LOO_M:.0f} mm",
                   f"the table map does not fit: the object's pixel position predicts where it is grasped to "
                   f"{1000 * value:.0f} mm (leave-one-out error, median of {n} > {1000 * MAP_LOO_M:.0f} mm): what "
                   "the third-person camera finds is not what the demonstrations grasp, or not on one plane")


def check_assumptions(first_thirds: dict[int, np.ndarray], actions: dict[int, np.ndarray],
                      starts: dict[int, np.ndarray] | None, radius: float, margin: float) -> AssumptionCheck:
    """The aligned method's assumptions on a recording: each demonstration's first third-person frame (as the
    encoder sees it), its actions (pose + gripper) and its measured start pose (None: not recorded)."""
    actions = {int(e): np.asarray(a) for e, a in actions.items()}
    first_thirds = {int(e): f for e, f in first_thirds.items()}
    grasp = check_grasp(actions)
    start = check_start_pose(starts)
    motion = check_motion(actions)
    obj, locator = check_object(first_thirds, actions, radius, margin, bool(grasp.holds))
    found = bool(grasp.holds) and obj.holds is True
    return AssumptionCheck([grasp, start, motion, obj, check_map(locator, found)], locator)


def aligned_from(policy: ALTPolicy, dataset: Dataset) -> AlignedPolicy:
    """The aligned method on an already trained ALT policy: the same encoder, table and gate, with the object
    locator and the aligned gate's thresholds calibrated on the same held-out demonstrations (``dataset``: the
    one the policy was built from). Comparing the two then compares the methods alone."""
    config = policy.config.with_overrides(method="aligned")
    table = load_frames(dataset, config, episodes=[int(e) for e in policy.info["episodes"]])
    locator = build_locator(table, config)
    calibration = Calibration(**{**policy.calibration.__dict__}) if policy.calibration is not None else None
    if calibration is None:
        raise AlignmentError("this policy has no gate calibration; retrain it with --method aligned")
    held_out = [int(e) for e in policy.info.get("held_out_episodes") or []]
    calibration.aligned = calibrate_aligned(policy.encoder, table, policy.database, held_out, config)
    # the aligned gate per run, as training states it (with a rate per run asked for, its conformal thresholds)
    finish_run_calibration(AlignedPolicy, table, policy.database, held_out, config, calibration)
    out = AlignedPolicy(config, policy.encoder, policy.database, calibration, dict(policy.info), policy.grasp_check,
                        locator)
    out.grip_check = policy.grip_check
    return out


def first_third_frames(table) -> dict[int, np.ndarray]:
    """Each episode's first third-person frame (the aligned method's empty scene and object positions)."""
    firsts = {}
    for e in table.actions:
        rows = np.flatnonzero(table.episode == e)
        firsts[int(e)] = table.third[int(rows[np.argmin(table.frame[rows])])].numpy()
    return firsts


def _check_layout(views, actions: dict[int, np.ndarray]) -> None:
    if "third" not in views:
        raise AlignmentError("the aligned method finds the object in the third-person view; this dataset has none")
    if not actions or next(iter(actions.values())).shape[1] != 8:
        raise AlignmentError("the aligned method shifts end-effector pose actions; this dataset's actions are not "
                             "pose + gripper")


def check_recording(dataset: Dataset, config: PolicyConfig, episodes: list[int]) -> AssumptionCheck:
    """The aligned method's assumptions on ``episodes`` of ``dataset`` (``check_assumptions``), read
    without the rest of their frames: each one's first third-person frame, resized as the encoder sees it, its
    actions and its measured start pose. Raises AlignmentError when the dataset has no third-person view or
    its actions are not pose + gripper."""
    from policy.data import stores_ee_pose
    from policy.encoder import resize_view

    views = tuple(c.name for c in dataset.spec.cameras)
    has_pose = stores_ee_pose(dataset.spec.state_names)
    firsts, actions, starts = {}, {}, {}
    for e in episodes:
        data = dataset.load_episode(int(e))
        actions[int(e)] = data.actions.astype(np.float32)
        if has_pose and len(data.states):
            starts[int(e)] = np.asarray(data.states[0, :3], np.float64)
    _check_layout(views, actions)
    for e in episodes:
        firsts[int(e)] = resize_view(dataset.frame(int(e), "third", 0), config)
    return check_assumptions(firsts, actions, starts or None, config.align_radius, config.align_margin)


def check_table(table, config: PolicyConfig) -> AssumptionCheck:
    """The aligned method's assumptions on a loaded frame table (the same as ``check_recording``)."""
    actions = {int(e): a for e, a in table.actions.items()}
    _check_layout(config.views, actions)
    starts = None
    if table.pose_reference is not None:  # measured poses stored
        starts = {}
        for e in actions:
            rows = np.flatnonzero(table.episode == e)
            starts[e] = table.pose[int(rows[np.argmin(table.frame[rows])]), :3].numpy().astype(np.float64)
    return check_assumptions(first_third_frames(table), actions, starts, config.align_radius, config.align_margin)


def build_locator(table, config: PolicyConfig) -> TargetLocator:
    """The aligned method's object locator, from each demonstration's first third-person frame and actions.
    Raises AlignmentError (with the one line that says which) when the recording breaks one of the method's
    assumptions: an aligned method that does not fit is never built."""
    check = check_table(table, config)
    if not check.holds:
        raise AlignmentError(check.refusal())
    locator = check.locator
    if locator is None:  # every assumption holds, so the grasps were there to fit it on
        raise AlignmentError("the aligned method's object locator could not be fitted on this recording")
    locator.report["assumptions"] = check.to_json()
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
            "method": rule_text(list(chosen), config.false_stop_rate,
                                f"each matched among the other demonstrations only, as recorded and "
                                f"{config.calibration_augments} times augmented as in training"),
            "in_distribution": _percentiles(evidence[0].similarity),
            # the pooled held-out values, so the gate can be set as a whole at another false-stop rate
            "scores": {k: score_record(pooled.signal(k)) for k in chosen},
            # while a shifted demonstration is replayed the arm is off every recorded path, which lowers the
            # similarity by itself: then only a scene as unlike the demonstrations as none of theirs is from
            # the others (as recorded, or as the encoder was taught to see them: clutter and other light) stops
            # it; the views, the grasp check and the watchdog still watch every tick
            "replay_gamma": lowest,
            "replay_method": "the lowest similarity of any demonstration frame to the other demonstrations, as "
                             f"recorded and {config.calibration_augments} times augmented as in training"}
