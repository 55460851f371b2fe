"""Policy settings: the encoder, its training, the lookup database and the runner.

Two presets:

* ``cpu`` (the default): sized so that 30 demonstrations train in well under
  10 minutes on a 2-core CPU; the architecture is the paper's.
* ``paper``: the reference settings of the ALT authors (320x240 images,
  40 epochs, every frame), for a machine with a GPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime


#: The policy methods: the paper's (alt), the aligned replay (policy/aligned/), the landmark replay (policy/landmarks/).
METHODS = ("alt", "aligned", "landmarks")


@dataclass(frozen=True)
class PolicyConfig:
    # encoder (the paper's reference settings, docs/method.md: one ResNet-18 shared by both views, 512 -> 128 per view,
    # fusion 256 -> 128, L2 norm)
    image_width: int = 96
    image_height: int = 96
    views: tuple[str, ...] = ("hand", "third")  # camera roles fed to the encoder: both, or one of them
    view_dim: int = 128
    fusion_hidden: int = 256
    embed_dim: int = 128
    use_pose: bool = False  # the paper's best variant is "ALT w/o pose"
    pose_hidden: int = 64
    pose_dim: int = 32
    pretrained: str = "auto"  # backbone init: "auto" (ImageNet if cached), "imagenet" (download if needed), "none"
    # training (NT-Xent on two augmentations of the same frame)
    temperature: float = 0.4
    batch_size: int = 32
    epochs: int = 8
    learning_rate: float = 1e-4
    frame_stride: int = 2  # train on every n-th frame (neighbouring frames at 10 Hz are near-duplicates)
    color_jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.05)
    crop_scale: tuple[float, float] = (0.9, 1.0)
    # clutter and other light: the share of augmented views given a soft shadow / a patch pasted from another
    # frame (policy/augment.py)
    shadow_probability: float = 0.5
    paste_probability: float = 0.5
    pose_noise: float = 0.01
    seed: int = 0
    include_incomplete: bool = False  # episodes that ended by camera loss / fault / timeout
    # lookup and execution
    chunk_length: int = 10  # actions per retrieved chunk: 1 s at the default 10 Hz
    gamma: float = 0.75  # similarity below this is out of distribution (chosen from data at training time)
    requery_every: int = 5  # ticks between chunk replacements (the OOD gate checks every tick); 1 = every tick
    top_k: int = 3  # neighbours kept for display
    episode_hysteresis: float = 0.01  # similarity margin another demonstration needs to take over mid-run
    # OOD gate calibration: this share of the demonstrations is kept out of encoder training and used as
    # held-out evidence (their frames are still added to the lookup table afterwards)
    holdout_fraction: float = 0.2
    false_stop_rate: float = 0.002  # per held-out frame, over all of the gate's signals together
    # per RUN: when set, gamma and the view thresholds are calibrated conformally on the held-out demonstrations
    # (policy/conformal.py) so that a run like them is stopped with probability at most this; enough
    # demonstrations are held out for it. None: the per-frame rule above, and the run rate it gives is stated
    run_false_stop_rate: float | None = None
    # a view signal (similarity, hand view, third view) stops a run once it has failed on this many lookups in a
    # row; the run's first lookup, made before the arm moves, stops at once. 1: every failing lookup stops
    gate_persistence: int = 3
    # the aligned method's gate also looks the held-out frames up this many times augmented as in training
    calibration_augments: int = 2
    # progress watchdog: under autonomy, the hand moving less than stall_distance (m) with the gripper
    # unchanged for stall_seconds stops the arm with reason "stall"
    stall_seconds: float = 2.0
    stall_distance: float = 0.01
    # a run that has not finished after this many times the longest demonstration's duration stops and asks
    time_limit_factor: float = 2.0
    # the grasp check (policy/grasp_check.py): before a demonstration's grasp, the live hand view must line up
    # with the retrieved frame's at least as well as this quantile of two different demonstrations do
    grasp_check: bool = True
    grasp_check_quantile: float = 0.05
    # the grip check (policy/grip_check.py): after a close, the fingers must not close further than every
    # demonstration's did that many ticks after closing (off for a gripper whose measured opening is not to be
    # trusted)
    grip_check: bool = True
    # the policy method: "alt" replays the retrieved demonstration as recorded (the paper); "aligned" finds the
    # object in the third-person view and replays the demonstration shifted onto it (policy/aligned/alignment.py);
    # "landmarks" moves every retrieved chunk with the things that stand elsewhere than in its demonstration
    # (policy/landmarks/model.py)
    method: str = "alt"
    align_radius: float = 0.01  # m: a demonstration's hand is "above the object" within this, laterally
    align_margin: float = 0.05  # m: largest correction = the demonstrations' spread plus this
    annoy_trees: int = 16
    annoy_search_k: int = -1  # -1: chosen at build time so that annoy's top-1 equals exact search

    def __post_init__(self):
        for name in ("image_width", "image_height", "view_dim", "fusion_hidden", "embed_dim", "batch_size",
                     "epochs", "frame_stride", "chunk_length", "requery_every", "top_k", "annoy_trees"):
            if getattr(self, name) <= 0:
                raise ValueError(f"policy setting {name} must be positive, not {getattr(self, name)}")
        if self.gate_persistence < 1:
            raise ValueError(f"gate_persistence {self.gate_persistence} must be at least 1 (lookups in a row; 1 = "
                             "a single failing lookup stops)")
        if self.calibration_augments < 0:
            raise ValueError(f"calibration_augments {self.calibration_augments} must not be negative")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: NT-Xent needs other frames as negatives")
        if not 0 < self.temperature <= 10:
            raise ValueError(f"temperature {self.temperature} is out of range (0, 10]")
        if not -1 <= self.gamma <= 1:
            raise ValueError(f"gamma {self.gamma} must be a cosine similarity in [-1, 1]")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction {self.holdout_fraction} must be in [0, 1)")
        if not 0 < self.false_stop_rate < 0.5:
            raise ValueError(f"false_stop_rate {self.false_stop_rate} must be in (0, 0.5)")
        if self.run_false_stop_rate is not None and not 0 < self.run_false_stop_rate < 1:
            raise ValueError(f"the false-stop rate per run {self.run_false_stop_rate} must be in (0, 1), e.g. 0.05")
        if self.stall_seconds <= 0 or self.stall_distance <= 0:
            raise ValueError("stall_seconds and stall_distance must be positive")
        if self.time_limit_factor < 1:
            raise ValueError(f"time_limit_factor {self.time_limit_factor} must be at least 1: a run may take as "
                             "long as the longest demonstration")
        for name in ("shadow_probability", "paste_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, 1]")
        if not 0 <= self.grasp_check_quantile < 0.5:
            raise ValueError(f"grasp_check_quantile {self.grasp_check_quantile} must be in [0, 0.5)")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.align_radius <= 0 or self.align_margin < 0:
            raise ValueError("align_radius must be positive and align_margin not negative")
        if not self.views or len(set(self.views)) != len(self.views) or not set(self.views) <= {"hand", "third"}:
            raise ValueError(f"views must be 'hand', 'third' or both, not {list(self.views)}")
        if self.pretrained not in ("auto", "none", "imagenet"):
            raise ValueError(f"pretrained must be 'auto', 'imagenet' or 'none', not {self.pretrained!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict, saved_at: str | None = None) -> "PolicyConfig":
        """A saved policy's settings: every setting present, of its type; anything else is a ValueError naming it.
        ``saved_at`` (the manifest's ISO time): a setting added to the format after then is filled in from
        LEGACY_SETTINGS, with a warning."""
        if not isinstance(d, dict):
            raise ValueError(f"the settings are a JSON {type(d).__name__}, not an object")
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown policy settings {sorted(unknown)}")
        filled = {name: value for name, (added, value) in LEGACY_SETTINGS.items()
                  if name not in d and saved_at is not None and _before(saved_at, added)}
        if filled:
            logging.getLogger(__name__).warning(
                "this policy was saved (%s) before the settings %s existed; using the values it was built with: %s",
                saved_at, sorted(filled), ", ".join(f"{k}={v}" for k, v in sorted(filled.items())))
            d = {**d, **filled}
        missing = set(known) - set(d)
        if missing:
            raise ValueError(f"policy settings {sorted(missing)} are missing (a damaged or hand-edited config.json; "
                             "no default is assumed)")
        values = {}
        for name, value in d.items():
            default = known[name].default
            values[name] = _checked_setting(name, value, default)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def with_overrides(self, **kw) -> "PolicyConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# Settings added after the policy format's first version: (when the code began writing it, the value a policy
# saved before then behaved as if it had). A policy folder whose manifest says it was saved before that moment
# may lack the setting: it is filled in, with a warning naming it. Missing from a folder saved later, it is an
# error (a damaged or hand-edited config.json), never a silent default.
LEGACY_SETTINGS = {
    "views": ("2026-12-01T04:33:30+00:00", ["hand", "third"]),  # every policy used both cameras
    "holdout_fraction": ("2026-12-01T04:41:36+00:00", 0.2),
    "false_stop_rate": ("2026-12-01T04:41:36+00:00", 0.002),
    "stall_seconds": ("2026-12-01T04:41:36+00:00", 2.0),  # the progress watchdog, switched on
    "stall_distance": ("2026-12-01T04:41:36+00:00", 0.01),
    "time_limit_factor": ("2026-12-01T10:40:49+00:00", 2.0),
    "grasp_check": ("2026-12-01T10:40:49+00:00", True),  # without its arrays in database.npz it does nothing
    "grasp_check_quantile": ("2026-12-01T10:40:49+00:00", 0.05),
    "method": ("2026-12-01T12:53:03+00:00", "alt"),  # the only method there was
    "align_radius": ("2026-12-01T12:53:03+00:00", 0.01),
    "align_margin": ("2026-12-01T12:53:03+00:00", 0.05),
    "shadow_probability": ("2026-12-01T13:18:11+00:00", 0.0),  # training had no shadows or pasted patches
    "paste_probability": ("2026-12-01T13:18:11+00:00", 0.0),
    "calibration_augments": ("2026-12-01T21:32:27+00:00", 0),  # calibrated on frames as recorded
    "run_false_stop_rate": ("2026-12-06T11:10:00+00:00", None),  # the per-frame rule only
    "grip_check": ("2026-12-06T21:45:00+00:00", True),  # without its arrays in database.npz it does nothing
    "gate_persistence": ("2026-12-06T23:20:00+00:00", 1),  # a single failing lookup stopped
}

PRESETS = {
    "cpu": PolicyConfig(),
    "paper": PolicyConfig(image_width=320, image_height=240, epochs=40, frame_stride=1, chunk_length=30),
}


def _before(saved_at: str, added: str) -> bool:
    """Whether an ISO time ``saved_at`` lies before ``added`` (an unreadable time counts as not before)."""
    try:
        return datetime.fromisoformat(saved_at) < datetime.fromisoformat(added)
    except (TypeError, ValueError):
        return False


def _checked_setting(name: str, value, default):
    """``value`` (from JSON) as the type of the setting's ``default``; ValueError naming the setting otherwise."""
    def fail(what: str):
        return ValueError(f"policy setting {name} is {value!r:.60}, not {what}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(default, tuple):
        kind = type(default[0]) if default else str
        if not isinstance(value, (list, tuple)) or len(value) != len(default) and kind is not str:
            raise fail(f"a list of {len(default)}")
        if kind is str:
            if not all(isinstance(v, str) for v in value):
                raise fail("a list of names")
            return tuple(value)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise fail("a list of finite numbers")
        return tuple(float(v) for v in value)
    return value
