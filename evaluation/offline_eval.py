"""Leave-episodes-out offline evaluation: judge ALT on recorded data before it drives an arm.

The episodes are split into k folds. For every frame of a held-out episode, ALT retrieves the best match among
the frames of the *other* episodes (cosine similarity, top-1, the run-time tie rule) and its action chunk is
compared with what the operator really did next (the held-out episode's own actions from that frame on, padded
with the last one as at run time). The error is reported per horizon step in the dataset's units: metres and
radians for end-effector poses (plus the gripper opening), the dataset's joint units otherwise. Two baselines
that never look at the images put the numbers in context:

* same time index: the chunk another demonstration executed at the same step index (averaged over the other
  demonstrations: replaying an arbitrary other demo in sync);
* mean trajectory: the per-step mean of the other demonstrations' actions, from the same step index on.

And the OOD gate: the share of held-out frames whose best similarity to the other episodes is below gamma (each
one would have stopped the arm), with the similarity percentiles.

Cost. Retraining the encoder per fold is the honest protocol (the encoder never sees the held-out episodes) but
costs k trainings: about 5 x 6 min for 30 demonstrations with the cpu preset on 2 cores. Given a trained policy
the default is therefore cheaper: its encoder (trained once on every episode) is reused and only the lookup table
changes per fold, so retrieval is from the other episodes only, but the embedding space has seen the held-out
ones (optimistic, said in the report). A dataset, or a policy with --retrain, retrains per fold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from policy.action_space import EE_POSE, describe_actions, policy_actions

log = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-4  # as policy.TIE_TOLERANCE: of equally similar frames of one demo, the latest is taken


@dataclass
class Lookups:
    """Every frame's embedding, key and action chunk, and the OOD threshold to judge them with."""

    embeddings: np.ndarray  # [N, E] unit vectors
    episodes: np.ndarray  # [N]
    frames: np.ndarray  # [N]
    chunks: np.ndarray  # [N, L, D]
    gamma: float


def make_folds(episodes: list[int], k: int) -> list[list[int]]:
    """Episodes dealt round-robin into min(k, n) folds (neighbouring recordings land in different folds)."""
    episodes = sorted(int(e) for e in episodes)
    if len(episodes) < 2:
        raise ValueError(f"leave-episodes-out evaluation needs at least 2 episodes, the data has {len(episodes)}")
    k = min(k, len(episodes))
    return [episodes[i::k] for i in range(k)]


def retrieve_rows(query: np.ndarray, candidates: np.ndarray, cand_episodes: np.ndarray,
                  cand_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best candidate per query (top-1; of ties within one demonstration the latest frame); (rows, similarity)."""
    sims = query @ candidates.T
    best = np.argmax(sims, axis=1)
    best_sim = sims[np.arange(len(query)), best]
    rows = best.copy()
    for q in range(len(query)):
        ties = np.flatnonzero((cand_episodes == cand_episodes[best[q]]) & (sims[q] >= best_sim[q] - TIE_TOLERANCE))
        if len(ties) > 1:
            rows[q] = ties[np.argmax(cand_frames[ties])]
    return rows, sims[np.arange(len(query)), rows]


def _episode_actions(lookups: Lookups, keep: np.ndarray, horizon: int) -> dict[int, np.ndarray]:
    """Each kept episode's action sequence (the first action of every frame's chunk), padded by ``horizon``
    copies of its last action."""
    out = {}
    for e in np.unique(lookups.episodes[keep]):
        rows = np.flatnonzero(keep & (lookups.episodes == e))
        seq = lookups.chunks[rows[np.argsort(lookups.frames[rows])], 0]
        out[int(e)] = np.concatenate([seq, np.repeat(seq[-1:], horizon, axis=0)])
    return out


def _windows(seqs: dict[int, np.ndarray], starts: np.ndarray, horizon: int) -> np.ndarray:
    """[E, Q, L, D]: each sequence's actions from each start index on (clamped to its end)."""
    out = []
    for seq in seqs.values():
        last = len(seq) - 1
        idx = np.minimum(starts[:, None] + np.arange(horizon)[None, :], last)
        out.append(seq[idx])
    return np.stack(out)


