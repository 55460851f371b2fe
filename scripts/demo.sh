#!/usr/bin/env bash
# Sets up (if needed) and runs the main job on the simulated rig.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python main.py demo "$@"
