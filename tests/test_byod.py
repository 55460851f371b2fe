"""Bring your own data: LeRobot key mapping and errors, one- or two-view encoders, action kinds and the rig check,
--backbone-weights, and leave-episodes-out offline evaluation.

The LeRobot reader itself needs LeRobot's environment: tests/test_lerobot_byod.py runs there
(scripts/lerobot_check.sh, which CI runs)."""

import json
import urllib.error

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

import main as cli
from policy.action_space import (EE_POSE, JOINT_POSITIONS, OTHER, ActionSpaceMismatchError, action_kind,
                                 check_policy_fits_rig, describe_actions)
from policy.build import train_policy
from policy.config import PolicyConfig
from policy.encoder import ALTEncoder, imagenet_weights_path, load_backbone
from lerobot_bridge.source import (LeRobotSourceError, import_lerobot, lerobot_python, read_info, resolve_keys)
from evaluation.offline_eval import Lookups, evaluate_folds, evaluate_policy_offline, make_folds
from policy.policy import ALTPolicy
from recorder.dataset import CameraSpec, Dataset, DatasetSpec, EpisodeWriter, StepRecord
from core.types import ACTION_NAMES, Frame

TINY = PolicyConfig(image_width=32, image_height=32, batch_size=8, epochs=1, frame_stride=1, chunk_length=4,
                    pretrained="none", annoy_trees=2)
SO100 = ("shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
         "gripper.pos")


def video(h=48, w=64):
    return {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}


def vector(names):
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


# --------------------------------------------------------------------------- key mapping
def test_default_roles_come_from_the_key_names():
    features = {"observation.images.front": video(), "observation.images.wrist": video(), "action": vector(SO100),
                "observation.state": vector(SO100)}
    keys = resolve_keys(features)
    assert keys == {"cameras": {"hand": "observation.images.wrist", "third": "observation.images.front"},
                    "action": "action", "state": "observation.state"}


def test_one_camera_takes_the_role_its_name_suggests():
    assert resolve_keys({"observation.images.top": video(), "action": vector(SO100)})["cameras"] == \
        {"third": "observation.images.top"}
    assert resolve_keys({"observation.images.laptop_wrist": video(), "action": vector(SO100)})["cameras"] == \
        {"hand": "observation.images.laptop_wrist"}


def test_explicit_keys_and_none_leave_a_role_out():
    features = {"cam_a": video(), "cam_b": video(), "act": vector(SO100)}
    keys = resolve_keys(features, hand_key="cam_b", third_key="cam_a", action_key="act")
    assert keys["cameras"] == {"hand": "cam_b", "third": "cam_a"} and keys["action"] == "act" and keys["state"] is None
    assert resolve_keys(features, hand_key="none", third_key="cam_b", action_key="act")["cameras"] == {"third": "cam_b"}


@pytest.mark.parametrize("kwargs, expect", [
    ({}, "cannot tell which camera is which (cam_a, cam_b); pass --hand-key and --third-key"),
    ({"hand_key": "observation.images.wrist"}, "--hand-key 'observation.images.wrist' is not a camera of this "
                                               "dataset; its cameras are: cam_a, cam_b"),
    ({"hand_key": "cam_a", "third_key": "cam_a"}, "name the same camera"),
    ({"hand_key": "cam_a", "action_key": "joints"}, "--action-key 'joints' is not a float vector feature"),
])
def test_wrong_or_ambiguous_keys_give_one_line_naming_the_fix(kwargs, expect):
    features = {"cam_a": video(), "cam_b": video(), "action": vector(SO100)}
    with pytest.raises(LeRobotSourceError) as err:
        resolve_keys(features, **kwargs)
    assert expect in str(err.value) and "\n" not in str(err.value)


def write_info(root, version="v3.0", features=None):
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": version, "fps": 10, "total_episodes": 2,
        "features": features or {"observation.images.front": video(), "action": vector(SO100)}}))


def test_a_missing_or_foreign_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(LeRobotSourceError, match="no LeRobot dataset at .*the folder does not exist"):
        read_info(tmp_path / "nope")
    with pytest.raises(LeRobotSourceError, match="is not a LeRobotDataset: .*info.json is missing"):
        read_info(tmp_path)
    write_info(tmp_path / "old", version="v2.1")
    with pytest.raises(LeRobotSourceError, match="v2.1; ALT Studio reads v3.0: convert it with"):
        read_info(tmp_path / "old")


