#!/usr/bin/env bash
# Proves the LeRobot export opens in LeRobot's own loader: builds a separate virtualenv
# (.venv-lerobot) with LeRobot 0.4.4 and runs the loader test there.
#
# LeRobot 0.4.4 pins torch < 2.11, which this project's machines cannot install (they carry
# torch 2.14.1), so it is installed with --no-deps on top of the dependencies its dataset
# loader really uses. Its torchcodec video decoder needs the system FFmpeg libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-lerobot

if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "lerobot_check: install the Debian package ffmpeg first" >&2; exit 2; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

if [ ! -f "$VENV/.ready" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0 \
    "datasets>=4.0,<5" "huggingface-hub>=0.34.2,<0.36" "accelerate>=1.10,<2" "av>=15,<16" \
    "packaging>=24.2,<26" "jsonlines>=4,<5" "draccus==0.10.0" einops deepdiff termcolor \
    pytest pytest-timeout pybullet opencv-python-headless tqdm pyarrow safetensors
  "$VENV/bin/python" -m pip install -q --no-deps lerobot==0.4.4
  touch "$VENV/.ready"
fi

ALT_REQUIRE_LEROBOT=1 HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_export.py -k lerobot_loader "$@"
