"""xArm driver against an autospec of the real XArmAPI class (the network is the hardware boundary)."""

from __future__ import annotations

import math
from unittest.mock import call, create_autospec

import numpy as np
import pytest
from xarm.wrapper import XArmAPI  # a dev dependency: these tests never skip

from core.errors import (ArmCommandError, ArmFaultError, ArmStoppedError, ConnectionLostError,
                                  LimitViolationError, ProtectiveStopError, UnsupportedModeError)
from robot_drivers.safety import SafeArm, SafetyConfig
from core.transforms import euler_to_quat, quat_angle
from core.types import Action, Pose
from robot_drivers.xarm import (CONTROLLER_ERRORS, XArm, XArmConfig, pose_to_xarm, quat_to_rpy, xarm_to_pose)

DOWN = euler_to_quat(math.pi, 0.0, 0.0)


def make_api(position=(350.0, 0.0, 300.0, 180.0, 0.0, 0.0)):
    """An autospec'd XArmAPI class whose instance answers like an idle, healthy arm."""
    factory = create_autospec(XArmAPI)
    api = factory.return_value
    api.connected = True
    api.error_code = 0
    api.axis = 6
    api.is_lite6 = False
    for name in ("connect", "disconnect"):
        getattr(api, name).return_value = None
    for name in ("motion_enable", "set_mode", "set_state", "clean_error", "clean_warn", "set_position",
                 "set_servo_cartesian", "set_gripper_mode", "set_gripper_enable", "set_gripper_speed",
                 "set_gripper_position", "emergency_stop"):
        getattr(api, name).return_value = 0
    api.get_err_warn_code.return_value = (0, [0, 0])
    api.get_position.return_value = (0, list(position))
    api.get_servo_angle.return_value = (0, [0.0, -0.3, 0.0, 0.5, 0.0, 0.8, 0.0])
    api.get_gripper_position.return_value = (0, 425.0)
    return factory, api


def config(**kw):
    base = dict(ip="192.168.1.200", workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.6, 0.3, 0.5),
                home_position=(0.35, 0.0, 0.3), tcp_speed=0.1, tcp_acc=1.0)
    base.update(kw)
    return XArmConfig(**base)


@pytest.fixture
def arm():
    factory, api = make_api()
    arm = XArm(config(), api_factory=factory)
    arm.connect()
    api.reset_mock()
    api.connected, api.error_code = True, 0
    return arm, api, factory


# -- unit conversion --------------------------------------------------------
@pytest.mark.parametrize("rpy", [(180, 0, 0), (170, 10, -30), (0, 0, 90), (-150, -40, 120), (30, 60, 10)])
def test_rpy_degrees_roundtrip(rpy):
    q = euler_to_quat(*np.radians(rpy))
    back = np.degrees(quat_to_rpy(q))
    assert quat_angle(euler_to_quat(*np.radians(back)), q) < 1e-9
    pose = Pose(np.array([0.3, -0.1, 0.2]), q)
    values = pose_to_xarm(pose)
    np.testing.assert_allclose(values[:3], [300.0, -100.0, 200.0])
    again = xarm_to_pose(values)
    np.testing.assert_allclose(again.position, pose.position, atol=1e-12)
    assert quat_angle(again.orientation, q) < 1e-9


def test_gimbal_lock_is_handled():
    q = euler_to_quat(0.3, math.pi / 2, 0.0)
    assert quat_angle(euler_to_quat(*quat_to_rpy(q)), q) < 1e-6


def test_gripper_down_is_roll_180():
    np.testing.assert_allclose(np.abs(pose_to_xarm(Pose(np.zeros(3), DOWN))[3:]), [180.0, 0.0, 0.0], atol=1e-9)


# -- connect / stream / stop call sequences -----------------------------------
def test_connect_sequence():
    factory, api = make_api()
    arm = XArm(config(), api_factory=factory)
    arm.connect()
    factory.assert_called_once_with("192.168.1.200", is_radian=False, do_not_open=True)
    assert api.method_calls[:7] == [
        call.connect(), call.get_err_warn_code(), call.motion_enable(enable=True), call.set_mode(7),
        call.set_state(state=0), call.set_gripper_mode(0), call.set_gripper_enable(True)]
    api.set_gripper_speed.assert_called_once_with(3000.0)
    assert arm.is_connected


