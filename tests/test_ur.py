"""UR driver against autospecs of the real ur-rtde classes, and the Robotiq adapter against a loopback server."""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from unittest.mock import DEFAULT, call, create_autospec

import numpy as np
import pytest
from rtde_control import AsyncOperationStatus, RTDEControlInterface  # dev dependencies: these tests never skip
from rtde_receive import RTDEReceiveInterface

from core.errors import (ArmCommandError, ArmStoppedError, ConnectionLostError, DeviceError,
                                  LimitViolationError, ProtectiveStopError)
from robot_drivers.grippers import RobotiqConfig, RobotiqSocketGripper
from robot_drivers.safety import SafeArm, SafetyConfig
from core.transforms import euler_to_quat, quat_angle, rotvec_to_quat
from core.types import Action, Pose
from robot_drivers.ur import URArm, URConfig, pose_to_ur, quat_to_rotvec, ur_to_pose

DOWN = euler_to_quat(math.pi, 0.0, 0.0)


def pybind_checked(cls):
    """create_autospec of a pybind11 class, with calls checked against the signatures in its docstrings.

    Plain autospec cannot read a pybind11 method's signature; the docstring
    states it (overloads included), so arity and keyword names are checked.
    """
    mock = create_autospec(cls, instance=True)
    for name in dir(cls):
        if name.startswith("_"):
            continue
        doc = getattr(getattr(cls, name), "__doc__", "") or ""
        signatures = re.findall(rf"^(?:\d+\. )?{name}\(self: [^,)]+(?:, )?(.*?)\) ->", doc, flags=re.M)
        if not signatures:
            continue
        params = [[p.split(":")[0].strip() for p in s.split(", ") if p] for s in signatures]
        defaults = [[("=" in p) for p in s.split(", ") if p] for s in signatures]

        def check(*args, _n=name, _params=params, _defaults=defaults, **kwargs):
            for names, has_default in zip(_params, _defaults):
                required = sum(1 for d in has_default if not d)
                positional_ok = len(args) <= len(names)
                keywords_ok = all(k in names[len(args):] for k in kwargs)
                if positional_ok and keywords_ok and len(args) + len(kwargs) >= required:
                    return DEFAULT  # the mock then answers its return_value
            raise TypeError(f"{_n}{args, kwargs} matches no signature {_params}")

        getattr(mock, name).side_effect = check
    return mock


def make_interfaces(tcp=(0.1, -0.4, 0.3, math.pi, 0.0, 0.0)):
    control = pybind_checked(RTDEControlInterface)
    receive = pybind_checked(RTDEReceiveInterface)
    for name in ("servoL", "servoStop", "moveL", "isConnected", "reconnect", "isProgramRunning"):
        getattr(control, name).return_value = True
    status = pybind_checked(AsyncOperationStatus)
    status.isAsyncOperationRunning.return_value = False
    control.getAsyncOperationProgressEx.return_value = status
    control.stopL.return_value = None
    control.stopScript.return_value = None
    control.disconnect.return_value = None
    for name in ("isConnected", "reconnect"):
        getattr(receive, name).return_value = True
    receive.isProtectiveStopped.return_value = False
    receive.isEmergencyStopped.return_value = False
    receive.getSafetyMode.return_value = 1
    receive.getRobotMode.return_value = 7  # running
    receive.getActualTCPPose.return_value = list(tcp)
    receive.getActualQ.return_value = [0.0, -1.57, 1.57, -1.57, -1.57, 0.0]
    receive.disconnect.return_value = None
    control_cls = create_autospec(RTDEControlInterface, return_value=control)
    receive_cls = create_autospec(RTDEReceiveInterface, return_value=receive)
    return control_cls, receive_cls, control, receive


def config(**kw):
    base = dict(ip="192.168.1.102", rate_hz=10.0, workspace_min=(-0.5, -0.6, 0.05), workspace_max=(0.5, -0.1, 0.5),
                home_position=(0.0, -0.4, 0.3))
    base.update(kw)
    return URConfig(**base)


