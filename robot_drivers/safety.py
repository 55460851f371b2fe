"""The safety layer every arm command passes through.

:class:`SafeArm` wraps any :class:`Arm` and enforces, per command:

* a workspace box for the end-effector position (targets are clipped into it;
  a *measured* position outside it by more than a margin, checked on every
  command, stops the arm and raises :class:`LimitViolationError`);
* a maximum translation and rotation per tick, measured from the previous
  command (or from the measured pose after a stop), so no single command can
  make the arm jump;
* the gripper range;
* finite numbers: a command with a NaN or infinite number is refused with
  :class:`ArmCommandError` (nothing is sent), and :class:`SafetyConfig` refuses
  limits that are not finite and positive (a NaN limit compares False, so it
  would never clip);
* a watchdog: when no command arrives for ``watchdog_timeout`` seconds the arm
  is stopped. The watchdog does not latch: the next command starts again from
  the measured pose, within the per-tick limits.

``stop()`` latches: motion commands are refused with :class:`ArmStoppedError`
until ``release()`` is called (the operator's decision after an OOD stop or an
emergency stop). ``latch()`` sets that refusal alone, without any I/O, so a
window's thread can make it hold at once while another thread talks to the
driver. Motion calls to the driver (send, home) and the watchdog's stop are
serialised by a motion lock: a command is checked against the latch and handed
to the driver under that lock, so a stop waits for a command already in flight
(at most ``stop_wait`` seconds, then it stops anyway: a hung driver call must
not hold up the stop), and a watchdog stop can no longer land inside a command
and make the driver refuse it as "stopped". A command that returns after a stop
is followed by another ``inner.stop()``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot_drivers.arm import Arm
from core.errors import (ArmCommandError, ArmConnectionLostError, ArmStoppedError, ConnectionLostError,
                     LimitViolationError, NotConnectedError)
from core.transforms import quat_angle, quat_slerp
from core.types import Action, Pose, RobotState


def _metres(values) -> list[float]:
    """A corner of the workspace box as plain numbers for a message (numpy scalars print as np.float64(...))."""
    return [round(float(v), 4) for v in values]


log = logging.getLogger(__name__)


@dataclass
class SafetyConfig:
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.0)  # metres, robot base frame
    workspace_max: tuple[float, float, float] = (0.80, 0.35, 0.55)
    max_translation_per_tick: float = 0.03  # metres
    max_rotation_per_tick: float = 0.2  # radians
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    watchdog_timeout: float = 0.5  # seconds without a command before the arm is stopped
    violation_margin: float = 0.05  # metres a measured pose may lie outside the box
    measured_max_age: float = 0.05  # seconds: an older measured state is read again before a command is checked
    stop_wait: float = 0.1  # seconds stop() waits for a command in flight before stopping anyway

    def __post_init__(self):
        """Refuse limits that would switch a check off: NaN compares False, so a NaN limit never clips."""
        check_workspace_box(self.workspace_min, self.workspace_max)  # finite, min < max on every axis
        for name in ("max_translation_per_tick", "max_rotation_per_tick", "watchdog_timeout"):
            _check_limit(name, getattr(self, name), positive=True)
        for name in ("violation_margin", "measured_max_age", "stop_wait"):
            _check_limit(name, getattr(self, name), positive=False)
        _check_limit("gripper_min", self.gripper_min, positive=False)
        _check_limit("gripper_max", self.gripper_max, positive=True)
        if not 0.0 <= self.gripper_min < self.gripper_max <= 1.0:
            raise ValueError(f"gripper range [{self.gripper_min}, {self.gripper_max}] must lie in [0, 1]")


def _check_limit(name: str, value, positive: bool) -> None:
    """A safety number must be a real, finite number, > 0 (``positive``) or >= 0 (ValueError otherwise)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"SafetyConfig.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"SafetyConfig.{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")


@dataclass
class SafetyCounters:
    commands: int = 0
    workspace_clips: int = 0
    translation_clips: int = 0
    rotation_clips: int = 0
    gripper_clips: int = 0
    watchdog_stops: int = 0
    stops: int = 0
    violations: int = 0


def check_workspace_box(workspace_min, workspace_max) -> tuple[np.ndarray, np.ndarray]:
    """A driver config's box as arrays: three finite numbers each, min below max on every axis (ValueError
    otherwise). A NaN bound would make every comparison False, so nothing would ever be clipped or refused."""
    try:
        lo, hi = np.asarray(workspace_min, float), np.asarray(workspace_max, float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"workspace_min {workspace_min!r} and workspace_max {workspace_max!r} must be three "
                         "numbers each") from exc
    if lo.shape != (3,) or hi.shape != (3,):
        raise ValueError(f"workspace_min {workspace_min!r} and workspace_max {workspace_max!r} must be three "
                         "numbers each")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"workspace_min {list(workspace_min)} and workspace_max {list(workspace_max)} must be "
                         "finite numbers (no nan or inf)")
    if np.any(lo >= hi):
        raise ValueError(f"workspace_min {list(workspace_min)} must be below workspace_max "
                         f"{list(workspace_max)} on every axis")
    return lo, hi


