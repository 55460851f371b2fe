"""Images that have nothing to do with the scene: noise, flat colours, patterns, shapes and photographs.

Used to calibrate the OOD threshold gamma at training time (synthetic ones)
and to report how often unrelated images are flagged (synthetic and photos:
the paper's cats-and-dogs test).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

#: Photographs bundled with scikit-image (grey ones are fed as RGB). None is used in calibration: they are
#: the held-out test of the OOD gate (the paper's cats-and-dogs test).
SKIMAGE_PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "horse.png", "brick.png", "grass.png", "gravel.png",
                  "hubble_deep_field.jpg", "color.png", "ihc.png", "camera.png", "moon.png", "coins.png",
                  "retina.jpg", "cell.png", "microaneurysms.png", "page.png", "clock_motion.png")
#: matplotlib's bundled sample photographs.
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
#: scipy's (``scipy.datasets``): only there when its cache has them (scripts/scipy_photos.py puts ``face`` there
#: offline). ``ascent`` is not used: scipy loads it with pickle.
SCIPY_PHOTOS = ("face",)


def synthetic_probes(count: int, size: tuple[int, int], seed: int = 1234) -> list[np.ndarray]:
    """``count`` RGB uint8 images of size (width, height), cycling through kinds of non-scene content."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(count):
        kind = i % 6
        if kind == 0:  # uniform noise
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:  # smooth coloured noise
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        elif kind == 2:  # flat colour
            img = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        elif kind == 3:  # gradient
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, w)[None, :, None]
            img = np.broadcast_to((a * (1 - t) + b * t), (h, w, 3)).astype(np.uint8)
        elif kind == 4:  # checkerboard / stripes
            period = int(rng.integers(4, 24))
            yy, xx = np.mgrid[0:h, 0:w]
            mask = ((xx // period + (yy // period) * int(rng.integers(0, 2))) % 2).astype(bool)
            img = np.zeros((h, w, 3), np.uint8)
            img[mask] = rng.integers(0, 256, 3)
            img[~mask] = rng.integers(0, 256, 3)
        else:  # random shapes on a random background
            img = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(3, 9))):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                if rng.random() < 0.5:
                    cv2.circle(img, centre, int(rng.integers(3, max(4, w // 3))), colour, -1)
                else:
                    cv2.rectangle(img, centre, (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, -1)
        out.append(np.ascontiguousarray(img))
    return out


def _package_dir(name: str) -> Path | None:
    """A package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def photo_files() -> dict[str, list[Path]]:
    """Sample photograph files per package (missing packages: an empty list)."""
    out: dict[str, list[Path]] = {}
    sk = _package_dir("skimage")
    out["scikit-image"] = [sk / "data" / n for n in SKIMAGE_PHOTOS if sk and (sk / "data" / n).is_file()]
    mpl = _package_dir("matplotlib")
    folder = mpl / "mpl-data" / "sample_data" if mpl else None
    out["matplotlib"] = [folder / n for n in MATPLOTLIB_PHOTOS if folder and (folder / n).is_file()]
    return out


def _scipy_photos() -> list[tuple[str, np.ndarray]]:
    if _package_dir("scipy") is None or _package_dir("pooch") is None:
        return []
    import scipy.datasets

    out = []
    for name in SCIPY_PHOTOS:
        try:
            img = getattr(scipy.datasets, name)()  # only from the local cache: this machine has no network
        except Exception:  # noqa: BLE001 - not downloaded: not available
            continue
        out.append((f"scipy:{name}", np.ascontiguousarray(img if img.ndim == 3 else np.repeat(
            (255 * (img - img.min()) / max(1, np.ptp(img))).astype(np.uint8)[..., None], 3, axis=2))))
    return out


def photos(size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """Named RGB photographs from scikit-image, matplotlib and scipy, resized to (width, height); those whose
    package is not installed are left out (see :func:`photo_files`)."""
    out = []
    for package, files in photo_files().items():
        for path in files:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                out.append((f"{package}:{path.name}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    out += _scipy_photos()
    return [(n, cv2.resize(im, size, interpolation=cv2.INTER_AREA)) for n, im in out]