def test_servo_mode_selects_mode_1():
    factory, api = make_api()
    XArm(config(mode="servo", gripper=False), api_factory=factory).connect()
    api.set_mode.assert_called_once_with(1)
    api.set_gripper_enable.assert_not_called()


def test_unreachable_arm():
    factory, api = make_api()
    api.connected = False
    with pytest.raises(ConnectionLostError, match=r"cannot connect to the xArm at 192.168.1.200.*ping"):
        XArm(config(), api_factory=factory).connect()
    factory, api = make_api()
    api.connect.side_effect = OSError("No route to host")
    with pytest.raises(ConnectionLostError, match="No route to host"):
        XArm(config(), api_factory=factory).connect()


def test_error_at_connect_is_reported_not_cleared():
    factory, api = make_api()
    api.get_err_warn_code.return_value = (0, [22, 0])
    with pytest.raises(ArmFaultError, match=r"xArm error 22: self-collision.*clear it"):
        XArm(config(), api_factory=factory).connect()
    api.clean_error.assert_not_called()
    api.motion_enable.assert_not_called()
    api.disconnect.assert_called_once()
    factory, api = make_api()
    api.get_err_warn_code.return_value = (0, [1, 0])
    with pytest.raises(ProtectiveStopError, match="emergency stop button"):
        XArm(config(), api_factory=factory).connect()
    factory, api = make_api()
    api.get_err_warn_code.return_value = (0, [31, 0])
    XArm(config(clear_errors_on_connect=True), api_factory=factory).connect()
    api.clean_error.assert_called_once()


def test_stream_converts_units_at_the_boundary(arm):
    arm, api, _ = arm
    q = euler_to_quat(math.pi, 0.1, 0.2)
    sent = arm.send_action(Action(Pose(np.array([0.4, -0.05, 0.25]), q), 0.5))
    kwargs = api.set_position.call_args.kwargs
    assert kwargs["x"] == pytest.approx(400.0) and kwargs["y"] == pytest.approx(-50.0)
    assert kwargs["z"] == pytest.approx(250.0)
    rpy = np.radians([kwargs["roll"], kwargs["pitch"], kwargs["yaw"]])
    assert quat_angle(euler_to_quat(*rpy), q) < 1e-9
    assert kwargs["speed"] == pytest.approx(100.0) and kwargs["mvacc"] == pytest.approx(1000.0)
    assert kwargs["is_radian"] is False and kwargs["wait"] is False
    api.set_gripper_position.assert_called_once_with(425.0, wait=False)
    assert sent.gripper == 0.5
    # An unchanged gripper is not resent every tick.
    arm.send_action(Action(Pose(np.array([0.41, -0.05, 0.25]), q), 0.502))
    assert api.set_gripper_position.call_count == 1
    assert api.set_position.call_count == 2


def test_servo_mode_streams_set_servo_cartesian():
    factory, api = make_api()
    arm = XArm(config(mode="servo"), api_factory=factory)
    arm.connect()
    arm.send_action(Action(Pose(np.array([0.3, 0.0, 0.2]), DOWN), 1.0))
    target = api.set_servo_cartesian.call_args.args[0]
    np.testing.assert_allclose(np.abs(target), [300.0, 0.0, 200.0, 180.0, 0.0, 0.0], atol=1e-9)
    assert api.set_servo_cartesian.call_args.kwargs == {"is_radian": False}
    api.set_position.assert_not_called()


def test_state_in_si_units(arm):
    arm, api, _ = arm
    api.get_position.return_value = (0, [300.0, -20.0, 150.0, 180.0, 0.0, 45.0])
    state = arm.get_state()
    np.testing.assert_allclose(state.ee_pose.position, [0.3, -0.02, 0.15])
    assert quat_angle(state.ee_pose.orientation, euler_to_quat(math.pi, 0.0, math.pi / 4)) < 1e-9
    assert state.gripper == pytest.approx(0.5)
    assert state.joint_positions.shape == (6,)  # the SDK's 7 values, sliced to the arm's axes
    api.get_position.assert_called_once_with(is_radian=False)
    api.get_servo_angle.assert_called_once_with(is_radian=True)