def test_missing_lerobot_environment_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ALT_LEROBOT_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(LeRobotSourceError, match="scripts/lerobot_env.sh"):
        lerobot_python()
    write_info(tmp_path / "ds")
    with pytest.raises(LeRobotSourceError, match="scripts/lerobot_env.sh"):
        import_lerobot(str(tmp_path / "ds"), out=tmp_path / "imported")


def test_cli_bad_keys_are_checked_before_lerobot_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALT_LEROBOT_PYTHON", str(tmp_path / "no-python"))  # would fail later if reached
    write_info(tmp_path / "ds")
    code = cli.main(["train", "--lerobot", str(tmp_path / "ds"), "--third-key", "observation.images.side",
                     "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == ("error: --third-key 'observation.images.side' is not a camera of this dataset; its cameras are: "
                   "observation.images.front")
    code = cli.main(["train", "--lerobot", str(tmp_path / "missing"), "--out", str(tmp_path / "p")])
    assert code == 2 and "no LeRobot dataset at" in capsys.readouterr().err


# --------------------------------------------------------------------------- action kinds and the rig check
def test_action_kinds():
    assert action_kind(ACTION_NAMES) == EE_POSE
    assert action_kind(SO100) == JOINT_POSITIONS
    assert action_kind(("left_waist", "left_shoulder", "left_elbow", "left_gripper")) == JOINT_POSITIONS
    assert action_kind(("vx", "vy", "vz")) == OTHER


def test_a_rig_refuses_a_policy_whose_actions_it_does_not_execute():
    check_policy_fits_rig({"action": describe_actions(ACTION_NAMES)})
    check_policy_fits_rig({})  # saved before the action layout was recorded: pose + gripper
    with pytest.raises(ActionSpaceMismatchError, match="joint_positions .* but the rig executes ee_pose"):
        check_policy_fits_rig({"action": describe_actions(SO100)})


# --------------------------------------------------------------------------- one or two views
def test_one_view_encoder_reads_only_its_view():
    torch.manual_seed(0)
    enc = ALTEncoder(TINY.with_overrides(views=("third",))).eval()
    assert enc.fusion[0].in_features == TINY.view_dim
    third = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        z = enc(None, third)
        assert torch.equal(z, enc(torch.zeros_like(third), third))  # the hand input is ignored
    assert torch.allclose(z.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="uses the views \\['third'\\]"):
        enc(third, None)


def test_two_view_encoder_is_the_papers_fusion():
    torch.manual_seed(0)
    enc = ALTEncoder(TINY).eval()
    h, t = (torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8) for _ in range(2))
    with torch.no_grad():
        feats = torch.cat([enc.backbone(enc.normalize(h)), enc.backbone(enc.normalize(t))], dim=1)
        expect = torch.nn.functional.normalize(enc.fusion(feats), dim=1)
        assert torch.allclose(enc(h, t), expect, atol=1e-6)
    assert enc.fusion[0].in_features == 2 * TINY.view_dim
    # a policy saved before the views setting existed used both cameras; one saved since must say which
    without_views = {k: v for k, v in TINY.to_json().items() if k != "views"}
    assert PolicyConfig.from_json(without_views, saved_at="2026-11-30T12:00:00+00:00").views == ("hand", "third")
    with pytest.raises(ValueError, match=r"\['views'\] are missing"):
        PolicyConfig.from_json(without_views, saved_at="2026-12-05T12:00:00+00:00")


# --------------------------------------------------------------------------- datasets without LeRobot
def square_image(episode: int, step: int, size: int = 32) -> np.ndarray:
    """A bright square that moves with the step (and a little with the episode) on a dark background."""
    img = np.full((size, size, 3), 20, np.uint8)
    x = 2 + (step * 3 + episode) % (size - 10)
    img[8:16, x:x + 8] = (230, 120 + 10 * episode, 40)
    return img