def _finite_action(action: Action) -> tuple[np.ndarray, np.ndarray, float]:
    """(position, orientation, gripper) of ``action``; ValueError when a number is missing or not finite.

    :class:`Action` checks this when it is made, but its arrays can be changed in place afterwards."""
    try:
        position = np.asarray(action.pose.position, dtype=np.float64)
        orientation = np.asarray(action.pose.orientation, dtype=np.float64)
        gripper = float(action.gripper)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"not an arm action: {action!r}") from exc
    if position.shape != (3,) or orientation.shape != (4,):
        raise ValueError(f"an action has a position of 3 and an orientation of 4 numbers, got "
                         f"{position.tolist()} and {orientation.tolist()}")
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation)) and math.isfinite(gripper)):
        raise ValueError(f"action with non-finite numbers refused: position {position.tolist()}, "
                         f"orientation {orientation.tolist()}, gripper {gripper}")
    return position, orientation, gripper


def refuse_outside_workspace(pose: Pose, workspace_min, workspace_max, arm: str) -> None:
    """Drivers call this before any SDK call: defence in depth behind SafeArm's clipping."""
    lo, hi = np.asarray(workspace_min, float), np.asarray(workspace_max, float)
    p = np.asarray(pose.position, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < lo - 1e-9) or np.any(p > hi + 1e-9):  # nan compares False
        raise LimitViolationError(
            f"{arm} target {np.round(p, 4).tolist()} m is outside the workspace box {_metres(workspace_min)}"
            f"..{_metres(workspace_max)} m; refused before reaching the controller")


def clip_action(action: Action, reference: Pose | None, config: SafetyConfig,
                counters: SafetyCounters | None = None) -> Action:
    """The action the safety limits allow, given the pose the arm was last sent to.

    A target or reference with a non-finite number, or limits that are not finite and positive (a config
    changed after it was checked), is a ValueError: NaN compares False, so it would pass every clip."""
    counters = counters if counters is not None else SafetyCounters()
    _finite_action(action)
    if reference is not None and not (np.all(np.isfinite(reference.position))
                                      and np.all(np.isfinite(reference.orientation))):
        raise ValueError(f"reference pose {reference.position.tolist()} {reference.orientation.tolist()} "
                         "is not finite; refusing to clip against it")
    lo, hi = check_workspace_box(config.workspace_min, config.workspace_max)
    max_step = config.max_translation_per_tick
    max_turn = config.max_rotation_per_tick
    for name, value in (("max_translation_per_tick", max_step), ("max_rotation_per_tick", max_turn)):
        _check_limit(name, value, positive=True)
    if not 0.0 <= config.gripper_min < config.gripper_max <= 1.0:
        raise ValueError(f"gripper range [{config.gripper_min}, {config.gripper_max}] must lie in [0, 1]")
    position = np.clip(action.pose.position, lo, hi)
    if not np.array_equal(position, action.pose.position):
        counters.workspace_clips += 1
    orientation = action.pose.orientation
    if reference is not None:
        step = position - reference.position
        dist = float(np.linalg.norm(step))
        if dist > max_step:
            position = reference.position + step * (max_step / dist)
            counters.translation_clips += 1
        angle = quat_angle(reference.orientation, orientation)
        if angle > max_turn:
            orientation = quat_slerp(reference.orientation, orientation, max_turn / angle)
            counters.rotation_clips += 1
    gripper = float(np.clip(action.gripper, config.gripper_min, config.gripper_max))
    if gripper != action.gripper:
        counters.gripper_clips += 1
    return Action(Pose(position, orientation), gripper)


