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
    assert out.returncode == 0 and "sim-check" in out.stdout


def test_sim_check_reports_success_and_timing():
    out = run("sim-check", "--episodes", "2", "--image-size", "32", "--min-success", "1.0")
    assert out.returncode == 0, out.stderr
    assert "success         2/2 (100.0%)" in out.stdout
    assert "physics / tick  median" in out.stdout and "render / tick   median" in out.stdout


def test_bad_arguments_get_a_clear_message_not_a_traceback():
    out = run("sim-check", "--episodes", "0")
    assert out.returncode == 2 and "not a positive whole number" in out.stderr
    out = run("sim-check", "--episodes", "1", "--image-size", "8")
    assert out.returncode == 2 and "error: camera" in out.stderr and "Traceback" not in out.stderr
    out = run("sim-check", "--scenario", "moon")
    assert out.returncode == 2 and "invalid choice" in out.stderr
