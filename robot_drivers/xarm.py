"""UFactory xArm (xArm 5/6/7, Lite 6, 850) through the vendor's xarm-python-sdk (``XArmAPI``).

Units are converted here and nowhere else: the program speaks metres,
quaternions [x, y, z, w] and a gripper scalar in [0, 1]; the SDK speaks
millimetres, fixed-axis roll/pitch/yaw in degrees (``is_radian=False``:
R = Rz(yaw) Ry(pitch) Rx(roll)) and gripper pulses 0 (closed) .. 850 (open).

Streaming: each control tick sends one absolute target. The default is the
controller's Cartesian online-planning mode (mode 7, ``set_position`` with
``wait=False``): the controller re-plans smoothly towards the newest target,
which suits a 10-30 Hz policy. Servo mode (mode 1, ``set_servo_cartesian``)
executes targets without planning and is meant for 100 Hz+ streams of small
steps.

Every SDK return code is checked; non-zero codes and the controller's error
and warning codes become the exceptions of :mod:`core.errors`, with
the controller's own numbers in the message (see :data:`CONTROLLER_ERRORS`).
Targets outside the configured workspace are refused before any SDK call
(the safety layer clips them first: this is defence in depth).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot_drivers.arm import Arm
from core.errors import (ArmCommandError, ArmFaultError, ArmStoppedError, ConnectionLostError, DeviceError,
                     LimitViolationError, NotConnectedError, ProtectiveStopError, UnsupportedModeError)
from core.transforms import euler_to_quat, quat_to_matrix
from robot_drivers.safety import check_workspace_box, refuse_outside_workspace
from core.types import Action, Pose, RobotState
from robot_drivers.registry import register_arm

log = logging.getLogger(__name__)

GRIPPER_OPEN_PULSE = 850.0  # xArm Gripper: 0 closed .. 850 open
#: A stop tells a gripper motion from rest by two position reads this far apart, and a change of this many pulses
#: (of 850) between them. Not measured on an xArm Gripper here: at the slowest speed the SDK allows (1000 r/min) a
#: full close is taken to last a few seconds, so a motion under way moves several pulses in 30 ms; at rest the
#: reading is steady. A rig whose gripper reads otherwise tunes these.
GRIPPER_MOTION_PROBE_S = 0.03
GRIPPER_MOTION_PULSES = 3.0
MODES = {"online": 7, "servo": 1}
MOTION_STATE, STOP_STATE = 0, 4

#: Controller error codes (``get_err_warn_code()[0]``): what happened and what to do.
CONTROLLER_ERRORS: dict[int, tuple[str, str]] = {
    1: ("emergency stop button on the control box is pressed", "release it, then re-enable the arm"),
    2: ("emergency stop input of the control box is triggered", "check the E-stop wiring, then re-enable"),
    3: ("emergency stop of the three-state (enabling) switch is pressed", "release it, then re-enable"),
    10: ("servo motor error", "power-cycle the arm; contact UFactory if it repeats"),
    11: ("joint 1 servo error", "power-cycle the arm"), 12: ("joint 2 servo error", "power-cycle the arm"),
    13: ("joint 3 servo error", "power-cycle the arm"), 14: ("joint 4 servo error", "power-cycle the arm"),
    15: ("joint 5 servo error", "power-cycle the arm"), 16: ("joint 6 servo error", "power-cycle the arm"),
    17: ("joint 7 servo error", "power-cycle the arm"),
    19: ("end-effector communication error", "check the tool connector and the gripper"),
    21: ("kinematics error (no solution for the target)", "move the target away from singularities"),
    22: ("self-collision", "the target pose would make the arm hit itself; move it back in manual mode"),
    23: ("joint angle exceeds its limit", "move the target back inside the joint range"),
    24: ("speed exceeds the limit", "lower tcp_speed or the per-tick step"),
    25: ("planning error", "the target is unreachable along a straight line; check the workspace box"),
    26: ("controller real-time error", "reduce the command rate; power-cycle if it repeats"),
    27: ("command reply error", "check the network to the control box"),
    31: ("collision detected (abnormal current)", "something was hit: clear the obstacle, then re-enable"),
    33: ("controller GPIO error", "check the I/O wiring"),
    35: ("safety boundary limit reached", "the target is outside the controller's safety fence; "
         "shrink the workspace box in the rig file"),
    36: ("too many delayed commands", "the command queue overflowed: lower the control rate"),
    38: ("abnormal joint angle", "power-cycle the arm"),
    40: ("trajectory has no error-free joint solution", "choose a target further from singularities"),
    60: ("linear speed limit exceeded in servo mode", "use mode \"online\" or smaller steps per tick"),
}

#: Controller warning codes (``get_err_warn_code()[1]``).
CONTROLLER_WARNINGS: dict[int, str] = {
    11: "the command buffer is full (commands arrive faster than the controller executes them)",
    12: "a command parameter is invalid",
    13: "the command does not exist for this firmware",
    14: "the command has no solution (unreachable target)",
    15: "the Modbus command buffer is full",
}
_REJECTING_WARNINGS = {12, 13, 14}

#: SDK return codes (``XArmAPI`` methods): see the SDK's xarm_api_code.md.
SDK_CODES: dict[int, str] = {
    -1: "not connected", -2: "not ready (motion not enabled or state not set)", -3: "API exception",
    -4: "command does not exist", -6: "Cartesian limit", -7: "joint limit", -8: "parameter out of range",
    -9: "emergency stop", 1: "the controller has an unclear error", 2: "the controller has an unclear warning",
    3: "reply timeout", 4: "reply length error", 5: "reply sequence error", 6: "protocol error",
    7: "reply does not match the command", 8: "send error", 9: "not ready to move", 10: "invalid result",
    11: "other error", 12: "parameter error", 100: "timed out waiting for the motion to finish",
}


def quat_to_rpy(q) -> np.ndarray:
    """Fixed-axis roll, pitch, yaw (rad) with R = Rz(yaw) Ry(pitch) Rx(roll): the xArm convention."""
    m = quat_to_matrix(q)
    pitch = math.asin(max(-1.0, min(1.0, -m[2, 0])))
    if abs(m[2, 0]) < 1.0 - 1e-9:
        roll = math.atan2(m[2, 1], m[2, 2])
        yaw = math.atan2(m[1, 0], m[0, 0])
    else:  # gimbal lock: only roll - yaw (or roll + yaw) is defined; put it all in roll
        yaw = 0.0
        roll = math.atan2(-m[1, 2], m[1, 1])
    return np.array([roll, pitch, yaw])


#: The SDK refuses angles beyond +-180 deg by more than 0.1 deg; stay inside that.
_SEAM_DEG = 0.09


def pose_to_xarm(pose: Pose, previous: list[float] | None = None) -> list[float]:
    """Pose (m, quaternion) -> [x, y, z] mm + [roll, pitch, yaw] degrees.

    A gripper-down pose has roll at the +-180 deg seam, where the conversion
    flips between +180 and -180 on rounding noise. With ``previous`` (the
    last target sent), a roll or yaw on the seam keeps the side of the
    previous one (the same rotation, written as e.g. 180.05 instead of
    -179.95), so consecutive targets never differ by ~360 deg.
    """
    rpy = np.degrees(quat_to_rpy(pose.orientation))
    if previous is not None:
        for i, last in ((0, previous[3]), (2, previous[5])):
            alternative = rpy[i] + math.copysign(360.0, last)
            if abs(alternative) <= 180.0 + _SEAM_DEG and abs(alternative - last) < abs(rpy[i] - last):
                rpy[i] = alternative
    return [*(pose.position * 1000.0).tolist(), *rpy.tolist()]


def xarm_to_pose(values) -> Pose:
    """[x, y, z] mm + [roll, pitch, yaw] degrees -> Pose."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] < 6 or not np.all(np.isfinite(v[:6])):
        raise ArmCommandError(f"xArm reported an invalid pose {list(values)!r}")
    return Pose(v[:3] / 1000.0, euler_to_quat(*np.radians(v[3:6])))


