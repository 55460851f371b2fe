"""How the gate's thresholds are chosen: held-out demonstrations, synthetic negatives, the grasp check's
threshold, and the record of the choice kept in the policy folder (``Calibration``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from policy.config import PolicyConfig
from policy.database import LookupDatabase
from policy.encoder import ALTEncoder, resize_view
from policy.gate import (SIGNALS, GateEvidence, make_negatives, quantile_threshold, score_record,
                         thresholds_for_rate)
from policy.grasp_check import GraspCheck, cross_demo_alignment, grasp_frame, pre_grasp_rows, table_thumbnails

log = logging.getLogger(__name__)


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
    # each gate signal's held-out values the thresholds were read from (sorted; policy.gate.score_record), so
    # the gate can be set as a whole at another false-stop rate (policy.gate.thresholds_from_scores); {} in
    # policies calibrated before they were kept (their gate is moved by gamma alone)
    scores: dict = field(default_factory=dict)
    # the gate per run (calibrate_runs_on_held_out): with a false-stop rate per run asked for ("alpha"), the
    # conformal calibration that set gamma and the view thresholds; without, how many held-out runs the per-frame
    # thresholds stop. Each held-out run's signal minima are kept, so the window can show the rate any thresholds
    # imply. {} in policies calibrated before it was kept
    run: dict = field(default_factory=dict)


def _percentiles(x: np.ndarray) -> dict:
    return {f"p{q}": float(np.percentile(x, q)) for q in (0, 1, 5, 50, 95, 99, 100)}


#: How the alt method's held-out frames are matched, for the calibration's method text.
MATCHED_SELF_OUT = "each looked up with itself taken out of the table"


def rule_text(signals, false_stop_rate: float, matched: str = MATCHED_SELF_OUT) -> str:
    """The calibration rule in words (``Calibration.method``)."""
    share = false_stop_rate / max(1, len(signals))
    return (f"each of {', '.join(signals)} at its {100 * share:.2g}% quantile of held-out demonstration frames "
            f"({matched}); with fewer than {int(np.ceil(1 / share))} frames, too few to show that quantile, the "
            "prediction bound of an exponential tail fitted to their distances 1 - value beyond the median, never "
            f"above the lowest value (false-stop rate {100 * false_stop_rate:.2g}% per frame)")


def calibrate_gamma(held_out: GateEvidence, negatives: dict[str, GateEvidence], false_stop_rate: float,
                    views: bool = True, held_out_episodes: list[int] | None = None,
                    matched: str = MATCHED_SELF_OUT) -> Calibration:
    """Thresholds for a stated false-stop rate on held-out demonstration frames, and what they catch.

    Each signal's threshold is the quantile of the held-out values at ``false_stop_rate`` divided over the
    signals (``policy.gate.calibrated_threshold``: from the modelled tail where the sample is too small to show
    it), so together they stop at most that share of held-out frames. The negatives (near: one view
    altered; far: unrelated images) are not used to place the thresholds, only measured against them.
    The held-out values are kept (``scores``) so the gate can later be set at another rate.
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
    return Calibration(
        th.similarity, rule_text(list(chosen), false_stop_rate, matched),
        _percentiles(held_out.similarity), _percentiles(np.concatenate(far)) if far else {},
        {k: v for k, v in chosen.items() if k != "similarity"}, false_stop_rate,
        float(held_out.stopped(chosen).mean()), sorted(int(e) for e in (held_out_episodes or [])), report,
        scores={k: score_record(held_out.signal(k)) for k in chosen})


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
    recorded frames). With few held-out frames the thresholds are read from the values' modelled tail
    (``policy.gate.calibrated_threshold``), not their lowest value: with 5 demonstrations (55 held-out
    frames) the lowest stopped ~2% of good frames per signal and halted good runs. Matching among the
    *other* demonstrations only (as the aligned method does) was measured and not adopted for this method
    (docs/method.md, "Calibration"). Negatives: held-out frames with one view blanked, swapped with another
    episode's, occluded, shifted, recoloured or replaced by a procedural texture, and both views replaced by
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
    grasping = [e for e, a in table.actions.items() if a.shape[1] == 8 and grasp_frame(a) is not None]
    if len(rows) == 0 or len(grasping) < 2:
        # a task without a grasp (a drawer pulled by its handle, a button pressed, a point reached) has no
        # approach to a grasp to check: its frames would all count as one, and the check would stop runs for
        # what the task is (the hand view changing as the drawer opens)
        log.warning("grasp check: needs pose + gripper actions and two demonstrations with a grasp (%d of %d "
                    "close the gripper from open); left out", len(grasping), len(table.actions))
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


