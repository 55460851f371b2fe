"""The coverage map: where the policy's lookup table has experience, where runs went, and where they stopped.

The table's embeddings are projected to 2-D with PCA (SVD of the centred
embeddings; each axis's sign fixed so that its largest loading is positive, so
the same table always gives the same picture). Demonstrations and corrections
(episodes recorded as interventions) are drawn apart, the trajectories of runs
(their per-tick embeddings) as lines, and every OOD stop as a cross.

An OOD stop is *covered* when the table now holds an entry at least gamma
similar to what the policy saw there (the policy would not stop there again),
or when a correction recorded after it (an episode whose ``extra["intervention"]``
names its trial and, since a trial is an attempt that may stop more than once,
which of its halts: ``event``; without one, its last stop) is in the table. The
stops that are not covered are the "record here next" suggestions, each with
the frames that were stored with it.

The GUI draws the same :class:`CoverageMap` with pyqtgraph; :func:`render_png`
draws it with OpenCV (a core dependency) for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.trials import Trial, TrialLedger, encoder_digest


@dataclass(frozen=True)
class Projection:
    """A deterministic 2-D PCA of unit embeddings."""

    mean: np.ndarray  # (D,)
    axes: np.ndarray  # (2, D)
    explained: tuple[float, float]  # share of the variance along each axis

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> "Projection":
        x = np.asarray(embeddings, np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        if len(x) < 2 or not np.any(centred):
            axes = np.eye(2, x.shape[1])
            return cls(mean, axes, (0.0, 0.0))
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2]
        if len(axes) < 2:
            axes = np.vstack([axes, np.zeros_like(axes)])
        signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
        axes = axes * np.where(signs == 0, 1, signs)[:, None]
        var = s ** 2
        share = var[:2] / var.sum()
        return cls(mean, axes, (float(share[0]), float(share[1]) if len(share) > 1 else 0.0))

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(embeddings, np.float64)) - self.mean) @ self.axes.T


@dataclass
class CoverageStop:
    """One OOD stop on the map."""

    trial: str
    started_at: str
    version: int
    xy: np.ndarray  # (2,)
    similarity_then: float  # best similarity when it stopped
    similarity_now: float  # best similarity to this policy's table
    nearest: tuple[int, int]  # (episode, frame) of the nearest table entry now
    covered: bool
    covered_by: str  # "", "table" (similarity now >= gamma) or "correction <episode>"
    frames: dict[str, str] = field(default_factory=dict)  # camera -> image file (absolute)
    event: int | None = None  # its index among the trial's events (None: the stop that ended a trial, format < 3)
    drill: bool = False  # an OOD drill covered a camera: drawn, never suggested as a place to record


@dataclass
class CoverageMap:
    policy: str
    version: int
    gamma: float
    projection: Projection
    points: np.ndarray  # [N, 2] table entries
    episodes: np.ndarray  # [N] their episode
    corrections: set[int]  # episodes recorded as interventions
    trajectories: dict[str, np.ndarray]  # trial id -> [T, 2]
    stops: list[CoverageStop]
    skipped: list[str] = field(default_factory=list)  # why some stops could not be placed

    @property
    def suggestions(self) -> list[CoverageStop]:
        """OOD stops not yet covered by a correction or a demonstration, the drills' left out: record here next
        (least covered first)."""
        return sorted((s for s in self.stops if not s.covered and not s.drill), key=lambda s: s.similarity_now)


def corrections_of(policy) -> dict[int, dict]:
    """The table's episodes recorded as interventions, with what each records (policy, run, halt reason)."""
    out: dict[int, dict] = {}
    for addition in policy.info.get("additions", []):
        for e, intervention in (addition.get("interventions") or {}).items():
            if intervention:
                out[int(e)] = intervention
    for e in policy.info.get("corrections", []):
        out.setdefault(int(e), {})
    return out


def _stop_embedding(policy, encoder: str | None, trial: Trial, ledger: TrialLedger,
                    evidence: dict | None = None) -> tuple[np.ndarray | None, str]:
    evidence = (trial.evidence if evidence is None else evidence) or {}
    if evidence.get("embedding") is not None and encoder is not None and trial.encoder == encoder:
        return np.asarray(evidence["embedding"], np.float32), ""
    frames = ledger.stop_frames(trial, evidence)
    if "hand" in frames and "third" in frames:  # another encoder: embed what it saw again
        pose = evidence.get("pose")
        if policy.config.use_pose and pose is None:
            return None, f"trial {trial.id}: no pose stored for this pose-using policy"
        return policy.embed(frames["hand"], frames["third"], None if pose is None else np.asarray(pose)), ""
    if evidence.get("embedding") is not None and encoder is None and trial.encoder is None:
        return np.asarray(evidence["embedding"], np.float32), ""
    return None, f"trial {trial.id}: its stop was recorded under another encoder and no frames were kept"


