"""Put scipy's sample photograph (``scipy.datasets.face``, a raccoon) into scipy's own data cache, offline.

``scipy.datasets`` downloads its files from GitHub on first use, which machines without internet access
cannot do. The very same file shipped inside scipy 1.11's wheel (``scipy/misc/face.dat``); this fetches that
wheel from the package index pip already uses, checks the file against the SHA-256 in scipy's own registry
and copies it into the cache ``scipy.datasets`` reads (``pooch.os_cache("scipy-data")``). The OOD gate's
evaluation then feeds it through ``scipy.datasets.face()``. ``ascent`` is left out on purpose: scipy loads
that file with pickle. Never fatal: without it the evaluation reports the photograph as not available.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SCIPY = "scipy==1.11.4"
NAME = "face.dat"


def main() -> int:
    try:
        import pooch
        from scipy.datasets._registry import registry
    except ImportError as exc:
        print(f"scipy_photos: skipped ({exc}); install the dev extras first")
        return 0
    want = registry[NAME]
    target = Path(pooch.os_cache("scipy-data")) / NAME
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == want:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.11", WHEEL_SCIPY, "-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("scipy-*.whl"))
        if done.returncode != 0 or not wheels:
            print(f"scipy_photos: could not fetch {WHEEL_SCIPY} ({done.stderr.strip().splitlines()[-1:]}); "
                  "scipy's face photograph will be reported as not available")
            return 0
        data = zipfile.ZipFile(wheels[0]).read(f"scipy/misc/{NAME}")
    if hashlib.sha256(data).hexdigest() != want:
        print(f"scipy_photos: {NAME} from {WHEEL_SCIPY} does not match scipy's registry; not installed")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"scipy_photos: {NAME} installed in {target.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