def gripper_to_pulse(g: float) -> float:
    return float(np.clip(g, 0.0, 1.0)) * GRIPPER_OPEN_PULSE


def pulse_to_gripper(pulse: float) -> float:
    return float(np.clip(pulse / GRIPPER_OPEN_PULSE, 0.0, 1.0))


def _named(target: list[float]) -> dict[str, float]:
    return dict(zip(("x", "y", "z", "roll", "pitch", "yaw"), target))


def describe_error(code: int) -> str:
    title, fix = CONTROLLER_ERRORS.get(code, ("controller error", "see the xArm manual's error table"))
    return f"xArm error {code}: {title}; {fix}"


@dataclass
class XArmConfig:
    ip: str = ""
    workspace_min: tuple[float, float, float] = (0.15, -0.40, 0.02)  # metres, robot base frame
    workspace_max: tuple[float, float, float] = (0.65, 0.40, 0.50)
    home_position: tuple[float, float, float] = (0.35, 0.0, 0.30)
    home_orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # gripper pointing down
    home_gripper: float = 1.0
    mode: str = "online"  # "online" (mode 7, planned) or "servo" (mode 1, 100 Hz+ streams)
    tcp_speed: float = 0.10  # m/s, the planner's speed limit when streaming
    tcp_acc: float = 1.0  # m/s^2
    home_speed: float = 0.05  # m/s, the slow move to home
    home_timeout_s: float = 60.0  # the move to home is stopped and reported if it takes longer
    gripper: bool = True  # an xArm Gripper is attached
    gripper_speed: float = 3000.0  # r/min (the SDK's unit), 1000..5000
    gripper_deadband: float = 0.01  # gripper commands closer than this to the last one are not resent
    clear_errors_on_connect: bool = False  # False: a controller error at connect is reported, not cleared

    def __post_init__(self):
        if not self.ip:
            raise ValueError("an xArm needs its IP address (the one set on the control box)")
        if self.mode not in MODES:
            raise ValueError(f"xArm mode must be one of {sorted(MODES)}, got {self.mode!r}")
        lo, hi = check_workspace_box(self.workspace_min, self.workspace_max)
        home = np.asarray(self.home_position, float)
        if home.shape != (3,) or not np.all(np.isfinite(home)) or np.any(home < lo) or np.any(home > hi):
            raise ValueError(f"home position {list(self.home_position)} lies outside the workspace box")
        if not 0.0 < self.tcp_speed <= 1.0 or not 0.0 < self.home_speed <= 0.25:  # chained: refuses nan too
            raise ValueError("tcp_speed must be in (0, 1] m/s and home_speed in (0, 0.25] m/s")
        if not (0.0 < self.tcp_acc < float("inf") and 0.0 < self.home_timeout_s < float("inf")):
            raise ValueError("tcp_acc and home_timeout_s must be positive and finite")

    @property
    def home_pose(self) -> Pose:
        return Pose(np.asarray(self.home_position, float), np.asarray(self.home_orientation, float))


