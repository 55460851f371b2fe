"""Universal Robots (CB3 / e-Series: UR3, UR5, UR10, UR16...) through ur-rtde.

``RTDEReceiveInterface`` reads the state, ``RTDEControlInterface`` streams
``servoL`` from an interpolating servo thread (Diffusion Policy's practice):
each ``send_action`` schedules a time-stamped waypoint (the target pose for
one control period from now, or the time given), and the thread, at
``servo_rate_hz`` (>= 125 Hz), sends the pose interpolated for its own tick
(linear position, slerp orientation) with the servo period as the servo
time. Poses are xyz in metres + rotation vector in radians, UR's own
convention, so only the orientation is converted here. A waypoint whose
time has already passed is dropped. The stream starts from the measured
pose and holds the last waypoint when no new one comes.

``stop`` halts at once: it bumps a generation counter, ends the servo
thread and, once no ``servoL`` is in flight, sends ``servoStop`` (``stopL``
when not streaming). The thread checks the generation before each
``servoL`` under the same lock, so no ``servoL`` follows a stop; a command
under way checks it before each motion call too. A fault seen by the thread
(a protective stop, a refused ``servoL``, a dropped link) ends the stream
and is raised by the next command: it is reported, never resumed.

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
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from robot_drivers.arm import Arm
from core.errors import (ArmCommandError, ArmStoppedError, ConnectionLostError, DeviceError,
                     NotConnectedError, ProtectiveStopError)
from robot_drivers.grippers import Gripper, NoGripper, RobotiqConfig, RobotiqSocketGripper
from core.transforms import normalize_quat, rotvec_to_quat
from robot_drivers.safety import check_workspace_box, refuse_outside_workspace
from robot_drivers.trajectory import PoseTrajectory
from core.types import Action, Pose, RobotState
from robot_drivers.registry import register_arm

log = logging.getLogger(__name__)

MIN_SERVO_RATE_HZ = 125.0  # the CB3's RTDE rate, the lowest Diffusion Policy streams at
MAX_SERVO_RATE_HZ = 500.0  # the e-Series' RTDE rate
STOP_WAIT_S = 0.1  # how long stop() waits for a servoL in flight before sending servoStop regardless

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
    rate_hz: float = 10.0  # the control tick: each waypoint is scheduled 1 / rate_hz seconds ahead
    servo_rate_hz: float = 125.0  # the servo thread's rate: one interpolated servoL per 1 / servo_rate_hz
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
        if not MIN_SERVO_RATE_HZ <= self.servo_rate_hz <= MAX_SERVO_RATE_HZ:
            raise ValueError(f"servo_rate_hz must be in [{MIN_SERVO_RATE_HZ:g}, {MAX_SERVO_RATE_HZ:g}] Hz, "
                             f"got {self.servo_rate_hz}")
        if self.servo_rate_hz < self.rate_hz:
            raise ValueError(f"servo_rate_hz ({self.servo_rate_hz:g} Hz) must not be below the control rate "
                             f"rate_hz ({self.rate_hz:g} Hz)")
        if self.rtde_frequency != -1 and not 0.0 < self.rtde_frequency <= 500.0:  # refuses nan too
            raise ValueError(f"rtde_frequency must be -1 (the controller's rate) or in (0, 500] Hz, "
                             f"got {self.rtde_frequency}")
        if self.rtde_frequency > 0 and self.servo_rate_hz > self.rtde_frequency:
            raise ValueError(f"servo_rate_hz ({self.servo_rate_hz:g} Hz) is faster than rtde_frequency "
                             f"({self.rtde_frequency:g} Hz): the controller would drop commands; lower it")
        if not 0.03 <= self.servo_lookahead <= 0.2:
            raise ValueError(f"servo_lookahead must be in [0.03, 0.2] s, got {self.servo_lookahead}")
        if not 100.0 <= self.servo_gain <= 2000.0:
            raise ValueError(f"servo_gain must be in [100, 2000], got {self.servo_gain}")
        lo, hi = check_workspace_box(self.workspace_min, self.workspace_max)
        home = np.asarray(self.home_position, float)
        if home.shape != (3,) or not np.all(np.isfinite(home)) or np.any(home < lo) or np.any(home > hi):
            raise ValueError(f"home position {list(self.home_position)} lies outside the workspace box")
        if not 0.0 < self.home_speed <= 0.25:
            raise ValueError("home_speed must be in (0, 0.25] m/s")
        if not 0.0 < self.home_timeout_s < float("inf"):
            raise ValueError("home_timeout_s must be positive and finite")

    @property
    def home_pose(self) -> Pose:
        return Pose(np.asarray(self.home_position, float), np.asarray(self.home_orientation, float))


def ur_from_rig_table(t, shared) -> tuple[URConfig, RobotiqConfig | None]:
    """A UR's config (and its gripper's) from its rig file's ``[arm]`` table ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`), beside the keys every arm has (``shared``). Its own keys:

        ip                 an IPv4 or IPv6 address
        rtde_frequency     -1 (the controller's rate) or [1, 500] Hz
        servo_lookahead    [0.03, 0.2] s
        servo_gain         [100, 2000]
        servo_rate_hz      [125, 500] Hz, at most rtde_frequency
        [arm.gripper]      type = "none" (default) or "robotiq" (over the URCap's socket); host: an IP address
                           or a host name (default: the arm's ip); port / speed / force: whole numbers in
                           1..65535 / 0..255 / 0..255
    """
    rtde_frequency = t.num("rtde_frequency", -1.0, unit="Hz")
    if rtde_frequency != -1 and not 1.0 <= rtde_frequency <= 500.0:
        raise t.fail("rtde_frequency", f"must be -1 (the controller's own rate) or in [1, 500] Hz, got "
                                       f"{rtde_frequency!r}")
    config = URConfig(**shared.fields, rate_hz=shared.rate_hz, rtde_frequency=rtde_frequency,
                      servo_lookahead=t.num("servo_lookahead", 0.1, 0.03, 0.2, unit="s"),
                      servo_gain=t.num("servo_gain", 300.0, 100.0, 2000.0),
                      servo_rate_hz=t.num("servo_rate_hz", 125.0, 125.0, 500.0, unit="Hz"),
                      home_speed=shared.home_speed)
    g = t.table("gripper")
    gripper = None
    if g.str("type", "none", choices=("none", "robotiq")) == "robotiq":
        gripper = RobotiqConfig(host=g.address("host", config.ip, hostname=True),
                                port=int(g.num("port", 63352, 1, 65535, integer=True)),
                                speed=int(g.num("speed", 255, 0, 255, integer=True)),
                                force=int(g.num("force", 100, 0, 255, integer=True)))
    g.done()
    return config, gripper


def ur_at_rate(config: URConfig, rate_hz: float, step_m: float) -> URConfig:
    """The config at another control rate: each waypoint is scheduled one tick ahead."""
    return replace(config, rate_hz=rate_hz)


def ur_from_spec(spec) -> "URArm":
    """The arm a rig file's :class:`robot_drivers.rig_config.ArmSpec` describes, with its Robotiq gripper."""
    return URArm(spec.config, RobotiqSocketGripper(spec.gripper) if spec.gripper is not None else None)


def _rtde_classes():
    try:
        from rtde_control import RTDEControlInterface
        from rtde_receive import RTDEReceiveInterface
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise DeviceError("ur-rtde is not installed: pip install -e '.[ur]'") from exc
    return RTDEControlInterface, RTDEReceiveInterface


@register_arm("ur", URConfig, parse=ur_from_rig_table, at_rate=ur_at_rate, build=ur_from_spec, port=30004)
class URArm(Arm):
    name = "ur"
    skip_connect_when_connected = True

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
        # The servo thread: it only ever holds _servo_lock (around each servoL), never _lock.
        self._servo_lock = threading.Lock()
        self._servo_thread: threading.Thread | None = None
        self._servo_end = threading.Event()
        self._servo_fault: Exception | None = None
        self._servo_generation = -1  # the generation the servo thread streams for
        self._unlocked_stops = 0  # stops that did not wait for a servoL in flight (it hung)
        self._trajectory: PoseTrajectory | None = None
        self.servo_ticks = 0  # servoL calls made by the servo thread
        self.dropped_waypoints = 0  # waypoints whose time had passed when they arrived

    # -- life cycle -------------------------------------------------------
    def _connect(self) -> None:
        if self._control_factory is None or self._receive_factory is None:
            control_cls, receive_cls = _rtde_classes()
        make_control = self._control_factory or control_cls
        make_receive = self._receive_factory or receive_cls
        ip = self.config.ip
        self._servo_fault = None
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

    def _disconnect(self) -> None:
        with self._lock:
            self._end_servo()
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
        self._end_servo()
        self._servo_fault = None  # the stream ended with the link; that is what is reported here
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

    def send_action(self, action: Action, target_time: float | None = None) -> Action:
        """Schedule ``action.pose`` for ``target_time`` (host seconds on this arm's clock; default one control
        period from now) on the servo thread, and command the gripper. A waypoint whose time has passed is
        dropped (counted in ``dropped_waypoints``); the gripper is still commanded."""
        self._check_workspace(action.pose)  # before any SDK call, and before anything reaches the servo thread
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        cfg = self.config
        generation = self._generation
        with self._lock:
            _, receive = self._require()
            self._raise_servo_fault()
            self._check_safety("servoL")
            self._not_stopped_since(generation, "the waypoint")
            now = self._clock()
            when = now + 1.0 / cfg.rate_hz if target_time is None else float(target_time)
            if not self._streams_for(generation):
                self._start_servo(ur_to_pose(receive.getActualTCPPose()), now, generation)
            if not self._trajectory.schedule(action.pose, when, now):
                self.dropped_waypoints += 1
                log.debug("UR: waypoint for %.3f s dropped, its time passed %.3f s ago", when, now - when)
            self._stopped_during(generation, "the waypoint")
            if self._last_gripper is None or abs(gripper - self._last_gripper) > cfg.gripper_deadband:
                self._not_stopped_since(generation, "the gripper command")
                self.gripper.move(gripper)
                self._last_gripper = gripper
                self._stopped_during(generation, "the gripper command")  # a stop's halt must come after the move
        return Action(action.pose, gripper)

    # -- the servo thread -------------------------------------------------
    @property
    def servo_running(self) -> bool:
        return self._servo_thread is not None and self._servo_thread.is_alive()

    def _streams_for(self, generation: int) -> bool:
        """The servo thread runs, for this generation, and was not told to end."""
        return self.servo_running and self._servo_generation == generation and not self._servo_end.is_set()

    def _start_servo(self, start: Pose, now: float, generation: int) -> None:
        """Start streaming from the measured pose ``start`` (under _lock)."""
        self._end_servo()  # one that a stop told to end may still be winding down
        self._trajectory = PoseTrajectory(start, now)
        self._servo_end = threading.Event()
        self._servo_generation = generation
        self._servo_thread = threading.Thread(
            target=self._servo_loop, args=(self._control, self._trajectory, self._servo_end, generation),
            name=f"ur-servo-{self.config.ip}", daemon=True)
        self._streaming = True
        self._servo_thread.start()

    def _end_servo(self) -> None:
        """End the servo thread (an orderly end, not a stop: no generation bump)."""
        self._servo_end.set()
        thread = self._servo_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
            if thread.is_alive():  # pragma: no cover - a servoL that never returns
                log.error("UR servo thread did not end within 1 s")

    def _raise_servo_fault(self) -> None:
        fault, self._servo_fault = self._servo_fault, None
        if fault is not None:
            raise fault

    def _servo_loop(self, control, trajectory: PoseTrajectory, end: threading.Event, generation: int) -> None:
        cfg = self.config
        period = 1.0 / cfg.servo_rate_hz
        tick = self._clock()
        while True:
            fault = None
            with self._servo_lock:
                if end.is_set() or self._generation != generation:
                    return
                unlocked_stops = self._unlocked_stops
                try:
                    if not control.isConnected():
                        raise ConnectionLostError(f"the RTDE connection to the UR at {cfg.ip} dropped while "
                                                  "streaming; check the network cable and the pendant")
                    self._check_safety("servoL")
                    if not control.servoL(pose_to_ur(trajectory.at(tick)), 0.0, 0.0, period, cfg.servo_lookahead,
                                          cfg.servo_gain):
                        self._check_safety("servoL")
                        raise ArmCommandError(self._servo_refused())
                    self.servo_ticks += 1
                except (DeviceError, RuntimeError) as exc:
                    fault = exc
                if self._unlocked_stops != unlocked_stops:  # a stop gave up waiting for this servoL: repeat it
                    try:
                        control.servoStop(cfg.stop_acc)
                    except RuntimeError as exc:
                        log.error("UR: repeating servoStop failed: %s", exc)
                    return
            if fault is not None:
                self._servo_failed(control, fault, generation)
                return
            tick += period
            delay = tick - self._clock()
            if delay > 0:
                end.wait(delay)
            elif delay < -period:
                tick = self._clock()  # fell behind: skip servo ticks rather than send a burst

    def _servo_failed(self, control, fault: Exception, generation: int) -> None:
        """The stream cannot go on: halt it, and keep the fault for the next command to raise."""
        log.error("UR servo stream ended: %s", fault)
        if not isinstance(fault, DeviceError):
            fault = ArmCommandError(f"UR at {self.config.ip}: servoL failed: {fault}; check the pendant")
        with self._servo_lock:
            if self._generation != generation:
                return  # stop() already halted the stream
            self._servo_fault = fault
            try:
                control.servoStop(self.config.stop_acc)
            except RuntimeError as exc:
                log.warning("UR: servoStop after the stream failed: %s", exc)
            self._streaming = False

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
            self._end_servo()
            self._servo_fault = None  # homing is the operator's new start; its own checks stand for the old fault
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

    def stop(self) -> float | None:
        """Decelerate to a halt, then end a gripper motion under way where the fingers are (the gripper's
        :meth:`~robot_drivers.grippers.Gripper.halt`; the opening it now holds is returned, else None). Never raises
        (the watchdog calls it from its thread).

        It does not take the command lock (it must not wait for a command under way); that command sees the
        bumped generation before its next motion call, and re-sends the stop if its own call raced with this
        one. The servo thread sees it before its next servoL; stop() waits for a servoL in flight (at most
        ``STOP_WAIT_S``) so that servoStop comes after it.
        """
        self._generation += 1
        self._servo_end.set()
        control = self._control
        if control is None:
            return None
        waited = self._servo_lock.acquire(timeout=STOP_WAIT_S)
        if not waited:
            self._unlocked_stops += 1
            log.error("UR: a servoL has not returned for %.0f ms; sending servoStop anyway", STOP_WAIT_S * 1000)
        try:
            if self._streaming:
                control.servoStop(self.config.stop_acc)
            else:
                control.stopL(self.config.stop_acc)
        except Exception as exc:  # noqa: BLE001 - a stop must not throw
            log.error("UR stop failed: %s — use the pendant's emergency stop", exc)
        finally:
            self._streaming = False
            if waited:
                self._servo_lock.release()
        try:
            return self.gripper.halt()
        except Exception as exc:  # noqa: BLE001 - a stop must not throw; the arm is halted already
            log.error("UR stop: the gripper could not be halted (%s); it may finish its last motion", exc)
            return None
