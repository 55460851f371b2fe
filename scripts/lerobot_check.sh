#!/usr/bin/env bash
# CI's LeRobot checks, run in LeRobot's own virtualenv (scripts/lerobot_env.sh builds it): the export opens in
# LeRobot's loader; datasets made with LeRobot's own API (joint-space actions, one and two cameras, other key
# names) train ALT and evaluate offline; a sim dataset exported and read back trains a policy whose lookups
# match the original's. ALT_REQUIRE_LEROBOT=1 makes a missing LeRobot a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lerobot_env.sh >/dev/null
ALT_REQUIRE_LEROBOT=1 HF_HUB_OFFLINE=1 ALT_LEROBOT_PYTHON="$PWD/.venv-lerobot/bin/python" \
  .venv-lerobot/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_export.py tests_lerobot/ -k "lerobot_loader or lerobot_byod" "$@"
