"""Is the hand view the hand camera's? The gripper's fingers must be where every demonstration has them.

The hand camera is fixed to the gripper, so its fingers and the gripper's edge sit at the same pixels in every
hand frame (while the gripper is open). The aligned method cannot compare the live hand view with the retrieved
frame before it has aligned (the object is elsewhere in the view by design), so at the first lookup of a run
this check is what tells a hand view that shows something else (a photograph, a covered or swapped camera, a
camera knocked out of its mount) from a scene it can work with. Later in the run the object comes close and
covers the fingers' region in ways the demonstrations need not show, so it is not applied there.

Learned from the demonstrations' hand frames from their start to their bottleneck (gripper open):

* **template**: the per-pixel median of their edge maps (grey, 64x64, log intensity so that a change of
  light scales nothing away, Gaussian blur 1 px, Sobel magnitude);
* **region**: the template's strongest edges (its top ``EDGE_SHARE``) that stay put from frame to frame
  (median absolute deviation under ``STEADY`` of their strength), widened by ``WIDEN`` px: the fingers and
  the gripper's edge, not the object, which moves;
* **agreement**: the normalised correlation of a live edge map with the template within the region;
* **threshold**: halfway between the demonstrations' lowest agreement and the highest of synthetic
  unrelated images (noise, patterns, procedural textures; no photograph is used: those are the held-out test).
  When the two overlap, the demonstrations' hand views show no steady gripper and the check is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .grasp_check import correlation, edge_map, thumbnail

EDGE_SHARE = 0.10
STEADY = 0.35
WIDEN = 7
LOG_GAIN = 40.0  # log intensity scaled back to about the grey range, so the blur and Sobel act alike
NEGATIVES = 120


def log_edge_map(image: np.ndarray) -> np.ndarray:
    """The edge map the check compares, of an RGB image of any size: the grasp check's, of log intensity."""
    return edge_map(np.log1p(thumbnail(image).astype(np.float32)) * LOG_GAIN)


@dataclass
class HandCameraCheck:
    template: np.ndarray  # [64, 64] float32 median edge map
    region: np.ndarray  # [64, 64] bool: the steady gripper pixels, widened
    threshold: float
    report: dict = field(default_factory=dict)

    def agreement(self, image: np.ndarray) -> float:
        """How well a hand view shows the gripper where the demonstrations do (1.0: edge for edge)."""
        return correlation(log_edge_map(image)[self.region], self.template[self.region])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"hand_camera_template": self.template.astype(np.float32), "hand_camera_region": self.region}

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "report": self.report}

    @classmethod
    def from_json(cls, doc: dict, arrays: dict) -> "HandCameraCheck":
        return cls(np.asarray(arrays["hand_camera_template"], np.float32),
                   np.asarray(arrays["hand_camera_region"], bool), float(doc["threshold"]),
                   dict(doc.get("report") or {}))


def fit_hand_camera_check(hands: list[np.ndarray], negatives: list[np.ndarray]) -> tuple[HandCameraCheck | None, dict]:
    """The check from demonstration hand frames with the gripper open (start to bottleneck) and synthetic
    unrelated images; (None, report) when they do not separate."""
    if not hands:
        return None, {"used": False, "why": "no hand frames before the grasp"}
    edges = np.stack([log_edge_map(h) for h in hands])
    template = np.median(edges, axis=0)
    spread = np.median(np.abs(edges - template), axis=0)
    steady = (template > np.quantile(template, 1.0 - EDGE_SHARE)) & (spread < STEADY * template)
    region = cv2.dilate(steady.astype(np.uint8), np.ones((WIDEN, WIDEN), np.uint8)).astype(bool)
    check = HandCameraCheck(template.astype(np.float32), region, 0.0)
    demo = np.array([correlation(e[region], template[region]) for e in edges])
    unrelated = np.array([check.agreement(n) for n in negatives]) if negatives else np.array([-1.0])
    low, high = float(demo.min()), float(unrelated.max())
    report = {"frames": len(hands), "region_px": int(region.sum()),
              "demonstrations": {"min": low, "p1": float(np.percentile(demo, 1)), "p50": float(np.median(demo))},
              "unrelated_max": high, "unrelated_images": len(negatives)}
    if steady.sum() == 0 or low <= high:
        return None, {**report, "used": False,
                      "why": "the demonstrations' hand views show no steady gripper that unrelated images lack"}
    check.threshold = 0.5 * (low + high)
    check.report = {**report, "used": True, "threshold": check.threshold}
    return check, check.report
