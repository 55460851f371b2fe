"""The command line as a user meets it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_verbs():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("demo", "record", "dataset", "export", "replay", "train", "eval", "ood", "sim-check"):
        assert verb in out.stdout


def test_sim_check_reports_success_and_timing():
    out = run("sim-check", "--episodes", "2", "--camera-size", "32", "--min-success", "1.0")
    assert out.returncode == 0, out.stderr
    assert "success         2/2 (100.0%)" in out.stdout
    assert "physics / tick  median" in out.stdout and "render / tick   median" in out.stdout


def test_bad_arguments_get_a_clear_message_not_a_traceback():
    out = run("sim-check", "--episodes", "0")
    assert out.returncode == 2 and "not a positive whole number" in out.stderr
    out = run("sim-check", "--episodes", "1", "--camera-size", "8")
    assert out.returncode == 2 and "error: camera" in out.stderr and "Traceback" not in out.stderr
    out = run("sim-check", "--scenario", "moon")  # scenarios are the rig's own: checked once the rig is made
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: unknown scenario 'moon': this rig's scenarios are in_distribution, interpolate" in out.stderr
    out = run("sim-check", "--robot", "metaworld")
    assert out.returncode == 2 and "robot 'metaworld' needs a task: give --robot metaworld:<task>" in out.stderr


def test_train_ood_and_eval_verbs(tmp_path):
    import cv2
    import numpy as np

    from recording_helpers import record_sim

    record_sim(tmp_path / "ds", 2, image_size=32)
    out = run("train", str(tmp_path / "ds"), "--out", str(tmp_path / "pol"), "--epochs", "1", "--input-size", "32",
              "--batch-size", "8", "--frame-stride", "2")
    assert out.returncode == 0, out.stderr
    assert "policy saved to" in out.stdout and "gamma" in out.stdout and "recall@1" in out.stdout
    again = run("train", str(tmp_path / "ds"), "--out", str(tmp_path / "pol"), "--epochs", "1")
    assert again.returncode == 2 and "already exists" in again.stderr
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = run("ood", str(tmp_path / "pol"), str(noise), str(tmp_path / "broken.png"))
    assert "similarity" in out.stdout and "(gamma" in out.stdout
    assert "broken.png: error: not a readable image file" in out.stderr and out.returncode == 2
    out = run("eval", str(tmp_path / "pol"), "--episodes", "1", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "in_distribution" in out.stdout and "OOD stops" in out.stdout
    assert (tmp_path / "r.json").exists()
    out = run("eval", str(tmp_path / "missing"))
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr
