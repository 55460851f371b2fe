"""Universal Robots (CB3 / e-Series: UR3, UR5, UR10, UR16...) through ur-rtde.

``RTDEReceiveInterface`` reads the state, ``RTDEControlInterface`` streams
one ``servoL`` per control tick: the target pose (xyz in metres + rotation
vector in radians, UR's own convention, so only the orientation is
converted here), the tick length as the servo time, and the lookahead and
gain that smooth the controller's tracking. ``servoStop`` ends the stream on
stop (``stopL`` when not streaming). ``stop`` bumps a generation counter that
a command under way checks before each motion call, so a stop is never
followed by motion the command had not yet sent.

A protective or emergency stop, read from the receive interface, raises
:class:`ProtectiveStopError` before any command is sent. A dropped RTDE
connection is re-established (up to ``reconnect_attempts`` tries) but always
reported as :class:`ConnectionLostError`: the program never resumes motion
by itself. ``home`` is an asynchronous ``moveL`` polled until it ends, so
``stop`` (``stopL``) interrupts it. The gripper is a pluggable adapter
(:mod:`robot_drivers.grippers`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .arm import Arm
from .errors import (ArmCommandError, ArmStoppedError, ConnectionLostError, DeviceError, LimitViolationError,
                     NotConnectedError, ProtectiveStopError)
from .grippers import Gripper, NoGripper
from .transforms import normalize_quat, rotvec_to_quat
from .safety import check_workspace_box, refuse_outside_workspace
from .types import Action, Pose, RobotState

log = logging.getLogger(__name__)

ROBOT_MODE_RUNNING = 7
ROBOT_MODES = {-1: "no controller", 0: "disconnected", 1: "confirm safety", 2: "booting", 3: "powered off",
               4: "powered on (brakes still on)", 5: "idle (brakes on)", 6: "in backdrive", 7: "running",
               8: "updating firmware"}
SAFETY_MODES = {1: "normal", 2: "reduced", 3: "protective stop", 4: "recovery", 5: "safeguard stop",
                6: "system emergency stop", 7: "robot emergency stop", 8: "violation", 9: "fault",
                10: "validate joint id", 11: "undefined", 12: "automatic mode safeguard stop",
                13: "system three-position enabling stop"}


def quat_to_rotvec(q) -> np.ndarray:
    """Unit quaternion [x, y, z, w] -> rotation vector (axis * angle, angle in [0, pi])."""
    x, y, z, w = normalize_quat(q)  # w >= 0
    s = float(np.sqrt(x * x + y * y + z * z))
    if s < 1e-12:
        return np.zeros(3)
    angle = 2.0 * float(np.arctan2(s, w))
    return np.array([x, y, z]) / s * angle


def pose_to_ur(pose: Pose) -> list[float]:
    return [*pose.position.tolist(), *quat_to_rotvec(pose.orientation).tolist()]


def ur_to_pose(values) -> Pose:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise ArmCommandError(f"UR reported an invalid TCP pose {list(values)!r}")
    return Pose(v[:3], rotvec_to_quat(v[3:]))


@dataclass
class URConfig:
    ip: str = ""
    rate_hz: float = 10.0  # the control tick: each servoL holds for 1 / rate_hz seconds
    rtde_frequency: float = -1.0  # RTDE rate, -1: the controller's default (500 Hz e-Series, 125 Hz CB3)
    servo_lookahead: float = 0.1  # s, 0.03..0.2: larger is smoother and lags more
    servo_gain: float = 300.0  # 100..2000: larger tracks tighter
    workspace_min: tuple[float, float, float] = (-0.6, -0.6, 0.02)  # metres, robot base frame
    workspace_max: tuple[float, float, float] = (0.6, 0.6, 0.6)
    home_position: tuple[float, float, float] = (0.0, -0.4, 0.3)
    home_orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # tool pointing down
    home_gripper: float = 1.0
    home_speed: float = 0.05  # m/s
    home_acc: float = 0.3  # m/s^2
    home_timeout_s: float = 60.0  # the move to home is stopped and reported if it takes longer
    home_tolerance_m: float = 0.005  # the move must end this close to home
    stop_acc: float = 2.0  # m/s^2 deceleration on stop
    reconnect_attempts: int = 1
    gripper_deadband: float = 0.01

    def __post_init__(self):
        if not self.ip:
            raise ValueError("a UR arm needs the controller's IP address (Settings > System > Network on the pendant)")
        if not 0.0 < self.rate_hz <= 500.0:
            raise ValueError(f"rate_hz must be in (0, 500], got {self.rate_hz}")
        if not 0.03 <= self.servo_lookahead <= 0.2:
            raise ValueError(f"servo_lookahead must be in [0.03, 0.2] s, got {self.servo_lookahead}")
        if not 100.0 <= self.servo_gain <= 2000.0:
            raise ValueError(f"servo_gain must be in [100, 2000], got {self.servo_gain}")
        lo, hi = check_workspace_box(self.workspace_min, self.workspace_max)
        home = np.asarray(self.home_position, float)
        if np.any(home < lo) or np.any(home > hi):
            raise ValueError(f"home position {list(self.home_position)} lies outside the workspace box")
        if not 0.0 < self.home_speed <= 0.25:
            raise ValueError("home_speed must be in (0, 0.25] m/s")
        if self.home_timeout_s <= 0:
            raise ValueError("home_timeout_s must be positive")

    @property
    def home_pose(self) -> Pose:
        return Pose(np.asarray(self.home_position, float), np.asarray(self.home_orientation, float))


def _rtde_classes():
    try:
        from rtde_control import RTDEControlInterface
        from rtde_receive import RTDEReceiveInterface
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise DeviceError("ur-rtde is not installed: pip install -e '.[ur]'") from exc
    return RTDEControlInterface, RTDEReceiveInterface


class URArm(Arm):
    name = "ur"

    def __init__(self, config: URConfig, gripper: Gripper | None = None, *,
                 control_factory: Callable | None = None, receive_factory: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.gripper = gripper or NoGripper()
        self._control_factory = control_factory
        self._receive_factory = receive_factory
        self._clock = clock
        self._control = None
        self._receive = None
        self._lock = threading.RLock()
        self._streaming = False
        self._generation = 0  # bumped by every stop(): a command under way checks it before each motion call
        self._last_gripper: float | None = None
        self.reconnects = 0

    # -- life cycle -------------------------------------------------------
    def connect(self) -> None:
        if self.is_connected:
            return
        if self._control_factory is None or self._receive_factory is None:
            control_cls, receive_cls = _rtde_classes()
        make_control = self._control_factory or control_cls
        make_receive = self._receive_factory or receive_cls
        ip = self.config.ip
        try:
            self._receive = make_receive(ip, self.config.rtde_frequency)
        except RuntimeError as exc:
            raise ConnectionLostError(f"cannot open RTDE to the UR at {ip}: {exc}; check the cable, ping it, "
                                      "and that the robot is powered on (docs/bringup.md)") from exc
        try:
            self._check_safety("connect")
            try:
                self._control = make_control(ip, self.config.rtde_frequency)
            except RuntimeError as exc:
                raise ConnectionLostError(f"cannot take control of the UR at {ip}: {exc}; {self._why_no_control()}") \
                    from exc
            self.gripper.connect()
        except Exception:
            self._close()
            raise

    def _why_no_control(self) -> str:
        """The likely cause when the control script cannot be started, from the robot mode."""
        mode = int(self._receive.getRobotMode())
        if mode != ROBOT_MODE_RUNNING:
            return (f"the robot is {ROBOT_MODES.get(mode, f'in robot mode {mode}')}: power it on and release the "
                    "brakes on the pendant (the status must read Normal / running), then connect again")
        return ("on e-Series put the robot in Remote Control mode, and make sure no other program holds RTDE "
                "control")

    def _close(self) -> None:
        for iface in (self._control, self._receive):
            if iface is not None:
                try:
                    iface.disconnect()
                except RuntimeError as exc:  # pragma: no cover - already gone
                    log.debug("UR disconnect: %s", exc)
        self._control = self._receive = None
        self._streaming = False

    def disconnect(self) -> None:
        with self._lock:
            if self._control is not None:
                try:
                    if self._streaming:
                        self._control.servoStop(self.config.stop_acc)
                    self._control.stopScript()
                except RuntimeError as exc:
                    log.warning("UR: stopping the control script failed: %s", exc)
            try:
                self.gripper.disconnect()
            finally:
                self._close()

    @property
    def is_connected(self) -> bool:
        return self._control is not None and self._receive is not None and bool(self._control.isConnected())

    # -- checks -----------------------------------------------------------
    def _require(self):
        if self._control is None or self._receive is None:
            raise NotConnectedError(f"UR at {self.config.ip} is not connected; call connect() first")
        if not (self._control.isConnected() and self._receive.isConnected()):
            self._reconnect()
        return self._control, self._receive

    def _reconnect(self) -> None:
        """The RTDE connection dropped: re-establish it, but never carry on by ourselves.

        Whatever was under way is abandoned and :class:`ConnectionLostError` is raised either way, so the
        control loop ends and the operator decides whether to start again.
        """
        self._streaming = False
        self._generation += 1
        ip = self.config.ip
        for attempt in range(1, self.config.reconnect_attempts + 1):
            log.warning("UR %s: RTDE connection lost, reconnecting (%d/%d)", ip, attempt,
                        self.config.reconnect_attempts)
            try:
                ok = bool(self._receive.reconnect()) and bool(self._control.reconnect())
            except RuntimeError as exc:
                log.warning("UR reconnect failed: %s", exc)
                ok = False
            if ok and self._control.isConnected() and self._receive.isConnected():
                self.reconnects += 1
                raise ConnectionLostError(
                    f"the RTDE connection to the UR at {ip} dropped and was re-established; the command was not "
                    "sent and the motion in progress ended. Check the network cable and the pendant, then start "
                    "again")
        raise ConnectionLostError(
            f"lost the RTDE connection to the UR at {ip} and {self.config.reconnect_attempts} reconnect "
            "attempt(s) failed; check the network cable and the pendant (a popup may have stopped the program)")

    def _check_safety(self, what: str) -> None:
        receive = self._receive
        if receive.isProtectiveStopped() or receive.isEmergencyStopped():
            self._streaming = False
            mode = int(receive.getSafetyMode())
            raise ProtectiveStopError(
                f"UR at {self.config.ip} is in {SAFETY_MODES.get(mode, f'safety mode {mode}')} ({what} refused); "
                "find the cause, unlock the protective stop on the pendant (or release the E-stop), then release "
                "the stop in the program")

    def _check_workspace(self, pose: Pose) -> None:
        refuse_outside_workspace(pose, self.config.workspace_min, self.config.workspace_max, "UR")

    # -- state ------------------------------------------------------------
    def get_state(self) -> RobotState:
        with self._lock:
            _, receive = self._require()
            self._check_safety("get_state")
            pose = ur_to_pose(receive.getActualTCPPose())
            q = np.asarray(receive.getActualQ(), dtype=np.float64)
            gripper = self.gripper.position()
            return RobotState(self._clock(), pose, gripper, q)

    # -- motion -----------------------------------------------------------
    def _not_stopped_since(self, generation: int, what: str) -> None:
        """Raise instead of making the next motion call if stop() came after the command began (under the lock)."""
        if self._generation != generation:
            raise ArmStoppedError(f"UR {what} not sent: the arm was stopped while the command was under way")

    def _stopped_during(self, generation: int, what: str) -> None:
        """After a motion call: a stop that raced with it may have reached the controller first; stop again."""
        if self._generation != generation:
            self.stop()
            raise ArmStoppedError(f"UR was stopped during {what}; stopped again so that it stays stopped")

    def send_action(self, action: Action) -> Action:
        self._check_workspace(action.pose)  # before any SDK call
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        cfg = self.config
        generation = self._generation
        with self._lock:
            control, _ = self._require()
            self._check_safety("servoL")
            self._not_stopped_since(generation, "servoL")
            ok = control.servoL(pose_to_ur(action.pose), 0.0, 0.0, 1.0 / cfg.rate_hz, cfg.servo_lookahead,
                                cfg.servo_gain)
            if ok:
                self._streaming = True
            self._stopped_during(generation, "servoL")
            if not ok:
                self._check_safety("servoL")
                raise ArmCommandError(self._servo_refused())
            if self._last_gripper is None or abs(gripper - self._last_gripper) > cfg.gripper_deadband:
                self._not_stopped_since(generation, "the gripper command")
                self.gripper.move(gripper)
                self._last_gripper = gripper
        return Action(action.pose, gripper)

    def _servo_refused(self) -> str:
        ip = self.config.ip
        if not self._control.isProgramRunning():
            return (f"UR at {ip} refused servoL: the RTDE control script is not running on the controller (a "
                    "protective stop, a pendant popup or another program ends it); clear the cause on the pendant, "
                    "then reconnect the rig (disconnect + connect reuploads the script)")
        return f"UR at {ip} refused servoL; the pendant's log may show why"

    def home(self) -> None:
        """Slow linear move to home, asynchronous so that stop() (stopL) can interrupt it; gripper to home.

        Raises :class:`ArmStoppedError` when stopped, :class:`ArmCommandError` when the move takes longer than
        ``home_timeout_s`` (it is stopped) or ends away from home.
        """
        cfg = self.config
        home = cfg.home_pose
        self._check_workspace(home)
        generation = self._generation
        with self._lock:
            control, receive = self._require()
            self._check_safety("home")
            if self._streaming:
                control.servoStop(cfg.stop_acc)
                self._streaming = False
            self._not_stopped_since(generation, "moveL (home)")
            if not control.moveL(pose_to_ur(home), cfg.home_speed, cfg.home_acc, True):
                self._check_safety("home")
                raise ArmCommandError(f"UR at {cfg.ip} refused the move to home")
            deadline = self._clock() + cfg.home_timeout_s
            while control.getAsyncOperationProgressEx().isAsyncOperationRunning():
                self._stopped_during(generation, "the move to home")
                self._check_safety("home")
                if self._clock() > deadline:
                    self.stop()
                    raise ArmCommandError(f"UR did not reach home within {cfg.home_timeout_s:g} s and was stopped; "
                                          "check that nothing blocks the path (and home_speed), then Home again")
                time.sleep(0.02)
            self._stopped_during(generation, "the move to home")
            self._check_safety("home")
            off = float(np.linalg.norm(ur_to_pose(receive.getActualTCPPose()).position - home.position))
            if off > cfg.home_tolerance_m:
                raise ArmCommandError(f"UR move to home ended {off * 1000:.0f} mm from home (was the program paused "
                                      "on the pendant?); Home again")
            self.gripper.move(cfg.home_gripper)
            self._last_gripper = cfg.home_gripper

    def stop(self) -> None:
        """Decelerate to a halt. Never raises (the watchdog calls it from its thread).

        It takes no lock (it must not wait for a command under way); that command sees the bumped generation
        before its next motion call, and re-sends the stop if its own call raced with this one.
        """
        self._generation += 1
        control = self._control
        if control is None:
            return
        try:
            if self._streaming:
                control.servoStop(self.config.stop_acc)
            else:
                control.stopL(self.config.stop_acc)
        except Exception as exc:  # noqa: BLE001 - a stop must not throw
            log.error("UR stop failed: %s — use the pendant's emergency stop", exc)
        finally:
            self._streaming = False
