"""A rig: the arm (behind the safety layer), its cameras and the clock that paces them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .camera import DEFAULT_MAX_AGE_S, Camera
from .clock import Clock
from .safety import SafeArm
from .types import Frame, RobotState


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

    def observe(self, max_age: float | None = DEFAULT_MAX_AGE_S) -> Observation:
        """The arm state and one frame per camera.

        With free-running cameras (real time) the frames are aligned: the first
        camera contributes its frame received nearest a reference time one frame
        period in the past (so every camera's next frame has already arrived),
        and every other camera the frame nearest that one. The skew between
        cameras is then at most half a frame period whatever their phase. In
        lock-step every camera rendered at this tick: the newest frame is exact.
        """
        if self.clock.is_realtime and self.cameras:
            cams = list(self.cameras.items())
            reference = self.clock.now() - max(1.0 / cam.fps for _, cam in cams)
            first = cams[0][1].read_nearest(reference, max_age)
            frames = {cams[0][0]: first}
            for name, cam in cams[1:]:
                frames[name] = cam.read_nearest(first.host_time, max_age)
        else:
            frames = {name: cam.read_latest(max_age) for name, cam in self.cameras.items()}
        return Observation(self.arm.get_state(), frames)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
        return False