def build_coverage(policy, policy_dir: str | Path | None, ledger: TrialLedger | None,
                   trajectories: dict[str, np.ndarray] | None = None, max_trajectories: int = 5) -> CoverageMap:
    """The map for ``policy``: its table, the OOD stops of every trial in ``ledger`` (of any version of it) and the
    trajectories given (trial id -> [T, D] embeddings), else the last ``max_trajectories`` stored in the ledger
    by runs of versions that share this policy's encoder."""
    db = policy.database
    projection = Projection.fit(db.embeddings)
    corrections = corrections_of(policy)
    # A correction names its run (trial) and, since trials are attempts, which of the attempt's halts it corrects
    # (the event's index); one without an event index corrects the run's last OOD stop.
    corrected = {(str(v.get("run")), v.get("event")): e for e, v in corrections.items()
                 if v and v.get("run") is not None}
    encoder = encoder_digest(policy_dir) if policy_dir is not None else None
    stops, skipped, traj = [], [], {}
    trials = ledger.trials() if ledger is not None else []
    for t in trials:
        ood = t.ood_stops()  # every OOD stop of the attempt (format 3: its events; before: the end's)
        for n, (event, evidence) in enumerate(ood):
            z, why = _stop_embedding(policy, encoder, t, ledger, evidence)
            if z is None:
                skipped.append(why)
                continue
            sims = db.embeddings @ np.asarray(z, np.float32)
            row = int(np.argmax(sims))
            covered_by = ""
            episode = corrected.get((t.id, event)) if event is not None else None
            if episode is None and n == len(ood) - 1:
                episode = corrected.get((t.id, None))
            if episode is not None:
                covered_by = f"correction {episode}"
            elif float(sims[row]) >= policy.gamma:
                covered_by = "table"
            frames = {c: str(ledger.evidence_path(p)) for c, p in (evidence.get("frames") or {}).items()}
            stops.append(CoverageStop(t.id, t.started_at, t.version, projection(z)[0],
                                      float(evidence.get("similarity", float("nan"))), float(sims[row]),
                                      (int(db.episodes[row]), int(db.frames[row])), bool(covered_by), covered_by,
                                      frames, event, t.is_drill(event)))
    if trajectories:
        traj = {k: projection(v) for k, v in trajectories.items() if len(v)}
    elif ledger is not None and encoder is not None:  # runs of any version sharing this encoder, latest first
        for t in reversed(trials):
            if len(traj) >= max_trajectories:
                break
            if t.encoder == encoder and (z := ledger.trajectory(t)) is not None and len(z):
                traj[t.id] = projection(z)
    return CoverageMap(str(policy_dir or ""), int(policy.info.get("version", 1)), float(policy.gamma), projection,
                       projection(db.embeddings), db.episodes.copy(), set(corrections), traj, stops, skipped)


# -- drawing with OpenCV ------------------------------------------------------
_DEMO_SHADES = [(180, 119, 31), (153, 153, 0), (44, 160, 44), (189, 103, 148), (75, 86, 140), (194, 119, 227),
                (34, 189, 188), (207, 190, 23), (127, 127, 127)]  # BGR, muted, for demonstrations
_CORRECTION = (0, 140, 255)  # orange (BGR)
_UNCOVERED = (40, 40, 220)  # red
_COVERED = (150, 150, 150)
_TRAJECTORY = (120, 60, 0)
_INK = (40, 40, 40)