#: Servo mode (mode 1) executes each target at once, without planning and ignoring tcp_speed: only safe for
#: a dense stream of small steps.
SERVO_MIN_RATE_HZ = 100.0


def check_streaming_rate(config: XArmConfig, rate_hz: float, step_m: float) -> XArmConfig:
    """``config`` when it can stream at ``rate_hz`` with steps of ``step_m``: servo mode at a rate or step size
    where each target would be a jump is refused (ValueError says why)."""
    if config.mode != "servo":
        return config
    if rate_hz < SERVO_MIN_RATE_HZ:
        raise ValueError(f"xArm mode \"servo\" needs rate_hz >= {SERVO_MIN_RATE_HZ:g} (got {rate_hz:g} Hz): servo "
                         "mode executes every target at once, with no planning and no speed limit; use "
                         "mode = \"online\" at this rate")
    if step_m > config.tcp_speed / rate_hz + 1e-12:
        raise ValueError(f"xArm mode \"servo\": the per-tick step {step_m * 1000:.2f} mm exceeds tcp_speed / rate "
                         f"= {config.tcp_speed / rate_hz * 1000:.2f} mm; lower max_step_m or use mode = \"online\"")
    return config


def xarm_from_rig_table(t, shared) -> tuple[XArmConfig, None]:
    """An xArm's config from its rig file's ``[arm]`` table ``t`` (a :class:`robot_drivers.rig_config.RigTable`),
    beside the keys every arm has (``shared``). Its own keys:

        ip                        an IPv4 address (the SDK opens a serial port for anything else)
        mode                      "online" (default: mode 7, planned) or "servo" (mode 1: rate_hz >= 100)
        gripper                   true (default): an xArm Gripper on the flange
        clear_errors_on_connect   false (default): a controller error at connect is reported, not cleared

    The planner's speed is the rig's ``max_speed_m_s``; the move home is at most that fast."""
    speed = shared.max_speed_m_s
    return XArmConfig(**shared.fields, mode=t.str("mode", "online", choices=("online", "servo")),
                      tcp_speed=speed, home_speed=min(speed, shared.home_speed),
                      gripper=t.bool("gripper", True),
                      clear_errors_on_connect=t.bool("clear_errors_on_connect", False)), None


