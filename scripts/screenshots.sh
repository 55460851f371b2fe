#!/usr/bin/env bash
# Screenshots of the app's main screens in a real X window under Xvfb; PNGs in screenshots/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v xvfb-run >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "screenshots: please install the Debian packages xvfb and xauth" >&2; exit 2; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends xvfb xauth >/dev/null
fi
unset QT_QPA_PLATFORM
exec xvfb-run -a -s "-screen 0 1680x1050x24" .venv/bin/python scripts/screenshots.py "$@"
