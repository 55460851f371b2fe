"""The landmark method's model: what moves between the demonstrations' scenes, and how each demonstration's
motion follows it.

Learned from the recording alone (nothing of a rig or a task is set by hand):
- the empty scene: the per-pixel median of the demonstrations' first third-person frames (the arm starts from
  the same pose; the things on the table stand elsewhere in each);
- the landmarks: regions of those first frames that differ from the empty scene, grouped across the
  demonstrations by their colour (chromaticity: brightness divided out). A group seen in at least
  LANDMARK_SHARE of the demonstrations, that moves between them, is a landmark; its features in a frame are its
  largest region's centroid (u, v, px) and the square root of its area (how near the camera it stands);
- the scene's changes as a whole (every region that differs from the empty scene: their area-weighted centroid and
  the square root of their total area) join the landmarks where that predicts the demonstrations' paths better
  (leave-one-out, by MASS_GAIN): a thing whose colour patch sits off its middle, or is partly hidden, is then
  placed by all of it (button-press-topdown's box, whose red button the arm half hides);
- the motion model: each demonstration is cut at its gripper's changes (close, open) into segments, each segment
  put on a phase from 0 to 1; at each phase the commanded hand position is regressed (ridge, on the standardised
  features of every landmark) across the demonstrations. Its slope J(phase) says how the hand's path at that
  phase moves when the landmarks move.

At run time a retrieved chunk of demonstration d is moved, frame by frame, by J(phase) (x_live - x_d): the
demonstration replayed where the landmarks now stand, phase by phase (the grasp follows the object, the place
follows the goal). The corrections the demonstrations needed to be moved onto one another (their nearest
neighbour's, leave-one-out) bound what the method trusts; a larger one stops the run ("correction").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy.aligned.alignment import Region, _regions, empty_scene

#: A region smaller than this share of the image is a speck, never a landmark.
MIN_AREA_SHARE = 0.0008
#: Regions whose chromaticities lie within this of one another (chained) are one landmark.
CHROMA_LINK = 0.1
#: A landmark is seen in at least this share of the demonstrations' first frames.
LANDMARK_SHARE = 0.8
#: ... and moves between them: its centroid's spread (px, standard deviation) at least this.
MIN_SPREAD_PX = 1.0
#: Grid points per segment the motion model is fitted at.
PHASE_POINTS = 160
#: Ridge penalties tried (standardised features); with the bandwidths, the pair with the least leave-one-out
#: error is kept.
RIDGES = (0.03, 0.3, 3.0)
#: Bandwidths tried, as multiples of the median distance between a demonstration and its nearest other one
#: (standardised features); inf: every demonstration weighs the same (one global fit).
BANDWIDTHS = (1.0, 2.0, 4.0, np.inf)
#: The fewest demonstrations (with every landmark seen and the common segment count) to fit on.
MIN_DEMOS = 6
#: A scene is covered by the demonstrations while every landmark's pixel position lies within their range widened
#: by this share of it on each side.
COVERAGE_SLACK = 0.1
#: Near the replayed demonstration its own path is kept: its deviation from the fitted path is added back with the
#: weight exp(-d^2 / 2 r^2), r this share of the median distance between a demonstration and its nearest other
#: one (so a scene where a demonstration was recorded replays that demonstration as it was).
OWN_PATH_SHARE = 0.5
#: A region is a landmark only if its area lies within these multiples of the smallest and largest the
#: demonstrations showed it with (a lit patch of the table or the arm is not the goal marker).
AREA_SLACK = (0.4, 2.5)
#: A gripper command change of at least this cuts a segment.
GRIPPER_CUT = 0.3
#: A segment whose hand travels less than this (m) is put on a phase by time.
MIN_PATH_M = 0.01
#: The scene's changes as a whole join the colour landmarks when the demonstrations' paths are then predicted
#: (leave-one-out, the median of each one's largest error) within this share of the error without them.
MASS_GAIN = 0.9


class LandmarkError(ValueError):
    """The demonstrations cannot fit the landmark model (no landmark, too few demonstrations, no pose actions)."""


@dataclass
class Landmarks:
    """Each landmark's features in one frame: [3 * K] (u, v, sqrt(area) per landmark), or what was missing."""

    features: np.ndarray | None
    missing: list[int]
    episode: int | None = None  # the demonstration whose landmarks stood nearest (the one a run replays)


