#!/usr/bin/env bash
# Sets up (if needed) and opens ALT Studio's desktop app on the simulated rig (extra arguments go to `main.py gui`,
# e.g. --rig configs/xarm_realsense.toml for a real rig).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python main.py gui "$@"