def leave_episode_out_values(table, database: LookupDatabase, episodes: list[int], signals: tuple[str, ...],
                             among: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """Each frame of ``episodes`` looked up as a live run's frame is, among the demonstrations ``among`` only,
    its own taken out (a run is never in the table it is matched against). Episode -> signal -> its values, in
    frame order."""
    out: dict[int, dict[str, np.ndarray]] = {}
    allowed = np.isin(database.episodes, np.asarray(among, dtype=database.episodes.dtype))
    for e in episodes:
        rows = np.flatnonzero(table.episode == e)
        if len(rows) == 0:
            continue
        row_mask = (database.episodes == e) | ~allowed
        exclude = np.broadcast_to(row_mask[None, :], (len(rows), len(database)))
        views = database.view_embeddings
        ev = gate_evidence(database, database.embeddings[rows],
                           None if views is None else views[rows, 0], None if views is None else views[rows, 1],
                           exclude)
        out[int(e)] = {s: np.asarray(ev.signal(s), np.float64) for s in signals}
    return out


def calibrate_runs_on_held_out(table, database: LookupDatabase, held_out: list[int], config: PolicyConfig,
                               thresholds: dict[str, float]) -> tuple[dict, dict[str, float] | None]:
    """The gate's false-stop rate per *run*, on the held-out demonstrations replayed as runs (each frame matched
    among the other demonstrations).

    With ``config.run_false_stop_rate`` ALPHA: the thresholds of ``thresholds``' signals (gamma and the views')
    are chosen by split conformal prediction over the held-out demonstrations (policy/conformal.py): a run
    exchangeable with them is stopped with probability at most ALPHA. The family the thresholds move along is
    read from the demonstrations the encoder trained on (matched the same way), never from the held-out ones.
    Returns (the record kept as ``Calibration.run``, the new thresholds). Without ALPHA: the record of how many
    held-out runs ``thresholds`` stop and the conformal bound that gives, and None."""
    from policy.conformal import ThresholdFamily, calibrate_runs, implied_run_rate, run_minima

    signals = tuple(s for s in thresholds if s in SIGNALS)
    # A held-out run is matched among every other demonstration, as a new run is among all of them. Taken as
    # exchangeable, each held-out run would also have the new run among its candidates; lacking that one can
    # only lower its best similarity, so the calibration errs toward stopping less often than asked, never
    # more. The family's reference is matched among the training demonstrations only, so it depends on none of
    # the held-out runs.
    everyone = sorted(int(e) for e in np.unique(table.episode))
    trained = [e for e in everyone if e not in set(held_out)]
    values = leave_episode_out_values(table, database, held_out, signals, everyone)
    minima = run_minima(values)
    if not minima:
        return {}, None
    alpha = config.run_false_stop_rate
    if alpha is None:
        implied = implied_run_rate(minima, thresholds)
        return {"alpha": None, "episodes": sorted(minima), "implied": implied,
                "minima": {str(e): {s: (None if not np.isfinite(v) else round(float(v), 6)) for s, v in m.items()}
                           for e, m in minima.items()},
                "procedure": "the per-frame rule; the held-out demonstrations replayed as runs (each frame matched "
                             "among the other demonstrations) measure the share of runs it stops, and (stopped + 1) "
                             "/ (held-out + 1) bounds a new run's stop probability (conformal)"}, None
    reference_values = leave_episode_out_values(table, database, trained, signals, trained)
    reference = {s: np.concatenate([v[s] for v in reference_values.values()]) for s in signals}
    family = ThresholdFamily.from_reference(reference)
    run = calibrate_runs(minima, family, alpha)
    record = {**run.to_dict(), "implied": implied_run_rate(minima, run.thresholds),
              "reference_episodes": trained, "family": family.to_dict()}
    off = [s for s, v in run.thresholds.items() if not np.isfinite(v) or v <= -1.0]
    if run.stops_nothing or off:
        # A rate met only by switching a check off is no gate: keep the per-frame rule and say why.
        record["refused"] = (f"the rate {100 * alpha:.3g}% per run is met on these held-out demonstrations only with "
                             f"{', '.join(off or signals)} switched off (the worst of them is unlike the others); "
                             "the per-frame rule is kept. Record more demonstrations, or ask a larger rate")
        record["implied"] = implied_run_rate(minima, thresholds)
        log.warning("gate per run not applied: %s", record["refused"])
        return record, None
    log.info("gate calibrated per run: %s", run.procedure)
    # a level below the family's grid stops nothing: -1, the lowest cosine similarity, says so as a threshold
    return record, {k: max(-1.0, float(v)) for k, v in run.thresholds.items()}


def held_out_for(episodes: list[int], config: PolicyConfig) -> list[int]:
    """The demonstrations kept out of encoder training: ``config.holdout_fraction`` of them, and with a false-stop
    rate per run at least as many as its conformal calibration needs (policy/conformal.py), leaving two to train
    on; a recording too small for the rate asked is a ConformalError saying how many more it needs."""
    alpha = config.run_false_stop_rate
    if alpha is None:
        return choose_held_out(episodes, config.holdout_fraction)
    from policy.conformal import ConformalError, needed_episodes

    need = needed_episodes(alpha)
    if len(episodes) < need + 2:
        best = 1.0 / (len(episodes) - 2 + 1) if len(episodes) > 2 else None
        raise ConformalError(
            f"a false-stop rate of {alpha:g} per run needs {need} demonstrations held out of training to calibrate "
            f"on, and at least 2 to train on: record {need + 2 - len(episodes)} more (there are {len(episodes)})"
            + (f", or ask for a rate of at least {best:.3g}" if best else ""))
    fraction = max(config.holdout_fraction, need / len(episodes))
    return choose_held_out(episodes, fraction)


def finish_run_calibration(policy_kind, table, database: LookupDatabase, held_out: list[int], config: PolicyConfig,
                           calibration: Calibration | None) -> None:
    """Calibration's last step, once the method has set its gate (``policy_kind._calibrated_gate``): the gate per
    run (:func:`calibrate_runs_on_held_out`) kept in ``calibration.run``; with a false-stop rate per run asked
    for, its conformal thresholds replace the method's gamma and view thresholds (``_set_calibrated_gate``)."""
    if calibration is None or not held_out:
        if config.run_false_stop_rate is not None:
            from policy.conformal import ConformalError

            raise ConformalError("a false-stop rate per run is calibrated on held-out demonstrations, and none were "
                                 "held out; record more demonstrations")
        return
    gate = policy_kind._calibrated_gate(calibration)
    record, thresholds = calibrate_runs_on_held_out(table, database, held_out, config, gate)
    calibration.run = record
    if thresholds is not None:
        record["per_frame_thresholds"] = dict(gate)  # what the per-frame rule gave, for comparison
        policy_kind._set_calibrated_gate(calibration, thresholds)
        calibration.method = (f"per run, conformal: a run like the {len(record.get('episodes', []))} held-out "
                              f"demonstrations is stopped with probability <= {100 * record['bound']:.3g}% "
                              f"(asked {100 * record['alpha']:.3g}%; calibration.run says how)")
