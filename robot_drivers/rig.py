"""A rig: the arm (behind the safety layer), its cameras and the clock that paces them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from robot_drivers.camera import OWN_LIMIT, Camera
from core.clock import Clock
from core.errors import DeviceError
from robot_drivers.safety import SafeArm
from robot_drivers.state_history import StateHistory, StatePoller
from core.types import Frame, RobotState
from robot_drivers.device import Device

log = logging.getLogger(__name__)

#: ``observe``'s default: every camera refuses frames older than its own stale limit (a rig file's
#: ``stale_limit_s``, else the limit derived from the camera's frame rate and frame intervals, within a
#: stated bound: :mod:`robot_drivers.camera`).
OWN_STALE_LIMIT = OWN_LIMIT


#: The rate (Hz) at which a real-time rig samples its arm state between observations, by default.
DEFAULT_STATE_RATE_HZ = 50.0


@dataclass(frozen=True)
class Observation:
    """Frames and the arm state at the frames' capture time.

    ``state`` is what is stored and fed to the policy: on a real-time rig the state interpolated at
    ``capture_time`` from the rig's state history; in lock-step the state read at the tick, which is exact.
    ``latest_state`` is the newest state measured (read after the frames); its ``host_time`` is the
    observation's "now". ``state_skew`` is nonzero only when ``capture_time`` lay outside the state history:
    the nearest sample's read time minus ``capture_time``.
    """

    state: RobotState
    frames: dict[str, Frame]
    capture_time: float | None = None  # host seconds; defaults to the state's time
    latest_state: RobotState | None = None  # defaults to ``state``
    state_skew: float = 0.0

    def __post_init__(self):
        if self.latest_state is None:
            object.__setattr__(self, "latest_state", self.state)
        if self.capture_time is None and self.state is not None:
            object.__setattr__(self, "capture_time", self.state.host_time)


@dataclass
class Rig(Device):
    """``state_rate_hz``: how often a real-time rig samples its arm state in the background to pair frames
    with the state at their capture time (0: only when observing). Connecting a rig connects its arm, then
    its cameras (the life cycle is :class:`Device`'s)."""

    arm: SafeArm
    cameras: dict[str, Camera]
    clock: Clock
    name: str = "rig"
    extras: dict = field(default_factory=dict)
    state_rate_hz: float = DEFAULT_STATE_RATE_HZ

    def __post_init__(self):
        if not 0.0 <= self.state_rate_hz <= 1000.0:
            raise ValueError(f"state_rate_hz must be in [0, 1000] (0: sample only when observing), "
                             f"got {self.state_rate_hz}")
        self.state_history = StateHistory()
        self._poller: StatePoller | None = None
        if self.clock.is_realtime and self.state_rate_hz > 0:
            self._poller = StatePoller(self.arm.get_state, self.state_history, self.state_rate_hz, self.name)

    def _connect(self) -> None:
        opened = []
        try:
            self.arm.connect()
            opened.append(self.arm)
            self.forget_states()
            if self.clock.is_realtime:  # a state from before the first frame, so that frames are bracketed
                try:
                    self.state_history.add(self.arm.get_state())
                except DeviceError as exc:  # not connect's to report: the first observation raises it
                    log.debug("no arm state at connect: %s", exc)
            if self._poller is not None:
                self._poller.take_error()
                self._poller.start()
            for camera in self.cameras.values():
                camera.connect()
                opened.append(camera)
        except Exception:
            if self._poller is not None:
                self._poller.stop()
            for device in reversed(opened):
                device.disconnect()
            raise

    def forget_states(self) -> None:
        """Drop the state history: the arm jumped (a simulator reset) or a new connection began."""
        self.state_history.clear(since=self.clock.now())

    def _disconnect(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        errors = []
        for device in [*self.cameras.values(), self.arm]:
            try:
                device.disconnect()
            except Exception as exc:  # noqa: BLE001 - close everything, report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def observe(self, max_age: float | None | object = OWN_STALE_LIMIT) -> Observation:
        """One frame per camera and the arm state at their capture time.

        ``max_age`` (seconds, None for no limit) overrides every camera's own stale limit.

        With free-running cameras (real time) the frames are aligned: the first
        camera contributes its frame received nearest a reference time one frame
        period in the past (so every camera's next frame has already arrived),
        and every other camera the frame nearest that one. The skew between
        cameras is then at most half a frame period whatever their phase. In
        lock-step every camera rendered at this tick: the newest frame is exact.

        The capture time is the first camera's frame's host receive time. In real
        time the arm state is then read (the newest measurement, kept as
        ``latest_state``), added to the state history, and the state at the
        capture time is interpolated from that history. In lock-step the state
        read now is the state at capture time, exactly.
        """
        limit = {} if max_age is OWN_STALE_LIMIT else {"max_age": max_age}
        if not self.clock.is_realtime:
            frames = {name: cam.read_latest(**limit) for name, cam in self.cameras.items()}
            state = self.arm.get_state()
            capture = next(iter(frames.values())).host_time if frames else state.host_time
            return Observation(state, frames, capture_time=capture)
        if self._poller is not None:
            error = self._poller.take_error()
            if error is not None:
                self._poller.start()  # sample again; if the arm is still gone, the next observation says so
                raise error
        frames = {}
        if self.cameras:
            cams = list(self.cameras.items())
            reference = self.clock.now() - max(1.0 / cam.fps for _, cam in cams)
            first = cams[0][1].read_nearest(reference, **limit)
            frames = {cams[0][0]: first}
            for name, cam in cams[1:]:
                frames[name] = cam.read_nearest(first.host_time, **limit)
        latest = self.arm.get_state()
        self.state_history.add(latest)
        if not frames:
            return Observation(latest, frames)
        capture = frames[cams[0][0]].host_time
        state, skew = self.state_history.at(capture)
        return Observation(state, frames, capture_time=capture, latest_state=latest, state_skew=skew)

    def scene_control(self):
        """The simulator's scene interface (:class:`robot_drivers.scene.SceneControl`); None on a real rig."""
        return None

    def scripted_operator(self, seed: int = 0):
        """The scripted operator (a :class:`robot_drivers.teleop.Teleop` that demonstrates the task) of a
        simulated rig, for ``--teleop scripted``; None on a real rig."""
        return None

    def close(self) -> None:
        """Release what outlives a disconnect (a simulator's world); nothing on a real rig."""

    def wait_for_cameras(self, timeout: float = 5.0) -> None:
        """Block until every camera has delivered a first frame; a timeout names the camera.

        Free-running cameras only: in lock-step the clock renders each camera at every tick."""
        import time

        if not self.clock.is_realtime:
            return
        deadline = time.monotonic() + timeout
        for name, camera in self.cameras.items():
            try:
                camera.wait_for_frame(-1, max(0.0, deadline - time.monotonic()))
            except DeviceError as exc:
                raise DeviceError(f"camera '{name}' delivered no frame within {timeout:g} s after connecting "
                                  f"({exc}); check its cable and settings") from exc
