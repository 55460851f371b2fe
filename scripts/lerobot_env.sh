#!/usr/bin/env bash
# Builds LeRobot's own virtualenv (.venv-lerobot) with LeRobot 0.4.4, for `main.py train --lerobot` /
# `eval-offline --lerobot` (they run LeRobot's loader with this environment's python) and CI's LeRobot checks.
#
# Why a separate environment: LeRobot 0.4.4 pins torch < 2.11, which this project's machines cannot install
# (they carry torch 2.14.1), so it is installed with --no-deps on top of the dependencies its dataset loader
# really uses. Its torchcodec video decoder needs the system FFmpeg libraries. annoy and the project's own
# dependencies are there too, so that the CI checks can train ALT inside it.
#
# Disk: torch 2.14.1 is a CUDA build (about 5.5 GB with its nvidia-* and triton wheels). When the project's
# .venv already holds those same releases, they are hard-linked into this environment instead of installed a
# second time (pip then finds them satisfied), so the two environments together fit on a small CI disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-lerobot
STAMP="$VENV/.ready-3"  # bump when the package list changes

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
  if [ -x .venv/bin/python ]; then
    "$VENV/bin/python" - .venv "$VENV" <<'PY'
"""Hard-link the torch/CUDA wheels' installed files (as listed in each RECORD) from one venv into another."""
import pathlib, re, sys, sysconfig, os
site = pathlib.Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)
src, dst = (pathlib.Path(v).resolve() / site for v in sys.argv[1:3])
wanted = re.compile(r"^(torch|torchvision|triton|nvidia_[a-z0-9_]+|cuda_[a-z]+)-[0-9][^-]*\.dist-info$")
linked = 0
for info in sorted(p for p in src.iterdir() if wanted.match(p.name)):
    for line in (info / "RECORD").read_text().splitlines():
        rel = line.rsplit(",", 2)[0]
        if not rel or rel.startswith(".."):  # console scripts live in bin/ with the other venv's shebang
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() and (src / rel).exists():
            os.link(src / rel, target)
            linked += 1
print(f"lerobot_env: hard-linked {linked} files of torch and its CUDA wheels from the project's .venv")
PY
  fi
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0 \
    "datasets>=4.0,<5" "huggingface-hub>=0.34.2,<0.36" "accelerate>=1.10,<2" "av>=15,<16" \
    "packaging>=24.2,<26" "jsonlines>=4,<5" "draccus==0.10.0" einops deepdiff termcolor \
    pytest pytest-timeout pybullet opencv-python-headless tqdm pyarrow safetensors annoy
  "$VENV/bin/python" -m pip install -q --no-deps lerobot==0.4.4
  touch "$STAMP"
fi
echo "LeRobot's environment: $VENV/bin/python"
