"""Retrieve, align, replay: the ``aligned`` policy method's alignment step.

ALT replays the retrieved demonstration's absolute poses, so it grasps where that demonstration grasped. The
aligned method keeps ALT's encoder, lookup table and gate, finds where the object stands now, and replays the
retrieved demonstration shifted by the difference between where the object is and where it was in that
demonstration.

Where the object is comes from the third-person camera, with a model learned from the demonstrations alone:

* **background**: the per-pixel median of the demonstrations' first third-person frames. The object moves
  between demonstrations and the arm starts from the same pose, so the median is the scene without the object.
* **object**: in each demonstration's first frame, the region that differs most from the background; its
  size and its mean chromaticity (colour with brightness divided out) make the object model, and its
  difference-weighted centroid is the object's pixel position.
* **table map**: a homography from those pixel positions to the demonstrations' grasp positions (the
  end-effector position when the gripper first closes, read from the gripper channel) — the table plane, as the
  camera sees it, calibrated by the demonstrations themselves. Its leave-one-out error is kept as the fit's
  figure.

At run time the live third-person frame, brightness and tint evened out to the background's, is compared with
the background; of the regions that differ, the one whose size and chromaticity are the object's is the
object. Distractors differ in colour or size; shadows and the arm are grey.

The correction is ``target - demo_target``, both located the same way (a bias of the map cancels). It is ramped
in over the demonstration's approach, reaching full strength at its *bottleneck* (the first frame at which the
hand is above the grasp point, within ``align_radius``) and held for the rest of the replay, the grasp and the
lift included. The gate stays: no object found, or a correction beyond the demonstrations' spread plus
``align_margin``, stops the arm as out of distribution with the reason.

Assumptions (README): one object to grasp, standing on a table plane; a fixed third-person camera that sees it
when the arm is at its start pose; the arm starting every demonstration from the same pose; a top-down grasp
whose orientation the demonstration supplies (the object's yaw is not estimated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.transforms import wrap_half_turn
from policy.aligned.camera_check import CameraCheck
from policy.grasp_check import grasp_frame  # noqa: F401 - re-exported: the aligned method's callers use it

#: Foreground: a difference from the background larger than this share of the demonstrations' median peak.
FOREGROUND_SHARE = 0.3
#: Size range of an object region, relative to the demonstrations' smallest and largest.
AREA_SLACK = (0.4, 2.5)
#: How far from the demonstrations' mean chromaticity an object region may be, in multiples of the largest
#: distance any demonstration's object had (with a floor, for a set of identical demonstrations).
CHROMA_SLACK = 4.0
CHROMA_FLOOR = 0.03
#: A pixel belongs to the object when its chromaticity is within this multiple of the given quantile of the
#: demonstrations' object pixels' distances (edge pixels blend with the table and fall outside).
PIXEL_QUANTILE = 75
PIXEL_SLACK = 1.5
BLUR_SIGMA = 1.0
#: The object's look, for choosing among the nearest demonstrations the one whose object stood turned the same
#: way (its grasp orientation is replayed): a PATCH x PATCH crop around the object, compared by normalised
#: correlation, among the CANDIDATES demonstrations whose objects stood nearest.
PATCH = 15
CANDIDATES = 5
LOOK_TOLERANCE = 0.005  # correlations this close count as alike; then the nearest is taken


#: The table map (8 parameters) needs this many demonstrations that grasp.
MIN_GRASPS = 5


class AlignmentError(ValueError):
    """The demonstrations cannot calibrate the alignment (too few, no grasp, no object in view)."""


@dataclass(frozen=True)
class Location:
    """Where the object was found: table position (m, robot base frame) and its pixel in the third view."""

    xy: np.ndarray
    pixel: np.ndarray
    area: int
    chroma_distance: float
    patch: np.ndarray | None = None  # the object as the third-person camera sees it (PATCH x PATCH x 3)


@dataclass(frozen=True)
class Region:
    pixel: np.ndarray
    area: int
    chroma: np.ndarray


def _gain_to(image: np.ndarray, reference_median: np.ndarray) -> np.ndarray:
    """``image`` with each channel scaled so its median is the reference's: lighting brightness and tint."""
    med = np.median(image.reshape(-1, 3), axis=0)
    return image * (reference_median / np.maximum(med, 1.0))