class SafeArm(Arm):
    def __init__(self, arm: Arm, config: SafetyConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_watchdog: Callable[[], None] | None = None):
        self.inner = arm
        self.name = arm.name
        self.config = config or SafetyConfig()
        self.counters = SafetyCounters()
        self._clock = clock
        self._on_watchdog = on_watchdog
        self._lock = threading.Lock()
        self._motion_lock = threading.Lock()  # held while a motion call is checked and handed to the driver
        self._last_sent: Action | None = None
        self._last_gripper: float | None = None  # the gripper's last command, or the one a stop froze it at
        self._last_state: tuple[float, RobotState] | None = None
        self._last_command_time: float | None = None
        self._stopped = False
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------
    def _connect(self) -> None:
        self.inner.connect()
        self._last_gripper = None
        self._last_state = None
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.name}", daemon=True)
        self._watchdog.start()

    def _disconnect(self) -> None:
        self._watchdog_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(2.0)
            self._watchdog = None
        if self.inner.is_connected:
            try:
                self.inner.stop()
            finally:
                self.inner.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    # -- state and motion -------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def last_sent(self) -> Action | None:
        return self._last_sent

    @property
    def last_gripper_command(self) -> float | None:
        """What the gripper was last told (None after connect or home); a stop keeps it, unless the stop froze
        a close or an open under way, and then it is the opening the driver now holds.

        A handover continues from this, not from the measured opening: a gripper
        closed on an object measures the object's width, and commanding that
        width would let go of it.
        """
        return self._last_gripper

    @contextmanager
    def _arm_errors(self):
        """A lost connection below this layer is the arm's: :class:`ArmConnectionLostError` (not a camera's)."""
        try:
            yield
        except ArmConnectionLostError:
            raise
        except ConnectionLostError as exc:
            raise ArmConnectionLostError(str(exc)) from exc

    def get_state(self) -> RobotState:
        with self._arm_errors():
            state = self.inner.get_state()
        self._last_state = (self._clock(), state)
        return state

    def _measured(self) -> RobotState:
        """The newest measured state: the one the control loop just read, or a fresh read."""
        last = self._last_state
        if last is not None and self._clock() - last[0] <= self.config.measured_max_age:
            return last[1]
        return self.get_state()

    def send_action(self, action: Action) -> Action:
        if not self.inner.is_connected:
            raise NotConnectedError(f"arm '{self.name}' is not connected; call connect() first")
        try:
            _finite_action(action)
        except ValueError as exc:  # a NaN target would slip through every comparison below: never send it
            raise ArmCommandError(f"arm '{self.name}': {exc}; nothing was sent") from exc
        with self._lock:
            if self._stopped:
                raise ArmStoppedError(f"arm '{self.name}' is stopped; release() it before moving")
            reference = self._last_sent.pose if self._last_sent is not None else None
        state = self._measured()
        self._check_measured(state)  # every command: an arm pushed out of the box while streaming is stopped
        if reference is None:
            reference = state.ee_pose
        try:
            safe = clip_action(action, reference, self.config, self.counters)
        except ValueError as exc:  # limits changed after the check, or a non-finite reference: never send
            raise ArmCommandError(f"arm '{self.name}': {exc}; nothing was sent") from exc
        with self._motion_lock:
            with self._lock:
                if self._stopped:  # stop() raced with this command: do not move
                    raise ArmStoppedError(f"arm '{self.name}' was stopped while a command was in flight")
                self.counters.commands += 1
                self._last_sent = safe
                self._last_gripper = safe.gripper
                self._last_command_time = self._clock()
            with self._arm_errors():
                sent = self.inner.send_action(safe)
        if self._stopped:  # stop() gave up waiting and stopped while the driver was sending: stop again
            self._halt_inner()
            raise ArmStoppedError(f"arm '{self.name}' was stopped while a command was in flight; stopped again")
        return sent

    def _check_measured(self, state: RobotState) -> None:
        lo = np.asarray(self.config.workspace_min) - self.config.violation_margin
        hi = np.asarray(self.config.workspace_max) + self.config.violation_margin
        p = np.asarray(state.ee_pose.position, dtype=np.float64)
        finite = bool(np.all(np.isfinite(p)))
        if not finite or np.any(p < lo) or np.any(p > hi):
            self.counters.violations += 1
            self.stop()
            if not finite:
                raise LimitViolationError(
                    f"arm '{self.name}' reports a non-finite end-effector position {p.tolist()}; stopped. Check "
                    "the arm's connection and controller, then release the stop")
            raise LimitViolationError(
                f"arm '{self.name}' end-effector at {np.round(p, 3).tolist()} m is outside the safe "
                f"workspace {_metres(self.config.workspace_min)}..{_metres(self.config.workspace_max)} m; "
                "move it back by hand (or with the vendor tool) and release the stop")

    def home(self) -> None:
        with self._motion_lock:
            with self._lock:
                if self._stopped:
                    raise ArmStoppedError(f"arm '{self.name}' is stopped; release() it before homing")
                self._last_sent = None
                self._last_command_time = None
                self._last_gripper = None
            with self._arm_errors():
                self.inner.home()

    def _halt_inner(self) -> None:
        """The driver's stop; a gripper motion it froze becomes the gripper's last command (nothing told before
        the stop resumes after it: a handover continues from where the fingers stopped)."""
        with self._arm_errors():
            held = self.inner.stop()
        if held is not None:
            with self._lock:
                self._last_gripper = float(held)

    def latch(self) -> None:
        """Refuse every motion command from now on, until release(). No I/O: safe from a GUI thread."""
        with self._lock:
            self._stopped = True

    def stop(self) -> None:
        """Halt now and refuse motion until release(). Safe to call from any thread."""
        self.latch()  # first: a command racing with us is refused
        self.counters.stops += 1
        waited = self._motion_lock.acquire(timeout=self.config.stop_wait)  # let a command in flight finish
        try:
            self._halt_inner()
        finally:
            if waited:
                self._motion_lock.release()
        with self._lock:
            self._last_sent = None
            self._last_command_time = None

    def release(self) -> None:
        """The operator's decision to allow motion again after a stop."""
        with self._lock:
            self._stopped = False
            self._last_sent = None

    # -- watchdog ---------------------------------------------------------
    def _watch(self) -> None:
        period = self.config.watchdog_timeout / 4.0
        while not self._watchdog_stop.wait(period):
            self.check_watchdog()

    def check_watchdog(self) -> bool:
        """Stop the arm if commands stopped arriving; True when it fired.

        It decides and stops under the motion lock, so its stop never lands inside a
        command in flight (the driver would refuse that command as "stopped").
        """
        with self._motion_lock:
            with self._lock:
                last = self._last_command_time
                if last is None or self._clock() - last <= self.config.watchdog_timeout:
                    return False
                self._last_sent = None
                self._last_command_time = None
                self.counters.watchdog_stops += 1
            log.warning("watchdog: no command for %.0f ms, stopping arm '%s'",
                        self.config.watchdog_timeout * 1000, self.name)
            if self.inner.is_connected:
                self._halt_inner()
        if self._on_watchdog is not None:
            self._on_watchdog()
        return True
