"""Policy versions: add episodes (corrections, new demonstrations) to a policy without retraining.

A lookup table can use new experience the moment it is embedded. ``add_episodes``
embeds the chosen episodes' frames with the policy's *current* encoder, builds
their action chunks exactly as training does, appends them to the lookup table,
rebuilds the annoy index and writes a NEW policy folder; the parent folder is not
touched. gamma stays as calibrated unless a recalibration is asked for (the
encoder did not change, so the threshold's meaning did not either).

The new folder's ``info`` records the lineage:

* ``version``: the parent's + 1 (a policy from ``train`` is version 1);
* ``parent``: the parent's folder, version and the SHA-256 of its manifest (which pins every file of it);
* ``added``: this step's episodes, their fingerprints, the intervention each one records (the episode's
  ``extra["intervention"]``: policy, run, halt reason; None for an added demonstration), frames and seconds;
* ``additions``: every such step since training, oldest first;
* ``corrections``: all episodes of the table recorded as interventions (the coverage map draws them apart).

Added episodes must come from the dataset the policy was built from: the table's
keys are episode indices in that dataset (the window shows retrieved frames from
it and checks them against ``episode_fingerprints``). Corrections are recorded into
that dataset, tagged in their ``extra``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recorder.dataset import Dataset, DatasetError
from recorder.outputs import POLICY, check_output
from core.transforms import sign_continuous_poses

from policy.action_space import EE_POSE, policy_actions
from policy.artifact import MANIFEST, sha256
from policy.data import COMPLETE_END_REASONS, action_chunks, load_frames
from policy.database import LookupDatabase, probe_queries
from policy.grasp_check import pre_grasp_rows, table_thumbnails
from policy.grip_check import grip_check_from_dataset
from policy.calibration import build_grasp_check, calibrate_on_held_out, finish_run_calibration
from policy.policy import ALTPolicy, make_policy
from policy.train import embed_table_views

#: The key under which a correction's episode ``extra`` records the autonomous run it corrects.
INTERVENTION_KEY = "intervention"


def policy_version(policy: ALTPolicy) -> int:
    """The policy's version: 1 for a freshly trained policy, parent + 1 for each addition."""
    return int(policy.info.get("version", 1))


@dataclass(frozen=True)
class Addition:
    """One ``extend_policy`` step: what was added and how long it took."""

    episodes: list[int]
    fingerprints: dict[int, str]
    interventions: dict[int, dict | None]
    frames: int
    seconds: float
    gamma_before: float
    gamma_after: float
    recalibrated: bool
    skipped: tuple[str, ...] = ()  # one line per damaged or missing episode left out (skip_damaged)


@dataclass(frozen=True)
class AddResult:
    path: Path  # the new policy folder
    policy: ALTPolicy  # the new policy, ready to run
    version: int
    parent_version: int
    addition: Addition
    seconds: float  # the whole call: load, embed, index, save


def default_out_dir(policy_dir: str | Path, version: int) -> Path:
    """``runs/policy`` -> ``runs/policy-v2`` (and ``runs/policy-v2`` -> ``runs/policy-v3``), beside the parent;
    a name that is taken gets a suffix ``-b``, ``-c`` ..."""
    policy_dir = Path(policy_dir)
    stem = policy_dir.name
    base = stem.rsplit("-v", 1)[0] if stem.rsplit("-v", 1)[-1].isdigit() else stem
    out = policy_dir.parent / f"{base}-v{version}"
    suffix = ord("b")
    while out.exists():
        out = policy_dir.parent / f"{base}-v{version}-{chr(suffix)}"
        suffix += 1
    return out


def _check_episodes(policy: ALTPolicy, dataset: Dataset, episodes: list[int], include_incomplete: bool) -> None:
    if not episodes:
        raise ValueError("no episodes to add; name them (e.g. --episodes 31 32 or --episodes 30-35)")
    if len(set(episodes)) != len(episodes):
        raise ValueError(f"episodes {episodes} name an episode twice")
    built_from = policy.info.get("dataset")
    if built_from and Path(built_from).resolve() != Path(dataset.root).resolve():
        raise DatasetError(f"the policy was built from {built_from}, not {dataset.root}; add episodes recorded "
                           "into the policy's own dataset (its lookup table names episodes by their index there)")
    fps = policy.info.get("fps")
    if fps is not None and abs(float(fps) - dataset.spec.fps) > 1e-9:
        raise DatasetError(f"{dataset.root} is recorded at {dataset.spec.fps:g} Hz but the policy's chunks play at "
                           f"{float(fps):g} Hz")
    present = set(dataset.episode_indices())
    missing = [e for e in episodes if e not in present]
    if missing:
        raise DatasetError(f"episode(s) {missing} are not in {dataset.root} (it has {_ranges(sorted(present))}); "
                           "`main.py dataset info` lists them")
    known = {int(e) for e in policy.info.get("episodes", [])} | {int(e) for e in np.unique(policy.database.episodes)}
    already = [e for e in episodes if e in known]
    if already:
        raise ValueError(f"episode(s) {already} are already in the policy's lookup table; add new ones only")
    if not include_incomplete:
        incomplete = [(e, dataset.episode(e).end_reason) for e in episodes
                      if dataset.episode(e).end_reason not in COMPLETE_END_REASONS]
        if incomplete:
            raise ValueError("episode(s) " + ", ".join(f"{e} (ended {r})" for e, r in incomplete) +
                             f" did not end with {' or '.join(COMPLETE_END_REASONS)}; check them and pass "
                             "--include-incomplete to add them anyway")