def _regions(image: np.ndarray, background: np.ndarray, threshold: float, chroma: np.ndarray | None = None,
             pixel_limit: float = np.inf) -> list[Region]:
    """Connected regions where ``image`` differs from ``background`` by more than ``threshold`` (and, given the
    object's ``chroma``, whose pixels' own chromaticity is within ``pixel_limit`` of it: an object touching
    another one of a different colour stays a region of its own)."""
    img = _gain_to(image.astype(np.float32), np.median(background.reshape(-1, 3), axis=0))
    diff = np.abs(img - background).sum(-1)
    diff = cv2.GaussianBlur(diff, (0, 0), BLUR_SIGMA)
    foreground = diff > threshold
    if chroma is not None:
        foreground &= np.linalg.norm(_pixel_chroma(img) - chroma, axis=-1) < pixel_limit
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8))
    out = []
    ys, xs = np.indices(diff.shape)
    for i in range(1, count):
        mask = labels == i
        w = diff[mask]
        pixel = np.array([np.sum(xs[mask] * w), np.sum(ys[mask] * w)]) / w.sum()
        # brightness and tint evened out: the object's own colour
        out.append(Region(pixel, int(stats[i, cv2.CC_STAT_AREA]), _pixel_chroma(img[mask]).mean(0)))
    return out


def _pixel_chroma(colours: np.ndarray) -> np.ndarray:
    return colours / np.maximum(colours.sum(-1, keepdims=True), 1.0)


def _patch(image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    return cv2.getRectSubPix(np.ascontiguousarray(image, np.float32), (PATCH, PATCH),
                             (float(pixel[0]), float(pixel[1])))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt(max((a @ a) * (b @ b), 1e-12)))


#: The hand view's silhouette of the object: a (2 * SILHOUETTE + 1) square around its centroid.
SILHOUETTE = 14
#: Rotation search for the object's turn in the hand view: every ROTATION_STEP degrees in [-90, 90] (the
#: gripper closes the same way turned half a turn, so a handle pointing the other way is as good).
ROTATION_STEP = 2.0


#: Regions of the object's chromaticity smaller than this share of the object's expected area (else of the
#: largest region) are specks, never the object.
SPECK_SHARE = 0.3


def _object_regions(image: np.ndarray, chroma: np.ndarray, pixel_limit: float, reference: np.ndarray | None):
    """The regions of the object's chromaticity in a hand-camera frame, brightness and tint evened out to
    ``reference``: (labels, stats, centroids) as OpenCV gives them, or None when there is none to speak of."""
    img = image.astype(np.float32)
    if reference is not None:
        img = _gain_to(img, reference)
    mask = (np.linalg.norm(_pixel_chroma(img) - chroma, axis=-1) < pixel_limit).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < 6:
        return None
    return labels, stats, centroids


def _pick_object(regions, near: np.ndarray | None = None):
    """The object's region among ``regions`` (from ``_object_regions``): (labels, its label, its centroid, its
    area), or None.

    Without ``near`` it is the largest region; with it (where a demonstration had the object in its hand view:
    u, v and optionally its area, pixels) the region nearest there of those that are no speck: clutter of a
    like colour (a brown box beside a red mug) can be the larger one."""
    if regions is None:
        return None
    labels, stats, centroids = regions
    areas = stats[1:, cv2.CC_STAT_AREA]
    i = 1 + int(np.argmax(areas))
    if near is not None:
        near = np.asarray(near, np.float64)
        expected = near[2] if len(near) > 2 else areas.max()
        candidates = np.flatnonzero(areas >= max(6.0, SPECK_SHARE * expected)) + 1
        if len(candidates) == 0:
            return None
        i = int(candidates[np.argmin(np.linalg.norm(centroids[candidates] - near[None, :2], axis=1))])
    return labels, i, centroids[i], int(stats[i, cv2.CC_STAT_AREA])