def test_stop_and_emergency_stop(arm):
    arm, api, _ = arm
    arm.stop()
    api.set_state.assert_called_once_with(state=4)
    api.emergency_stop.assert_not_called()
    # The next command re-arms (motion state) before moving.
    api.reset_mock()
    api.connected, api.error_code = True, 0
    arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))
    assert [c[0] for c in api.method_calls[:4]] == ["motion_enable", "set_mode", "set_state", "set_position"]
    # A stop the controller refuses escalates to the emergency stop; stop() itself never raises.
    api.set_state.return_value = 3
    arm.stop()
    api.emergency_stop.assert_called_once()
    api.set_state.side_effect = OSError("socket closed")
    arm.stop()
    assert api.emergency_stop.call_count == 2


def test_stop_during_the_re_arm_is_never_followed_by_motion(arm):
    arm, api, _ = arm
    arm.stop()  # e.g. the watchdog: the next command re-arms in three round-trips
    api.reset_mock()
    api.connected, api.error_code = True, 0
    api.set_mode.side_effect = lambda mode: arm.stop() or 0  # the operator's STOP lands during set_mode
    with pytest.raises(ArmStoppedError, match="set_state not sent: the arm was stopped"):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))
    sent = [c for c in api.method_calls if c[0] != "get_gripper_position"]  # the stop reads the gripper
    assert sent == [call.motion_enable(enable=True), call.set_mode(7), call.set_state(state=4)]
    api.set_position.assert_not_called()


def test_stop_racing_set_position_is_resent_after_it(arm):
    arm, api, _ = arm
    api.set_position.side_effect = lambda **kwargs: arm.stop() or 0  # STOP overtaken by the target on the wire
    with pytest.raises(ArmStoppedError, match="stopped during set_position; stopped again"):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 0.0))
    names = [c[0] for c in api.method_calls if c[0] != "get_gripper_position"]  # each stop reads the gripper
    # The racing stop (recorded after set_position, its caller), then the driver's second stop.
    assert names[-3:] == ["set_position", "set_state", "set_state"] and api.set_state.call_args == call(state=4)
    api.set_gripper_position.assert_not_called()


def test_home(arm):
    arm, api, _ = arm
    arm.home()
    assert [c[0] for c in api.method_calls[:3]] == ["motion_enable", "set_mode", "set_state"]
    api.set_mode.assert_any_call(0)  # position mode for the planned move
    kwargs = api.set_position.call_args.kwargs
    assert (kwargs["x"], kwargs["z"]) == (pytest.approx(350.0), pytest.approx(300.0))
    assert kwargs["speed"] == pytest.approx(50.0) and kwargs["wait"] is True and kwargs["timeout"] == 60.0
    api.set_gripper_position.assert_called_once_with(850.0, wait=True)
    assert api.set_mode.call_args == call(7)  # back to streaming


def test_stopping_home_says_so_not_e_stop(arm):
    arm, api, _ = arm
    api.set_position.side_effect = lambda **kwargs: arm.stop() or -9  # the SDK's wait ends with -9 on a stop
    with pytest.raises(ArmStoppedError, match="homing was stopped before the arm reached home"):
        arm.home()
    api.set_gripper_position.assert_not_called()
    assert api.set_mode.call_args == call(0)  # not re-armed for streaming after the stop
    api.set_position.side_effect = None
    api.set_position.return_value = 100  # the SDK's wait timed out
    with pytest.raises(ArmCommandError, match="did not reach home within 60 s and was stopped"):
        arm.home()
    assert api.set_state.call_args == call(state=4)


