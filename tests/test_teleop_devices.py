"""SpaceMouse and gamepad teleop against autospecs of the real library objects (HID / SDL are the boundary)."""

from __future__ import annotations

import struct
import time
from unittest.mock import create_autospec

import numpy as np
import pygame
import pyspacemouse.api
import pytest
from easyhid import Enumeration, HIDDevice
from pyspacemouse import SpaceMouseDevice, SpaceMouseState  # dev dependencies: never skipped

from core.errors import ConnectionLostError, DeviceError, DeviceNotFoundError
from robot_drivers.gamepad import GamepadConfig, GamepadTeleop, _init_sdl, _open_joystick, _pump
from robot_drivers.spacemouse import (AxisScaling, ButtonEdges, SpaceMouseConfig, SpaceMouseTeleop,
                                      _open_spacemouse, dead_zone)
from robot_drivers.teleop import Button, TargetIntegrator
from core.types import Action, Pose, RobotState

STATE_OPEN = RobotState(0.0, Pose(np.array([0.4, 0.0, 0.3]), np.array([1.0, 0, 0, 0])), 1.0, np.zeros(6))
STATE_CLOSED = RobotState(0.0, STATE_OPEN.ee_pose, 0.0, np.zeros(6))


def test_dead_zone_is_continuous_and_scaled():
    out = dead_zone([0.0, 0.05, -0.1, 0.1001, 0.55, -1.0, 2.0], 0.1)
    assert out[:3].tolist() == [0.0, 0.0, 0.0]
    assert out[3] == pytest.approx(0.0001 / 0.9)  # starts from zero at the edge: no jump
    assert out[4] == pytest.approx(0.5)
    assert out[5] == -1.0 and out[6] == 1.0  # clipped to full scale


def test_scaling_to_si_velocities():
    s = AxisScaling(dead_zone=0.0, max_linear_speed=0.2, max_angular_speed=1.0, signs=(1, -1, 1, 1, 1, -1))
    lin, ang = s.velocities([1.0, 1.0, -0.5, 0.0, 0.25, 1.0])
    np.testing.assert_allclose(lin, [0.2, -0.2, -0.1])
    np.testing.assert_allclose(ang, [0.0, 0.25, -1.0])
    with pytest.raises(ValueError, match="dead_zone"):
        AxisScaling(dead_zone=1.0)
    with pytest.raises(ValueError, match="max_linear_speed"):
        AxisScaling(max_linear_speed=2.0)
    with pytest.raises(ValueError, match="signs"):
        AxisScaling(signs=(1, 1, 1))


def test_button_edges():
    edges = ButtonEdges({0: "gripper", 1: "start_stop", 2: "estop"})
    assert edges.update({0}) == (True, frozenset())
    assert edges.update({0}) == (False, frozenset())  # held: no repeat
    assert edges.update({1}) == (False, {Button.START})
    assert edges.update(set()) == (False, frozenset())
    assert edges.update({1}) == (False, {Button.STOP})
    assert edges.update({1, 2}) == (False, {Button.ESTOP})
    with pytest.raises(ValueError, match="'jump' is not one of"):
        ButtonEdges({3: "jump"})


def spacemouse_device(states):
    device = create_autospec(SpaceMouseDevice, instance=True)
    device.read.side_effect = list(states)
    return device


def test_spacemouse_commands():
    states = [SpaceMouseState(t=0.0, x=0.05, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0]),
              SpaceMouseState(t=0.1, x=1.0, y=-0.55, z=0.0, roll=0.0, pitch=0.0, yaw=0.55, buttons=[1, 0]),
              SpaceMouseState(t=0.2, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 1])]
    device = spacemouse_device(states)
    config = SpaceMouseConfig(scaling=AxisScaling(dead_zone=0.1, max_linear_speed=0.1, max_angular_speed=0.5),
                              poll_hz=0)
    opened = []
    teleop = SpaceMouseTeleop(config, opener=lambda cfg: opened.append(cfg) or device)
    with teleop:
        c = teleop.get_command(STATE_OPEN, 0.1)
        np.testing.assert_allclose(c.linear_velocity, 0.0)  # inside the dead zone
        assert c.gripper is None and c.buttons == frozenset()
        c = teleop.get_command(STATE_OPEN, 0.1)
        np.testing.assert_allclose(c.linear_velocity, [0.1, -0.05, 0.0])
        np.testing.assert_allclose(c.angular_velocity, [0.0, 0.0, 0.25])
        assert c.gripper == 0.0  # left button: toggle the open gripper closed
        c = teleop.get_command(STATE_CLOSED, 0.1)
        assert c.gripper is None and c.buttons == {Button.START}
    assert opened == [config]
    device.close.assert_called_once()


