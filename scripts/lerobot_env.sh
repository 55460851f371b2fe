#!/usr/bin/env bash
# Builds LeRobot's own virtualenv (.venv-lerobot) with LeRobot 0.4.4, for `main.py train --lerobot` /
# `eval-offline --lerobot` (they run LeRobot's loader with this environment's python) and CI's LeRobot checks.
#
# Why a separate environment: LeRobot 0.4.4 pins torch < 2.11, which this project's machines cannot install
# (they carry torch 2.14.1), so it is installed with --no-deps on top of the dependencies its dataset loader
# really uses. Its torchcodec video decoder needs the system FFmpeg libraries. annoy and the project's own
# dependencies are there too, so that the CI checks can train ALT inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-lerobot
STAMP="$VENV/.ready-2"  # bump when the package list changes

if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "lerobot_env: install the Debian package ffmpeg first" >&2; exit 2; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0 \
    "datasets>=4.0,<5" "huggingface-hub>=0.34.2,<0.36" "accelerate>=1.10,<2" "av>=15,<16" \
    "packaging>=24.2,<26" "jsonlines>=4,<5" "draccus==0.10.0" einops deepdiff termcolor \
    pytest pytest-timeout pybullet opencv-python-headless tqdm pyarrow safetensors annoy
  "$VENV/bin/python" -m pip install -q --no-deps lerobot==0.4.4
  touch "$STAMP"
fi
echo "LeRobot's environment: $VENV/bin/python"
