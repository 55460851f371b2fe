"""A recording session: the control loop plus the episode life cycle.

Phases: *reset* (the operator moves the arm and scene; nothing is written)
-> *recording* (every tick is written) -> keep / discard / re-record -> reset.
The same object serves the CLI and the GUI; the GUI only sends commands (via
``request``) and displays the per-tick events.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from robot_drivers.control import ControlLoop, TeleopSource, TickRecord
from robot_drivers.rig import Rig
from robot_drivers.teleop import Button, Teleop

from recorder.dataset import CameraSpec, Dataset, DatasetError, DatasetSpec, EpisodeInfo, StepRecord

log = logging.getLogger(__name__)


def spec_for_rig(rig: Rig, codec: str = "jpeg", jpeg_quality: int = 90) -> DatasetSpec:
    """The dataset settings a rig records with (the rig must be connected)."""
    joints = len(rig.arm.get_state().joint_positions)
    cameras = tuple(CameraSpec(name, cam.width, cam.height) for name, cam in rig.cameras.items())
    return DatasetSpec(fps=rig.clock.rate_hz, cameras=cameras, robot=rig.arm.name, joint_count=joints,
                       codec=codec, jpeg_quality=jpeg_quality)


def scene_extra(rig: Rig) -> dict:
    """What a simulated rig's scene was, stored with the episode (real rigs have none)."""
    control = rig.scene_control()
    record = control.record() if control is not None else None
    return {} if record is None else {"scene": record}


#: The task text of a recording on a rig that names no task of its own (a real rig) when the operator gives none.
TELEOPERATED_TASK = "teleoperated demonstration"


def default_task(rig: Rig) -> str:
    """The task text stored with an episode when none is given: a simulated rig's own task name (its scene
    control's ``task_name``), else :data:`TELEOPERATED_TASK`."""
    control = rig.scene_control()
    return (control.task_name if control is not None else "") or TELEOPERATED_TASK


@dataclass
class RecorderConfig:
    task: str | None = None  # None: the rig's own task name (:func:`default_task`)
    max_episode_s: float = 120.0
    rate_warning_fraction: float = 0.1  # warn when more than this share of recent ticks is late
    rate_window: int = 30  # ticks


@dataclass
class TimingStats:
    """Per-episode timing health, computed while recording."""

    fps: float
    cameras: dict[str, float]  # nominal fps per camera
    late_ticks: int = 0
    skipped_ticks: int = 0
    repeated_frames: dict[str, int] = field(default_factory=dict)
    dropped_frames: dict[str, int] = field(default_factory=dict)
    first_time: float | None = None
    last_time: float | None = None
    ticks: int = 0
    _last: dict[str, tuple[int, float | None]] = field(default_factory=dict, repr=False)
    _recent_late: list[bool] = field(default_factory=list, repr=False)

    def update(self, record: TickRecord, window: int) -> None:
        t = record.timing
        self.ticks += 1
        self.late_ticks += int(t.late)
        self.skipped_ticks += t.skipped
        self.first_time = t.actual if self.first_time is None else self.first_time
        self.last_time = t.actual
        self._recent_late = (self._recent_late + [t.late or t.skipped > 0])[-window:]
        for name, frame in record.observation.frames.items():
            prev = self._last.get(name)
            self._last[name] = (frame.sequence, frame.device_time)
            if prev is None:
                continue
            seq, dev = prev
            delta = frame.sequence - seq
            if delta == 0:
                self.repeated_frames[name] = self.repeated_frames.get(name, 0) + 1
            elif dev is not None and frame.device_time is not None:
                # Frames the camera's own clock says it should have produced in between, but did not deliver.
                expected = round((frame.device_time - dev) * self.cameras[name])
                self.dropped_frames[name] = self.dropped_frames.get(name, 0) + max(0, expected - delta)

    def late_share(self) -> float:
        return sum(self._recent_late) / len(self._recent_late) if self._recent_late else 0.0

    @property
    def achieved_rate_hz(self) -> float | None:
        if self.ticks < 2 or self.last_time == self.first_time:
            return None
        return (self.ticks - 1) / (self.last_time - self.first_time)

    def to_json(self) -> dict:
        rate = self.achieved_rate_hz
        return {"nominal_rate_hz": self.fps, "achieved_rate_hz": rate,
                "rate_held": rate is None or abs(rate - self.fps) <= 0.02 * self.fps and self.skipped_ticks == 0,
                "late_ticks": self.late_ticks, "skipped_ticks": self.skipped_ticks,
                "repeated_frames": {k: int(v) for k, v in self.repeated_frames.items()},
                "dropped_frames": {k: int(v) for k, v in self.dropped_frames.items()}}


@dataclass(frozen=True)
class RecordEvent:
    """What the GUI shows each tick."""

    phase: str  # "reset" or "recording"
    episode: int | None
    record: TickRecord
    steps: int
    late_ticks: int
    warning: str | None
    dropped_frames: int = 0  # so far in this episode, all cameras


@dataclass
class EpisodeOutcome:
    kept: EpisodeInfo | None
    reason: str  # loop end reason
    steps: int
    stats: dict
    error: Exception | None = None

    @property
    def discarded(self) -> bool:
        return self.kept is None