def _hand_object(image: np.ndarray, chroma: np.ndarray, pixel_limit: float, reference: np.ndarray | None,
                 near: np.ndarray | None = None):
    """The object's region in a hand-camera frame (``_pick_object`` of ``_object_regions``)."""
    return _pick_object(_object_regions(image, chroma, pixel_limit, reference), near)


def hand_silhouette(image: np.ndarray, chroma: np.ndarray, pixel_limit: float,
                    reference: np.ndarray | None = None, near: np.ndarray | None = None) -> np.ndarray | None:
    """The object's silhouette in a hand-camera frame (float32 square centred on it; None: not in view): the
    region of pixels with the object's chromaticity (brightness and tint evened out to ``reference``, the
    demonstrations' median hand-view colour) that ``_hand_object`` picks."""
    found = _hand_object(image, chroma, pixel_limit, reference, near)
    if found is None:
        return None
    labels, i, centroid, _ = found
    blob = cv2.GaussianBlur((labels == i).astype(np.float32), (0, 0), 1.0)
    side = 2 * SILHOUETTE + 1
    return cv2.getRectSubPix(blob, (side, side), tuple(float(c) for c in centroid))


def hand_object_place(image: np.ndarray, chroma: np.ndarray, pixel_limit: float,
                      reference: np.ndarray | None = None, near: np.ndarray | None = None) -> np.ndarray | None:
    """Where the object sits in a hand-camera frame: [u, v, area] (pixels), or None when it is not in view."""
    found = _hand_object(image, chroma, pixel_limit, reference, near)
    return None if found is None else np.array([found[2][0], found[2][1], found[3]], np.float64)


def _rotated(patch: np.ndarray, degrees: float) -> np.ndarray:
    c = (patch.shape[1] - 1) / 2
    return cv2.warpAffine(patch, cv2.getRotationMatrix2D((c, c), degrees, 1.0), patch.shape[::-1])