def _big(regions: list[Region], image_area: int) -> list[Region]:
    return [r for r in regions if r.area >= MIN_AREA_SHARE * image_area]


def changes_as_a_whole(regions: list[Region]) -> np.ndarray | None:
    """The scene's changes as one landmark: the area-weighted centroid (u, v) of every region that differs from
    the empty scene and the square root of their total area (None: nothing differs)."""
    total = float(sum(r.area for r in regions))
    if total <= 0:
        return None
    centre = sum(np.asarray(r.pixel, np.float64) * r.area for r in regions) / total
    return np.array([centre[0], centre[1], np.sqrt(total)])


def group_by_colour(regions_per_frame: list[list[Region]]) -> list[list[tuple[int, Region]]]:
    """The regions of the frames grouped into the things the frames show, by colour: as many groups as most
    frames have regions, and no two regions of one frame in one group (each frame's regions are matched to the
    groups' mean colours, one to one, and the means updated, a few rounds). Each group: [(frame index, region)]."""
    counts = [len(r) for r in regions_per_frame]
    if not any(counts):
        return []
    k = max(set(counts) - {0}, key=lambda c: (counts.count(c), c))
    seed = next(regs for regs in regions_per_frame if len(regs) == k)
    centres = np.array([r.chroma for r in seed], np.float64)
    groups: list[list[tuple[int, Region]]] = []
    for _ in range(5):
        groups = [[] for _ in range(k)]
        for i, regs in enumerate(regions_per_frame):
            for g, r in _match(regs, centres, 2 * CHROMA_LINK):
                groups[g].append((i, r))
        centres = np.array([np.mean([r.chroma for _, r in grp], 0) if grp else c for grp, c in zip(groups, centres)])
    return [g for g in groups if g]


def _match(regions: list[Region], centres: np.ndarray, limit: float,
           areas: np.ndarray | None = None) -> list[tuple[int, Region]]:
    """Regions matched one to one to the colour centres (the largest region first among equals), within
    ``limit``, and (given each centre's ``areas`` [K, 2], px) of a size the centre's thing has: [(centre index,
    region)]."""
    if not regions or not len(centres):
        return []
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(np.array([r.chroma for r in regions])[:, None] - centres[None], axis=2)
    if areas is not None:
        area = np.array([r.area for r in regions], np.float64)[:, None]
        wrong = (area < AREA_SLACK[0] * areas[None, :, 0]) | (area > AREA_SLACK[1] * areas[None, :, 1])
        cost = np.where(wrong, 10.0 + cost, cost)  # never a match: beyond any limit
    # among regions of one colour the largest is the thing (a speck of its colour is not)
    tie = 1e-4 * np.array([r.area for r in regions], np.float64)[:, None] / max(r.area for r in regions)
    rows, cols = linear_sum_assignment(cost - tie)
    return [(int(c), regions[r]) for r, c in zip(rows, cols) if cost[r, c] < limit]


def gripper_changes(before: float, after: float) -> bool:
    """Whether the gripper command changes between two frames: by GRIPPER_CUT or more (a change of GRIPPER_CUT
    itself counts whatever the float width: push-v3's expert steps 0.5 -> 0.2, 0.29999998 in float32)."""
    return abs(float(after) - float(before)) >= GRIPPER_CUT - 1e-6


def segments(actions: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges of an episode's actions cut at each change of the gripper command."""
    grip = actions[:, 7]
    cuts = [0] + [t for t in range(1, len(grip)) if gripper_changes(grip[t - 1], grip[t])] + [len(grip)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _segment_phase(positions: np.ndarray) -> np.ndarray:
    """A segment's frames on a phase from 0 to 1: the share of the segment's path travelled (by time where the
    hand hardly moves: under MIN_PATH_M)."""
    n = len(positions)
    if n == 1:
        return np.zeros(1)
    travelled = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(positions, axis=0), axis=1))]
    if travelled[-1] < MIN_PATH_M:
        return np.arange(n) / (n - 1)
    return travelled / travelled[-1]


