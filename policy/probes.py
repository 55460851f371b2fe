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

PHOTO_NAMES = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png",
               "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "color.png", "ihc.png")


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


def photo_dir() -> Path | None:
    """scikit-image's bundled sample photographs (a test dependency), found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def photos(size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """Named RGB photographs resized to (width, height); empty if scikit-image is not installed."""
    folder = photo_dir()
    if folder is None:
        return []
    out = []
    for name in PHOTO_NAMES:
        bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if bgr is not None:
            out.append((name, cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)))
    return out