@pytest.fixture
def ur():
    control_cls, receive_cls, control, receive = make_interfaces()
    arm = URArm(config(), control_factory=control_cls, receive_factory=receive_cls)
    arm.connect()
    control.reset_mock(return_value=False, side_effect=False)
    receive.reset_mock(return_value=False, side_effect=False)
    yield arm, control, receive
    arm.stop()  # ends the servo thread


class ServoLog:
    """Records the servoL calls the servo thread makes (after the signature check) and lets a test wait for them."""

    def __init__(self, control, hold_at: int | None = None):
        self.calls: list[tuple[float, np.ndarray, np.ndarray, tuple]] = []  # (time, position, quaternion, rest)
        self._cond = threading.Condition()
        self._check = control.servoL.side_effect
        self.hold_at, self.holding, self.release = hold_at, threading.Event(), threading.Event()
        self.returned = threading.Event()  # the held call has returned
        control.servoL.side_effect = self

    def __call__(self, *args, **kwargs):
        result = self._check(*args, **kwargs)
        pose = args[0]
        with self._cond:
            self.calls.append((time.monotonic(), np.array(pose[:3]), rotvec_to_quat(pose[3:]), args[1:]))
            n = len(self.calls)
            self._cond.notify_all()
        if n == self.hold_at:  # this servoL stays "on the wire" until the test lets it return
            self.holding.set()
            self.release.wait(5.0)
            self.returned.set()
        return result

    def wait_for(self, predicate, timeout: float = 5.0):
        """Block until ``predicate(calls)`` holds; fail after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.calls), timeout):
                raise AssertionError(f"servoL calls never satisfied the condition ({len(self.calls)} calls)")


def wait_until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


def test_signature_checker_catches_a_wrong_call():
    control = pybind_checked(RTDEControlInterface)
    with pytest.raises(TypeError, match="matches no signature"):
        control.servoL([0.0] * 6, 0.1)  # servoL needs pose, speed, acc, time, lookahead, gain
    with pytest.raises(AttributeError):
        control.isProtectiveStopped()  # that lives on the receive interface


def test_rotation_vector_conversion():
    for rv in ([0.0, 0.0, 0.0], [math.pi, 0.0, 0.0], [0.1, -0.2, 0.3], [0.0, 2.5, -1.0]):
        q = rotvec_to_quat(rv)
        back = quat_to_rotvec(q)
        assert quat_angle(rotvec_to_quat(back), q) < 1e-9
    pose = Pose(np.array([0.1, -0.4, 0.3]), euler_to_quat(3.0, 0.2, -0.5))
    values = pose_to_ur(pose)
    assert values[:3] == pytest.approx([0.1, -0.4, 0.3])  # metres both sides: no scaling
    again = ur_to_pose(values)
    assert quat_angle(again.orientation, pose.orientation) < 1e-9


def test_connect_sequence():
    control_cls, receive_cls, control, receive = make_interfaces()
    arm = URArm(config(rtde_frequency=500.0), control_factory=control_cls, receive_factory=receive_cls)
    arm.connect()
    receive_cls.assert_called_once_with("192.168.1.102", 500.0)
    control_cls.assert_called_once_with("192.168.1.102", 500.0)
    receive.isProtectiveStopped.assert_called()  # checked before taking control
    assert arm.is_connected


def test_connect_refused_in_protective_stop():
    control_cls, receive_cls, control, receive = make_interfaces()
    receive.isProtectiveStopped.return_value = True
    receive.getSafetyMode.return_value = 3
    with pytest.raises(ProtectiveStopError, match="protective stop.*unlock the protective stop on the pendant"):
        URArm(config(), control_factory=control_cls, receive_factory=receive_cls).connect()
    control_cls.assert_not_called()
    receive.disconnect.assert_called_once()


def test_unreachable_and_no_remote_control():
    control_cls, receive_cls, control, receive = make_interfaces()
    receive_cls.side_effect = RuntimeError("Timeout connecting to UR dashboard server.")
    with pytest.raises(ConnectionLostError, match=r"cannot open RTDE to the UR at 192.168.1.102.*ping"):
        URArm(config(), control_factory=control_cls, receive_factory=receive_cls).connect()
    control_cls, receive_cls, control, receive = make_interfaces()
    control_cls.side_effect = RuntimeError("RTDE control script is not running")
    with pytest.raises(ConnectionLostError, match="Remote Control mode"):
        URArm(config(), control_factory=control_cls, receive_factory=receive_cls).connect()
    receive.disconnect.assert_called_once()
    # An unpowered robot (or one with its brakes on) is named as the cause, not Remote Control.
    for mode, cause in ((3, "powered off"), (5, r"idle \(brakes on\)")):
        receive.getRobotMode.return_value = mode
        with pytest.raises(ConnectionLostError, match=f"the robot is {cause}: power it on and release the brakes"):
            URArm(config(), control_factory=control_cls, receive_factory=receive_cls).connect()


def test_servo_thread_streams_interpolated_poses_at_the_servo_rate(ur):
    arm, control, receive = ur
    servo = ServoLog(control)
    start, target = np.array([0.1, -0.4, 0.3]), np.array([0.1, -0.35, 0.25])
    q = euler_to_quat(math.pi, 0.1, 0.0)
    before = time.monotonic()
    arm.send_action(Action(Pose(target, q), 1.0), target_time=before + 0.5)
    after = time.monotonic()
    servo.wait_for(lambda calls: len(calls) > 3 and np.allclose(calls[-1][1], target, atol=1e-12), timeout=10.0)
    arm.stop()
    assert all(rest == (0.0, 0.0, pytest.approx(1 / 125), 0.1, 300.0) for *_, rest in servo.calls)  # servo time
    distance, angle = float(np.linalg.norm(target - start)), quat_angle(DOWN, q)
    progress = []
    for _, position, quat, _ in servo.calls:  # every pose lies on the way from the measured pose to the target
        s = float(np.dot(position - start, target - start)) / distance ** 2
        np.testing.assert_allclose(position, start + s * (target - start), atol=1e-9)
        assert quat_angle(DOWN, quat) == pytest.approx(s * angle, abs=1e-6)  # slerp: angle in step with position
        progress.append(s)
    moving = np.diff(progress)[np.array(progress[1:]) < 1.0 - 1e-9]
    assert len(moving) >= 5 and np.all(moving > 0)
    # One servo tick apart in trajectory time: the stream started between `before` and `after`, so each step
    # of progress is at least, and at best exactly, (1 / servo rate) / (time from then to the target time).
    lowest, highest = (1 / 125) / (before + 0.5 - before), (1 / 125) / (before + 0.5 - after)
    assert lowest - 1e-9 <= moving.min() <= highest + 1e-9
    assert np.all(moving >= lowest - 1e-9)  # never two commands for the same moment: late ticks are skipped
    receive.isProtectiveStopped.assert_called()
    assert arm.servo_ticks == len(servo.calls)


def test_stale_waypoints_are_dropped(ur):
    arm, control, receive = ur
    servo = ServoLog(control)
    first, stale, last = np.array([0.1, -0.38, 0.3]), np.array([0.3, -0.2, 0.1]), np.array([0.12, -0.38, 0.3])
    arm.send_action(Action(Pose(first, DOWN), 1.0), target_time=time.monotonic() + 0.05)
    servo.wait_for(lambda calls: calls and np.allclose(calls[-1][1], first, atol=1e-12))
    reached = len(servo.calls)
    arm.send_action(Action(Pose(stale, DOWN), 1.0), target_time=time.monotonic() - 0.01)  # its time has passed
    assert arm.dropped_waypoints == 1
    arm.send_action(Action(Pose(last, DOWN), 1.0))  # one control period ahead
    servo.wait_for(lambda calls: np.allclose(calls[-1][1], last, atol=1e-12))
    arm.stop()
    for _, position, _, _ in servo.calls[reached:]:  # from the first waypoint straight on to the last one
        assert 0.1 - 1e-12 <= position[0] <= 0.12 + 1e-12 and position[1:] == pytest.approx([-0.38, 0.3])


def test_stop_halts_the_servo_thread_at_once(ur):
    arm, control, receive = ur
    servo = ServoLog(control, hold_at=5)
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert servo.holding.wait(5.0)  # the 5th servoL is on the wire
    stopper = threading.Thread(target=arm.stop)
    stopper.start()  # STOP pressed while that servoL is in flight
    servo.release.set()
    stopper.join(5.0)
    assert not stopper.is_alive()
    sent = control.servoL.call_count
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    assert control.servoL.call_count == sent == 5  # nothing after the stop
    names = [c[0] for c in control.method_calls]
    assert names.count("servoStop") == 1 and names.index("servoStop") > max(
        i for i, n in enumerate(names) if n == "servoL")
    control.servoStop.assert_called_once_with(2.0)


def test_stop_does_not_wait_for_a_servol_that_hangs(ur):
    arm, control, receive = ur
    servo = ServoLog(control, hold_at=3)
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert servo.holding.wait(5.0)
    arm.stop()  # gives up waiting for the servoL in flight after STOP_WAIT_S
    assert not servo.returned.is_set()  # stop() did not wait for it: servoStop went out while it hung
    control.servoStop.assert_called_once_with(2.0)
    servo.release.set()  # it returns after the stop: the thread repeats servoStop, sends nothing more
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    assert control.servoL.call_count == 3
    names = [c[0] for c in control.method_calls]
    assert names[-2:] == ["servoStop", "servoStop"]


def test_protective_stop_seen_by_the_servo_thread_is_reported_not_resumed(ur):
    arm, control, receive = ur
    servo = ServoLog(control)
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    servo.wait_for(lambda calls: len(calls) >= 3)
    receive.getSafetyMode.return_value = 3
    receive.isProtectiveStopped.return_value = True
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    sent = control.servoL.call_count
    control.servoStop.assert_called_once_with(2.0)
    receive.isProtectiveStopped.return_value = False  # unlocked on the pendant: still reported, not resumed
    with pytest.raises(ProtectiveStopError, match="protective stop"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert control.servoL.call_count == sent and not arm.servo_running


def test_state(ur):
    arm, control, receive = ur
    state = arm.get_state()
    np.testing.assert_allclose(state.ee_pose.position, [0.1, -0.4, 0.3])
    assert quat_angle(state.ee_pose.orientation, DOWN) < 1e-9
    assert state.joint_positions.shape == (6,)
    assert state.gripper == 1.0  # no gripper: the last command echoed


def test_protective_stop_while_streaming(ur):
    arm, control, receive = ur
    receive.isProtectiveStopped.return_value = True
    receive.getSafetyMode.return_value = 3
    with pytest.raises(ProtectiveStopError, match="protective stop"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    control.servoL.assert_not_called()
    with pytest.raises(ProtectiveStopError):
        arm.get_state()


def test_servo_refused(ur):
    arm, control, receive = ur
    control.servoL.return_value = False
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))  # the thread's servoL is refused
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    with pytest.raises(ArmCommandError, match="refused servoL; the pendant's log"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert control.servoL.call_count == 1 and control.servoStop.call_count == 1
    # After a protective stop (cleared) the control script is no longer running: say how to get it back.
    control.isProgramRunning.return_value = False
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    with pytest.raises(ArmCommandError, match="control script is not running.*reconnect the rig"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))


def test_connection_loss_is_reported_even_after_a_successful_reconnect(ur):
    arm, control, receive = ur
    control.isConnected.return_value = False
    control.reconnect.side_effect = lambda: control.isConnected.configure_mock(return_value=True) or True
    with pytest.raises(ConnectionLostError, match="dropped and was re-established; the command was not sent"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert arm.reconnects == 1
    control.servoL.assert_not_called()  # the program never carries on by itself: the operator starts again
    servo = ServoLog(control)
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))  # a new command, on the new link
    servo.wait_for(lambda calls: len(calls) >= 1)
    # The link drops while streaming: the servo thread ends, and the next command reports it.
    control.isConnected.return_value = False
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    sent = control.servoL.call_count
    with pytest.raises(ConnectionLostError, match="dropped and was re-established"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    assert arm.reconnects == 2 and control.servoL.call_count == sent
    control.isConnected.return_value = False
    control.reconnect.side_effect = None
    control.reconnect.return_value = False
    with pytest.raises(ConnectionLostError, match="lost the RTDE connection.*1 reconnect attempt"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))


def test_stop_racing_a_waypoint_is_resent_after_it(ur):
    arm, control, receive = ur
    measured = receive.getActualTCPPose.side_effect

    def measuring_meets_a_stop(*args, **kwargs):  # the watchdog / STOP thread stops the arm as the stream starts
        result = measured(*args, **kwargs)
        arm.stop()
        return result

    receive.getActualTCPPose.side_effect = measuring_meets_a_stop
    with pytest.raises(ArmStoppedError, match="stopped during the waypoint; stopped again"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 0.0))
    wait_until(lambda: not arm.servo_running, "the servo thread ended")
    control.servoL.assert_not_called()  # the thread started for the command's generation never streams
    assert control.stopL.call_count + control.servoStop.call_count == 2  # the stop, then once more
    # A stop that lands before the waypoint is scheduled: nothing is sent at all.
    receive.getActualTCPPose.side_effect = measured
    control.reset_mock(return_value=False, side_effect=False)
    receive.isProtectiveStopped.side_effect = lambda: arm.stop() or False
    with pytest.raises(ArmStoppedError, match="the waypoint not sent"):
        arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 0.0))
    receive.isProtectiveStopped.side_effect = None
    assert not arm.servo_running
    control.servoL.assert_not_called()


def home_tcp():
    return [0.0, -0.4, 0.3, math.pi, 0.0, 0.0]


def test_home_is_an_async_move_polled_to_the_end(ur):
    arm, control, receive = ur
    status = control.getAsyncOperationProgressEx.return_value
    status.isAsyncOperationRunning.side_effect = [True, True, False]
    receive.getActualTCPPose.return_value = home_tcp()
    arm.home()
    pose = control.moveL.call_args.args[0]
    assert pose[:3] == pytest.approx([0.0, -0.4, 0.3])
    assert control.moveL.call_args.args[1:] == (0.05, 0.3, True)  # asynchronous: stopL can interrupt it
    assert status.isAsyncOperationRunning.call_count == 3
    control.stopL.assert_not_called()


def test_stop_interrupts_home(ur):
    arm, control, receive = ur
    status = control.getAsyncOperationProgressEx.return_value
    status.isAsyncOperationRunning.side_effect = lambda: arm.stop() or True  # STOP pressed during the move
    with pytest.raises(ArmStoppedError, match="stopped during the move to home"):
        arm.home()
    assert control.stopL.call_count == 2  # the stop itself, then once more after the poll saw it
    control.servoStop.assert_not_called()


def test_home_that_takes_too_long_or_ends_elsewhere(ur):
    _, control, receive = ur
    now = [0.0]
    control_cls = create_autospec(RTDEControlInterface, return_value=control)
    receive_cls = create_autospec(RTDEReceiveInterface, return_value=receive)
    arm = URArm(config(home_timeout_s=5.0), control_factory=control_cls, receive_factory=receive_cls,
                clock=lambda: now[0])
    arm.connect()
    status = control.getAsyncOperationProgressEx.return_value
    status.isAsyncOperationRunning.side_effect = lambda: now.__setitem__(0, now[0] + 3.0) or True
    with pytest.raises(ArmCommandError, match="did not reach home within 5 s and was stopped"):
        arm.home()
    control.stopL.assert_called_once_with(2.0)
    status.isAsyncOperationRunning.side_effect = None
    status.isAsyncOperationRunning.return_value = False
    receive.getActualTCPPose.return_value = [0.0, -0.3, 0.3, math.pi, 0.0, 0.0]  # paused 10 cm short
    with pytest.raises(ArmCommandError, match="ended 100 mm from home"):
        arm.home()


def test_limits_enforced_before_any_sdk_call(ur):
    arm, control, receive = ur
    with pytest.raises(LimitViolationError, match="outside the workspace box"):
        arm.send_action(Action(Pose(np.array([0.1, 0.2, 0.25]), DOWN), 1.0))
    assert control.method_calls == [] and receive.method_calls == []


def test_stop_home_and_disconnect(ur):
    arm, control, receive = ur
    arm.stop()
    control.stopL.assert_called_once_with(2.0)  # not streaming: stopL
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    arm.stop()
    control.servoStop.assert_called_once_with(2.0)  # streaming: servoStop
    receive.getActualTCPPose.return_value = home_tcp()
    arm.home()
    control.servoStop.side_effect = RuntimeError("socket closed")
    arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 1.0))
    arm.stop()  # never raises
    control.servoStop.side_effect = None
    arm.disconnect()
    assert control.method_calls[-2:] == [call.stopScript(), call.disconnect()]
    receive.disconnect.assert_called_once()


def test_watchdog_calls_the_ur_stop():
    control_cls, receive_cls, control, receive = make_interfaces()
    now = [0.0]
    safe = SafeArm(URArm(config(), control_factory=control_cls, receive_factory=receive_cls),
                   SafetyConfig(workspace_min=(-0.5, -0.6, 0.05), workspace_max=(0.5, -0.1, 0.5),
                                watchdog_timeout=0.2), clock=lambda: now[0])
    safe.inner.connect()
    safe.send_action(Action(Pose(np.array([0.1, -0.39, 0.3]), DOWN), 1.0))
    now[0] = 0.5
    assert safe.check_watchdog()
    control.servoStop.assert_called_once_with(2.0)


def test_config_validation():
    with pytest.raises(ValueError, match="IP address"):
        URConfig()
    with pytest.raises(ValueError, match="servo_lookahead"):
        config(servo_lookahead=0.5)
    with pytest.raises(ValueError, match="servo_gain"):
        config(servo_gain=50)
    with pytest.raises(ValueError, match=r"servo_rate_hz must be in \[125, 500\]"):
        config(servo_rate_hz=100)
    with pytest.raises(ValueError, match="faster than rtde_frequency"):
        config(servo_rate_hz=250, rtde_frequency=125)


# -- Robotiq over the URCap socket ------------------------------------------------
class FakeURCap:
    """A loopback server speaking the Robotiq URCap's ASCII protocol."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.vars = {"STA": 0, "POS": 0, "ACT": 0, "GTO": 0, "SPE": 0, "FOR": 0, "OBJ": 3}
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                line = raw.decode().strip()
                self.lines.append(line)
                words = line.split()
                if words[0] == "GET":
                    f.write(f"{words[1]} {self.vars[words[1]]}\n".encode())
                elif words[0] == "SET":
                    for key, value in zip(words[1::2], words[2::2]):
                        self.vars[key] = int(value)
                    if self.vars["ACT"] == 1:
                        self.vars["STA"] = 3
                    f.write(b"ack\n")
                f.flush()

    def close(self):
        self.server.close()