def render_png(cov: CoverageMap, path: str | Path, size: tuple[int, int] = (1100, 760), thumbs: int = 6) -> Path:
    """Draw the map (left) and the "record here next" suggestions with their frames (right) into a PNG."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), render_image(cov, size, thumbs)):
        raise OSError(f"could not write {path}; use a .png name in a writable folder")
    return path


def render_image(cov: CoverageMap, size: tuple[int, int] = (1100, 760), thumbs: int = 6) -> np.ndarray:
    """The map (left) and the "record here next" suggestions with their frames (right), BGR uint8."""
    import cv2

    width, height = size
    panel = 300
    img = np.full((height, width, 3), 255, np.uint8)
    plot = (50, 60, width - panel - 30, height - 60)  # x0, y0, x1, y1
    everything = [cov.points] + list(cov.trajectories.values()) + [np.array([s.xy for s in cov.stops]).reshape(-1, 2)]
    allxy = np.concatenate([a for a in everything if len(a)])
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    lo, span = lo - 0.05 * span, span * 1.1

    def px(xy: np.ndarray) -> np.ndarray:
        xy = np.atleast_2d(xy)
        u = plot[0] + (xy[:, 0] - lo[0]) / span[0] * (plot[2] - plot[0])
        v = plot[3] - (xy[:, 1] - lo[1]) / span[1] * (plot[3] - plot[1])
        return np.stack([u, v], axis=1).round().astype(np.int32)

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(img, plot[:2], plot[2:], (210, 210, 210), 1)
    title = (f"coverage: {Path(cov.policy).name or 'policy'} v{cov.version}, gamma {cov.gamma:.3f}, "
             f"{len(cov.points)} frames")
    cv2.putText(img, title, (plot[0], 30), font, 0.6, _INK, 1, cv2.LINE_AA)
    cv2.putText(img, f"PC1 ({100 * cov.projection.explained[0]:.0f}% of variance)", (plot[0], height - 25), font, 0.45,
                _INK, 1, cv2.LINE_AA)
    cv2.putText(img, f"PC2 ({100 * cov.projection.explained[1]:.0f}%)", (5, plot[1] - 10), font, 0.45, _INK, 1,
                cv2.LINE_AA)
    demo_eps = [e for e in np.unique(cov.episodes) if int(e) not in cov.corrections]
    shade = {int(e): _DEMO_SHADES[i % len(_DEMO_SHADES)] for i, e in enumerate(demo_eps)}
    pts = px(cov.points)
    for e in np.unique(cov.episodes):  # demos as dots, corrections as squares on top
        rows = np.flatnonzero(cov.episodes == e)
        if int(e) in cov.corrections:
            continue
        for p in pts[rows]:
            cv2.circle(img, tuple(int(c) for c in p), 2, shade[int(e)], -1, cv2.LINE_AA)
    for e in sorted(cov.corrections):
        for p in pts[cov.episodes == e]:
            cv2.rectangle(img, tuple(int(c) - 3 for c in p), tuple(int(c) + 3 for c in p), _CORRECTION, -1)
    for t in cov.trajectories.values():
        q = px(t)
        cv2.polylines(img, [q.reshape(-1, 1, 2)], False, _TRAJECTORY, 1, cv2.LINE_AA)
        cv2.circle(img, tuple(int(c) for c in q[0]), 4, _TRAJECTORY, 1, cv2.LINE_AA)
    numbers = {(s.trial, s.event): i + 1 for i, s in enumerate(cov.suggestions)}  # an attempt may stop twice
    for s in cov.stops:
        u, v = (int(c) for c in px(s.xy)[0])
        colour = _COVERED if s.covered or s.drill else _UNCOVERED
        cv2.drawMarker(img, (u, v), colour, cv2.MARKER_TILTED_CROSS, 14, 2, cv2.LINE_AA)
        if (s.trial, s.event) in numbers:
            cv2.putText(img, str(numbers[(s.trial, s.event)]), (u + 7, v - 7), font, 0.5, colour, 1, cv2.LINE_AA)
    # legend
    lx, ly = plot[0] + 8, plot[1] + 18
    legend = [("demonstration frames", "dot", _DEMO_SHADES[0]), ("correction frames", "square", _CORRECTION),
              ("run trajectory", "line", _TRAJECTORY), ("OOD stop, not covered", "cross", _UNCOVERED),
              ("OOD stop, covered (or an OOD drill's)", "cross", _COVERED)]
    for i, (text, kind, colour) in enumerate(legend):
        y = ly + 18 * i
        if kind == "dot":
            cv2.circle(img, (lx, y - 4), 3, colour, -1, cv2.LINE_AA)
        elif kind == "square":
            cv2.rectangle(img, (lx - 3, y - 7), (lx + 3, y - 1), colour, -1)
        elif kind == "line":
            cv2.line(img, (lx - 5, y - 4), (lx + 5, y - 4), colour, 1, cv2.LINE_AA)
        else:
            cv2.drawMarker(img, (lx, y - 4), colour, cv2.MARKER_TILTED_CROSS, 9, 2, cv2.LINE_AA)
        cv2.putText(img, text, (lx + 12, y), font, 0.4, _INK, 1, cv2.LINE_AA)
    # suggestions with their frames
    x0 = width - panel + 10
    cv2.putText(img, f"record here next: {len(cov.suggestions)}", (x0, 30), font, 0.55, _INK, 1, cv2.LINE_AA)
    y = 45
    thumb = (panel - 30) // 2
    for i, s in enumerate(cov.suggestions[:thumbs]):
        if y + thumb + 20 > height:
            break
        cv2.putText(img, f"{i + 1}. trial {s.trial[:8]}  sim {s.similarity_now:.2f}", (x0, y + 12), font, 0.4,
                    _UNCOVERED, 1, cv2.LINE_AA)
        for j, camera in enumerate(("hand", "third")):
            frame = cv2.imread(s.frames[camera], cv2.IMREAD_COLOR) if camera in s.frames else None
            box = (x0 + j * (thumb + 10), y + 18)
            if frame is None:
                cv2.rectangle(img, box, (box[0] + thumb, box[1] + thumb), (200, 200, 200), 1)
                cv2.putText(img, "no frame", (box[0] + 5, box[1] + thumb // 2), font, 0.4, _COVERED, 1, cv2.LINE_AA)
            else:
                img[box[1]:box[1] + thumb, box[0]:box[0] + thumb] = cv2.resize(frame, (thumb, thumb),
                                                                              interpolation=cv2.INTER_AREA)
        y += thumb + 26
    if len(cov.suggestions) > thumbs:
        cv2.putText(img, f"... and {len(cov.suggestions) - thumbs} more", (x0, min(y + 12, height - 10)), font, 0.4,
                    _INK, 1, cv2.LINE_AA)
    return img
