"""Building the aligned method: the object locator fitted on the demonstrations, the aligned gate's thresholds,
and the aligned method on an already trained ALT policy (the same encoder and table)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from core.transforms import yaw_of
from policy.aligned.alignment import AlignmentError, TargetLocator, fit_grasp_places, fit_locator, fit_turn, grasp_frame
from policy.aligned.camera_check import NEGATIVES, fit_camera_check
from policy.augment import augment
from policy.calibration import Calibration, _percentiles, embed_image_views, gate_evidence, rule_text
from policy.config import PolicyConfig
from policy.data import load_frames
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder
from policy.gate import SIGNALS, GateEvidence, procedural_texture, score_record, thresholds_for_rate
from policy.aligned.policy import AlignedPolicy
from policy.policy import ALTPolicy
from policy.probes import synthetic_probes
from recorder.dataset import Dataset

log = logging.getLogger(__name__)

#: The third-person camera check is fitted on each demonstration's frames before this one (the arm still at
#: its start pose).
START_FRAMES = 3


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
    calibration.aligned = calibrate_aligned(policy.encoder, table, policy.database,
                                            policy.info.get("held_out_episodes") or [],
                                            config)
    return AlignedPolicy(config, policy.encoder, policy.database, calibration, dict(policy.info), policy.grasp_check,
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