def test_roll_at_the_seam_keeps_the_side_of_the_last_target(arm):
    arm, api, _ = arm
    tilt = 1e-5  # radians: gripper down, a rounding hair either side of roll = 180 deg
    for roll in (math.pi - tilt, -math.pi + tilt, math.pi - tilt, -math.pi + tilt):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), euler_to_quat(roll, 0.0, 0.0)), 1.0))
    rolls = [c.kwargs["roll"] for c in api.set_position.call_args_list]
    assert max(rolls) - min(rolls) < 0.01  # never a 360 deg jump between consecutive targets
    assert all(abs(r) <= 180.1 for r in rolls)  # the SDK's range
    q = euler_to_quat(-math.pi + tilt, 0.0, 0.0)
    values = pose_to_xarm(Pose(np.zeros(3), q), previous=[0, 0, 0, 170.0, 0, 0])
    assert values[3] == pytest.approx(180.0 + math.degrees(tilt))  # -179.99.. written as 180.00..
    far = pose_to_xarm(Pose(np.zeros(3), euler_to_quat(-math.pi + 0.1, 0.0, 0.0)), previous=[0, 0, 0, 170.0, 0, 0])
    assert far[3] == pytest.approx(-180.0 + math.degrees(0.1))  # off the seam: the plain value


def test_lite6_with_gripper_is_refused():
    factory, api = make_api()
    api.is_lite6 = True
    with pytest.raises(UnsupportedModeError, match="Lite 6.*set gripper = false"):
        XArm(config(), api_factory=factory).connect()
    api.motion_enable.assert_not_called()
    XArm(config(gripper=False), api_factory=factory).connect()


def test_clean_disconnect(arm):
    arm, api, _ = arm
    arm.disconnect()
    api.disconnect.assert_called_once()
    assert not arm.is_connected


# -- limits before any SDK call ----------------------------------------------
def test_targets_outside_the_workspace_are_refused_before_the_sdk(arm):
    arm, api, _ = arm
    for position in ([0.7, 0.0, 0.3], [0.4, 0.0, 0.0], [0.4, -0.5, 0.3]):
        with pytest.raises(LimitViolationError, match="outside the workspace box.*refused before"):
            arm.send_action(Action(Pose(np.array(position), DOWN), 1.0))
    assert api.method_calls == []


def test_config_validation():
    with pytest.raises(ValueError, match="IP address"):
        XArmConfig(ip="")
    with pytest.raises(ValueError, match="mode must be one of"):
        config(mode="velocity")
    with pytest.raises(ValueError, match="home position .* outside the workspace"):
        config(home_position=(0.9, 0, 0.3))
    with pytest.raises(ValueError, match="must be below"):
        config(workspace_min=(0.6, -0.3, 0.05))


# -- error-code mapping ---------------------------------------------------------
@pytest.mark.parametrize("code,error,pattern", [
    (-9, ProtectiveStopError, r"controller is stopped \(state 4.*release the stop in the program"),
    (-1, ConnectionLostError, r"not connected \(code -1\).*network cable"),
    (3, ConnectionLostError, r"reply timeout \(code 3\)"),
    (-8, LimitViolationError, r"parameter out of range \(code -8\)"),
    (9, ArmCommandError, r"not ready to move \(code 9\).*state 0"),
    (12, ArmCommandError, r"parameter error \(code 12\)"),
])
def test_sdk_return_codes(arm, code, error, pattern):
    arm, api, _ = arm
    api.set_position.return_value = code
    with pytest.raises(error, match=pattern):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))


@pytest.mark.parametrize("err,error,pattern", [
    (22, ArmFaultError, "xArm error 22: self-collision"),
    (31, ArmFaultError, r"xArm error 31: collision detected"),
    (35, ArmFaultError, "safety boundary.*shrink the workspace box"),
    (2, ProtectiveStopError, "xArm error 2: emergency stop input"),
    (99, ArmFaultError, "xArm error 99: controller error; see the xArm manual"),
])
def test_controller_error_codes(arm, err, error, pattern):
    arm, api, _ = arm
    api.set_position.return_value = 1  # "the controller has an error": the driver asks which
    api.get_err_warn_code.return_value = (0, [err, 0])
    with pytest.raises(error, match=pattern + r".*during set_position"):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))
    # State reads raise as well while the error persists (the control loop stops).
    api.error_code = err
    with pytest.raises(error, match=f"xArm error {err}"):
        arm.get_state()