def _xarm_api_class():
    try:
        from xarm.wrapper import XArmAPI
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise DeviceError("xarm-python-sdk is not installed: pip install -e '.[xarm]'") from exc
    return XArmAPI


@register_arm("xarm", XArmConfig, parse=xarm_from_rig_table, at_rate=check_streaming_rate, port=502,
              ipv4_only="the xArm SDK opens a serial port for anything else")
class XArm(Arm):
    name = "xarm"
    skip_connect_when_connected = True

    def __init__(self, config: XArmConfig, api_factory: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._factory = api_factory
        self._clock = clock
        self._api = None
        self._lock = threading.RLock()
        self._armed = False  # motion enabled, streaming mode set, state 0
        self._generation = 0  # bumped by every stop(): a command under way checks it before each motion call
        self._last_gripper: float | None = None
        self._last_target: list[float] | None = None  # the last pose sent (SDK units), for the roll seam

    # -- codes ------------------------------------------------------------
    def _check(self, code, what: str) -> None:
        """Turn an SDK return code into an exception (0 is success)."""
        if code == 0:
            return
        if code in (1, 2):  # the controller holds an error or warning: ask which
            self._raise_controller(what)
            if code == 2:
                return  # a harmless warning (logged)
        text = SDK_CODES.get(code, "unknown code")
        if code == -9:
            raise ProtectiveStopError(f"xArm {what} refused: the controller is stopped (state 4: a stop command, "
                                      "another program's stop or the emergency stop); if the red E-stop is "
                                      "pressed release it, then release the stop in the program")
        if code in (-1, 3, 4, 5, 6, 7, 8):
            self._armed = False
            raise ConnectionLostError(f"xArm {what} failed: {text} (code {code}); check the network cable to "
                                      f"{self.config.ip} and that the control box is on")
        if code in (-6, -7, -8):
            raise LimitViolationError(f"xArm {what} refused: {text} (code {code})")
        if code in (-2, 9):
            self._armed = False
            raise ArmCommandError(f"xArm {what} refused: {text} (code {code}); the arm must be enabled and in "
                                  "state 0 — release the stop in the program and check the controller")
        raise ArmCommandError(f"xArm {what} failed: {text} (code {code})")

    def _raise_controller(self, what: str) -> None:
        code, err_warn = self._api.get_err_warn_code()
        if code != 0:
            raise ConnectionLostError(f"xArm {what}: could not read the controller's error code (code {code})")
        error, warning = int(err_warn[0]), int(err_warn[1])
        if error:
            self._armed = False
            message = f"{describe_error(error)} (during {what})"
            if error in (1, 2, 3):
                raise ProtectiveStopError(message)
            raise ArmFaultError(message)
        if warning:
            text = CONTROLLER_WARNINGS.get(warning, "controller warning")
            if warning in _REJECTING_WARNINGS:
                self._api.clean_warn()
                raise ArmCommandError(f"xArm warning {warning}: {text} (during {what})")
            log.warning("xArm warning %d: %s (during %s)", warning, text, what)
            self._api.clean_warn()

    # -- life cycle -------------------------------------------------------
    def _connect(self) -> None:
        factory = self._factory or _xarm_api_class()
        api = factory(self.config.ip, is_radian=False, do_not_open=True)
        try:
            api.connect()
        except Exception as exc:  # the SDK raises on an unreachable address
            raise ConnectionLostError(f"cannot connect to the xArm at {self.config.ip}: {exc}; check the cable, "
                                      "the host's address on the arm's subnet, and ping it (docs/bringup.md)") from exc
        if not api.connected:
            raise ConnectionLostError(f"cannot connect to the xArm at {self.config.ip}; check the cable, the host's "
                                      "address on the arm's subnet, and ping it (docs/bringup.md)")
        self._api = api
        try:
            code, err_warn = api.get_err_warn_code()
            self._check(code, "get_err_warn_code")
            if err_warn[0]:
                if not self.config.clear_errors_on_connect:
                    raise (ProtectiveStopError if err_warn[0] in (1, 2, 3) else ArmFaultError)(
                        f"{describe_error(int(err_warn[0]))}. The controller reported it at connect; clear it "
                        "(UFactory Studio or clear_errors_on_connect = true) once the cause is fixed")
                self._check(api.clean_error(), "clean_error")
            if err_warn[1]:
                self._check(api.clean_warn(), "clean_warn")
            if self.config.gripper and api.is_lite6:
                raise UnsupportedModeError(
                    "this is a Lite 6: its gripper is not the Modbus xArm Gripper this driver drives; set "
                    "gripper = false in the rig file's [arm] table (the arm then runs without a gripper)")
            self._arm_motion(self._generation)
            if self.config.gripper:
                self._check(api.set_gripper_mode(0), "set_gripper_mode")
                self._check(api.set_gripper_enable(True), "set_gripper_enable")
                self._check(api.set_gripper_speed(self.config.gripper_speed), "set_gripper_speed")
        except Exception:
            api.disconnect()
            self._api = None
            raise

    def _arm_motion(self, generation: int, mode: int | None = None) -> None:
        """Enable the motors, select the streaming mode and enter the motion state (not after a stop)."""
        api = self._api
        self._not_stopped_since(generation, "motion_enable")
        self._check(api.motion_enable(enable=True), "motion_enable")
        self._not_stopped_since(generation, "set_mode")
        self._check(api.set_mode(MODES[self.config.mode] if mode is None else mode), "set_mode")
        self._not_stopped_since(generation, "set_state")
        self._check(api.set_state(state=MOTION_STATE), "set_state")
        self._armed = mode is None

    def _not_stopped_since(self, generation: int, what: str) -> None:
        """Raise instead of making the next motion call if stop() came after the command began (under the lock)."""
        if self._generation != generation:
            self._armed = False
            raise ArmStoppedError(f"xArm {what} not sent: the arm was stopped while the command was under way")

    def _stopped_during(self, generation: int, what: str) -> None:
        """After a motion call: a stop that raced with it may have reached the controller first; stop again."""
        if self._generation != generation:
            self.stop()
            raise ArmStoppedError(f"xArm was stopped during {what}; stopped again so that it stays stopped")

    def _disconnect(self) -> None:
        with self._lock:
            if self._api is not None:
                try:
                    self._api.disconnect()
                finally:
                    self._api = None
                    self._armed = False

    @property
    def is_connected(self) -> bool:
        return self._api is not None and bool(self._api.connected)

    def _require(self):
        if self._api is None:
            raise NotConnectedError(f"xArm at {self.config.ip} is not connected; call connect() first")
        if not self._api.connected:
            raise ConnectionLostError(f"lost the connection to the xArm at {self.config.ip}; check the network "
                                      "cable and the control box")
        return self._api

    # -- state ------------------------------------------------------------
    def get_state(self) -> RobotState:
        with self._lock:
            api = self._require()
            if api.error_code:
                self._armed = False
                raise (ProtectiveStopError if api.error_code in (1, 2, 3) else ArmFaultError)(
                    describe_error(int(api.error_code)))
            code, position = api.get_position(is_radian=False)
            self._check(code, "get_position")
            code, angles = api.get_servo_angle(is_radian=True)
            self._check(code, "get_servo_angle")
            angles = angles[:api.axis]  # the SDK pads to 7 joints
            gripper = self._last_gripper if self._last_gripper is not None else 1.0
            if self.config.gripper:
                code, pulse = api.get_gripper_position()
                self._check(code, "get_gripper_position")
                gripper = pulse_to_gripper(float(pulse))
            return RobotState(self._clock(), xarm_to_pose(position), gripper, np.asarray(angles, dtype=np.float64))

    # -- motion -----------------------------------------------------------
    def _check_workspace(self, pose: Pose) -> None:
        refuse_outside_workspace(pose, self.config.workspace_min, self.config.workspace_max, "xArm")

    def send_action(self, action: Action) -> Action:
        self._check_workspace(action.pose)  # before any SDK call
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        generation = self._generation
        with self._lock:
            api = self._require()
            if not self._armed:
                self._arm_motion(generation)
            target = pose_to_xarm(action.pose, self._last_target)
            self._not_stopped_since(generation, "the target")
            if self.config.mode == "online":
                code = api.set_position(**_named(target), speed=self.config.tcp_speed * 1000.0,
                                        mvacc=self.config.tcp_acc * 1000.0, is_radian=False, wait=False)
                self._stopped_during(generation, "set_position")
                self._check(code, "set_position")
                self._last_target = target
            else:
                code = api.set_servo_cartesian(target, is_radian=False)
                self._stopped_during(generation, "set_servo_cartesian")
                self._check(code, "set_servo_cartesian")
                self._last_target = target
            if self.config.gripper and (self._last_gripper is None
                                        or abs(gripper - self._last_gripper) > self.config.gripper_deadband):
                self._not_stopped_since(generation, "set_gripper_position")
                code = api.set_gripper_position(gripper_to_pulse(gripper), wait=False)
                self._stopped_during(generation, "set_gripper_position")  # a stop's halt must come after the move
                self._check(code, "set_gripper_position")
                self._last_gripper = gripper
        return Action(action.pose, gripper)

    def home(self) -> None:
        """Slow planned move to the home pose (position mode), gripper open, then back to streaming.

        stop() interrupts it (:class:`ArmStoppedError`); a move that takes longer than ``home_timeout_s`` is
        stopped and reported.
        """
        home = self.config.home_pose
        self._check_workspace(home)
        generation = self._generation
        with self._lock:
            api = self._require()
            self._arm_motion(generation, mode=0)
            self._not_stopped_since(generation, "set_position (home)")
            target = pose_to_xarm(home, self._last_target)
            code = api.set_position(**_named(target), speed=self.config.home_speed * 1000.0,
                                    mvacc=self.config.tcp_acc * 1000.0, is_radian=False, wait=True,
                                    timeout=self.config.home_timeout_s)
            if self._generation != generation:  # the wait ends with -9 when stopped: that is our stop, not an E-stop
                raise ArmStoppedError("xArm homing was stopped before the arm reached home; release the stop and "
                                      "Home again")
            if code == 100:
                self.stop()
                raise ArmCommandError(f"xArm did not reach home within {self.config.home_timeout_s:g} s and was "
                                      "stopped; check that nothing blocks the path (and home_speed), then Home again")
            self._check(code, "set_position (home)")
            self._last_target = target
            if self.config.gripper:
                self._not_stopped_since(generation, "set_gripper_position (home)")
                self._check(api.set_gripper_position(gripper_to_pulse(self.config.home_gripper), wait=True),
                            "set_gripper_position (home)")
                self._last_gripper = self.config.home_gripper
            self._arm_motion(generation)

    def _halting(self):
        """A stop begins: bump the generation (a command under way sees it) and disarm; the SDK handle (None when
        not connected)."""
        self._generation += 1
        api = self._api
        self._armed = False
        return api

    def stop(self) -> float | None:
        """Halt now (controller state 4), then end a gripper motion under way where the fingers are (the
        opening then held is returned, else None). Never raises: a failed stop escalates to the emergency stop.

        It takes no lock (it must not wait for a command under way); that command sees the bumped generation
        before its next motion call, and re-sends the stop if its own call raced with this one.
        """
        api = self._halting()
        if api is None:
            return None
        try:
            code = api.set_state(state=STOP_STATE)
        except Exception as exc:  # noqa: BLE001 - a stop must not throw
            log.error("xArm stop raised %s; emergency stop", exc)
            code = -1
        if code != 0:
            log.error("xArm set_state(4) returned %s; sending the emergency stop", code)
            self.emergency_stop()
        return self._halt_gripper(api)

    def _halt_gripper(self, api) -> float | None:
        """The xArm Gripper reports no motion status, and a stop of the arm does not stop it: two reads of its
        position GRIPPER_MOTION_PROBE_S apart tell a motion under way (it moved GRIPPER_MOTION_PULSES or more)
        from fingers at rest (closed on something, closed, or open: nothing is sent, a grip keeps its force).
        Moving, it is told to stay where the second read found it. Never raises."""
        if not self.config.gripper:
            return None
        try:
            code, first = api.get_gripper_position()
            if code != 0:
                return None
            time.sleep(GRIPPER_MOTION_PROBE_S)
            code, second = api.get_gripper_position()
            if code != 0 or abs(float(second) - float(first)) < GRIPPER_MOTION_PULSES:
                return None
            code = api.set_gripper_position(float(second), wait=False)
            if code != 0:
                log.error("xArm stop: holding the gripper where it is returned %s; it may finish its motion", code)
                return None
            return pulse_to_gripper(float(second))
        except Exception as exc:  # noqa: BLE001 - a stop must not throw; the arm is halted already
            log.error("xArm stop: the gripper could not be halted (%s); it may finish its motion", exc)
            return None

    def emergency_stop(self) -> None:
        """The SDK's emergency stop: stops every motion; the arm must be re-enabled afterwards."""
        api = self._halting()
        if api is None:
            return
        try:
            api.emergency_stop()
        except Exception as exc:  # noqa: BLE001
            log.error("xArm emergency_stop failed: %s — press the red button on the control box", exc)
