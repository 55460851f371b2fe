"""What the simulated rigs' cameras share: covers for the OOD drill and the stale limits of a host-paced render."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from robot_drivers.camera import Camera


class SimulatedCamera(Camera):
    """A simulated camera. In lock-step (``threaded`` False) the rig's clock draws it once a tick and its stale
    limit is a fixed 0.5 s of simulated time (it never trips). In real time its limit is derived from its
    frame intervals (:mod:`robot_drivers.camera`) with a floor of 2 s and a bound of 3 s: a late simulated
    frame means a busy host (a training at full priority on 2 cores delayed one by 1.0 s), not a fault.

    :meth:`cover` makes it deliver an image instead of the scene (the OOD drill); subclasses pass what they
    drew through :meth:`_covered`."""

    def __init__(self, name: str, width: int, height: int, fps: float, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = False):
        if threaded:
            self.stale_floor_s, self.stale_cap_s = 2.0, 3.0
            self.stale_advice = "the machine is too busy to render in time: close other programs or lower --camera-size"
        super().__init__(name, width, height, fps, clock, stale_limit_s=None if threaded else 0.5)
        self._threaded = threaded
        self._connected = False
        self._cover: np.ndarray | None = None
        self.renders = 0  # images drawn

    def cover(self, image: np.ndarray | None) -> None:
        """OOD drill: deliver ``image`` (any size, RGB) instead of the scene, as if something covered the
        lens; ``None`` uncovers. Timestamps and frame rate are unchanged."""
        if image is not None:
            import cv2

            image = np.ascontiguousarray(cv2.resize(np.asarray(image, dtype=np.uint8)[:, :, :3],
                                                    (self.width, self.height), interpolation=cv2.INTER_AREA))
        self._cover = image

    @property
    def covered(self) -> bool:
        """An OOD drill's image is delivered instead of the scene (:meth:`cover`)."""
        return self._cover is not None

    def _covered(self, image: np.ndarray) -> np.ndarray:
        cover = self._cover
        return image if cover is None else cover.copy()
