#!/usr/bin/env bash
# Sets ALT Studio up from nothing on Debian/Ubuntu with Python >= 3.10:
#   1. the system libraries the Python wheels need (as root, or through sudo);
#   2. a virtual environment in .venv with the package, its dependencies and the test tools.
# Safe to re-run: pip runs again only when setup.cfg has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

# Debian packages: python3-venv (venv itself), libusb-1.0-0 (pyrealsense2), libhidapi-hidraw0 (pyspacemouse),
# libgl1/libegl1/libfontconfig1/libxkbcommon0/libdbus-1-3/libglib2.0-0 (Qt, OpenCV),
# libxcb-* (a real Qt window on X11/Xvfb), libegl-mesa0/libgl1-mesa-dri/libgbm1 (MuJoCo's offscreen
# rendering for the Meta-World rig: EGL with Mesa's software renderer, no GPU needed).
APT_PACKAGES=(libusb-1.0-0 libhidapi-hidraw0 libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libfontconfig1 libxkbcommon0 libxkbcommon-x11-0 libdbus-1-3
              libglib2.0-0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-shape0
              libxcb-randr0 libxcb-render-util0 libxcb-image0)
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  APT_PACKAGES+=("python3-venv")
fi
missing=()
if command -v dpkg-query >/dev/null; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: please install these Debian packages, then re-run: ${missing[*]}" >&2
  else
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.setup-stamp"
want=$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (the first time takes a few minutes: torch is large)"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
# scipy's sample photograph, for the OOD gate's held-out test (scipy.datasets cannot download it offline)
"$VENV/bin/python" scripts/scipy_photos.py
