"""Is this view the camera the demonstrations were recorded with? Its fixed structure must be where it was.

The aligned method cannot compare a run's first views with the retrieved frame as ALT does (the object is
elsewhere by design, and clutter or other light lowers the encoder's agreement), so at the first lookup of a
run a structural check of each camera tells a view that shows something else (a photograph, a covered or
swapped camera, a camera knocked out of its mount) from a scene it can work with:

* the hand camera is fixed to the gripper, so the fingers and the gripper's edge sit at the same pixels in
  every hand frame while the gripper is open (fitted on the frames from each demonstration's start to its
  bottleneck);
* the third-person camera is fixed to the room, so at a run's start the table's edges and the arm in its
  start pose sit where they sat when every demonstration started (fitted on each demonstration's first
  frames; the object moves between them, so its edges are not steady and stay out of the region).

Later in a run the object comes close to the hand and the arm crosses the third view in ways the
demonstrations need not show, so the checks are not applied there. Each check is learned from the frames:

* **template**: the per-pixel median of their edge maps (grey, 64x64, log intensity so that a change of
  light scales nothing away, Gaussian blur 1 px, Sobel magnitude);
* **region**: the template's strongest edges (its top ``EDGE_SHARE``) that stay put from frame to frame
  (median absolute deviation under ``STEADY`` of their strength), widened by ``WIDEN`` px;
* **agreement**: the median, over the ``TILE`` x ``TILE`` px tiles the region crosses (those with at least
  ``MIN_TILE_PX`` of its pixels), of the normalised correlation of a live edge map with the template within
  the tile's share of the region. Clutter beside a finger or across a table edge spoils the tiles it
  covers and leaves the median alone; a view that shows something else agrees nowhere. (One correlation
  over the whole region let a ball beside a finger stop 16 of 200 cluttered starts on the simulated rig;
  the tiles' median stops none, and separates photographs and noise further from the demonstrations.)
* **threshold**: halfway between the demonstrations' lowest agreement and the highest of synthetic
  unrelated images (noise, patterns, procedural textures; no photograph is used: those are the held-out test).
  When the two overlap, the frames show no steady structure and the check is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from policy.grasp_check import correlation, edge_map, thumbnail

EDGE_SHARE = 0.10
STEADY = 0.35
WIDEN = 7
LOG_GAIN = 40.0  # log intensity scaled back to about the grey range, so the blur and Sobel act alike
NEGATIVES = 120
TILE = 8  # px of the 64 x 64 edge map
MIN_TILE_PX = 16  # region pixels a tile needs to count


def log_edge_map(image: np.ndarray) -> np.ndarray:
    """The edge map the check compares, of an RGB image of any size: the grasp check's, of log intensity."""
    return edge_map(np.log1p(thumbnail(image).astype(np.float32)) * LOG_GAIN)


@dataclass
class CameraCheck:
    template: np.ndarray  # [64, 64] float32 median edge map
    region: np.ndarray  # [64, 64] bool: the steady gripper pixels, widened
    threshold: float
    report: dict = field(default_factory=dict)

    def __post_init__(self):
        self._tiles = region_tiles(self.region)

    def agreement(self, image: np.ndarray) -> float:
        """How well a view shows the camera's fixed structure where the demonstrations do (1.0: edge for edge)."""
        return self.edge_agreement(log_edge_map(image))

    def edge_agreement(self, edges: np.ndarray) -> float:
        live, template = edges.ravel(), self.template.ravel()
        scores = [correlation(live[t], template[t]) for t in self._tiles]
        return float(np.median(scores)) if scores else 0.0

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_template": self.template.astype(np.float32), f"{prefix}_region": self.region}

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "report": self.report}

    @classmethod
    def from_json(cls, doc: dict, arrays: dict, prefix: str) -> "CameraCheck":
        return cls(np.asarray(arrays[f"{prefix}_template"], np.float32),
                   np.asarray(arrays[f"{prefix}_region"], bool), float(doc["threshold"]),
                   dict(doc.get("report") or {}))


def fit_camera_check(frames: list[np.ndarray], negatives: list[np.ndarray],
                     structure: str) -> tuple[CameraCheck | None, dict]:
    """The check from demonstration frames in which the camera's fixed ``structure`` (said in the report when
    it is missing) should be steady, and synthetic unrelated images; (None, report) when they do not
    separate."""
    if not frames:
        return None, {"used": False, "why": "no frames to learn from"}
    edges = np.stack([log_edge_map(h) for h in frames])
    template = np.median(edges, axis=0)
    spread = np.median(np.abs(edges - template), axis=0)
    steady = (template > np.quantile(template, 1.0 - EDGE_SHARE)) & (spread < STEADY * template)
    region = cv2.dilate(steady.astype(np.uint8), np.ones((WIDEN, WIDEN), np.uint8)).astype(bool)
    check = CameraCheck(template.astype(np.float32), region, 0.0)
    demo = np.array([check.edge_agreement(e) for e in edges])
    unrelated = np.array([check.agreement(n) for n in negatives]) if negatives else np.array([-1.0])
    low, high = float(demo.min()), float(unrelated.max())
    report = {"frames": len(frames), "region_px": int(region.sum()),
              "demonstrations": {"min": low, "p1": float(np.percentile(demo, 1)), "p50": float(np.median(demo))},
              "unrelated_max": high, "unrelated_images": len(negatives)}
    if steady.sum() == 0 or low <= high:
        return None, {**report, "used": False,
                      "why": f"the demonstrations' views show no steady {structure} that unrelated images lack"}
    check.threshold = 0.5 * (low + high)
    check.report = {**report, "used": True, "threshold": check.threshold}
    return check, check.report


def region_tiles(region: np.ndarray) -> list[np.ndarray]:
    """The region cut into ``TILE`` x ``TILE`` tiles, as flat indices of its pixels (the whole region as one
    when no tile holds ``MIN_TILE_PX``)."""
    ys, xs = np.nonzero(region)
    flat = ys * region.shape[1] + xs
    keys = (ys // TILE) * (region.shape[1] // TILE + 1) + xs // TILE
    tiles = [flat[keys == k] for k in np.unique(keys)]
    tiles = [t for t in tiles if len(t) >= MIN_TILE_PX]
    return tiles or ([flat] if len(flat) else [])
