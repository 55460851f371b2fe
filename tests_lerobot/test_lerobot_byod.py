"""Bring your own LeRobot data, checked with LeRobot itself. Runs in LeRobot's environment only
(scripts/lerobot_check.sh, which CI runs; it is outside tests/ so the main suite never collects and skips it).

Datasets are made with LeRobot's own writer (joint-space actions, one and two cameras, LeRobot's key names) and
read with LeRobot's own loader through `main.py train --lerobot`; a sim dataset exported to LeRobot v3.0 and read
back trains a policy that retrieves the same demonstrations as one trained on the original."""

import sys

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

import main as cli
from policy.action_space import JOINT_POSITIONS
from policy.config import PolicyConfig
from policy.data import load_frames
from lerobot_bridge.source import import_lerobot
from evaluation.offline_eval import retrieve_rows
from policy.policy import ALTPolicy
from policy.train import embed_table, train_encoder
from recorder.dataset import Dataset
from lerobot_bridge.export import export_lerobot
from recording_helpers import record_sim

SO100 = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
         "gripper.pos"]
TINY = ["--epochs", "1", "--input-size", "32", "--batch-size", "8", "--frame-stride", "1", "--chunk-length", "4",
        "--backbone-weights", "none", "--progress", "none", "--lerobot-python", sys.executable]