class RecordingSession:
    def __init__(self, rig: Rig, dataset: Dataset, teleop: Teleop, config: RecorderConfig | None = None,
                 on_event: Callable[[RecordEvent], None] | None = None):
        self.rig = rig
        self.dataset = dataset
        self.teleop = teleop
        self.config = config or RecorderConfig()
        self.on_event = on_event
        self.loop = ControlLoop(rig)
        self.cancel = threading.Event()
        #: why ``cancel`` was set (stored as the kept episode's end reason "ended_by_<why>")
        self.cancel_reason = "cancel"
        self.reset_phase_error: Exception | None = None  # the device error that ended the last reset phase
        #: called at the top of every tick of both phases (the supervisor serves its commands there)
        self.tick_hook: Callable[[], None] | None = None
        self._requested: set[Button] = set()
        self._request_lock = threading.Lock()

    def request(self, button: Button) -> None:
        """Press a button from outside the teleop device (GUI, keyboard); handled at the next tick."""
        with self._request_lock:
            self._requested.add(button)

    def _take_requests(self) -> frozenset:
        with self._request_lock:
            out, self._requested = frozenset(self._requested), set()
        return out

    def _source(self) -> "_TeleopWithRequests":
        return _TeleopWithRequests(self.teleop, self._take_requests, self.rig.arm.last_gripper_command)

    def run_reset_phase(self, max_s: float | None = None) -> str:
        """Let the operator reset the scene; returns when START is pressed (or the loop ends otherwise)."""
        max_ticks = None if max_s is None else int(max_s * self.rig.clock.rate_hz)

        def on_tick(record: TickRecord) -> None:
            if self.tick_hook is not None:
                self.tick_hook()
            if self.on_event:
                self.on_event(RecordEvent("reset", None, record, 0, 0, None))

        result = self.loop.run(self._source(), max_ticks=max_ticks, on_tick=on_tick, cancel=self.cancel,
                               end_on=frozenset({Button.START}))
        self.reset_phase_error = result.error  # what ended it, when a device did (the caller names the device)
        return result.reason

    def record_episode(self, note: str = "", extra: dict | None = None, task: str | None = None,
                       accept: Callable[[], bool] | None = None) -> EpisodeOutcome:
        """Record until STOP (keep), DISCARD / RERECORD (throw away), a device error or the time limit.

        ``accept``, when given, is asked before keeping (e.g. "did the scripted grasp succeed?").
        """
        writer = self.dataset.new_episode(task or self.config.task or default_task(self.rig), note, extra)
        cams = {name: cam.fps for name, cam in self.rig.cameras.items()}
        stats = TimingStats(fps=self.rig.clock.rate_hz, cameras=cams)
        write_error: list[Exception] = []
        warned = [False]
        stop_writing = threading.Event()

        def on_tick(record: TickRecord) -> None:
            if self.tick_hook is not None:
                self.tick_hook()
            if record.sent is None or stop_writing.is_set():
                return
            obs = record.observation
            try:
                writer.add(StepRecord(
                    tick=record.timing.index, t_scheduled=record.timing.scheduled, t_actual=record.timing.actual,
                    state=obs.state.ee_array(), joints=np.asarray(obs.state.joint_positions, np.float32),
                    action=record.sent.as_array(), requested=record.output.action.as_array(),
                    frames=obs.frames))
            except (DatasetError, OSError) as exc:
                write_error.append(exc)
                stop_writing.set()
                self.cancel.set()  # end the loop at the next tick
                return
            stats.update(record, self.config.rate_window)
            warning = None
            if stats.ticks >= 10 and stats.late_share() > self.config.rate_warning_fraction:
                warning = (f"cannot hold {stats.fps:g} Hz: {100 * stats.late_share():.0f}% of the last "
                           f"{len(stats._recent_late)} ticks were late")
                if not warned[0]:
                    log.warning(warning)
                    warned[0] = True
            if self.on_event:
                self.on_event(RecordEvent("recording", writer.index, record, len(writer), stats.late_ticks, warning,
                                          sum(stats.dropped_frames.values())))

        max_ticks = int(self.config.max_episode_s * self.rig.clock.rate_hz)
        # Objects alive now (models, buffers) are moved out of the collector's reach, so a full
        # collection during the episode scans only what the episode allocates: no 5-20 ms pauses.
        gc.freeze()
        try:
            result = self.loop.run(self._source(), max_ticks=max_ticks, on_tick=on_tick, cancel=self.cancel)
        finally:
            gc.unfreeze()
        if write_error:
            self.cancel.clear()  # we set it to end the loop; the session stays usable
        stats_json = stats.to_json()
        if write_error:
            writer.discard()
            return EpisodeOutcome(None, "write_error", len(writer), stats_json, write_error[0])
        if result.reason in ("discard", "rerecord") or len(writer) == 0:
            writer.discard()
            return EpisodeOutcome(None, result.reason, len(writer), stats_json, result.error)
        if accept is not None and not accept():
            writer.discard()
            return EpisodeOutcome(None, "rejected", len(writer), stats_json, result.error)
        # Only the operator's discard throws an episode away. stop_button, max_ticks, estop, camera_lost, teleop_lost,
        # arm_error, arm_stopped and a command that ended the episode ("ended_by_home", ...) keep what was recorded,
        # with the reason noted, so no fault and no other command ever costs the operator a demonstration.
        end_reason = f"ended_by_{self.cancel_reason}" if result.reason == "cancelled" else result.reason
        try:
            info = writer.keep(end_reason=end_reason, stats=stats_json)
        except DatasetError as exc:
            return EpisodeOutcome(None, "write_error", len(writer), stats_json, exc)
        return EpisodeOutcome(info, result.reason, info.length, stats_json, result.error)


class _TeleopWithRequests(TeleopSource):
    """The teleop device's commands plus buttons pressed elsewhere (GUI, keyboard)."""

    def __init__(self, teleop: Teleop, take_requests: Callable[[], frozenset], gripper: float | None = None):
        super().__init__(teleop, gripper)
        self._take_requests = take_requests

    def step(self, observation, dt):
        out = super().step(observation, dt)
        extra = self._take_requests()
        return replace(out, buttons=out.buttons | extra) if extra else out