def write_dataset(root, episodes=4, length=10, cameras=("third",), action_names=SO100):
    dim = len(action_names)
    spec = DatasetSpec(fps=10.0, cameras=tuple(CameraSpec(c, 32, 32) for c in cameras), robot="lerobot:so100",
                       joint_count=0, action_names=tuple(action_names), state_names=(), codec="png")
    with Dataset.create(root, spec) as ds:
        for e in range(episodes):
            w = EpisodeWriter(ds, e, task="pick")
            for i in range(length):
                action = np.full(dim, i * 1.5 + e * 0.25, np.float32)
                frames = {c: Frame(square_image(e, i), i / 10, i / 10, i, c) for c in cameras}
                w.add(StepRecord(i, i / 10, i / 10, np.zeros(0, np.float32), np.zeros(0, np.float32), action,
                                 action, frames))
            w.keep("lerobot_import")
    return root


def test_a_one_camera_joint_space_dataset_trains_and_evaluates_offline(tmp_path, capsys):
    ds = write_dataset(tmp_path / "ds")
    policy = train_policy(str(ds), str(tmp_path / "policy"), TINY, progress="none")
    assert policy.config.views == ("third",)
    loaded = ALTPolicy.load(tmp_path / "policy")
    assert loaded.info["action"] == {"kind": JOINT_POSITIONS, "names": list(SO100), "dim": 6}
    assert loaded.database.chunks.shape[1:] == (TINY.chunk_length, 6)
    with pytest.raises(ActionSpaceMismatchError):
        check_policy_fits_rig(loaded.info)
    r = loaded.retrieve(None, square_image(1, 3))
    assert r.chunk.shape == (TINY.chunk_length, 6)

    report = evaluate_policy_offline(str(tmp_path / "policy"), folds=2)
    assert report["held_out_frames"] == 40 and report["folds"] == 2
    assert set(report["methods"]) == {"ALT", "same time index", "mean trajectory"}
    code = cli.main(["eval-offline", str(ds), "--folds", "2", "--epochs", "1", "--input-size", "32",
                     "--backbone-weights", "none", "--chunk-length", "4", "--batch-size", "8", "--frame-stride", "1",
                     "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "encoder retrained per fold" in out and "mean trajectory" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["held_out_frames"] == 40 and len(saved["methods"]["ALT"]["mean_abs"]) == 4


# --------------------------------------------------------------------------- offline evaluation arithmetic
def line_lookups(gamma: float) -> Lookups:
    """3 demos of 6 steps with joint actions t + 0.1 e; frame t of every demo embeds at angle 0.2 t + 0.01 e,
    so a held-out frame's nearest frame elsewhere is the same step of the neighbouring demo."""
    eps = np.repeat(np.arange(3), 6)
    frames = np.tile(np.arange(6), 3)
    angle = 0.2 * frames + 0.01 * eps
    emb = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    chunks = np.empty((18, 3, 2), np.float32)
    for row, (e, f) in enumerate(zip(eps, frames)):
        steps = np.minimum(np.arange(f, f + 3), 5)
        chunks[row, :, 0] = steps + 0.1 * e
        chunks[row, :, 1] = 0.0
    return Lookups(emb, eps, frames, chunks, gamma)


def test_offline_errors_and_baselines_by_hand():
    lookups = line_lookups(gamma=float(np.cos(0.015)))
    folds = make_folds([0, 1, 2], 3)
    assert folds == [[0], [1], [2]]
    report = evaluate_folds([(f, lookups) for f in folds], describe_actions(("j1.pos", "j2.pos")))
    m = report["methods"]
    # ALT retrieves the same step of the nearest demo: off by 0.1 on one of two joints -> 0.05 at every step
    assert np.allclose(m["ALT"]["mean_abs"], 0.05, atol=1e-6)
    # other demos at the same step: demo 0 sees 0.1 and 0.2, demo 1 0.1 and 0.1, demo 2 0.2 and 0.1 -> 0.4/6/2
    assert np.allclose(m["same time index"]["mean_abs"], (0.15 + 0.1 + 0.15) / 3 / 2, atol=1e-6)
    # the mean of the other two: off by 0.15, 0, 0.15
    assert np.allclose(m["mean trajectory"]["mean_abs"], (0.15 + 0.0 + 0.15) / 3 / 2, atol=1e-6)
    # every frame's best similarity is cos(0.01), above cos(0.015)
    assert report["ood"]["below_gamma"] == 0 and report["held_out_frames"] == 18
    tight = evaluate_folds([(f, line_lookups(gamma=0.99999999)) for f in folds], describe_actions(("a", "b")))
    assert tight["ood"]["below_gamma"] == 18


def test_pose_errors_are_metres_and_radians():
    from evaluation.offline_eval import chunk_errors

    truth = np.array([[0.5, 0.0, 0.2, 0, 0, 0, 1, 1.0]], np.float32)
    half = np.sin(0.3 / 2), np.cos(0.3 / 2)
    pred = np.array([[0.5, 0.03, 0.24, 0, 0, -half[0], -half[1], 0.25]], np.float32)  # q and -q: 0.3 rad about z
    err = chunk_errors(pred, truth, EE_POSE)
    assert err["position_m"][0] == pytest.approx(0.05, abs=1e-6)
    assert err["rotation_rad"][0] == pytest.approx(0.3, abs=1e-4)
    assert err["gripper"][0] == pytest.approx(0.75)


# --------------------------------------------------------------------------- --backbone-weights
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network on this machine")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def save_local_weights():
    """A stand-in for the ImageNet file: a seeded ResNet-18 state dict under torchvision's file name."""
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("mode", ["auto", "imagenet"])
def test_a_local_weights_file_is_used_and_recorded(torch_home, tmp_path, mode):
    path, state = save_local_weights()
    assert str(path).startswith(str(torch_home))
    net, init = load_backbone(mode)
    assert init == "imagenet" and torch.equal(net.conv1.weight, state["conv1.weight"])
    policy = train_policy(str(write_dataset(tmp_path / "ds", episodes=2)), str(tmp_path / "p"),
                          TINY.with_overrides(pretrained=mode), progress="none")
    info = ALTPolicy.load(tmp_path / "p").info
    assert policy.info["init"] == "imagenet"
    assert info["backbone"] == {"requested": mode, "init": "imagenet", "weights_file": str(path)}


def test_imagenet_without_weights_or_network_names_the_file_and_folder(torch_home):
    with pytest.raises(FileNotFoundError) as err:
        load_backbone("imagenet")
    msg = str(err.value)
    path = imagenet_weights_path()
    assert f"copy {path.name} into {path.parent}" in msg and "no network" in msg and "\n" not in msg


def test_auto_without_weights_falls_back_to_random_and_records_it(torch_home, tmp_path, caplog):
    net, init = load_backbone("auto")  # never touches the network (the download would raise)
    assert init == "random" and "random initialisation" in caplog.text
    train_policy(str(write_dataset(tmp_path / "ds", episodes=2)), str(tmp_path / "p"), TINY.with_overrides(
        pretrained="auto"), progress="none")
    assert ALTPolicy.load(tmp_path / "p").info["backbone"] == {"requested": "auto", "init": "random",
                                                               "weights_file": None}


def test_the_runner_refuses_a_joint_space_policy_before_moving(tmp_path):
    from policy.runner import run_autonomous
    from core.clock import RealTimeClock
    from robot_drivers.fake import KinematicArm, SyntheticCamera
    from robot_drivers.rig import Rig
    from robot_drivers.safety import SafeArm

    policy = train_policy(str(write_dataset(tmp_path / "ds", episodes=2, cameras=("hand", "third"))),
                          str(tmp_path / "p"), TINY, progress="none")
    rig = Rig(arm=SafeArm(KinematicArm()), cameras={"hand": SyntheticCamera("hand", 32, 32, fps=30.0),
                                                     "third": SyntheticCamera("third", 32, 32, fps=30.0, seed=1)},
              clock=RealTimeClock(10.0))
    with rig:
        with pytest.raises(ActionSpaceMismatchError, match="joint_positions"):
            run_autonomous(rig, policy, max_ticks=5)
        assert rig.arm.inner.sent == []


def test_lerobot_flags_need_lerobot_and_one_source(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path), "--hand-key", "cam", "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip() == "error: --hand-key only apply with --lerobot PATH_OR_REPO_ID"
    assert cli.main(["eval-offline"]) == 2
    assert capsys.readouterr().err.strip() == "error: give either a POLICY or DATASET folder or --lerobot PATH_OR_REPO_ID"
