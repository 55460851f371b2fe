"""The device life cycle: connect, disconnect, is_connected and ``with`` are written once (robot_drivers.device)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import robot_drivers
from core.clock import RealTimeClock
from robot_drivers.arm import Arm
from robot_drivers.camera import Camera
from robot_drivers.device import Device
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.grippers import Gripper, NoGripper
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm
from robot_drivers.teleop import CombinedTeleop, Teleop

LIFE_CYCLE = ("connect", "disconnect", "__enter__", "__exit__")


class Recorder(Device):
    """Logs its hooks; fails to open while ``broken``."""

    def __init__(self, broken: bool = False):
        self.calls: list[str] = []
        self.broken = broken

    def _connect(self) -> None:
        self.calls.append("open")
        if self.broken:
            raise OSError("no such device")

    def _disconnect(self) -> None:
        self.calls.append("close")


class Hardware(Recorder):
    skip_connect_when_connected = True


def _all_device_classes() -> set[type]:
    for module in pkgutil.walk_packages(robot_drivers.__path__, "robot_drivers."):
        importlib.import_module(module.name)
    found, todo = set(), [Device]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("robot_drivers.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_the_life_cycle_is_written_once():
    classes = _all_device_classes()
    assert {Arm, Camera, Teleop, Gripper, Rig, SafeArm, KinematicArm} <= classes
    for cls in classes:
        overridden = [name for name in LIFE_CYCLE if name in vars(cls)]
        assert not overridden, f"{cls.__module__}.{cls.__name__} overrides {overridden}: implement the hooks"


def test_connect_and_disconnect_call_the_hooks():
    device = Recorder()
    assert not device.is_connected
    device.connect()
    assert device.is_connected and device.calls == ["open"]
    device.disconnect()
    assert not device.is_connected and device.calls == ["open", "close"]
    with device as opened:
        assert opened is device and device.is_connected
    assert not device.is_connected and device.calls == ["open", "close", "open", "close"]


def test_the_with_statement_closes_on_an_error():
    device = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        with device:
            raise RuntimeError("boom")
    assert device.calls == ["open", "close"] and not device.is_connected


def test_a_failed_connect_leaves_the_device_closed():
    device = Recorder(broken=True)
    with pytest.raises(OSError, match="no such device"):
        device.connect()
    assert not device.is_connected
    with pytest.raises(OSError):
        with device:
            pass  # never reached
    assert device.calls == ["open", "open"]  # __exit__ does not run when __enter__ raised
    device.disconnect()  # releasing a device that never opened is allowed
    assert device.calls[-1] == "close"


def test_hardware_drivers_skip_a_second_connect_others_do_not():
    hardware, other = Hardware(), Recorder()
    for device in (hardware, other):
        device.connect()
        device.connect()
    assert hardware.calls == ["open"] and other.calls == ["open", "open"]
    from robot_drivers.opencv_camera import OpenCVCamera
    from robot_drivers.realsense import RealSenseCamera
    from robot_drivers.ur import URArm
    from robot_drivers.xarm import XArm

    assert all(cls.skip_connect_when_connected for cls in (XArm, URArm, RealSenseCamera, OpenCVCamera))
    assert not SafeArm.skip_connect_when_connected  # its watchdog starts on every connect


def test_devices_without_a_connection_are_connected_between_connect_and_disconnect():
    for device in (NoGripper(), CombinedTeleop([])):
        assert not device.is_connected
        with device:
            assert device.is_connected
        assert not device.is_connected


def test_combined_teleop_opens_and_closes_every_device():
    parts = [Recorder(), Recorder()]
    combined = CombinedTeleop(parts)  # type: ignore[list-item] - any Device will do here
    with combined:
        assert all(p.is_connected for p in parts)
    assert all(p.calls == ["open", "close"] for p in parts)


def test_a_rig_connects_its_devices_and_releases_them_on_a_failure():
    arm = SafeArm(KinematicArm())
    cameras = {"a": SyntheticCamera("a", 16, 12, fps=50.0), "b": SyntheticCamera("b", 16, 12, fps=50.0, seed=1)}
    rig = Rig(arm=arm, cameras=cameras, clock=RealTimeClock(20.0), state_rate_hz=0.0)
    with rig:
        assert rig.is_connected and arm.is_connected and all(c.is_connected for c in cameras.values())
    assert not rig.is_connected and not arm.is_connected and not any(c.is_connected for c in cameras.values())

    def refuse():
        raise OSError("camera b is unplugged")

    cameras["b"]._connect = refuse
    with pytest.raises(OSError, match="unplugged"):
        rig.connect()
    assert not rig.is_connected and not arm.is_connected and not cameras["a"].is_connected
