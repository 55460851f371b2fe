"""The one control loop: teleoperation, recording and autonomous execution all run on it.

Per tick: observe (latest frame of every camera + arm state), ask the source
(teleop integrator or policy) for an absolute action, send it through the
safety layer, report the tick, wait for the next tick of the clock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from core.clock import TickTiming
from core.errors import ArmConnectionLostError, ArmStoppedError, ConnectionLostError, DeviceError, StaleFrameError
from robot_drivers.rig import OWN_STALE_LIMIT, Observation, Rig
from robot_drivers.teleop import Button, TargetIntegrator, Teleop
from core.types import Action

log = logging.getLogger(__name__)

EPISODE_END_BUTTONS = frozenset({Button.STOP, Button.DISCARD, Button.RERECORD})
_REASONS = {Button.ESTOP: "estop", Button.RERECORD: "rerecord", Button.DISCARD: "discard",
            Button.STOP: "stop_button", Button.START: "start_button"}


def _end_reason(buttons: frozenset, end_on: frozenset) -> str | None:
    for button in (Button.ESTOP, Button.RERECORD, Button.DISCARD, Button.STOP, Button.START):
        if button in buttons and (button == Button.ESTOP or button in end_on):
            return _REASONS[button]
    return None


@dataclass(frozen=True)
class StepOutput:
    action: Action | None  # None: send nothing this tick (the watchdog will stop the arm if it persists)
    buttons: frozenset = frozenset()
    info: dict = field(default_factory=dict)
    halt: str | None = None  # stop the arm now and end the loop with this reason (e.g. "ood")


class ActionSource(Protocol):
    def begin(self, observation: Observation) -> None: ...

    def step(self, observation: Observation, dt: float) -> StepOutput: ...

    def sent(self, action: Action) -> None: ...


class TeleopSource:
    """Integrates a teleop device's velocity commands into absolute targets."""

    def __init__(self, teleop: Teleop, gripper: float | None = None):
        """``gripper``: the gripper command to continue from (the arm's last one, so a gripper closed on an
        object stays closed); None starts from the measured opening."""
        self.teleop = teleop
        self._gripper = gripper
        self._integrator: TargetIntegrator | None = None

    def begin(self, observation: Observation) -> None:
        s = observation.latest_state  # the arm as it is now, not as the (older) frames saw it
        start = Action(s.ee_pose, s.gripper if self._gripper is None else self._gripper)
        leash = getattr(self.teleop, "leash_m", None)  # a device may lead the arm farther (an expert that pushes)
        self._integrator = TargetIntegrator(start, **({"leash": float(leash)} if isinstance(leash, (int, float))
                                                      and leash > 0 else {}))

    def step(self, observation: Observation, dt: float) -> StepOutput:
        assert self._integrator is not None, "begin() first"
        command = self.teleop.get_command(observation.state, dt)
        self._integrator.anchor(observation.latest_state.ee_pose)
        return StepOutput(self._integrator.step(command, dt), command.buttons)

    def sent(self, action: Action) -> None:
        assert self._integrator is not None
        self._integrator.sync(action)


@dataclass(frozen=True)
class TickRecord:
    timing: TickTiming
    observation: Observation
    output: StepOutput
    sent: Action | None


@dataclass
class LoopResult:
    # "stop_button", "discard", "rerecord", "start_button", "estop", "max_ticks", "cancelled", "camera_lost",
    # "teleop_lost" (the teleop device was unplugged), "arm_error" (a fault or the arm's lost connection),
    # "arm_stopped" (the safety layer's stop was latched), or a source's own halt reason ("ood")
    reason: str
    ticks: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    repeated_frames: dict = field(default_factory=dict)  # camera -> ticks that saw no new frame
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ControlLoop:
    def __init__(self, rig: Rig, max_frame_age: float | None | object = OWN_STALE_LIMIT):
        """``max_frame_age`` (seconds) overrides the cameras' own stale limits (see :meth:`Rig.observe`)."""
        self.rig = rig
        self.max_frame_age = max_frame_age

    def run(self, source: ActionSource, *, max_ticks: int | None = None,
            on_tick: Callable[[TickRecord], None] | None = None,
            cancel: threading.Event | None = None,
            end_on: frozenset = EPISODE_END_BUTTONS) -> LoopResult:
        """Run until a button in ``end_on`` (ESTOP always ends), ``max_ticks``, ``cancel`` or a device error."""
        clock = self.rig.clock
        result = LoopResult(reason="max_ticks", repeated_frames={name: 0 for name in self.rig.cameras})
        last_seq: dict[str, int] = {}
        timing = clock.start()
        in_source = False  # a lost connection while the source steps is the teleop device's
        try:
            observation = self.rig.observe(self.max_frame_age)
            source.begin(observation)
            while True:
                if cancel is not None and cancel.is_set():
                    result.reason = "cancelled"
                    break
                if max_ticks is not None and result.ticks >= max_ticks:
                    break
                for name, frame in observation.frames.items():
                    if last_seq.get(name) == frame.sequence:
                        result.repeated_frames[name] += 1
                    last_seq[name] = frame.sequence
                in_source = True
                output = source.step(observation, clock.dt)
                in_source = False
                sent = None
                if Button.ESTOP in output.buttons or output.halt:
                    self.rig.arm.stop()
                elif output.action is not None:
                    sent = self.rig.arm.send_action(output.action)
                    source.sent(sent)
                result.ticks += 1
                result.late_ticks += int(timing.late)
                result.skipped_ticks += timing.skipped
                if on_tick is not None:
                    on_tick(TickRecord(timing, observation, output, sent))
                reason = output.halt or _end_reason(output.buttons, end_on)
                if reason:
                    result.reason = reason
                    break
                timing = clock.wait_next_tick()
                observation = self.rig.observe(self.max_frame_age)
        except ArmConnectionLostError as exc:
            result.reason, result.error = "arm_error", exc
            log.error("control loop ended: %s", exc)
            self._halt()
        except (StaleFrameError, ConnectionLostError) as exc:
            result.reason, result.error = ("teleop_lost" if in_source else "camera_lost"), exc
            log.error("control loop ended: %s", exc)
            self._halt()
        except ArmStoppedError as exc:
            # Someone latched the stop (the STOP button, a limit violation) while a command was in flight.
            result.reason, result.error = "arm_stopped", exc
            log.info("control loop ended: %s", exc)
            self._halt()
        except DeviceError as exc:
            result.reason, result.error = "arm_error", exc
            log.error("control loop ended: %s", exc)
            self._halt()
        return result

    def _halt(self) -> None:
        try:
            self.rig.arm.stop()
        except Exception as exc:  # noqa: BLE001 - the original error is what the caller needs
            log.error("could not stop the arm: %s", exc)