def square_image(episode: int, step: int, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    x = 2 + (step * 3 + episode * 2) % (w - 12)
    img[h // 4:h // 4 + 10, x:x + 10] = (220, 100 + 15 * episode, 50)
    return img


def make_lerobot(root, cameras: dict[str, tuple[int, int]], use_videos: bool, episodes: int = 4, length: int = 12):
    """A LeRobotDataset v3.0 written by LeRobot's own API: an SO-100-like arm, joint positions as actions."""
    features = {key: {"dtype": "video" if use_videos else "image", "shape": (h, w, 3),
                      "names": ["height", "width", "channels"]} for key, (h, w) in cameras.items()}
    features["action"] = {"dtype": "float32", "shape": (6,), "names": SO100}
    features["observation.state"] = {"dtype": "float32", "shape": (6,), "names": SO100}
    ds = LeRobotDataset.create(repo_id="test/so100", fps=10, features=features, root=root, robot_type="so100",
                               use_videos=use_videos)
    for e in range(episodes):
        for i in range(length):
            joints = np.linspace(-20, 20, 6, dtype=np.float32) + 2.5 * i + e
            frame = {key: square_image(e, i, h, w) for key, (h, w) in cameras.items()}
            frame.update({"action": joints + 1.0, "observation.state": joints, "task": "pick the cube"})
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return root


@pytest.fixture(autouse=True)
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "hf-lerobot"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_one_camera_joint_space_dataset_trains_and_evaluates_offline(tmp_path, capsys):
    root = make_lerobot(tmp_path / "so100", {"observation.images.top": (48, 64)}, use_videos=True)
    code = cli.main(["train", "--lerobot", str(root), "--out", str(tmp_path / "policy"),
                     "--import-dir", str(tmp_path / "imported"), *TINY])
    assert code == 0, capsys.readouterr().err
    policy = ALTPolicy.load(tmp_path / "policy")
    assert policy.config.views == ("third",)
    assert policy.info["action"] == {"kind": JOINT_POSITIONS, "names": SO100, "dim": 6}
    assert policy.info["source"]["cameras"] == {"third": "observation.images.top"}
    # the imported frames and actions are exactly what LeRobot's loader returns
    lr = LeRobotDataset(repo_id="local/so100", root=root)
    with Dataset.open(tmp_path / "imported") as ds:
        assert ds.episode_indices() == [0, 1, 2, 3]
        for index in (0, 17, 40):
            item = lr[index]
            e, i = int(item["episode_index"]), int(item["frame_index"])
            ref = np.rint(item["observation.images.top"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            assert np.array_equal(ds.frame(e, "third", i), ref)
            assert np.array_equal(ds.load_episode(e).actions[i], item["action"].numpy())
    capsys.readouterr()
    assert cli.main(["eval-offline", str(tmp_path / "policy"), "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 episodes in 2 folds, 48 held-out frames" in out and "same time index" in out


def test_two_cameras_with_other_key_names_need_roles_then_train(tmp_path, capsys):
    cams = {"observation.images.laptop": (32, 40), "observation.images.phone": (36, 36)}
    root = make_lerobot(tmp_path / "koch", cams, use_videos=False, episodes=3, length=8)
    capsys.readouterr()  # LeRobot's own writer's progress bars
    out = ["--out", str(tmp_path / "policy"), "--import-dir", str(tmp_path / "imported")]
    assert cli.main(["train", "--lerobot", str(root), *out, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot tell which camera is which") and "--hand-key" in err and "\n" not in err
    keys = ["--hand-key", "observation.images.phone", "--third-key", "observation.images.laptop"]
    assert cli.main(["train", "--lerobot", str(root), *keys, *out, *TINY]) == 0
    policy = ALTPolicy.load(tmp_path / "policy")
    assert policy.config.views == ("hand", "third") and policy.database.chunks.shape[1:] == (4, 6)
    with Dataset.open(tmp_path / "imported") as ds:
        assert {c.name: (c.width, c.height) for c in ds.spec.cameras} == {"hand": (36, 36), "third": (40, 32)}
    capsys.readouterr()
    assert cli.main(["eval-offline", "--lerobot", str(root), *keys, "--import-dir", str(tmp_path / "imported"),
                     "--folds", "3", *TINY]) == 0
    assert "encoder retrained per fold" in capsys.readouterr().out


def test_missing_hub_dataset_offline_is_one_line(tmp_path, capsys):
    code = cli.main(["train", "--lerobot", "nobody/no-such-dataset", "--out", str(tmp_path / "p"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: could not get the LeRobot dataset 'nobody/no-such-dataset' from the Hugging Face Hub")
    assert "pass DIR" in err


def test_export_round_trip_retrieves_the_same_demonstrations(tmp_path):
    """Sim demos -> LeRobot v3.0 export -> LeRobot's loader -> ALT, against ALT trained on the original (same
    episodes, same seed). With the lossless export (H.264 in RGB at quantiser 0) every pixel comes back, the
    encoder trains on the same frames and every held-out lookup is the same (the issue asks >= 99%). Through
    the default lossy export (AV1, crf 30, yuv420p: ~2/255 mean pixel error, which a retrained encoder
    amplifies) about 80% chose the same demonstration and 30% the same frame (README)."""
    src = tmp_path / "sim"
    record_sim(src, 8, image_size=32)
    export_lerobot(src, tmp_path / "export", video_codec="lossless")
    imported = import_lerobot(str(tmp_path / "export"), out=tmp_path / "imported", python=sys.executable)
    config = PolicyConfig(image_width=32, image_height=32, batch_size=16, epochs=2, frame_stride=1,
                          pretrained="none", seed=7)
    train_eps, held_eps = [0, 1, 2, 3, 4, 5], [6, 7]
    lookups = []
    for folder in (src, imported):
        with Dataset.open(folder) as ds:
            train = load_frames(ds, config, episodes=train_eps)
            held = load_frames(ds, config, episodes=held_eps)
        encoder = train_encoder(train, config).encoder
        rows, _ = retrieve_rows(embed_table(encoder, held), embed_table(encoder, train), train.episode, train.frame)
        lookups.append(np.stack([train.episode[rows], train.frame[rows]], axis=1))
    same_frame = np.all(lookups[0] == lookups[1], axis=1)
    same_demo = lookups[0][:, 0] == lookups[1][:, 0]
    print(f"round trip: {same_demo.sum()}/{len(same_demo)} held-out lookups chose the same demonstration, "
          f"{same_frame.sum()} the same frame")
    assert same_frame.mean() >= 0.99, f"only {same_frame.sum()}/{len(same_frame)} lookups are the same frame"
