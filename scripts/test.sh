#!/usr/bin/env bash
# Sets up (if needed) and runs the test suite. Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest "$@"