def silhouette_rotation(live: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The rotation (degrees, in [-90, 90]) that turns ``live`` onto ``reference`` (or onto it turned half a
    turn), and the correlation it reaches."""
    flipped = _rotated(reference, 180.0)
    best = (0.0, -2.0)
    for angle in np.arange(-90.0, 90.0 + 1e-9, ROTATION_STEP):
        turned = _rotated(live, float(angle))
        score = max(_ncc(turned, reference), _ncc(turned, flipped))
        if score > best[1]:
            best = (float(angle), score)
    return best


def _map(homography: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    q = homography @ np.array([pixel[0], pixel[1], 1.0])
    return q[:2] / q[2]


def _fit_homography(pixels: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h, _ = cv2.findHomography(pixels.astype(np.float64), xy.astype(np.float64), 0)
    if h is None:
        raise AlignmentError("the object's positions in the demonstrations' first frames do not determine the "
                             "table plane (all in a line?); record demonstrations with the object spread out")
    return h


def bottleneck_frame(actions: np.ndarray, close: int, radius: float) -> int:
    """The first frame from which the commanded hand stays within ``radius`` (m) of the grasp point laterally
    until the grasp: where the approach ends and the demonstration's hand is above the object."""
    lateral = np.linalg.norm(actions[:close + 1, :2] - actions[close, :2], axis=1)
    outside = np.flatnonzero(lateral > radius)
    return int(outside[-1]) + 1 if len(outside) else 0


@dataclass
class TargetLocator:
    """The third-person object locator and the demonstrations' targets (see the module docstring)."""

    background: np.ndarray  # [H, W, 3] uint8
    threshold: float
    chroma: np.ndarray  # (3,)
    chroma_limit: float
    area_range: tuple[float, float]
    homography: np.ndarray  # [3, 3] pixel -> base-frame table xy (m)
    demo_targets: dict[int, np.ndarray]  # episode -> located xy in its first frame
    bottlenecks: dict[int, int]  # episode -> bottleneck frame
    max_correction: float  # m
    report: dict = field(default_factory=dict)  # fit figures, for the artefact and the train summary
    pixel_limit: float = np.inf  # a pixel is the object's when its own chromaticity is this close to it
    demo_patches: dict[int, np.ndarray] = field(default_factory=dict)  # episode -> its object's patch
    # the turn: the object's silhouette in each demonstration's hand view at its bottleneck, the hand view's
    # median colour, how many degrees the silhouette turns per degree the hand turns (None: not learned, the
    # turn is left as the demonstration had it) and the turn the demonstrations themselves disagree by
    demo_silhouettes: dict[int, np.ndarray] = field(default_factory=dict)
    hand_reference: np.ndarray | None = None
    rotation_slope: float | None = None
    rotation_deadband: float = 90.0  # degrees
    silhouette_threshold: float = -1.0  # after turning, the silhouettes must correlate at least this well
    hand_camera: CameraCheck | None = None  # a run's first lookup: the gripper where the demonstrations have it
    third_camera: CameraCheck | None = None  # and the table and the arm where the demonstrations started
    # the grasp check's second opinion: where the object sat in each demonstration's hand view from its
    # bottleneck to its grasp (episode -> [K, 4]: frame, u, v, area), and how far apart two demonstrations'
    # places are at the same number of frames before their grasps (negative: not learned)
    grasp_places: dict[int, np.ndarray] = field(default_factory=dict)
    place_tolerance: float = -1.0  # px
    place_area_ratio: tuple[float, float] = (1.0, 1.0)

    def locate(self, image: np.ndarray) -> Location | None:
        """The object in a live third-person frame (None: nothing that looks like it)."""
        h, w = self.background.shape[:2]
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        best = None
        for region in _regions(image, self.background.astype(np.float32), self.threshold, self.chroma,
                               self.pixel_limit):
            if not self.area_range[0] <= region.area <= self.area_range[1]:
                continue
            d = float(np.linalg.norm(region.chroma - self.chroma))
            if d <= self.chroma_limit and (best is None or d < best[0]):
                best = (d, region)
        if best is None:
            return None
        d, region = best
        return Location(_map(self.homography, region.pixel), region.pixel, region.area, d,
                        _patch(image, region.pixel))

    def correction(self, target: np.ndarray, episode: int) -> np.ndarray:
        """The base-frame xy shift that moves ``episode``'s demonstration onto ``target``."""
        return np.asarray(target, float) - self.demo_targets[int(episode)]

    def choose_demo(self, target: Location) -> int:
        """The demonstration to replay: of the CANDIDATES whose objects stood nearest (within the largest
        correction), the one whose object looks most like this one (turned the same way: its grasp
        orientation is replayed as it was)."""
        near = sorted(self.demo_targets, key=lambda e: float(np.linalg.norm(self.demo_targets[e] - target.xy)))
        reachable = [e for e in near[:CANDIDATES]
                     if np.linalg.norm(self.demo_targets[e] - target.xy) <= self.max_correction] or near[:1]
        if target.patch is None or not self.demo_patches:
            return reachable[0]
        looks = {e: _ncc(target.patch, self.demo_patches[e]) if e in self.demo_patches else -2.0 for e in reachable}
        best = max(looks.values())
        return next(e for e in reachable if looks[e] >= best - LOOK_TOLERANCE)  # the nearest of those alike

    def ramp(self, episode: int, frame: int) -> float:
        """How much of the correction applies at ``frame`` of ``episode``: 0 at its start, 1 from its
        bottleneck on."""
        b = self.bottlenecks.get(int(episode), 0)
        return 1.0 if b <= 0 else float(np.clip(frame / b, 0.0, 1.0))

    def object_in_place(self, hand_image: np.ndarray, episode: int, frames: list[int]) -> bool:
        """Does the object sit in the live hand view where it sat in ``episode``'s at one of ``frames`` (its
        centroid within the tolerance, its area within the ratios two demonstrations differ by)? The grasp
        check's second opinion: clutter and shadows change the view's edges, not where the object's colour is."""
        places = self.grasp_places.get(int(episode))
        if self.place_tolerance < 0 or places is None:
            return False
        places = places[np.isin(places[:, 0], frames), 1:]
        if not len(places):
            return False
        regions = _object_regions(hand_image, self.chroma, self.pixel_limit, self.hand_reference)  # once a view
        for u, v, area in places:
            found = _pick_object(regions, (u, v, area))
            if found is None:
                return False
            (cu, cv), live_area = found[2], found[3]
            ratio = live_area / max(area, 1.0)
            if (np.hypot(cu - u, cv - v) <= self.place_tolerance
                    and self.place_area_ratio[0] <= ratio <= self.place_area_ratio[1]):
                return True
        return False

    def turn_needed(self, hand_image: np.ndarray, episode: int) -> tuple[float, float] | None:
        """How far (degrees) the hand must still turn about the vertical for the object to sit in the hand view
        as it sat in ``episode``'s at its bottleneck, and the silhouettes' correlation; None: the object is not
        in the hand view (or the turn was not learned: then (0, nan)). The object is looked for nearest where
        that demonstration had it, when that is known."""
        if self.rotation_slope is None or int(episode) not in self.demo_silhouettes:
            return 0.0, float("nan")
        places = self.grasp_places.get(int(episode))
        near = places[np.argmin(places[:, 0]), 1:4] if places is not None and len(places) else None
        live = hand_silhouette(hand_image, self.chroma, self.pixel_limit, self.hand_reference, near)
        if live is None:
            return None
        angle, score = silhouette_rotation(live, self.demo_silhouettes[int(episode)])
        return angle / self.rotation_slope, score

    # -- persistence ------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        order = sorted(self.demo_patches)
        turns = sorted(self.demo_silhouettes)
        side = 2 * SILHOUETTE + 1
        return {**(self.hand_camera.arrays("hand_camera") if self.hand_camera is not None else {}),
                **(self.third_camera.arrays("third_camera") if self.third_camera is not None else {}),
                "align_background": self.background, "align_patch_episodes": np.array(order, np.int64),
                "align_patches": np.stack([self.demo_patches[e] for e in order]) if order else
                np.zeros((0, PATCH, PATCH, 3), np.float32),
                "align_silhouette_episodes": np.array(turns, np.int64),
                "align_silhouettes": np.stack([self.demo_silhouettes[e] for e in turns]) if turns else
                np.zeros((0, side, side), np.float32),
                "align_grasp_places": np.concatenate(
                    [np.column_stack([np.full(len(p), e), p]) for e, p in sorted(self.grasp_places.items())]
                ) if self.grasp_places else np.zeros((0, 5))}

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "chroma": self.chroma.tolist(), "chroma_limit": self.chroma_limit,
                "area_range": list(self.area_range), "homography": self.homography.tolist(),
                "demo_targets": {str(e): v.tolist() for e, v in self.demo_targets.items()},
                "bottlenecks": {str(e): int(v) for e, v in self.bottlenecks.items()},
                "max_correction": self.max_correction, "report": self.report, "pixel_limit": self.pixel_limit,
                "hand_reference": None if self.hand_reference is None else self.hand_reference.tolist(),
                "rotation_slope": self.rotation_slope, "rotation_deadband": self.rotation_deadband,
                "silhouette_threshold": self.silhouette_threshold,
                "hand_camera": None if self.hand_camera is None else self.hand_camera.to_json(),
                "third_camera": None if self.third_camera is None else self.third_camera.to_json(),
                "place_tolerance": self.place_tolerance, "place_area_ratio": list(self.place_area_ratio)}

    @classmethod
    def from_json(cls, doc: dict, arrays: dict) -> "TargetLocator":
        return cls(np.asarray(arrays["align_background"], np.uint8), float(doc["threshold"]),
                   np.asarray(doc["chroma"], float), float(doc["chroma_limit"]), tuple(doc["area_range"]),
                   np.asarray(doc["homography"], float),
                   {int(e): np.asarray(v, float) for e, v in doc["demo_targets"].items()},
                   {int(e): int(v) for e, v in doc["bottlenecks"].items()}, float(doc["max_correction"]),
                   dict(doc.get("report") or {}), float(doc["pixel_limit"]),
                   {int(e): p for e, p in zip(arrays["align_patch_episodes"], arrays["align_patches"])},
                   {int(e): p for e, p in zip(arrays["align_silhouette_episodes"], arrays["align_silhouettes"])},
                   None if doc.get("hand_reference") is None else np.asarray(doc["hand_reference"], np.float32),
                   doc.get("rotation_slope"), float(doc.get("rotation_deadband", 90.0)),
                   float(doc.get("silhouette_threshold", -1.0)),
                   CameraCheck.from_json(doc["hand_camera"], arrays, "hand_camera") if doc.get("hand_camera") else None,
                   CameraCheck.from_json(doc["third_camera"], arrays, "third_camera") if doc.get("third_camera")
                   else None, _places_by_episode(arrays.get("align_grasp_places")),
                   float(doc.get("place_tolerance", -1.0)), tuple(doc.get("place_area_ratio", (1.0, 1.0))))

    def extended(self, first_thirds: dict[int, np.ndarray], actions: dict[int, np.ndarray],
                 radius: float) -> "TargetLocator":
        """The same locator knowing more demonstrations' targets (episodes added to the table); the background,
        object model and map are kept."""
        targets, bottlenecks, patches = dict(self.demo_targets), dict(self.bottlenecks), dict(self.demo_patches)
        for e, image in first_thirds.items():
            close = grasp_frame(actions[e])
            found = self.locate(image)
            if close is None or found is None:
                continue
            targets[int(e)] = found.xy
            patches[int(e)] = found.patch
            bottlenecks[int(e)] = bottleneck_frame(actions[e], close, radius)
        return TargetLocator(self.background, self.threshold, self.chroma, self.chroma_limit, self.area_range,
                             self.homography, targets, bottlenecks, self.max_correction, self.report,
                             self.pixel_limit, patches, self.demo_silhouettes, self.hand_reference,
                             self.rotation_slope, self.rotation_deadband, self.silhouette_threshold,
                             self.hand_camera, self.third_camera, self.grasp_places, self.place_tolerance,
                             self.place_area_ratio)