def test_robotiq_socket_gripper():
    cap = FakeURCap()
    try:
        gripper = RobotiqSocketGripper(RobotiqConfig(host="127.0.0.1", port=cap.port, speed=200, force=50))
        gripper.connect()
        assert cap.lines[:4] == ["GET STA", "SET ACT 1", "GET STA", "SET GTO 1"]
        gripper.move(1.0)
        assert cap.lines[-1] == "SET POS 0 SPE 200 FOR 50"  # open = 0 in Robotiq's convention
        gripper.move(0.0)
        assert cap.vars["POS"] == 255
        assert gripper.position() == 0.0
        gripper.move(0.5)
        assert gripper.position() == pytest.approx(1.0 - 128 / 255)
        gripper.disconnect()
    finally:
        cap.close()


def test_robotiq_halt_ends_a_motion_under_way_and_keeps_a_grip():
    cap = FakeURCap()
    try:
        gripper = RobotiqSocketGripper(RobotiqConfig(host="127.0.0.1", port=cap.port))
        gripper.connect()
        gripper.move(0.0)
        cap.vars.update(OBJ=0, POS=120)  # on its way to closed, 120 of 255 so far
        assert gripper.halt() == pytest.approx(1.0 - 120 / 255)
        assert cap.lines[-3:] == ["GET OBJ", "GET POS", "SET POS 120"]
        cap.vars.update(OBJ=2, POS=180)  # stopped on an object while closing: the grip keeps its force
        sent = len(cap.lines)
        assert gripper.halt() is None
        assert cap.lines[sent:] == ["GET OBJ"]
        gripper.disconnect()
    finally:
        cap.close()


