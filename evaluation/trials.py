"""The trial ledger: every attempt at the task is a trial, kept in an append-only JSON-lines file.

```
runs/trials.jsonl                   one JSON object per line, fsync'ed after each
runs/trials-evidence/<trial id>/    what an OOD stop looked like: hand.png, third.png (RGB as PNG) of the stop that
                                    ended a trial; stop-<n>/hand.png, stop-<n>/third.png of the stop that is the
                                    trial's event n (format 3); trajectory.npy (the attempt's embeddings, [T, D]
                                    float32, when given)
```

A trial is one **attempt**: from Start to success, failure, or the operator's
verdict. Its first record is ``{"type": "start", ...}`` (policy folder, policy
version, encoder digest, method, gamma and other thresholds, wall-clock ISO
time, monotonic time, process id, extra). What happens inside the attempt
are its **events** (format 3), ``{"type": "event", "trial": id, "kind", "time",
"monotonic", "reason", "ticks", "evidence", "extra"}``: a halt (``kind`` one of
:data:`HALTS`: ``ood_stop``, ``stall_stop``, ``operator_stop`` (a pause or STOP),
``device_stop``), a ``resume`` that carries on with the same attempt, or a
``gamma`` change (``extra``: from, to, by). An OOD stop's event keeps its
evidence: the observation's embedding as a list, its similarity, the best
match, the pose and the frames' PNG paths relative to the ledger. Its last
record is ``{"type": "end", ...}`` (outcome, reason, times, extra, whether a
task check decided the outcome (``task_check``: the simulator's; false on a
real rig, which has none), and evidence: the attempt's trajectory and, when the
end itself was an OOD stop, that stop's). An attempt halted and then ended
by the operator doing something other than Resume (take over, home, a new
Start, disconnect, a verdict) ends with its last halt as the outcome;
``extra["ended_by"]`` names what ended it. A trial with a start record but no
end record was cut short by a crash or ``kill -9``: it reads back as outcome
``interrupted`` (or ``running`` while the process that started it is still
alive; it may be halted, waiting for Resume). A torn last line (power loss
mid-write) is reported with a warning and skipped; the next writer moves it to
``<ledger>.torn`` before appending.

An ended trial may get the operator's verdict, ``{"type": "mark", "trial": id,
"outcome": "success"|"failure", "time", "monotonic", "by": "operator"}``: on a
real rig nothing else tells whether the arm did the task. The newest mark of a
trial is its outcome (an earlier one was a wrong key); the automatic outcome
and reason stay recorded beside it.

Every record carries the format version ``v`` it was written in: 1 before
marks and ``task_check`` existed, 2 since, 3 since events (before 3 every run
from Start or Resume to its first halt was a trial of its own: each start/end
pair reads as one trial, as it was written). All three are read; a newer one
is refused with a message rather than misread.

Success rates are per policy version over the *decided* trials (all but
interrupted and running ones), counting a marked trial by its mark, with a
Wilson 95% interval; the halts and resumes inside the trials are counted beside.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from recorder.outputs import process_alive

import numpy as np

log = logging.getLogger(__name__)

#: How a trial can end. ``interrupted`` is never written: it is what a start without an end reads as.
OUTCOMES = ("success", "ood_stop", "operator_stop", "stall_stop", "failure", "device_stop", "interrupted")
WRITTEN_OUTCOMES = OUTCOMES[:-1]
#: The operator's verdicts on an ended trial.
MARKS = ("success", "failure")
RUNNING = "running"
DEFAULT_LEDGER = Path("runs") / "trials.jsonl"
#: What can happen inside an attempt (event records): the halts, then the rest.
HALTS = ("ood_stop", "stall_stop", "operator_stop", "device_stop")
EVENTS = (*HALTS, "resume", "gamma")
FORMAT_VERSION = 3  # 2: mark records and the end record's task_check; 3: event records (a trial is an attempt)
WILSON_Z95 = 1.959963984540054


class LedgerError(RuntimeError):
    """The ledger file cannot be used as it is; the message says why and what to do."""


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (95% by default); None when there are no trials."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials is impossible")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # At 0 and at every success the bound is exactly 0 or 1; computed, it can miss by a rounding error.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def default_ledger_path(runs_dir: str | Path = "runs") -> Path:
    """Where the app and the CLI keep the ledger: ``<runs dir>/trials.jsonl``."""
    return Path(runs_dir) / DEFAULT_LEDGER.name


def encoder_digest(policy_dir: str | Path) -> str | None:
    """The SHA-256 of the policy's encoder weights as its manifest records them: versions made by adding episodes
    share their parent's, so embeddings stored with one trial can be compared with another version's table."""
    try:
        manifest = json.loads((Path(policy_dir) / "manifest.json").read_text())
        return manifest["files"]["encoder.safetensors"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int, boot: str) -> bool:
    return bool(pid) and boot == _boot_id() and process_alive(pid)


@dataclass(frozen=True)
class StopEvidence:
    """What the policy saw when it stopped out of distribution (kept with the trial for the coverage map)."""

    embedding: np.ndarray  # (D,) unit embedding of the observation, under the trial's encoder
    similarity: float  # best similarity to the table at the stop
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> RGB uint8
    pose: np.ndarray | None = None  # (7,) end-effector pose at the stop
    best_match: tuple[int, int] | None = None  # (episode, frame) of the nearest table entry


def stop_evidence(policy, observation, retrieval=None) -> StopEvidence:
    """StopEvidence from the runner's OOD halt (``AutonomyResult.ood_observation`` and ``.ood_evidence``); the
    embedding is computed again with ``policy`` (the runner's Retrieval does not keep it)."""
    frames = {name: f.image for name, f in observation.frames.items()}
    pose = observation.state.ee_array()[:7]
    z = policy.embed(frames["hand"], frames["third"], pose)
    match = None
    similarity = float(np.max(policy.database.embeddings @ z))
    if retrieval is not None:
        similarity = float(retrieval.similarity)
        match = (retrieval.matches[0].episode, retrieval.matches[0].frame)
    return StopEvidence(np.asarray(z, np.float32), similarity, frames, np.asarray(pose, np.float64), match)


@dataclass
class Trial:
    id: str
    policy: str  # the policy folder
    version: int
    method: str
    gamma: float
    thresholds: dict
    started_at: str  # ISO 8601, UTC
    started_monotonic: float
    encoder: str | None = None
    pid: int = 0
    boot: str = ""
    extra: dict = field(default_factory=dict)
    outcome: str | None = None  # None until the end record is read (see ``status``)
    reason: str = ""
    ended_at: str | None = None
    ended_monotonic: float | None = None
    end_extra: dict = field(default_factory=dict)
    evidence: dict | None = None  # see StopEvidence; frame and trajectory paths are relative to the ledger
    task_check: bool | None = None  # whether a task check decided the outcome; None: not recorded (format 1)
    interrupted: bool = False
    marked: str | None = None  # the operator's verdict (one of MARKS), if any
    marked_by: str | None = None
    #: What happened inside the attempt, in order (format 3): dicts with kind (one of EVENTS), time, monotonic,
    #: reason, ticks, evidence (an OOD stop's, paths relative to the ledger) and extra.
    events: list[dict] = field(default_factory=list)

    @property
    def stops(self) -> int:
        """Halts inside the attempt (the one that ended it included when it is an event)."""
        return sum(e["kind"] in HALTS for e in self.events)

    @property
    def resumes(self) -> int:
        return sum(e["kind"] == "resume" for e in self.events)

    @property
    def last_halt(self) -> dict | None:
        """The newest halt event, if any."""
        return next((e for e in reversed(self.events) if e["kind"] in HALTS), None)

    @property
    def halted(self) -> bool:
        """Not ended (nor interrupted), and its newest halt came after its newest resume: waiting for Resume (or for
        what ends it)."""
        if self.outcome is not None or self.interrupted:
            return False
        return next((e["kind"] in HALTS for e in reversed(self.events) if e["kind"] != "gamma"), False)

    def ood_stops(self) -> list[tuple[int | None, dict]]:
        """Every OOD stop of the attempt with its evidence, in order: (event index, evidence) for a stop recorded
        as an event, (None, evidence) for the end record's own (format 1 and 2, or an end that was the stop)."""
        out: list[tuple[int | None, dict]] = [(i, e["evidence"]) for i, e in enumerate(self.events)
                                              if e["kind"] == "ood_stop" and e.get("evidence")]
        # (the event's extra says whether an OOD drill made the stop: see ``is_drill``)
        end = self.evidence or {}
        if self.outcome == "ood_stop" and (end.get("embedding") is not None or end.get("frames")):
            out.append((None, end))
        return out

    def is_drill(self, event: int | None) -> bool:
        """Whether stop ``event`` (an index into :attr:`events`) came while an OOD drill covered a camera."""
        if event is None or not 0 <= event < len(self.events):
            return False
        return bool((self.events[event].get("extra") or {}).get("drill"))

    @property
    def automatic_status(self) -> str:
        """What the run itself recorded: its outcome, ``running`` or ``interrupted``."""
        if self.outcome is not None:
            return self.outcome
        return "interrupted" if self.interrupted else RUNNING

    @property
    def status(self) -> str:
        """The effective outcome: the operator's mark when there is one, else :attr:`automatic_status`."""
        return self.marked or self.automatic_status

    @property
    def awaiting_mark(self) -> bool:
        """Ended where no task check could tell success from failure, and not marked yet."""
        return self.outcome is not None and self.task_check is False and self.marked is None

    @property
    def duration_s(self) -> float | None:
        """From the monotonic clock of the process that ran it (immune to wall-clock jumps)."""
        if self.ended_monotonic is None:
            return None
        return self.ended_monotonic - self.started_monotonic


@dataclass(frozen=True)
class VersionSummary:
    policy: str
    version: int
    trials: int
    counts: dict[str, int]  # outcome (and "running") -> trials
    decided: int  # trials with a recorded outcome (the success rate's denominator)
    successes: int
    rate: float | None
    interval: tuple[float, float] | None  # Wilson 95%
    marked: int  # trials whose outcome is the operator's mark
    awaiting_mark: int  # ended without a task check and not marked yet
    stops: int = 0  # halts inside these trials (OOD, stall, the operator's pause or STOP, a device)
    resumes: int = 0  # resumes inside them (each carried on with the same trial)


class TrialLedger:
    """Append-only ledger of autonomous runs. Thread-safe; one writer process at a time is the expected use
    (every record is one ``write`` of one line, fsync'ed, so a second writer cannot interleave within a line)."""

    def __init__(self, path: str | Path = DEFAULT_LEDGER):
        self.path = Path(path)
        self.evidence_dir = self.path.with_name(f"{self.path.stem}-evidence")
        self._lock = threading.Lock()
        self._open: dict[str, Trial] = {}
        self._tail_checked = False
        self.warnings: list[str] = []

    # -- writing ----------------------------------------------------------
    def start(self, policy: str | Path, version: int, method: str, gamma: float, *, thresholds: dict | None = None,
              extra: dict | None = None) -> Trial:
        """Record the start of an autonomous run; returns the trial to pass to :meth:`finish`."""
        now_mono, now = time.monotonic(), _now_iso()
        policy = str(Path(policy).resolve())
        trial = Trial(uuid.uuid4().hex[:16], policy, int(version), str(method), float(gamma), dict(thresholds or {}),
                      now, now_mono, encoder_digest(policy), os.getpid(), _boot_id(), dict(extra or {}))
        self._append({"type": "start", "v": FORMAT_VERSION, "trial": trial.id, "time": trial.started_at,
                      "monotonic": trial.started_monotonic, "policy": trial.policy, "version": trial.version,
                      "encoder": trial.encoder, "method": trial.method, "gamma": trial.gamma,
                      "thresholds": trial.thresholds, "pid": trial.pid, "boot": trial.boot, "extra": trial.extra})
        with self._lock:
            self._open[trial.id] = trial
        return trial

    def finish(self, trial: Trial, outcome: str, reason: str = "", *, extra: dict | None = None,
               evidence: StopEvidence | None = None, trajectory: np.ndarray | None = None,
               task_check: bool | None = None) -> Trial:
        """Record how ``trial`` ended. ``evidence``: the OOD stop's observation (its frames go to PNG files next to
        the ledger); ``trajectory``: the run's embeddings [T, D] (for the coverage map); ``task_check``: whether a
        task check decided the outcome (False: only the operator's mark can say whether the task was done)."""
        if outcome not in WRITTEN_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(WRITTEN_OUTCOMES)}")
        if trial.outcome is not None:
            raise ValueError(f"trial {trial.id} already ended ({trial.outcome})")
        stored = None
        if evidence is not None or trajectory is not None:
            stored = self._store_evidence(trial.id, evidence, trajectory)
        ended_at, ended_monotonic, end_extra = _now_iso(), time.monotonic(), dict(extra or {})
        self._append({"type": "end", "v": FORMAT_VERSION, "trial": trial.id, "time": ended_at,
                      "monotonic": ended_monotonic, "outcome": outcome, "reason": str(reason), "extra": end_extra,
                      "evidence": stored, "task_check": task_check})
        # Ended only once the end is on disk: a mark, which must follow it there, checks the outcome.
        trial.outcome, trial.reason = outcome, str(reason)
        trial.ended_at, trial.ended_monotonic = ended_at, ended_monotonic
        trial.end_extra, trial.evidence, trial.task_check = end_extra, stored, task_check
        with self._lock:
            self._open.pop(trial.id, None)
        return trial

    def event(self, trial: Trial, kind: str, reason: str = "", *, ticks: int | None = None,
              evidence: StopEvidence | None = None, extra: dict | None = None) -> dict:
        """Record what happened inside the running attempt ``trial``: a halt (one of HALTS; an OOD stop with its
        ``evidence``, whose frames go to ``stop-<n>/`` next to the ledger), a ``resume`` or a ``gamma`` change.
        Raises ValueError for an unknown kind or a trial that has ended."""
        if kind not in EVENTS:
            raise ValueError(f"event {kind!r} is not one of {', '.join(EVENTS)}")
        if trial.outcome is not None:
            raise ValueError(f"trial {trial.id} already ended ({trial.outcome}): nothing more happens in it")
        index = len(trial.events)
        stored = self._store_evidence(trial.id, evidence, None, f"stop-{index}") if evidence is not None else None
        event = {"kind": kind, "time": _now_iso(), "monotonic": time.monotonic(), "reason": str(reason),
                 "ticks": None if ticks is None else int(ticks), "evidence": stored, "extra": dict(extra or {})}
        self._append({"type": "event", "v": FORMAT_VERSION, "trial": trial.id, **event})
        trial.events.append(event)
        return event

    def mark(self, trial: Trial | str, outcome: str) -> Trial:
        """Record the operator's verdict on an ended trial (a :class:`Trial` or its id); it replaces an earlier
        mark. Raises ValueError for an unknown, running or interrupted trial: only a run that ended can be judged."""
        if outcome not in MARKS:
            raise ValueError(f"a trial is marked {' or '.join(MARKS)}, not {outcome!r}")
        if isinstance(trial, str):
            trial = self.trial(trial)
        if trial.outcome is None:
            why = ("was interrupted (its process ended before the run did): there is no ended run to judge"
                   if trial.interrupted else "has not ended (it is still running, or its end could not be written): "
                                             "mark it once it has ended")
            raise ValueError(f"trial {trial.id} {why}")
        self._append({"type": "mark", "v": FORMAT_VERSION, "trial": trial.id, "outcome": outcome,
                      "time": _now_iso(), "monotonic": time.monotonic(), "by": "operator"})
        trial.marked, trial.marked_by = outcome, "operator"
        return trial

    def _store_evidence(self, trial_id: str, evidence: StopEvidence | None, trajectory: np.ndarray | None,
                        sub: str | None = None) -> dict:
        import cv2

        folder = self.evidence_dir / trial_id
        trajectory_folder = folder
        if sub is not None:
            folder = folder / sub
        folder.mkdir(parents=True, exist_ok=True)
        out: dict = {}
        written = []
        if evidence is not None:
            frames = {}
            for camera, image in evidence.frames.items():
                path = folder / f"{camera}.png"
                if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {path}")
                frames[camera] = path.relative_to(self.path.parent).as_posix()
                written.append(path)
            out.update({"embedding": [float(x) for x in np.asarray(evidence.embedding, np.float32)],
                        "similarity": float(evidence.similarity), "frames": frames,
                        "pose": None if evidence.pose is None else [float(x) for x in evidence.pose],
                        "best_match": None if evidence.best_match is None else list(map(int, evidence.best_match))})
        if trajectory is not None:
            trajectory_folder.mkdir(parents=True, exist_ok=True)
            path = trajectory_folder / "trajectory.npy"
            np.save(path, np.asarray(trajectory, np.float32), allow_pickle=False)
            out["trajectory"] = path.relative_to(self.path.parent).as_posix()
            written.append(path)
        for path in written:  # on disk before the record that points at them
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        return out

    def _append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._tail_checked:
                self._set_aside_torn_tail()
                self._tail_checked = True
            created = not self.path.exists()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if created:
                    dfd = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            except OSError as exc:
                raise LedgerError(f"could not write the trial ledger {self.path} ({exc.strerror or exc}); free disk "
                                  "space or choose another --ledger") from exc

    def _set_aside_torn_tail(self) -> None:
        """A last line without its newline was cut off mid-write: move it to ``<ledger>.torn`` so that new records
        start on a line of their own."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        torn = self.path.with_name(self.path.name + ".torn")
        with open(torn, "ab") as f:
            f.write(data[keep:] + b"\n")
            os.fsync(f.fileno())
        with open(self.path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
        message = (f"{self.path}: its last line was cut off mid-write ({len(data) - keep} bytes, a crash or power "
                   f"loss); moved to {torn}")
        log.warning(message)
        self.warnings.append(message)

    # -- reading ----------------------------------------------------------
    def trial(self, trial_id: str) -> Trial:
        """The trial with this id; ValueError if the ledger has none."""
        for t in self.trials():
            if t.id == trial_id:
                return t
        raise ValueError(f"no trial {trial_id!r} in {self.path} (`main.py trials` lists the ids to mark)")

    def trials(self, policy: str | Path | None = None, version: int | None = None) -> list[Trial]:
        """Every trial in start order (optionally of one policy folder and/or version)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LedgerError(f"could not read the trial ledger {self.path} ({exc.strerror or exc})") from exc
        lines = raw.split(b"\n")
        torn_tail = lines[-1] != b""
        trials: dict[str, Trial] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            last = number == len(lines)
            try:
                record = json.loads(line)
                kind = record["type"]
            except (ValueError, KeyError, TypeError) as exc:
                if last and torn_tail:
                    message = (f"{self.path}: line {number} was cut off mid-write (a crash or power loss); it is "
                               "skipped")
                    if message not in self.warnings:
                        log.warning(message)
                        self.warnings.append(message)
                    continue
                raise LedgerError(f"{self.path}: line {number} is not a trial record ({exc}); the file was edited "
                                  "or damaged: remove that line") from None
            try:
                if int(record.get("v", 1)) > FORMAT_VERSION:
                    raise LedgerError(f"{self.path}: line {number} was written by a newer version of the app "
                                      f"(ledger format {record['v']}; this one reads up to {FORMAT_VERSION}): "
                                      "update the app to read it")
                if kind == "start":
                    trials[record["trial"]] = Trial(
                        record["trial"], record["policy"], int(record["version"]), record["method"],
                        float(record["gamma"]), record.get("thresholds") or {}, record["time"],
                        float(record["monotonic"]), record.get("encoder"), int(record.get("pid") or 0),
                        record.get("boot") or "", record.get("extra") or {})
                elif kind == "end":
                    t = trials.get(record["trial"])
                    if t is None:
                        raise KeyError(f"an end without a start for trial {record['trial']}")
                    t.outcome, t.reason = record["outcome"], record.get("reason", "")
                    t.ended_at, t.ended_monotonic = record["time"], float(record["monotonic"])
                    t.end_extra, t.evidence = record.get("extra") or {}, record.get("evidence")
                    t.task_check = record.get("task_check")
                elif kind == "event":
                    t = trials.get(record["trial"])
                    if t is None or t.outcome is not None:
                        raise KeyError(f"an event outside the attempt of trial {record['trial']} (before its start "
                                       "or after its end)")
                    if record["kind"] not in EVENTS:
                        raise ValueError(f"{record['kind']!r} is not an event")
                    t.events.append({"kind": record["kind"], "time": record["time"],
                                     "monotonic": float(record["monotonic"]), "reason": record.get("reason", ""),
                                     "ticks": record.get("ticks"), "evidence": record.get("evidence"),
                                     "extra": record.get("extra") or {}})
                elif kind == "mark":
                    t = trials.get(record["trial"])
                    if t is None or t.outcome is None:
                        raise KeyError(f"a mark before the end of trial {record['trial']}")
                    if record["outcome"] not in MARKS:
                        raise ValueError(f"{record['outcome']!r} is not a mark")
                    t.marked, t.marked_by = record["outcome"], record.get("by", "operator")
                else:
                    raise KeyError(f"unknown record type {kind!r}")
            except (KeyError, ValueError, TypeError) as exc:
                raise LedgerError(f"{self.path}: line {number} is not a valid trial record ({exc}); "
                                  "remove it") from None
        with self._lock:
            mine = set(self._open)
        for t in trials.values():
            if t.outcome is None and t.id not in mine and not _alive(t.pid, t.boot):
                t.interrupted = True
        out = list(trials.values())
        if policy is not None:
            wanted = str(Path(policy).resolve())
            out = [t for t in out if t.policy == wanted]
        if version is not None:
            out = [t for t in out if t.version == version]
        return out

    def summary(self, policy: str | Path | None = None) -> list[VersionSummary]:
        """Counts and success rate (Wilson 95%) per (policy folder, version), in order of first trial: one trial per
        attempt, however often it halted and resumed (``stops``, ``resumes``)."""
        groups: dict[tuple[str, int], list[Trial]] = {}
        for t in self.trials(policy):
            groups.setdefault((t.policy, t.version), []).append(t)
        out = []
        for (path, version), trials in groups.items():
            counts = {o: 0 for o in (*OUTCOMES, RUNNING)}
            for t in trials:
                counts[t.status] = counts.get(t.status, 0) + 1
            decided = sum(counts[o] for o in WRITTEN_OUTCOMES)
            successes = counts["success"]
            out.append(VersionSummary(path, version, len(trials), counts, decided, successes,
                                      successes / decided if decided else None, wilson_interval(successes, decided),
                                      sum(t.marked is not None for t in trials), sum(t.awaiting_mark for t in trials),
                                      sum(t.stops for t in trials), sum(t.resumes for t in trials)))
        return out

    def evidence_path(self, relative: str) -> Path:
        """An evidence file named in a record, as a path."""
        return self.path.parent / relative

    def stop_frames(self, trial: Trial, evidence: dict | None = None) -> dict[str, np.ndarray]:
        """The OOD stop's frames (RGB) of ``trial`` (``evidence``: one stop's, from :meth:`Trial.ood_stops`; default
        the end record's); empty if none were stored or the files are gone."""
        import cv2

        out = {}
        evidence = trial.evidence if evidence is None else evidence
        for camera, relative in ((evidence or {}).get("frames") or {}).items():
            bgr = cv2.imread(str(self.evidence_path(relative)), cv2.IMREAD_COLOR)
            if bgr is not None:
                out[camera] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return out

    def trajectory(self, trial: Trial) -> np.ndarray | None:
        relative = (trial.evidence or {}).get("trajectory")
        if not relative:
            return None
        try:
            return np.load(self.evidence_path(relative), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def write_csv(self, path: str | Path, policy: str | Path | None = None) -> int:
        """One row per trial (attempt); returns the number of rows. ``outcome`` is the effective one (the operator's
        mark when there is one), ``automatic_outcome`` what the run itself recorded, ``marked_by`` empty when
        unmarked, ``stops`` and ``resumes`` the halts and resumes inside it, ``events`` their kinds in order."""
        trials = self.trials(policy)
        columns = ["id", "policy", "version", "method", "gamma", "thresholds", "started_at", "ended_at", "duration_s",
                   "outcome", "reason", "automatic_outcome", "marked_by", "stops", "resumes", "events"]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for t in trials:
                writer.writerow([t.id, t.policy, t.version, t.method, f"{t.gamma:.6g}", json.dumps(t.thresholds),
                                 t.started_at, t.ended_at or "",
                                 "" if t.duration_s is None else f"{t.duration_s:.3f}", t.status, t.reason,
                                 t.automatic_status, t.marked_by or "", t.stops, t.resumes,
                                 " ".join(e["kind"] for e in t.events)])
        return len(trials)


def format_summary(rows: list[VersionSummary]) -> str:
    """The table ``main.py trials`` prints: one trial per attempt."""
    if not rows:
        return "no trials recorded"
    shown = [o for o in OUTCOMES if o != "success" and any(r.counts.get(o) for r in rows)]
    if any(r.counts.get(RUNNING) for r in rows):
        shown.append(RUNNING)
    columns = [(o, lambda r, o=o: r.counts.get(o, 0)) for o in shown]
    if any(r.stops for r in rows):  # halts and resumes inside the trials: not trials of their own
        columns += [("stops inside", lambda r: r.stops), ("resumes", lambda r: r.resumes)]
    if any(r.marked for r in rows):
        columns.append(("marked", lambda r: r.marked))
    if any(r.awaiting_mark for r in rows):
        columns.append(("to mark", lambda r: r.awaiting_mark))
    header = f"{'policy':<28} {'ver':>3} {'trials':>6} {'success':>9} {'rate':>6} {'Wilson 95%':>13}"
    header += "".join(f" {title:>13}" for title, _ in columns)
    lines = [header]
    for r in rows:
        name = Path(r.policy).name
        name = name if len(name) <= 28 else "…" + name[-27:]
        rate = "-" if r.rate is None else f"{100 * r.rate:.0f}%"
        interval = "-" if r.interval is None else f"{100 * r.interval[0]:.0f}-{100 * r.interval[1]:.0f}%"
        line = f"{name:<28} {r.version:>3} {r.trials:>6} {r.successes:>4}/{r.decided:<4} {rate:>6} {interval:>13}"
        lines.append(line + "".join(f" {value(r):>13}" for _, value in columns))
    return "\n".join(lines)


def format_marks(trials: list[Trial], limit: int = 20) -> str:
    """What ``main.py trials`` lists below its table: the trials the operator marked (with what the run itself
    recorded) and those awaiting a mark, with their ids, the newest ``limit`` of each; empty when there are none."""
    sections = []
    for title, chosen in (("marked by the operator (counted in the table by the mark):",
                           [t for t in trials if t.marked is not None]),
                          ("awaiting the operator's mark (no task check on that rig); "
                           "mark with `main.py trials --mark TRIAL_ID success|failure`:",
                           [t for t in trials if t.awaiting_mark])):
        if not chosen:
            continue
        lines = [title]
        if len(chosen) > limit:
            lines.append(f"  … {len(chosen) - limit} earlier ones (--csv lists every trial)")
        for t in chosen[-limit:]:
            ended = f"{t.outcome} ({t.reason})" if t.reason else t.outcome
            verdict = f"{t.marked}, the run itself ended {ended}" if t.marked is not None else ended
            if t.events:
                verdict += f" [{t.stops} stop(s), {t.resumes} resume(s) inside]"
            lines.append(f"  {t.id}  {Path(t.policy).name} v{t.version}  {t.started_at}  {verdict}")
        sections.append("\n".join(lines))
    return "\n".join(sections)