def _ranges(values: list[int]) -> str:
    if not values:
        return "no episodes"
    parts, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)


def extend_policy(policy: ALTPolicy, dataset: Dataset, episodes: list[int], *, recalibrate: bool = False,
                  include_incomplete: bool = False, parent: dict | None = None,
                  skip_damaged: bool = False) -> tuple[ALTPolicy, Addition]:
    """A new in-memory policy: ``policy``'s encoder and table plus ``episodes`` of ``dataset`` embedded with that
    encoder. ``policy`` itself is not changed. ``parent`` (folder, version, manifest digest) is recorded in the new
    policy's info; :func:`add_episodes` fills it from the parent folder. The episodes are checked first: a damaged
    or missing one is refused by name, or left out with ``skip_damaged`` (``Addition.skipped`` says which)."""
    t0 = time.perf_counter()
    episodes = [int(e) for e in episodes]
    # missing ones are reported (or skipped) by the integrity check; unknown ones by _check_episodes
    known = set(dataset.episode_indices()) | set(dataset.missing_episodes())
    intact, skipped = dataset.require_intact([e for e in episodes if e in known], skip_damaged)
    episodes = [e for e in episodes if e not in known or e in intact]
    _check_episodes(policy, dataset, episodes, include_incomplete)
    config = policy.config
    table = load_frames(dataset, config, episodes)
    reference = policy.info.get("pose_reference")
    if reference is not None:  # the parent's hemisphere, not the first added episode's (load_frames' choice)
        pose = table.pose.numpy()
        for e in episodes:
            rows = table.episode == e
            pose[rows] = sign_continuous_poses(pose[rows], np.asarray(reference))
    new_embeddings, new_views = embed_table_views(policy.encoder, table)
    db = policy.database
    embeddings = np.concatenate([db.embeddings, new_embeddings])
    keys = np.concatenate([db.episodes, table.episode])
    views = None if db.view_embeddings is None else np.concatenate([db.view_embeddings, new_views])
    database = LookupDatabase(embeddings, keys, np.concatenate([db.frames, table.frame]),
                              np.concatenate([db.chunks, action_chunks(table, config.chunk_length)]), views,
                              pose_actions=policy_actions(policy.info)["kind"] == EE_POSE)
    database.build_annoy(config.annoy_trees, seed=config.seed)
    queries = probe_queries(embeddings, keys, min(2000, 4 * len(embeddings)), seed=config.seed)
    search_k, recall = database.tune_search_k(queries)

    calibration, gamma = policy.calibration, policy.gamma
    if recalibrate:
        # The gate's own calibration, on the whole new table (its frames read again in table order) and the
        # demonstrations the parent held out of encoder training.
        order = list(dict.fromkeys(int(e) for e in keys))
        full = load_frames(dataset, config, order)
        if not (np.array_equal(full.episode, keys) and np.array_equal(full.frame, database.frames)):
            raise DatasetError("the policy's table does not line up with its dataset's frames any more; "
                               "retrain it instead of recalibrating")
        if database.view_embeddings is None:
            raise DatasetError("this policy predates the per-view gate; retrain it to recalibrate")
        calibration = calibrate_on_held_out(policy.encoder, full, database,
                                            [int(e) for e in policy.info.get("held_out_episodes", [])], config)
        gamma = calibration.gamma
        grasp_check = build_grasp_check(full, database, config, calibration) if policy.grasp_check else None
        method_gamma = policy.recalibrated_method(full, database,
                                                  [int(e) for e in policy.info.get("held_out_episodes", [])],
                                                  calibration)
        gamma = gamma if method_gamma is None else method_gamma
        # the gate per run, on the same held-out demonstrations (with a rate per run asked for at training, its
        # conformal thresholds replace the ones just set)
        finish_run_calibration(type(policy), full, database,
                               [int(e) for e in policy.info.get("held_out_episodes", [])], config, calibration)
        if config.run_false_stop_rate is not None:
            gamma = type(policy)._calibrated_gate(calibration)["similarity"]
    elif policy.grasp_check is not None:
        rows = pre_grasp_rows(table.episode, table.frame, table.actions)
        grasp_check = policy.grasp_check.extended(rows + len(db), table_thumbnails(table, rows))
    else:
        grasp_check = None

    parts = policy.extension_parts(table)  # the method's own parts (the aligned method: where the objects stood)

    interventions = {e: dataset.episode(e).extra.get(INTERVENTION_KEY) for e in episodes}
    seconds = time.perf_counter() - t0
    addition = Addition(episodes, {e: table.fingerprints[e] for e in episodes}, interventions, len(table), seconds,
                        float(policy.gamma), float(gamma), recalibrate, tuple(skipped))
    info = dict(policy.info)
    version = policy_version(policy) + 1
    added = {"episodes": episodes, "fingerprints": {str(e): f for e, f in addition.fingerprints.items()},
             "interventions": {str(e): v for e, v in interventions.items()}, "frames": len(table),
             "seconds": seconds, "gamma_before": addition.gamma_before, "gamma_after": addition.gamma_after,
             "recalibrated": recalibrate, "version": version,
             "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    fingerprints = dict(info.get("episode_fingerprints") or {})
    fingerprints.update(added["fingerprints"])
    scenes = dict(info.get("episode_scenes") or {})
    scenes.update({str(e): dataset.episode(e).extra.get("scene") for e in episodes})
    info.update({
        "version": version,
        "parent": dict(parent or {}, version=policy_version(policy)),
        "added": added,
        "additions": [*info.get("additions", []), added],
        "episodes": sorted({*map(int, info.get("episodes", [])), *episodes}),
        "episode_fingerprints": fingerprints,
        "episode_scenes": scenes,
        "corrections": sorted({*map(int, info.get("corrections", [])), *(e for e, v in interventions.items() if v)}),
        "frames": len(database),
        "annoy": {"trees": config.annoy_trees, "search_k": search_k, "recall_at_1": recall,
                  "probe_queries": len(queries)},
    })
    info.setdefault("dataset", str(Path(dataset.root).resolve()))
    info.setdefault("fps", dataset.spec.fps)
    new = make_policy(config, policy.encoder, database, calibration, info, grasp_check, **parts)
    new.gamma = float(gamma)
    new.grip_check = policy.grip_check
    if config.grip_check and set(info["episodes"]) <= set(dataset.episode_indices()):  # every grip at hand: refit
        new.grip_check, new.info["grip_check"] = grip_check_from_dataset(dataset, info["episodes"])
    return new, addition


def add_episodes(policy_dir: str | Path, dataset_dir: str | Path, episodes: list[int],
                 out_dir: str | Path | None = None, *, recalibrate: bool = False, include_incomplete: bool = False,
                 overwrite: bool = False, skip_damaged: bool = False) -> AddResult:
    """Load the policy in ``policy_dir``, add ``episodes`` of the dataset in ``dataset_dir`` and save the result as a
    new policy folder (``out_dir``, default :func:`default_out_dir`). The parent folder is left as it was."""
    t0 = time.perf_counter()
    policy_dir = Path(policy_dir)
    if out_dir is not None:  # as typed ("" is an empty path, not the folder you are in), before any work
        _check_out(out_dir, policy_dir, dataset_dir, overwrite)
    parent = ALTPolicy.load(policy_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(policy_dir, policy_version(parent) + 1)
    if out_dir is None:
        _check_out(out, policy_dir, dataset_dir, overwrite)
    lineage = {"path": str(policy_dir.resolve()), "manifest_sha256": sha256(policy_dir / MANIFEST)}
    with Dataset.open(dataset_dir) as dataset:
        policy, addition = extend_policy(parent, dataset, episodes, recalibrate=recalibrate,
                                         include_incomplete=include_incomplete, parent=lineage,
                                         skip_damaged=skip_damaged)
    path = policy.save(out, overwrite=overwrite)
    return AddResult(path, policy, policy_version(policy), policy_version(parent), addition, time.perf_counter() - t0)


def _check_out(out: str | Path, policy_dir: Path, dataset_dir: str | Path, overwrite: bool) -> None:
    if str(out).strip() and Path(out).resolve() == policy_dir.resolve():
        raise ValueError(f"--out {out} is the parent policy itself; a new version goes to a new folder")
    check_output(out, POLICY, overwrite=overwrite, inputs=(policy_dir, dataset_dir))


def parse_episode_list(tokens: list[str]) -> list[int]:
    """``["31", "32", "40-42"]`` -> ``[31, 32, 40, 41, 42]``; a bad token raises ValueError naming it."""
    out: list[int] = []
    for token in tokens:
        for part in filter(None, token.split(",")):
            lo, sep, hi = part.partition("-")
            try:
                first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
            except ValueError:
                raise ValueError(f"episode {part!r} is neither a number nor a range like 30-35") from None
            if first < 0 or last < first:
                raise ValueError(f"episode range {part!r} is empty or negative; write it low-high, e.g. 30-35")
            out.extend(range(first, last + 1))
    return out
