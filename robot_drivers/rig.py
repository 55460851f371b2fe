"""A rig: the arm (behind the safety layer), its cameras and the clock that paces them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .camera import Camera
from .clock import Clock
from .errors import DeviceError
from .safety import SafeArm
from .types import Frame, RobotState


#: ``observe``'s default: every camera refuses frames older than its own stale limit (a rig file's
#: ``stale_limit_s``; 0.5 s for cameras without one).
OWN_STALE_LIMIT = object()


@dataclass(frozen=True)
class Observation:
    state: RobotState
    frames: dict[str, Frame]


@dataclass
class Rig:
    arm: SafeArm
    cameras: dict[str, Camera]
    clock: Clock
    name: str = "rig"
    extras: dict = field(default_factory=dict)

    def connect(self) -> None:
        opened = []
        try:
            self.arm.connect()
            opened.append(self.arm)
            for camera in self.cameras.values():
                camera.connect()
                opened.append(camera)
        except Exception:
            for device in reversed(opened):
                device.disconnect()
            raise

    def disconnect(self) -> None:
        errors = []
        for device in [*self.cameras.values(), self.arm]:
            try:
                device.disconnect()
            except Exception as exc:  # noqa: BLE001 - close everything, report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def observe(self, max_age: float | None | object = OWN_STALE_LIMIT) -> Observation:
        """The arm state and one frame per camera.

        ``max_age`` (seconds, None for no limit) overrides every camera's own stale limit.

        With free-running cameras (real time) the frames are aligned: the first
        camera contributes its frame received nearest a reference time one frame
        period in the past (so every camera's next frame has already arrived),
        and every other camera the frame nearest that one. The skew between
        cameras is then at most half a frame period whatever their phase. In
        lock-step every camera rendered at this tick: the newest frame is exact.
        """
        limit = {} if max_age is OWN_STALE_LIMIT else {"max_age": max_age}
        if self.clock.is_realtime and self.cameras:
            cams = list(self.cameras.items())
            reference = self.clock.now() - max(1.0 / cam.fps for _, cam in cams)
            first = cams[0][1].read_nearest(reference, **limit)
            frames = {cams[0][0]: first}
            for name, cam in cams[1:]:
                frames[name] = cam.read_nearest(first.host_time, **limit)
        else:
            frames = {name: cam.read_latest(**limit) for name, cam in self.cameras.items()}
        return Observation(self.arm.get_state(), frames)

    def scene_control(self):
        """The simulator's scene interface (:class:`robot_drivers.scene.SceneControl`); None on a real rig."""
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

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
        return False