def phases(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's segment index and phase in [0, 1] within it."""
    seg = np.zeros(len(actions), int)
    phase = np.zeros(len(actions))
    for s, (a, b) in enumerate(segments(actions)):
        seg[a:b] = s
        phase[a:b] = _segment_phase(actions[a:b, :3])
    return seg, phase


def _at_phase(positions: np.ndarray, a: int, b: int, phase: np.ndarray) -> np.ndarray:
    own = _segment_phase(positions[a:b])
    return np.stack([np.interp(phase, own, positions[a:b, i]) for i in range(positions.shape[1])], 1)


def _local_fit(x: np.ndarray, y: np.ndarray, query: np.ndarray, bandwidth: float,
               lam: float) -> np.ndarray:
    """Locally weighted ridge regression of y [D, K] on x [D, F] (standardised), evaluated at ``query`` [F]:
    demonstrations weigh exp(-d^2 / 2 bandwidth^2) by their distance d from the query (the fit is linear, its
    intercept not penalised). Near a demonstration it reproduces it; far from all, it is the linear fit."""
    d2 = np.sum((x - query) ** 2, axis=1)
    w = np.ones(len(x)) if not np.isfinite(bandwidth) else np.exp(-(d2 - d2.min()) / (2 * bandwidth ** 2))
    mx = w @ x / w.sum()
    my = w @ y / w.sum()
    xc = x - mx
    a = xc.T @ (w[:, None] * xc) + lam * np.eye(x.shape[1])
    return my + (query - mx) @ np.linalg.solve(a, xc.T @ (w[:, None] * (y - my)))


class LandmarkModel:
    """Landmarks found in a third-person frame, and the per-phase slope that moves a demonstration with them."""

    def __init__(self, background: np.ndarray, threshold: float, chromas: list[np.ndarray], mean: np.ndarray,
                 scale: np.ndarray, episode_features: dict[int, np.ndarray], paths: np.ndarray,
                 bandwidth: float, ridge: float, spacing: float, segment_count: int, max_correction: float,
                 report: dict,
                 episode_phases: dict[int, np.ndarray] | None = None,
                 episode_actions: dict[int, np.ndarray] | None = None, areas: np.ndarray | None = None,
                 episode_hands: dict[int, np.ndarray] | None = None, codec: tuple[str, int] | None = None,
                 mass: bool = False):
        self.background = background
        # the scene's changes as a whole are the last landmark (after the colour ones); its areas row is last too
        self.mass = bool(mass)
        self.threshold = float(threshold)
        self.chromas = [np.asarray(c, np.float32) for c in chromas]  # per landmark: its training regions' colours
        # per landmark: the smallest and largest area (px) its region had in the demonstrations' first frames
        self.areas = None if areas is None else np.asarray(areas, np.float64)
        self.mean = np.asarray(mean, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.episode_features = {int(e): np.asarray(f, np.float64) for e, f in episode_features.items()}
        # the fitted demonstrations' positions at each segment's phases, [segments, PHASE_POINTS, D, 3], in the
        # order of sorted(episode_features)
        self.paths = np.asarray(paths, np.float64)
        self.bandwidth = float(bandwidth)
        self.ridge = float(ridge)
        self.spacing = float(spacing)  # the median distance between a demonstration and its nearest other one
        self._own: dict[int, np.ndarray] = {}  # a demonstration's deviation from the path fitted through its scene
        self._train_x = np.stack([self.standardised(self.episode_features[e]) for e in sorted(self.episode_features)]) \
            if self.episode_features else np.zeros((0, len(self.mean)))
        self._cache: tuple[bytes, np.ndarray] | None = None
        raw = np.stack([self.episode_features[e] for e in sorted(self.episode_features)]) \
            if self.episode_features else np.zeros((0, len(self.mean)))
        self._low, self._high = (raw.min(0), raw.max(0)) if len(raw) else (None, None)
        self.segment_count = int(segment_count)
        self.max_correction = float(max_correction)
        self.report = report
        # each demonstration's frames: (segment, phase) [T, 2], as fitted
        self.episode_phases = {int(e): np.asarray(p, np.float64) for e, p in (episode_phases or {}).items()}
        # each demonstration's actions as recorded (pose + gripper), [T, 8]: what a run replays, moved
        self.episode_actions = {int(e): np.asarray(a, np.float64) for e, a in (episode_actions or {}).items()}
        # each demonstration's measured hand position per frame, [T, 3] (where the arm was while the command led
        # it; absent: the commands stand in)
        self.episode_hands = {int(e): np.asarray(h, np.float64) for e, h in (episode_hands or {}).items()}
        # how the demonstrations' frames were stored: a live frame is looked at after the same round trip (JPEG's
        # halved colour resolution desaturates a small marker: a green one read (0.17, 0.71) stored, (0.08, 0.86)
        # live, beyond the colour the landmark is matched by)
        self.codec = None if codec is None else (str(codec[0]), int(codec[1]))

    @property
    def count(self) -> int:
        """How many colour landmarks (the scene's changes as a whole, where used, come after them)."""
        return len(self.chromas)

    def name(self, index: int) -> str:
        """A landmark as the messages name it."""
        return f"landmark {index + 1}" if index < self.count else "the changed part of the scene as a whole"

    # -- finding the landmarks ------------------------------------------------
    def find(self, image: np.ndarray) -> Landmarks:
        """The landmarks in a third-person frame (brought to the recording's size), the arm at its start pose."""
        h, w = self.background.shape[:2]
        if image.shape[:2] != (h, w):
            import cv2

            image = cv2.resize(np.asarray(image), (w, h), interpolation=cv2.INTER_AREA)
        image = self.as_stored(image)
        regions = _big(_regions(np.asarray(image, np.float32), self.background, self.threshold), h * w)
        centres = np.array([c.mean(0) for c in self.chromas], np.float64)
        limits = [max(CHROMA_LINK, 3 * float(np.linalg.norm(c - c.mean(0), axis=1).max())) for c in self.chromas]
        matched = {g: r for g, r in _match(regions, centres, np.inf,
                                           None if self.areas is None else self.areas[:self.count])}
        out, missing = [], []
        for k in range(self.count):
            r = matched.get(k)
            if r is None or np.linalg.norm(r.chroma - centres[k]) >= limits[k] or \
                    (self.areas is not None and not AREA_SLACK[0] * self.areas[k, 0] <= r.area
                     <= AREA_SLACK[1] * self.areas[k, 1]):
                missing.append(k)
                continue
            out += [r.pixel[0], r.pixel[1], np.sqrt(r.area)]
        if self.mass and not missing:
            whole = changes_as_a_whole(regions)
            if whole is None or (self.areas is not None and not AREA_SLACK[0] * self.areas[self.count, 0] <=
                                 whole[2] ** 2 <= AREA_SLACK[1] * self.areas[self.count, 1]):
                missing.append(self.count)
            else:
                out += whole.tolist()
        if missing:
            return Landmarks(None, missing)
        features = np.array(out)
        return Landmarks(features, missing, self.nearest_episode(features) if self.episode_features else None)

    def coverage(self, features: np.ndarray) -> tuple[float, int | None]:
        """How far the scene's landmarks stand beyond where the demonstrations had theirs: the largest excess of a
        landmark's pixel coordinate (u or v) beyond the demonstrations' range, as a share of that range (0 inside
        it), and which landmark (None inside). A run is trusted while it is at most COVERAGE_SLACK."""
        if self._low is None:
            return float("inf"), None
        f = np.asarray(features, np.float64)
        span = np.maximum(self._high - self._low, 1e-6)
        excess = np.maximum(np.maximum(self._low - f, f - self._high), 0.0) / span
        excess[2::3] = 0.0  # the size (how near the camera) is too coarse to judge by
        worst = int(np.argmax(excess))
        return (float(excess[worst]), worst // 3) if excess[worst] > 0 else (0.0, None)

    def as_stored(self, image: np.ndarray) -> np.ndarray:
        """A live frame as the recording would have stored it (its codec's round trip; as is without one)."""
        if self.codec is None:
            return image
        from recorder.dataset_format import decode_image, encode_image

        return decode_image(encode_image(np.ascontiguousarray(image, np.uint8), *self.codec), "a live frame")

    def standardised(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float64) - self.mean) / self.scale

    def nearest_episode(self, features: np.ndarray, among=None) -> int:
        x = self.standardised(features)
        eps = [e for e in self.episode_features if among is None or e in among]
        return min(eps, key=lambda e: float(np.linalg.norm(self.standardised(self.episode_features[e]) - x)))

    # -- moving a demonstration -------------------------------------------------
    def _fitted(self, features: np.ndarray) -> np.ndarray:
        s, g, d, _ = self.paths.shape
        y = self.paths.transpose(2, 0, 1, 3).reshape(d, -1)
        return _local_fit(self._train_x, y, self.standardised(features), self.bandwidth, self.ridge).reshape(s, g, 3)

    def path_through(self, features: np.ndarray, episode: int | None = None) -> np.ndarray:
        """The path through a scene whose landmarks have ``features``: the hand's position at each segment's
        phases, [segments, PHASE_POINTS, 3] (the demonstrations' paths regressed on their landmarks). Given the
        ``episode`` replayed, its own deviation from the fit is kept near its scene (OWN_PATH_SHARE)."""
        key = np.asarray(features, np.float64).tobytes() + repr(episode).encode()
        if self._cache is None or self._cache[0] != key:
            path = self._fitted(features)
            eps = sorted(self.episode_features)
            if episode is not None and int(episode) in self.episode_features:
                j = eps.index(int(episode))
                if j not in self._own:
                    self._own[j] = self.paths[:, :, j] - self._fitted(self.episode_features[int(episode)])
                d2 = float(np.sum((self.standardised(features) - self._train_x[j]) ** 2))
                path = path + np.exp(-d2 / (2 * (OWN_PATH_SHARE * self.spacing) ** 2)) * self._own[j]
            self._cache = (key, path)
        return self._cache[1]

    def path_point(self, segment: int, phase: float, features: np.ndarray,
                   episode: int | None = None) -> np.ndarray | None:
        """Where the hand goes at a segment's phase in a scene whose landmarks have ``features`` (None past the
        segments the model knows), replaying ``episode``."""
        if segment >= self.segment_count:
            return None
        path = self.path_through(features, episode)[segment]
        points = np.linspace(0.0, 1.0, PHASE_POINTS)
        return np.stack([np.interp(phase, points, path[:, k]) for k in range(3)])

    def corrections(self, episode: int, frames: np.ndarray, positions: np.ndarray,
                    features: np.ndarray) -> np.ndarray:
        """The xyz shift (m) that takes ``episode``'s frames ``frames`` (commanded at ``positions``, [n, 3]) onto
        the path of a scene whose landmarks have ``features``: each frame to where the model puts the hand at
        the frame's phase. The demonstration keeps its timing, gripper and orientation; its path is the one the
        demonstrations make through such a scene. Zero for an episode the model has not put on phases, and
        past the segments it knows."""
        table = self.episode_phases.get(int(episode))
        out = np.zeros((len(frames), 3))
        if table is None:
            return out
        frames = np.clip(np.asarray(frames, int), 0, len(table) - 1)
        for i, f in enumerate(frames):
            point = self.path_point(int(table[f, 0]), float(table[f, 1]), features, episode)
            if point is not None:
                out[i] = point - positions[i]
        return out

    def plan(self, episode: int, features: np.ndarray) -> np.ndarray:
        """``episode``'s actions moved onto the path through a scene whose landmarks have ``features``: [T, 8]."""
        return self.plan_with_hands(episode, features)[0]

    def plan_with_hands(self, episode: int, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan and where the demonstration's hand got to on each frame's command (measured at the next
        frame), moved the same way, [T, 3]: a replay has done a frame when its hand is where the demonstration's
        got to (pressing on a button or pushing, the command runs ahead of the hand by centimetres)."""
        actions = self.episode_actions[int(episode)]
        shift = self.corrections(episode, np.arange(len(actions)), actions[:, :3], features)
        out = np.array(actions, copy=True)
        out[:, :3] += shift
        hands = self.episode_hands.get(int(episode))
        if hands is None or hands.shape != (len(actions), 3) or not np.any(hands):
            return out, out[:, :3].copy()
        # where the demonstration's hand got to on each frame's command: measured at the next frame (the last
        # command, held, is where it settles)
        after = np.vstack([hands[1:] + shift[1:], out[-1:, :3]])
        return out, after

    # -- persistence --------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        eps = sorted(self.episode_features)
        phased = sorted(self.episode_phases)
        return {"landmark_phase_episodes": np.array(phased, np.int64),
                "landmark_phase_lengths": np.array([len(self.episode_phases[e]) for e in phased], np.int64),
                "landmark_phases": (np.concatenate([self.episode_phases[e] for e in phased]) if phased
                                    else np.zeros((0, 2))).astype(np.float64),
                **({} if self.areas is None else {"landmark_areas": self.areas.astype(np.float64)}),
                "landmark_actions": (np.concatenate([self.episode_actions[e] for e in phased]) if phased
                                     else np.zeros((0, 8))).astype(np.float64),
                **({} if set(self.episode_hands) != set(phased) or not phased else {
                    "landmark_hands": np.concatenate([self.episode_hands[e] for e in phased]).astype(np.float64)}),
                "landmark_background": self.background.astype(np.float32),
                "landmark_paths": self.paths.astype(np.float64),
                "landmark_episodes": np.array(eps, np.int64),
                "landmark_features": np.stack([self.episode_features[e] for e in eps]).astype(np.float64),
                **{f"landmark_chroma_{k}": c for k, c in enumerate(self.chromas)}}

    def to_json(self) -> dict:
        return {"kind": "landmarks", "threshold": self.threshold, "codec": None if self.codec is None else list(self.codec), "ridge": self.ridge, "spacing": self.spacing,
                "bandwidth": self.bandwidth if np.isfinite(self.bandwidth) else None, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "segment_count": self.segment_count, "landmarks": self.count,
                "changes_as_a_whole": self.mass, "max_correction": self.max_correction, "report": self.report}

    @classmethod
    def from_json(cls, doc: dict, arrays: dict) -> "LandmarkModel":
        eps = [int(e) for e in arrays["landmark_episodes"]]
        feats = np.asarray(arrays["landmark_features"], np.float64)
        bounds = np.r_[0, np.cumsum(arrays["landmark_phase_lengths"])]
        phased = {int(e): np.asarray(arrays["landmark_phases"][a:b]) for e, a, b in
                  zip(arrays["landmark_phase_episodes"], bounds[:-1], bounds[1:])}
        acted = {int(e): np.asarray(arrays["landmark_actions"][a:b]) for e, a, b in
                 zip(arrays["landmark_phase_episodes"], bounds[:-1], bounds[1:])}
        hands = {} if "landmark_hands" not in arrays else {
            int(e): np.asarray(arrays["landmark_hands"][a:b]) for e, a, b in
            zip(arrays["landmark_phase_episodes"], bounds[:-1], bounds[1:])}
        return cls(np.asarray(arrays["landmark_background"], np.float32), doc["threshold"],
                   [np.asarray(arrays[f"landmark_chroma_{k}"]) for k in range(int(doc["landmarks"]))],
                   np.array(doc["mean"]), np.array(doc["scale"]), dict(zip(eps, feats)),
                   np.asarray(arrays["landmark_paths"], np.float64), np.inf if doc["bandwidth"] is None else doc["bandwidth"], doc["ridge"], doc["spacing"],
                   doc["segment_count"], doc["max_correction"],
                   doc["report"], phased, acted, arrays.get("landmark_areas"), hands, doc.get("codec"),
                   bool(doc.get("changes_as_a_whole", False)))


def fit_landmarks(first_thirds: dict[int, np.ndarray], actions: dict[int, np.ndarray],
                  margin: float, hands: dict[int, np.ndarray] | None = None,
                  codec: tuple[str, int] | None = None) -> LandmarkModel:
    """The landmark model from each demonstration's first third-person frame (at the camera's size), its actions
    (pose + gripper) and, where recorded, its measured hand positions [T, 3]; ``codec``: how the frames were
    stored (live frames are looked at after the same round trip). Raises LandmarkError saying what is missing."""
    if not actions or next(iter(actions.values())).shape[1] != 8:
        raise LandmarkError("the landmark method moves end-effector pose actions; this dataset's actions are not "
                            "pose + gripper")
    episodes = sorted(int(e) for e in first_thirds)
    if len(episodes) < MIN_DEMOS:
        raise LandmarkError(f"the landmark method needs at least {MIN_DEMOS} demonstrations; this recording has "
                            f"{len(episodes)}")
    frames = np.stack([first_thirds[e] for e in episodes]).astype(np.float32)
    area = frames.shape[1] * frames.shape[2]
    background, threshold = empty_scene(frames)
    regions = [_big(_regions(f, background, threshold), area) for f in frames]
    groups = []
    for group in group_by_colour(regions):
        seen = {i for i, _ in group}
        if len(seen) < LANDMARK_SHARE * len(episodes):
            continue
        largest = {}
        for i, r in group:
            if i not in largest or r.area > largest[i].area:
                largest[i] = r
        spread = np.array([r.pixel for r in largest.values()]).std(0).max()
        if spread >= MIN_SPREAD_PX:
            groups.append((np.array([r.chroma for _, r in group], np.float32),
                           (min(r.area for r in largest.values()), max(r.area for r in largest.values()))))
    # things of one colour cannot be told apart run after run: only landmarks whose colours stand apart are kept
    centres = [g.mean(0) for g, _ in groups]
    groups = [g for i, g in enumerate(groups)
              if all(np.linalg.norm(centres[i] - c) >= CHROMA_LINK for j, c in enumerate(centres) if j != i)]
    areas = np.array([a for _, a in groups], np.float64).reshape(-1, 2)
    groups = [g for g, _ in groups]
    if not groups:
        raise LandmarkError("nothing in the demonstrations' first third-person frames moves between them in a "
                            f"colour seen in {100 * LANDMARK_SHARE:.0f}% of them and apart from every other's colour: no "
                            "landmark to follow")
    probe = LandmarkModel(background, threshold, groups, np.zeros(1), np.ones(1), {}, np.zeros((0, 2, 0, 3)),
                          np.inf, 1.0, 1.0, 0, 0.0, {}, areas=areas)
    found = {e: probe.find(f) for e, f in zip(episodes, frames)}
    feats = {e: l.features for e, l in found.items() if l.features is not None}
    # cut once: the fit below uses these very segments
    cut = {e: segments(np.asarray(actions[e], np.float64)) for e in feats}
    counts = {e: len(c) for e, c in cut.items()}
    if not counts:
        raise LandmarkError("no demonstration shows every landmark in its first third-person frame")
    common = max(set(counts.values()), key=lambda c: (sum(v == c for v in counts.values()), -c))
    used = [e for e in sorted(feats) if counts[e] == common]
    if len(used) < MIN_DEMOS:
        raise LandmarkError(f"only {len(used)} demonstrations show every landmark and move in the same "
                            f"{common} gripper segment(s); the landmark method needs {MIN_DEMOS}")
    grid = np.linspace(0.0, 1.0, PHASE_POINTS)
    paths = np.zeros((common, PHASE_POINTS, len(used), 3))  # each demonstration's position at each phase
    for j, e in enumerate(used):
        a = np.asarray(actions[e], np.float64)
        for s, (lo, hi) in enumerate(cut[e]):
            paths[s, :, j] = _at_phase(a[:, :3], lo, hi, grid)
    fit = _fit_paths(np.stack([feats[e] for e in used]), paths)
    # the scene's changes as a whole join the landmarks where the paths are then predicted clearly better
    wholes = {e: changes_as_a_whole(regions[episodes.index(e)]) for e in used}
    colour_score, mass_score, mass = fit["score"], None, False
    if all(w is not None for w in wholes.values()):
        with_mass = _fit_paths(np.stack([np.r_[feats[e], wholes[e]] for e in used]), paths)
        mass_score = with_mass["score"]
        if mass_score <= MASS_GAIN * colour_score:
            fit, mass = with_mass, True
            feats = {e: np.r_[feats[e], wholes[e]] for e in used}
            whole_areas = np.array([wholes[e][2] ** 2 for e in used])
            areas = np.vstack([areas, [whole_areas.min(), whole_areas.max()]])
    mean, scale, typical, factor, lam, errors, loo = (fit[k] for k in ("mean", "scale", "typical", "factor",
                                                                       "ridge", "errors", "loo"))
    phased = {}
    for e, a in actions.items():
        seg, phase = phases(np.asarray(a, np.float64))
        phased[int(e)] = np.stack([seg, phase], 1)
    model = LandmarkModel(background, threshold, groups, mean, scale, {e: feats[e] for e in used}, paths,
                          factor * typical, lam, typical, common, 0.0, {}, phased,
                          {int(e): np.asarray(a) for e, a in actions.items()}, areas, hands, codec, mass)
    # what the method is trusted with: the most any demonstration's nearest other one (by landmarks) must be moved
    # to follow the path predicted (from the others) through the first one's scene
    predicted = loo.reshape(len(used), common, PHASE_POINTS, 3)
    needed, plain_error = [], []
    for j, e in enumerate(used):
        others = [o for o in used if o != e]
        k = used.index(model.nearest_episode(feats[e], among=others))
        needed.append(float(np.linalg.norm(predicted[j] - paths[:, :, k], axis=-1).max()))
        plain_error.append(float(np.linalg.norm(paths[:, :, k] - paths[:, :, j], axis=-1).max()))
    spread = float(np.max(needed))
    report = {"demonstrations": len(used), "of": len(episodes), "landmarks": len(groups),
              "landmark_colours": [np.round(g.mean(0), 3).tolist() for g in groups],
              "changes_as_a_whole": mass,
              "loo_score_m": {"colour landmarks": colour_score, "with the changes as a whole": mass_score},
              "segments": common, "ridge": lam,
              "bandwidth": None if not np.isfinite(factor) else factor * typical,
              "loo_error_m": {"p50": float(np.median(errors.max(axis=(1, 2)))), "max": float(errors.max())},
              "loo_segment_end_error_m": {"p50": float(np.median(errors[:, :, -1].max(1))),
                                          "max": float(errors[:, :, -1].max())},
              "nearest_unmoved_error_m": {"p50": float(np.median(plain_error)), "max": float(np.max(plain_error))},
              "largest_needed_m": spread}
    model.max_correction = spread + margin
    model.report = report
    return model


def _fit_paths(x_raw: np.ndarray, paths: np.ndarray) -> dict:
    """The local ridge fit of the demonstrations' paths [segments, PHASE_POINTS, D, 3] on their landmark features
    [D, F], its bandwidth and ridge chosen by leave-one-out error; ``score`` is the median over the
    demonstrations of each one's largest leave-one-out error (m)."""
    # one scale for every feature (the pixel coordinates' typical spread): distances stay in pixels, so a feature
    # that hardly varies (a landmark's size, whose noise is as large as its spread) weighs little instead of as
    # much as a position
    n, common = len(x_raw), paths.shape[0]
    positions = x_raw.std(0)[np.arange(x_raw.shape[1]) % 3 != 2]
    mean = x_raw.mean(0)
    scale = np.full(x_raw.shape[1], max(float(np.median(positions)), 1e-6))
    x = (x_raw - mean) / scale
    y = paths.transpose(2, 0, 1, 3).reshape(n, -1)  # each demonstration's whole path, flattened
    gaps = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    typical = float(np.median(gaps.min(1)))  # how far a demonstration's scene is from its nearest other one
    best = None
    for factor in BANDWIDTHS:
        for lam in RIDGES:
            # leave one out: each demonstration's path predicted from the others' at its scene
            loo = np.stack([_local_fit(np.delete(x, j, 0), np.delete(y, j, 0), x[j], factor * typical, lam)
                            for j in range(n)])
            errors = np.linalg.norm((loo - y).reshape(n, common, PHASE_POINTS, 3), axis=-1)
            score = float(np.median(errors.max(axis=(1, 2))))
            if best is None or score < best["score"]:
                best = {"score": score, "factor": factor, "ridge": lam, "errors": errors, "loo": loo}
    return {**best, "mean": mean, "scale": scale, "typical": typical}