def test_controller_warnings(arm, caplog):
    arm, api, _ = arm
    api.set_position.return_value = 2
    api.get_err_warn_code.return_value = (0, [0, 11])
    arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))  # buffer full: logged, not raised
    assert "xArm warning 11" in caplog.text
    api.clean_warn.assert_called_once()
    api.get_err_warn_code.return_value = (0, [0, 14])
    with pytest.raises(ArmCommandError, match="xArm warning 14: the command has no solution"):
        arm.send_action(Action(Pose(np.array([0.45, 0.0, 0.3]), DOWN), 1.0))


def test_error_table_has_fixes():
    for code, (title, fix) in CONTROLLER_ERRORS.items():
        assert title and fix, code


# -- the safety layer's watchdog ends in the driver's stop -------------------------
def test_watchdog_stops_the_xarm():
    factory, api = make_api()
    now = [100.0]
    safe = SafeArm(XArm(config(), api_factory=factory),
                   SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.6, 0.3, 0.5),
                                watchdog_timeout=0.2), clock=lambda: now[0])
    safe.inner.connect()  # connect the driver without starting the watchdog thread: the test drives the clock
    safe.send_action(Action(Pose(np.array([0.36, 0.0, 0.3]), DOWN), 1.0))
    api.set_state.reset_mock()
    now[0] += 0.1
    assert not safe.check_watchdog()
    api.set_state.assert_not_called()
    now[0] += 0.3
    assert safe.check_watchdog()
    api.set_state.assert_called_once_with(state=4)


def test_safe_arm_clips_before_the_driver_sees_it():
    factory, api = make_api()
    safe = SafeArm(XArm(config(), api_factory=factory),
                   SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.6, 0.3, 0.5),
                                max_translation_per_tick=0.01))
    safe.inner.connect()
    safe.send_action(Action(Pose(np.array([0.9, 0.0, 0.3]), DOWN), 1.0))  # far outside: clipped, one small step
    kwargs = api.set_position.call_args.kwargs
    assert kwargs["x"] == pytest.approx(360.0)  # measured 350 mm + the 10 mm per-tick limit


def test_a_stop_ends_a_gripper_motion_under_way_where_the_fingers_are(arm):
    arm, api, _ = arm
    api.get_gripper_position.side_effect = [(0, 600.0), (0, 560.0)]  # closing: 40 pulses in the probe's gap
    held = arm.stop()
    assert api.method_calls[0] == call.set_state(state=4)  # the arm first
    api.set_gripper_position.assert_called_once_with(560.0, wait=False)
    assert held == pytest.approx(560.0 / 850.0)


def test_a_stop_leaves_a_gripper_at_rest_as_it_is(arm):
    arm, api, _ = arm
    api.get_gripper_position.side_effect = [(0, 212.0), (0, 212.0)]  # closed on something: the grip stays
    assert arm.stop() is None
    api.set_gripper_position.assert_not_called()
    api.get_gripper_position.side_effect = OSError("socket closed")  # a stop never raises
    assert arm.stop() is None


def test_a_gripper_command_racing_a_stop_is_followed_by_another_halt(arm):
    arm, api, _ = arm
    arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 1.0))
    api.reset_mock()
    api.connected, api.error_code = True, 0
    api.get_gripper_position.side_effect = [(0, 850.0), (0, 850.0), (0, 800.0), (0, 760.0)]

    def close_overtaking_the_stop(pulse, wait):
        if pulse == 0.0:  # the close, then the operator's STOP before the driver checks again
            arm.stop()
        return 0
    api.set_gripper_position.side_effect = close_overtaking_the_stop
    with pytest.raises(ArmStoppedError, match="stopped during set_gripper_position; stopped again"):
        arm.send_action(Action(Pose(np.array([0.4, 0.0, 0.3]), DOWN), 0.0))
    assert api.set_gripper_position.call_args_list[-1] == call(760.0, wait=False)  # the close ends where it is
