"""Build a policy from a dataset and save it: the one training entry point of the `train` verb (and through it
the desktop app), `demo` and the tests."""

from __future__ import annotations

import json
import sys
import threading

from recorder.dataset import Dataset

from policy.config import PolicyConfig


def _jsonl(record: dict) -> None:
    print(json.dumps(record), flush=True)


def choose_method(dataset, config: PolicyConfig, episodes: list[int], fallback: bool = True
                  ) -> tuple[PolicyConfig, dict]:
    """The method to build and the policy's record of it (``info["method"]``: requested, built, the reason
    when they differ, the aligned method's assumptions as measured). ``--method aligned`` is checked on the
    recording first (``check_recording`` in policy/aligned/build.py); when one of its assumptions does not hold
    the paper's method is built instead (``fallback``), or AlignmentError says which (not ``fallback``): an
    aligned method that does not fit is never built."""
    if config.method == "landmarks":
        return _check_landmarks(dataset, config, episodes, fallback)
    if config.method != "aligned":
        return config, {"requested": config.method, "built": config.method, "reason": None}
    from policy.aligned.alignment import AlignmentError
    from policy.aligned.build import check_recording

    try:
        check = check_recording(dataset, config, episodes)
    except AlignmentError as exc:  # no third-person view, or actions that are not pose + gripper
        if not fallback:
            raise
        return config.with_overrides(method="alt"), {
            "requested": "aligned", "built": "alt", "assumptions": None,
            "reason": f"aligned method not used: {exc}; built the paper's method (alt) instead"}
    record = {"requested": "aligned", "built": "aligned", "reason": None, "assumptions": check.to_json()}
    if check.holds:
        return config, record
    if not fallback:
        raise AlignmentError(check.refusal())
    return config.with_overrides(method="alt"), {**record, "built": "alt", "reason": check.fallback_line()}


def _check_landmarks(dataset, config: PolicyConfig, episodes: list[int], fallback: bool) -> tuple[PolicyConfig, dict]:
    """``--method landmarks``: the landmark model fitted on the recording's first third-person frames before any
    training (a second or so); when it cannot be (no landmark, too few demonstrations, no third view), the paper's
    method is built instead (``fallback``) or LandmarkError says why."""
    from policy.landmarks.model import LandmarkError, fit_landmarks

    try:
        if "third" not in {c.name for c in dataset.spec.cameras}:
            raise LandmarkError("the landmark method finds what moved in the third-person view; this dataset has "
                                "no camera named 'third'")
        firsts = {e: dataset.frame(e, "third", 0) for e in episodes}
        actions = {e: dataset.load_episode(e).actions for e in episodes}
        report = fit_landmarks(firsts, actions, config.align_margin).report
    except LandmarkError as exc:
        if not fallback:
            raise
        return config.with_overrides(method="alt"), {
            "requested": "landmarks", "built": "alt",
            "reason": f"landmark method not used: {exc}; built the paper's method (alt) instead"}
    return config, {"requested": "landmarks", "built": "landmarks", "reason": None,
                    "landmarks": {k: report[k] for k in ("demonstrations", "of", "landmarks", "segments")}}


def train_policy(dataset_dir: str, out: str, config: PolicyConfig, gamma: str = "auto", device: str | None = None,
                 overwrite: bool = False, progress: str = "bars", cancel: threading.Event | None = None,
                 source: dict | None = None, skip_damaged: bool = False, fallback: bool = True):
    """Build and save a policy. ``progress``: "bars" (tqdm on stderr; plain lines when it is not a terminal),
    "jsonl" (one JSON object per update on stdout, for the desktop app) or "none". ``source``: where the dataset
    was imported from (kept in the info). The episodes are checked first (``Dataset.require_intact``): damaged ones
    are refused by name, or left out with ``skip_damaged``. ``--method aligned`` on a recording that breaks its
    assumptions builds the paper's method instead and says why in one line on stderr (``choose_method``; with
    ``fallback`` False it is refused before any training)."""
    from recorder.outputs import POLICY, check_output
    from recorder.progress import progress_bar

    from policy.action_space import describe_actions
    from policy.data import choose_episodes, dataset_views
    from policy.encoder import imagenet_weights_path
    from policy.policy import ALTPolicy

    check_output(out, POLICY, overwrite=overwrite, inputs=(dataset_dir,))  # before any work, not after it
    bars: dict = {}

    def report(stage, value):
        if progress == "jsonl":
            if stage == "train":
                _jsonl({"stage": "train", "epoch": value.epoch, "epochs": value.epochs, "step": value.step,
                        "steps_per_epoch": value.steps_per_epoch, "loss": value.loss, "eta_s": value.eta_s,
                        "fraction": value.fraction})
            else:
                _jsonl({"stage": stage, "done": value[0], "total": value[1]})
            return
        if progress != "bars":
            return
        if stage == "train":
            bar = bars.get("train")
            if bar is None:
                bar = bars["train"] = progress_bar(total=value.epochs * value.steps_per_epoch, desc="train",
                                                   unit="step")
            bar.update(1)
            bar.set_postfix(epoch=f"{value.epoch}/{value.epochs}", loss=f"{value.loss:.3f}",
                            eta=f"{value.eta_s / 60:.1f} min")
        else:
            done, total = value
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = progress_bar(total=total, desc=stage, unit="frame")
            bar.update(done - bar.n)

    with Dataset.open(dataset_dir) as dataset:
        config = config.with_overrides(views=dataset_views(dataset))  # one camera or two, as the dataset has
        # every episode checked, the missing ones too, before any is read: damage is refused (or left out)
        intact, skipped = dataset.require_intact(None, skip_damaged)
        episodes = choose_episodes(dataset, config, among=intact)
        for line in skipped:
            print(f"skipped (damaged): {line}", file=sys.stderr)
        config, method = choose_method(dataset, config, episodes, fallback)
        if method["reason"]:
            print(method["reason"], file=sys.stderr, flush=True)
        policy = ALTPolicy.build(dataset, config, progress=report, device=device, cancel=cancel, episodes=episodes)
        policy.info["method"] = method
        if skipped:
            policy.info["skipped_damaged"] = skipped
        policy.info["action"] = describe_actions(dataset.spec.action_names)
    policy.info["backbone"] = {"requested": config.pretrained, "init": policy.info["init"],
                               "weights_file": str(imagenet_weights_path()) if policy.info["init"] == "imagenet"
                               else None}
    if source:
        policy.info["source"] = source
    for bar in bars.values():
        bar.close()
    if cancel is not None and cancel.is_set():  # asked during the last stages: still save nothing
        from policy.train import TrainingCancelled

        raise TrainingCancelled("training was cancelled; nothing was saved")
    if gamma != "auto":
        policy.gamma = float(gamma)
    path = policy.save(out, overwrite=overwrite)
    if progress == "jsonl":
        _jsonl({"stage": "done", "path": str(path), "info": policy.info, "gamma": policy.gamma,
                "gamma_method": "set by hand" if gamma != "auto" else getattr(policy.calibration, "method", None)})
    return policy
