"""The cup-grasping task: training placements, evaluation scenarios, success.

"In distribution" is precise here: the training placements are an explicit,
seeded list (a jittered grid over the training region); every scenario is
defined relative to that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_drivers.sim.scene import DISTRACTOR_MODELS, Lighting

SCENARIOS = ("in_distribution", "interpolate", "extrapolate", "distractors", "lighting")
SUCCESS_LIFT_M = 0.05


@dataclass(frozen=True)
class Placement:
    x: float  # robot base frame, metres
    y: float
    yaw: float  # radians; the handle points along the mug's +y

    def as_array(self) -> np.ndarray:
        return np.array([self.x, self.y, self.yaw])


@dataclass(frozen=True)
class TaskConfig:
    region_min: tuple[float, float] = (0.42, -0.15)  # training region for the mug, base frame
    region_max: tuple[float, float] = (0.62, 0.15)
    yaw_range: tuple[float, float] = (-np.pi / 4, np.pi / 4)
    grid: tuple[int, int] = (5, 6)  # training placements = rows x cols jittered grid
    placement_seed: int = 0
    # in_distribution: the mug put back on a training placement's marks by hand
    noise_xy: float = 0.005  # m
    noise_yaw: float = 0.05  # rad
    interpolate_min_gap: float = 0.02  # interpolate: strictly farther than this from every training placement
    extrapolate_margin: tuple[float, float] = (0.05, 0.09)  # how far outside the region (m)
    max_distractors: int = 3

    @property
    def n_training_placements(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class Scene:
    """Everything reset() puts into the world for one episode."""

    scenario: str
    seed: int
    mug: Placement
    distractors: list = field(default_factory=list)  # (model, scale, (x, y, yaw))
    lighting: Lighting = field(default_factory=Lighting)
    training_index: int | None = None  # the training placement it derives from, when it does


def training_placements(config: TaskConfig) -> list[Placement]:
    """The explicit list of training placements: one per cell of a jittered grid."""
    rng = np.random.default_rng(config.placement_seed)
    rows, cols = config.grid
    lo, hi = np.asarray(config.region_min), np.asarray(config.region_max)
    cell = (hi - lo) / np.array([rows, cols])
    out = []
    for r in range(rows):
        for c in range(cols):
            jitter = rng.uniform(0.2, 0.8, size=2)
            x, y = lo + (np.array([r, c]) + jitter) * cell
            out.append(Placement(float(x), float(y), float(rng.uniform(*config.yaw_range))))
    return out


def nearest_training_index(config: TaskConfig, placement: Placement) -> int:
    train = np.array([p.as_array() for p in training_placements(config)])
    d = np.linalg.norm(train[:, :2] - placement.as_array()[:2], axis=1)
    return int(np.argmin(d))


def make_scene(config: TaskConfig, scenario: str, seed: int) -> Scene:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario), 7919])
    train = training_placements(config)
    if scenario == "interpolate":
        return Scene(scenario, seed, _interpolated(config, train, rng))
    if scenario == "extrapolate":
        return Scene(scenario, seed, _extrapolated(config, rng))
    index = int(rng.integers(len(train)))
    base = train[index]
    mug = Placement(base.x + float(rng.normal(0, config.noise_xy / 2)),
                    base.y + float(rng.normal(0, config.noise_xy / 2)),
                    base.yaw + float(rng.normal(0, config.noise_yaw / 2)))
    mug = _clip_noise(config, base, mug)
    scene = Scene(scenario, seed, mug, training_index=index)
    if scenario == "distractors":
        scene.distractors = _distractors(config, mug, rng)
    elif scenario == "lighting":
        scene.lighting = _lighting(rng)
    return scene


def _clip_noise(config: TaskConfig, base: Placement, p: Placement) -> Placement:
    d = np.array([p.x - base.x, p.y - base.y])
    n = np.linalg.norm(d)
    if n > config.noise_xy:
        d *= config.noise_xy / n
    yaw = base.yaw + float(np.clip(p.yaw - base.yaw, -config.noise_yaw, config.noise_yaw))
    return Placement(base.x + float(d[0]), base.y + float(d[1]), yaw)


def _interpolated(config: TaskConfig, train: list[Placement], rng) -> Placement:
    """A point on the segment between a training placement and one of its near neighbours.

    Points within ``interpolate_min_gap`` of any training placement are
    redrawn, so "interpolate" is always new ground, never in_distribution.
    """
    pts = np.array([p.as_array() for p in train])
    min_gap = config.interpolate_min_gap
    for _ in range(1000):
        i = int(rng.integers(len(train)))
        d = np.linalg.norm(pts[:, :2] - pts[i, :2], axis=1)
        d[i] = np.inf
        j = int(rng.choice(np.argsort(d)[:3]))
        t = float(rng.uniform(0.35, 0.65))
        p = pts[i] * (1 - t) + pts[j] * t
        if np.min(np.linalg.norm(pts[:, :2] - p[:2], axis=1)) > min_gap:
            return Placement(float(p[0]), float(p[1]), float(p[2]))
    raise ValueError("the training placements are too dense to interpolate between; "
                     "lower noise_xy or use a coarser grid")


def _extrapolated(config: TaskConfig, rng) -> Placement:
    """A placement outside the training region on one side: back, front, left or right."""
    lo, hi = np.asarray(config.region_min), np.asarray(config.region_max)
    margin = float(rng.uniform(*config.extrapolate_margin))
    side = int(rng.integers(4))
    x = float(rng.uniform(lo[0], hi[0]))
    y = float(rng.uniform(lo[1], hi[1]))
    if side == 0:
        x = lo[0] - margin
    elif side == 1:
        x = hi[0] + margin
    elif side == 2:
        y = lo[1] - margin
    else:
        y = hi[1] + margin
    return Placement(x, y, float(rng.uniform(*config.yaw_range)))


def _distractors(config: TaskConfig, mug: Placement, rng) -> list:
    out = []
    count = int(rng.integers(1, config.max_distractors + 1))
    taken = [np.array([mug.x, mug.y])]
    attempts = 0
    while len(out) < count and attempts < 200:
        attempts += 1
        xy = np.array([rng.uniform(0.35, 0.72), rng.uniform(-0.28, 0.28)])
        if min(np.linalg.norm(xy - t) for t in taken) < 0.14:
            continue
        model, scale = DISTRACTOR_MODELS[int(rng.integers(len(DISTRACTOR_MODELS)))]
        out.append((model, scale, (float(xy[0]), float(xy[1]), float(rng.uniform(-np.pi, np.pi)))))
        taken.append(xy)
    return out


def _lighting(rng) -> Lighting:
    azimuth = rng.uniform(-np.pi, np.pi)
    elevation = rng.uniform(0.3, 1.2)
    direction = (float(np.cos(azimuth) * np.cos(elevation)), float(np.sin(azimuth) * np.cos(elevation)),
                 float(np.sin(elevation)))
    tint = rng.uniform(0.55, 1.0, size=3)
    tint /= tint.max()
    return Lighting(direction=direction, color=tuple(float(c) for c in tint),
                    ambient=float(rng.uniform(0.3, 0.75)), diffuse=float(rng.uniform(0.2, 0.6)),
                    specular=float(rng.uniform(0.0, 0.2)), shadow=bool(rng.random() < 0.5))


def training_scene(config: TaskConfig, index: int) -> Scene:
    """Training placement ``index`` exactly, as the scripted demonstrations use it."""
    train = training_placements(config)
    return Scene("in_distribution", index, train[index % len(train)], training_index=index % len(train))