#: A table map whose leave-one-out error exceeds this on the demonstrations themselves places the grasp too
#: coarsely for a mug-sized object: with 64 px views the simulated rig's map erred up to 11.7 mm and one
#: placement in 35 had a finger tip the mug before any signal of the gate could tell (at 96 px: 6.3 mm, none).
COARSE_MAP_M = 0.010


def coarse_map_warning(report: dict) -> str | None:
    """A warning for the operator when the locator's table map is too coarse to trust a grasp to (None: fine)."""
    worst = float(report["map_error_loo_m"]["max"])
    if worst <= COARSE_MAP_M:
        return None
    return (f"warning: the table map misplaces a demonstration's object by up to {1000 * worst:.1f} mm (more than "
            f"{1000 * COARSE_MAP_M:.0f} mm): grasps may miss or knock the object where the gate cannot see it. "
            "Train on larger images (--input-size) or record the third-person camera closer to the table")


def empty_scene(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """The scene without the object (the per-pixel median of the demonstrations' first third-person frames,
    [N, H, W, 3] float32) and the foreground threshold: FOREGROUND_SHARE of the frames' median peak difference
    from it, brightness and tint evened out."""
    background = np.median(frames, axis=0)
    ref = np.median(background.reshape(-1, 3), axis=0)
    peaks = [float(cv2.GaussianBlur(np.abs(_gain_to(f, ref) - background).sum(-1), (0, 0), BLUR_SIGMA).max())
             for f in frames]
    return background, FOREGROUND_SHARE * float(np.median(peaks))


def fit_locator(first_thirds: dict[int, np.ndarray], actions: dict[int, np.ndarray], radius: float,
                margin: float) -> TargetLocator:
    """Calibrate the locator from each demonstration's first third-person frame and its actions (pose + gripper).

    Raises AlignmentError when the demonstrations cannot calibrate it: fewer than five with a grasp, or no
    object that differs from the background in their first frames."""
    episodes = [e for e in sorted(first_thirds) if grasp_frame(actions[e]) is not None]
    if len(episodes) < MIN_GRASPS:
        raise AlignmentError(f"the aligned method needs at least {MIN_GRASPS} demonstrations that grasp (the gripper "
                             f"closes from open); these have {len(episodes)}")
    frames = np.stack([first_thirds[e] for e in episodes]).astype(np.float32)
    background, threshold = empty_scene(frames)
    ref = np.median(background.reshape(-1, 3), axis=0)
    # the object's colour: the largest region of each first frame (nothing else moves between demonstrations)
    objects = []
    for e, f in zip(episodes, frames):
        regions = _regions(f, background, threshold)
        if not regions:
            raise AlignmentError(f"episode {e}: nothing in its first third-person frame differs from the other "
                                 "demonstrations'; the aligned method needs the object to move between them")
        objects.append(max(regions, key=lambda r: r.area))
    chroma = np.mean([o.chroma for o in objects], axis=0)
    distances = []  # each foreground pixel's own chromaticity from the object's
    for f in frames:
        img = _gain_to(f, ref)
        fg = cv2.GaussianBlur(np.abs(img - background).sum(-1), (0, 0), BLUR_SIGMA) > threshold
        distances.append(np.linalg.norm(_pixel_chroma(img[fg]) - chroma, axis=-1))
    pixel_limit = PIXEL_SLACK * float(np.percentile(np.concatenate(distances), PIXEL_QUANTILE))
    pixels, chromas, areas, grasps, bottlenecks, patches = [], [], [], [], {}, {}
    for e, f, rough in zip(episodes, frames, objects):
        regions = _regions(f, background, threshold, chroma, pixel_limit) or [rough]
        obj = max(regions, key=lambda r: r.area)
        patches[e] = _patch(f, obj.pixel)
        pixels.append(obj.pixel)
        chromas.append(obj.chroma)
        areas.append(obj.area)
        close = grasp_frame(actions[e])
        grasps.append(actions[e][close, :2])
        bottlenecks[e] = bottleneck_frame(actions[e], close, radius)
    pixels, grasps, chromas = np.array(pixels), np.array(grasps), np.array(chromas)
    homography = _fit_homography(pixels, grasps)
    loo = []
    for i in range(len(episodes)):
        keep = np.arange(len(episodes)) != i
        loo.append(float(np.linalg.norm(_map(_fit_homography(pixels[keep], grasps[keep]), pixels[i]) - grasps[i])))
    targets = {e: _map(homography, p) for e, p in zip(episodes, pixels)}
    chroma_limit = CHROMA_SLACK * max(CHROMA_FLOOR, float(np.max(np.linalg.norm(chromas - chroma, axis=1))))
    pts = np.array(list(targets.values()))
    gaps = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    spread = float(np.max(gaps.min(1)))  # farthest any demonstration is from its nearest neighbour
    report = {"demonstrations": len(episodes), "map_error_loo_m": {"p50": float(np.median(loo)),
                                                                    "max": float(np.max(loo))},
              "object_area_px": [int(min(areas)), int(max(areas))], "spread_m": spread,
              "bottleneck_frames": {"min": int(min(bottlenecks.values())), "max": int(max(bottlenecks.values()))}}
    return TargetLocator(background.astype(np.uint8), threshold, chroma, chroma_limit,
                         (AREA_SLACK[0] * min(areas), AREA_SLACK[1] * max(areas)), homography, targets, bottlenecks,
                         spread + margin, report, pixel_limit, patches)


def _places_by_episode(rows: np.ndarray | None) -> dict[int, np.ndarray]:
    if rows is None or len(rows) == 0:
        return {}
    rows = np.asarray(rows, np.float64)
    return {int(e): rows[rows[:, 0] == e, 1:] for e in np.unique(rows[:, 0])}


def fit_grasp_places(locator: TargetLocator, hands: dict[int, list[tuple[int, np.ndarray]]],
                     closes: dict[int, int], quantile: float) -> None:
    """Learn the grasp check's second opinion from each demonstration's hand frames (frame, image) from its
    bottleneck to its grasp (``closes``: its first closing frame): where the object sits in each, and, for two
    demonstrations at the same number of frames before their grasps, how far apart and how unlike in size (the
    ``1 - quantile`` quantile of the distances, the ``quantile`` ones of the area ratios): two correct
    approaches differ by that much."""
    places = {}
    for e, frames in hands.items():
        found = [(f, hand_object_place(im, locator.chroma, locator.pixel_limit, locator.hand_reference))
                 for f, im in frames]
        rows = [[f, *p] for f, p in found if p is not None]
        if rows:
            places[int(e)] = np.array(rows, np.float64)
    by_lead: dict[int, list[np.ndarray]] = {}
    for e, rows in places.items():
        for f, u, v, area in rows:
            by_lead.setdefault(closes[e] - int(f), []).append(np.array([u, v, area]))
    gaps, ratios = [], []
    for group in by_lead.values():
        g = np.array(group)
        if len(g) < 2:
            continue
        d = np.hypot(g[:, None, 0] - g[None, :, 0], g[:, None, 1] - g[None, :, 1])
        r = g[:, None, 2] / g[None, :, 2]
        off = ~np.eye(len(g), dtype=bool)
        gaps.append(d[off])
        ratios.append(r[off])
    if len(places) < 2 or not gaps:
        locator.report["grasp_places"] = {"used": False, "why": "fewer than two demonstrations show the object in "
                                                                "their hand view before the grasp"}
        return
    gaps, ratios = np.concatenate(gaps), np.concatenate(ratios)
    locator.grasp_places = places
    locator.place_tolerance = float(np.quantile(gaps, 1.0 - quantile))
    locator.place_area_ratio = (float(np.quantile(ratios, quantile)), float(np.quantile(ratios, 1.0 - quantile)))
    locator.report["grasp_places"] = {"used": True, "demonstrations": len(places), "pairs": int(len(gaps)),
                                      "tolerance_px": locator.place_tolerance,
                                      "area_ratio": list(locator.place_area_ratio)}


def fit_turn(locator: TargetLocator, hands: dict[int, list[np.ndarray]], yaws: dict[int, np.ndarray],
             min_pairs: int = 20, min_correlation: float = 0.5) -> None:
    """Learn, from the demonstrations' approaches, how the object's silhouette in the hand view turns when the
    hand turns (the object stands still while the hand turns towards its grasp orientation), and keep each
    demonstration's silhouette at its bottleneck. ``hands``: each demonstration's hand frames from its start
    to its bottleneck; ``yaws``: the hand's heading (rad) at those frames. Left unlearned (the demonstration's
    orientation is replayed as it was) when the approaches turn too little or the silhouette does not follow."""
    reference = np.median(np.concatenate([hands[e][-1].reshape(-1, 3) for e in hands]), axis=0).astype(np.float32)
    silhouettes, pairs = {}, []
    for e in hands:
        last = hand_silhouette(hands[e][-1], locator.chroma, locator.pixel_limit, reference)
        if last is None:
            continue
        silhouettes[e] = last
        for image, yaw in zip(hands[e][:-1], yaws[e][:-1]):
            turn = float(wrap_half_turn(np.degrees(yaws[e][-1] - yaw), unit="deg"))
            if abs(turn) < 5.0:
                continue
            live = hand_silhouette(image, locator.chroma, locator.pixel_limit, reference)
            if live is not None:
                pairs.append((turn, silhouette_rotation(live, last)[0]))
    locator.demo_silhouettes, locator.hand_reference = silhouettes, reference
    report = {"frames": len(pairs), "demonstrations": len(silhouettes)}
    if len(pairs) >= min_pairs:
        turn, seen = np.array(pairs).T
        slope = float(np.sum(turn * seen) / np.sum(turn ** 2))
        correlation = float(np.corrcoef(turn, seen)[0, 1])
        order = sorted(silhouettes)[:12]
        found = [silhouette_rotation(silhouettes[a], silhouettes[b]) for a in order for b in order if a < b]
        between, scores = np.abs([f[0] for f in found]), np.array([f[1] for f in found])
        report.update({"slope": slope, "correlation": correlation,
                       "between_demonstrations_deg": {"p50": float(np.median(between)),
                                                      "p90": float(np.percentile(between, 90))} if found else {}})
        if abs(correlation) >= min_correlation and found:
            locator.rotation_slope = slope
            # turns smaller than what the demonstrations themselves disagree by are left alone
            locator.rotation_deadband = float(np.percentile(between, 90))
            # once turned, the silhouette must match as well as two demonstrations' do (their 5% quantile)
            locator.silhouette_threshold = float(np.percentile(scores, 5))
            report["silhouette_threshold"] = locator.silhouette_threshold
    locator.report["turn"] = report