def _mean_actions(per_demo: np.ndarray, kind: str) -> np.ndarray:
    """Mean over demonstrations; quaternions (q and -q are one rotation) are sign-aligned to the first first."""
    if kind != EE_POSE:
        return per_demo.mean(axis=0)
    aligned = per_demo.copy()
    flip = np.sum(aligned[..., 3:7] * aligned[:1, ..., 3:7], axis=-1) < 0
    aligned[..., 3:7][flip] *= -1
    return aligned.mean(axis=0)


def chunk_errors(pred: np.ndarray, truth: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Per-frame, per-step errors [..., L] in the dataset's units."""
    if kind == EE_POSE:
        qp = pred[..., 3:7] / np.linalg.norm(pred[..., 3:7], axis=-1, keepdims=True)
        qt = truth[..., 3:7] / np.linalg.norm(truth[..., 3:7], axis=-1, keepdims=True)
        dot = np.clip(np.abs(np.sum(qp * qt, axis=-1)), 0.0, 1.0)
        return {"position_m": np.linalg.norm(pred[..., :3] - truth[..., :3], axis=-1),
                "rotation_rad": 2.0 * np.arccos(dot),
                "gripper": np.abs(pred[..., 7] - truth[..., 7])}
    return {"mean_abs": np.mean(np.abs(pred - truth), axis=-1)}


def evaluate_folds(fold_lookups: list[tuple[list[int], Lookups]], action: dict) -> dict:
    """Errors of ALT and the baselines over every held-out frame; ``fold_lookups``: (held-out episodes, the
    lookups to judge them with) per fold."""
    kind = action["kind"]
    horizon = fold_lookups[0][1].chunks.shape[1]
    sums: dict[str, dict[str, list]] = {m: {} for m in ("ALT", "same time index", "mean trajectory")}
    best_sims, below = [], 0
    for held_eps, lk in fold_lookups:
        held = np.isin(lk.episodes, held_eps)
        train = ~held
        rows, sims = retrieve_rows(lk.embeddings[held], lk.embeddings[train], lk.episodes[train], lk.frames[train])
        truth = lk.chunks[held]
        starts = lk.frames[held]
        seqs = _episode_actions(lk, train, horizon)
        per_demo = _windows(seqs, starts, horizon)  # [E, Q, L, D]
        mean_traj = _mean_actions(per_demo, kind)
        preds = {"ALT": chunk_errors(lk.chunks[train][rows], truth, kind),
                 "same time index": {k: v.mean(axis=0) for k, v in
                                     chunk_errors(per_demo, truth[None], kind).items()},
                 "mean trajectory": chunk_errors(mean_traj, truth, kind)}
        for method, errs in preds.items():
            for name, value in errs.items():
                sums[method].setdefault(name, []).append(value)
        best_sims.append(sims)
        below += int(np.sum(sims < lk.gamma))
    sims = np.concatenate(best_sims)
    methods = {m: {name: np.concatenate(parts).mean(axis=0).tolist() for name, parts in errs.items()}
               for m, errs in sums.items()}
    return {"action": action, "horizon": horizon, "held_out_frames": int(len(sims)), "methods": methods,
            "ood": {"gamma": [lk.gamma for _, lk in fold_lookups], "below_gamma": below,
                    "below_gamma_fraction": below / len(sims),
                    "best_similarity": {f"p{q}": float(np.percentile(sims, q)) for q in (1, 5, 50, 95)}}}


# --------------------------------------------------------------------------- the two modes
def lookups_of_policy(policy) -> Lookups:
    db = policy.database
    return Lookups(db.embeddings, db.episodes, db.frames, db.chunks, float(policy.gamma))


def evaluate_policy_offline(policy_dir: str, folds: int) -> dict:
    """The policy's encoder for every fold; the lookup table of each fold leaves its held-out episodes out."""
    from policy.policy import ALTPolicy

    policy = ALTPolicy.load(policy_dir)
    lookups = lookups_of_policy(policy)
    fold_eps = make_folds(np.unique(lookups.episodes).tolist(), folds)
    report = evaluate_folds([(f, lookups) for f in fold_eps], policy_actions(policy.info))
    report.update(mode="encoder trained once on every episode (it saw the held-out ones); lookup table rebuilt "
                       "per fold without them", source=str(policy_dir), folds=len(fold_eps),
                  episodes=len(np.unique(lookups.episodes)))
    return report


def evaluate_dataset_offline(dataset_dir: str, config, folds: int, device: str | None = None,
                             progress=None) -> dict:
    """Retrain the encoder per fold on the other episodes, then judge the held-out ones (the honest protocol)."""
    import torch

    from recorder.dataset import Dataset

    from policy.data import FrameTable, action_chunks, dataset_views, load_frames
    from policy.database import LookupDatabase
    from policy.policy import calibrate_on_held_out
    from policy.train import embed_table_views, train_encoder

    with Dataset.open(dataset_dir) as dataset:
        config = config.with_overrides(views=dataset_views(dataset))
        table = load_frames(dataset, config)
        action = describe_actions(dataset.spec.action_names)
    chunks = action_chunks(table, config.chunk_length)
    fold_eps = make_folds(sorted(table.actions), folds)
    results = []
    for i, held_eps in enumerate(fold_eps, 1):
        keep = ~np.isin(table.episode, held_eps)
        idx = torch.from_numpy(np.flatnonzero(keep))
        sub = FrameTable(table.hand[idx], table.third[idx], table.pose[idx], table.episode[keep], table.frame[keep],
                         {e: a for e, a in table.actions.items() if e not in held_eps})
        if progress is not None:
            progress(f"fold {i}/{len(fold_eps)}: training on {len(sub.actions)} episodes")
        trained = train_encoder(sub, config, device=device)
        embeddings, views = embed_table_views(trained.encoder, table)
        # The fold's gate, calibrated the way training calibrates it, on the fold's own training episodes (the
        # held-out ones must stay unseen): it flatters the gate a little, and the log says so.
        fold_db = LookupDatabase(embeddings[keep], table.episode[keep], table.frame[keep], chunks[keep], views[keep],
                                 pose_actions=action["kind"] == EE_POSE)
        gamma = calibrate_on_held_out(trained.encoder, sub, fold_db, [], config).gamma
        results.append((held_eps, Lookups(embeddings, table.episode, table.frame, chunks, gamma)))
    report = evaluate_folds(results, action)
    report.update(mode="encoder retrained per fold without the held-out episodes", source=str(dataset_dir),
                  folds=len(fold_eps), episodes=len(table.actions))
    return report


# --------------------------------------------------------------------------- the report
def format_report(report: dict) -> str:
    action, horizon = report["action"], report["horizon"]
    steps = sorted({1, max(1, horizon // 2), horizon})
    ee = action["kind"] == EE_POSE
    lines = [f"leave-episodes-out: {report['episodes']} episodes in {report['folds']} folds, "
             f"{report['held_out_frames']} held-out frames; {report['mode']}",
             f"actions: {action['kind']} ({action['dim']}); error of the {horizon}-step chunk vs what the operator "
             f"did, mean over held-out frames, by horizon step "
             + ("(position m, rotation rad, gripper 0-1)" if ee else "(mean absolute error per dimension, in the "
                                                                     "dataset's units)")]
    if ee:
        cols = [(f"pos@{h}", "position_m", h) for h in steps] + [(f"rot@{horizon}", "rotation_rad", horizon),
                                                                  (f"grip@{horizon}", "gripper", horizon)]
    else:
        cols = [(f"err@{h}", "mean_abs", h) for h in steps]
    mean_key = "position_m" if ee else "mean_abs"
    lines.append(f"{'method':<18}" + "".join(f"{c[0]:>10}" for c in cols) + f"{'mean':>10}")
    for method, errs in report["methods"].items():
        lines.append(f"{method:<18}" + "".join(f"{errs[key][h - 1]:>10.4f}" for _, key, h in cols)
                     + f"{np.mean(errs[mean_key]):>10.4f}")
    ood = report["ood"]
    gammas = ood["gamma"]
    g = f"{gammas[0]:.3f}" if max(gammas) - min(gammas) < 5e-4 else f"{min(gammas):.3f}-{max(gammas):.3f}"
    sims = ood["best_similarity"]
    lines.append(f"OOD gate (gamma {g}): {ood['below_gamma']}/{report['held_out_frames']} held-out frames "
                 f"({100 * ood['below_gamma_fraction']:.1f}%) below gamma; best similarity to the other episodes "
                 f"p1 {sims['p1']:.3f}, p5 {sims['p5']:.3f}, p50 {sims['p50']:.3f}")
    return "\n".join(lines)