def test_the_ur_stop_halts_the_gripper_after_the_arm():
    control_cls, receive_cls, control, receive = make_interfaces()
    gripper = create_autospec(RobotiqSocketGripper, instance=True)
    order = []
    control.stopL.side_effect = lambda acc: order.append("arm") or True
    gripper.halt.side_effect = lambda: order.append("gripper") or 0.4
    arm = URArm(config(), gripper, control_factory=control_cls, receive_factory=receive_cls)
    arm.connect()
    assert arm.stop() == 0.4 and order == ["arm", "gripper"]
    gripper.halt.side_effect = ConnectionLostError("the URCap closed the connection")  # a stop never raises
    assert arm.stop() is None
    arm.disconnect()


def test_robotiq_unreachable():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionLostError, match="Robotiq Grippers URCap"):
        RobotiqSocketGripper(RobotiqConfig(host="127.0.0.1", port=port, timeout=0.5)).connect()
    with pytest.raises(ValueError, match="speed must be in 0..255"):
        RobotiqConfig(host="x", speed=300)
    assert issubclass(ConnectionLostError, DeviceError)


def test_robotiq_timeout_closes_the_socket():
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        gripper = RobotiqSocketGripper(RobotiqConfig(host="127.0.0.1", port=server.getsockname()[1], timeout=0.2))
        with pytest.raises(ConnectionLostError, match="'GET STA' got no answer.*connection was closed"):
            gripper.connect()  # the URCap never answers
        with pytest.raises(DeviceError, match="not connected"):
            gripper.position()  # no late "STA 3" can be taken for the answer to this request
    finally:
        server.close()


def test_ur_with_robotiq_gripper():
    cap = FakeURCap()
    try:
        control_cls, receive_cls, control, receive = make_interfaces()
        gripper = RobotiqSocketGripper(RobotiqConfig(host="127.0.0.1", port=cap.port))
        with URArm(config(), gripper, control_factory=control_cls, receive_factory=receive_cls) as arm:
            arm.send_action(Action(Pose(np.array([0.1, -0.35, 0.25]), DOWN), 0.0))
            assert cap.vars["POS"] == 255
            assert arm.get_state().gripper == 0.0
    finally:
        cap.close()