def test_spacemouse_poller_thread_keeps_the_newest_state():
    still = SpaceMouseState(t=0.0, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
    push = SpaceMouseState(t=0.0, x=0.0, y=0.0, z=1.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
    device = create_autospec(SpaceMouseDevice, instance=True)
    device.read.return_value = still
    teleop = SpaceMouseTeleop(SpaceMouseConfig(poll_hz=500.0), opener=lambda cfg: device)
    with teleop:
        device.read.return_value = push
        deadline = time.monotonic() + 2.0
        while teleop.get_command(STATE_OPEN, 0.1).linear_velocity[2] == 0.0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert teleop.get_command(STATE_OPEN, 0.1).linear_velocity[2] == pytest.approx(0.1)
        device.read.side_effect = OSError("device unplugged")
        deadline = time.monotonic() + 2.0
        with pytest.raises(DeviceError, match="stopped answering: device unplugged"):
            while time.monotonic() < deadline:
                teleop.get_command(STATE_OPEN, 0.1)
                time.sleep(0.005)


def hid_bus(monkeypatch, devices):
    """The HID bus pyspacemouse enumerates, holding ``devices`` (easyhid is the hardware boundary)."""
    enumeration = create_autospec(Enumeration)
    enumeration.return_value.find.return_value = list(devices)
    monkeypatch.setattr(pyspacemouse.api, "Enumeration", enumeration)


def space_navigator(reports):
    """A SpaceNavigator (046d:c626) on the HID bus that sends these raw reports."""
    hid = create_autospec(HIDDevice, instance=True)
    hid.vendor_id, hid.product_id = 0x046D, 0xC626
    hid.product_string, hid.manufacturer_string, hid.release_number, hid.serial_number = "SpaceNavigator", "3Dc", 1, ""
    hid.read.side_effect = list(reports)
    return hid


def report(channel, a=0, b=0, c=0):
    """A raw HID report: channel 1 = translation (x right, y towards the user, z down), 2 = rotation about them."""
    return bytes([channel]) + struct.pack("<hhh", a, b, c)


@pytest.mark.parametrize("raw,yaw_deg,linear,angular", [
    (report(1, b=-350), 0.0, [1, 0, 0], [0, 0, 0]),  # push away from you: the robot's +x
    (report(1, a=350), 0.0, [0, -1, 0], [0, 0, 0]),  # push right: -y
    (report(1, c=-350), 0.0, [0, 0, 1], [0, 0, 0]),  # pull up: +z
    (report(2, c=-350), 0.0, [0, 0, 0], [0, 0, 1]),  # twist anticlockwise seen from above: +yaw
    (report(1, b=-350), 90.0, [0, 1, 0], [0, 0, 0]),  # operator facing the robot's +y: away is +y
])
def test_spacemouse_axes_from_raw_hid_reports(monkeypatch, raw, yaw_deg, linear, angular):
    hid_bus(monkeypatch, [space_navigator([raw])])
    scaling = AxisScaling(dead_zone=0.0, max_linear_speed=0.1, max_angular_speed=0.5, operator_yaw_deg=yaw_deg)
    with SpaceMouseTeleop(SpaceMouseConfig(scaling=scaling, poll_hz=0)) as teleop:  # the real _open_spacemouse
        c = teleop.get_command(STATE_OPEN, 0.1)
    np.testing.assert_allclose(c.linear_velocity, np.array(linear) * 0.1, atol=1e-12)
    np.testing.assert_allclose(c.angular_velocity, np.array(angular) * 0.5, atol=1e-12)


def test_no_spacemouse_attached_is_a_clear_error(monkeypatch):
    hid_bus(monkeypatch, [])  # the HID bus holds no SpaceMouse, whatever is plugged into this machine
    with pytest.raises(DeviceNotFoundError, match="no SpaceMouse connected.*hidraw"):
        _open_spacemouse(SpaceMouseConfig())


def gamepad(axes, buttons):
    pad = create_autospec(pygame.joystick.JoystickType, instance=True)
    pad.get_numaxes.return_value = 6
    pad.get_numbuttons.return_value = 11
    pad.get_name.return_value = "Xbox Wireless Controller"
    pad.get_instance_id.return_value = 7
    pad.get_axis.side_effect = lambda i: axes[i]
    pad.get_button.side_effect = lambda i: int(i in buttons)
    return pad


def test_gamepad_mapping():
    axes = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0]  # at rest: the triggers are seen at -1
    buttons = set()
    pad = gamepad(axes, buttons)
    pumps = []
    config = GamepadConfig(scaling=AxisScaling(dead_zone=0.0, max_linear_speed=0.1, max_angular_speed=0.5))
    teleop = GamepadTeleop(config, opener=lambda i: pad, pump=lambda: pumps.append(1) or set())
    with teleop:
        np.testing.assert_allclose(teleop.get_command(STATE_OPEN, 0.1).linear_velocity, 0.0)
        axes[:] = [0.0, -1.0, -1.0, 0.5, 0.0, 1.0]  # stick pushed forward, right trigger full, right stick right
        buttons.update({0, 5})
        c = teleop.get_command(STATE_OPEN, 0.1)
        np.testing.assert_allclose(c.linear_velocity, [0.1, 0.0, 0.1])
        np.testing.assert_allclose(c.angular_velocity, [0.5, 0.0, -0.25])  # right bumper rolls, stick yaws
        assert c.gripper == 0.0
        buttons.clear()
        buttons.add(7)
        assert teleop.get_command(STATE_CLOSED, 0.1).buttons == {Button.START}
        buttons.clear()
        buttons.add(1)
        assert teleop.get_command(STATE_CLOSED, 0.1).buttons == {Button.ESTOP}
    assert len(pumps) == 4
    pad.quit.assert_called_once()


def test_gamepad_dead_zone_and_integration():
    pad = gamepad([0.1, -0.1, -1.0, 0.0, 0.0, -1.0], set())  # stick drift inside the dead zone, triggers at rest
    teleop = GamepadTeleop(GamepadConfig(), opener=lambda i: pad, pump=lambda: set())
    teleop.connect()
    c = teleop.get_command(STATE_OPEN, 0.1)
    np.testing.assert_allclose(c.linear_velocity, 0.0)
    np.testing.assert_allclose(c.angular_velocity, 0.0)
    integrator = TargetIntegrator(Action(STATE_OPEN.ee_pose, 1.0))
    assert np.array_equal(integrator.step(c, 0.1).pose.position, STATE_OPEN.ee_pose.position)  # no creep


def test_untouched_triggers_reading_zero_do_not_move_the_arm():
    axes = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # SDL reports 0 for a trigger until it is first touched
    pad = gamepad(axes, set())
    config = GamepadConfig(scaling=AxisScaling(dead_zone=0.0, max_linear_speed=0.1, max_angular_speed=0.5))
    teleop = GamepadTeleop(config, opener=lambda i: pad, pump=lambda: set())
    teleop.connect()
    np.testing.assert_allclose(teleop.get_command(STATE_OPEN, 0.1).linear_velocity, 0.0)
    axes[2] = -1.0  # the left trigger is seen at rest: from now on it counts
    np.testing.assert_allclose(teleop.get_command(STATE_OPEN, 0.1).linear_velocity, 0.0)
    axes[2] = 1.0
    np.testing.assert_allclose(teleop.get_command(STATE_OPEN, 0.1).linear_velocity, [0.0, 0.0, -0.1])
    axes[5] = 1.0  # the right one was never seen at rest: still ignored
    np.testing.assert_allclose(teleop.get_command(STATE_OPEN, 0.1).linear_velocity, [0.0, 0.0, -0.1])


def test_unplugged_gamepad_is_a_lost_connection():
    pad = gamepad([0.0, 0.0, -1.0, 0.0, 0.0, -1.0], set())
    removed: set[int] = set()
    teleop = GamepadTeleop(GamepadConfig(), opener=lambda i: pad, pump=lambda: set(removed))
    teleop.connect()
    teleop.get_command(STATE_OPEN, 0.1)
    removed.add(3)  # another pad went away: not ours
    teleop.get_command(STATE_OPEN, 0.1)
    removed.add(7)
    with pytest.raises(ConnectionLostError, match="gamepad 'Xbox Wireless Controller' was disconnected"):
        teleop.get_command(STATE_OPEN, 0.1)


def test_pump_reports_sdl_joystick_removal():
    _init_sdl()
    pygame.event.post(pygame.event.Event(pygame.JOYDEVICEREMOVED, instance_id=42))
    pygame.event.post(pygame.event.Event(pygame.USEREVENT))
    assert _pump() == {42}


def test_gamepad_with_too_few_axes():
    pad = gamepad([0.0] * 6, set())
    pad.get_numaxes.return_value = 4
    with pytest.raises(DeviceError, match="has 4 axes, the mapping needs 6"):
        GamepadTeleop(opener=lambda i: pad, pump=lambda: set()).connect()


def test_no_gamepad_attached_is_a_clear_error():
    count = _init_sdl().joystick.get_count()
    with pytest.raises(DeviceNotFoundError, match=f"no gamepad {count}: {count} connected.*plug it in"):
        _open_joystick(count)  # real SDL enumeration: one past the pads plugged in (none on a CI machine)
