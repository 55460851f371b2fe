"""Rig config files: the shipped examples build, every validation message names the file, key and fix."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

import main
from robot_drivers.devices import check_reachable
from robot_drivers.factory import make_rig, make_teleop
from robot_drivers.gamepad import GamepadTeleop
from robot_drivers.opencv_camera import OpenCVCamera
from robot_drivers.realsense import RealSenseCamera
from robot_drivers.rig_config import HardwareRig, RigConfigError, build_rig, build_teleop, load_rig_config
from robot_drivers.safety import SafeArm
from robot_drivers.spacemouse import SpaceMouseTeleop
from robot_drivers.ur import URArm
from robot_drivers.xarm import XArm

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))

BASE = """
rate_hz = 10
[arm]
type = "xarm"
ip = "192.168.1.200"
home = { position = [0.35, 0.0, 0.3], orientation = [1.0, 0.0, 0.0, 0.0], gripper = 1.0 }
[arm.workspace]
min = [0.2, -0.3, 0.05]
max = [0.6, 0.3, 0.5]
[arm.limits]
max_step_m = 0.02
max_step_rad = 0.15
[[cameras]]
role = "hand"
type = "realsense"
serial = "111"
width = 640
height = 480
fps = 30
[[cameras]]
role = "third"
type = "realsense"
serial = "222"
width = 640
height = 480
fps = 30
[teleop]
type = "spacemouse"
"""


def write(tmp_path, text, name="rig.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_examples_ship_for_every_arm():
    assert {load_rig_config(p).arm.type for p in EXAMPLES} == {"xarm", "ur"}
    assert {"xarm_realsense.toml", "ur5_realsense.toml", "webcam_xarm.toml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_builds_a_safe_rig(path):
    config = load_rig_config(path)
    rig = build_rig(config)
    assert isinstance(rig, HardwareRig) and isinstance(rig.arm, SafeArm)
    assert isinstance(rig.arm.inner, XArm if config.arm.type == "xarm" else URArm)
    assert set(rig.cameras) == {"hand", "third"}
    for role, cam in rig.cameras.items():
        assert isinstance(cam, RealSenseCamera if config.cameras[0].type == "realsense" else OpenCVCamera)
        assert cam.name == role
    assert rig.clock.rate_hz == config.rate_hz and rig.clock.is_realtime
    # The driver's own box is the safety layer's box (defence in depth), and the arm is not connected.
    assert tuple(rig.arm.inner.config.workspace_min) == tuple(rig.arm.config.workspace_min)
    assert not rig.arm.is_connected
    teleop = build_teleop(config, rig)
    assert isinstance(teleop, SpaceMouseTeleop if config.teleop.type == "spacemouse" else GamepadTeleop)
    assert rig.extras["teleop"] is teleop


def test_speed_limit_caps_the_step(tmp_path):
    text = BASE.replace("max_step_rad = 0.15", "max_step_rad = 0.15\nmax_speed_m_s = 0.05\n"
                                                 "max_angular_speed_rad_s = 0.5")
    config = load_rig_config(write(tmp_path, text))
    assert config.arm.safety.max_translation_per_tick == pytest.approx(0.005)  # 0.05 m/s at 10 Hz
    assert config.arm.safety.max_rotation_per_tick == pytest.approx(0.05)  # 0.5 rad/s at 10 Hz
    assert config.arm.config.tcp_speed == 0.05


def test_step_limits_follow_the_rate():
    base = load_rig_config(ROOT / "configs" / "ur5_realsense.toml")  # 10 Hz, 0.10 m/s, 0.02 m, 0.15 rad
    assert base.arm.safety.max_translation_per_tick == pytest.approx(0.01)
    assert base.arm.safety.max_rotation_per_tick == pytest.approx(0.10)  # 1.0 rad/s default at 10 Hz
    config = base.with_rate(30.0)
    assert config.rate_hz == 30.0 and config.arm.config.rate_hz == 30.0  # the UR's servo time follows too
    # Per tick at 30 Hz, the speed limits (not the 10 Hz steps) bound the motion: 0.1 m/s and 1 rad/s.
    assert config.arm.safety.max_translation_per_tick * 30.0 == pytest.approx(0.10)
    assert config.arm.safety.max_rotation_per_tick * 30.0 == pytest.approx(1.0)
    # A slower rate never grows the step beyond max_step_m / max_step_rad.
    slow = base.with_rate(2.0)
    assert slow.arm.safety.max_translation_per_tick == pytest.approx(0.02)
    assert slow.arm.safety.max_rotation_per_tick == pytest.approx(0.15)
    assert config.arm.gripper.host == config.arm.config.ip and config.arm.gripper.port == 63352
    with pytest.raises(RigConfigError, match=r"ur5_realsense.toml: a control rate of 500 Hz is out of range"):
        base.with_rate(500.0)


def test_rig_rate_is_the_default_and_the_override_reaches_the_safety_layer(tmp_path):
    path = write(tmp_path, BASE.replace("rate_hz = 10", "rate_hz = 5"))
    rig = make_rig(path)  # no rate given: the file's
    assert rig.clock.rate_hz == 5.0
    assert rig.arm.config.max_translation_per_tick == pytest.approx(0.02)  # min(0.02, 0.10 m/s / 5 Hz)
    rig = make_rig(path, rate_hz=25.0)
    assert rig.clock.rate_hz == 25.0
    assert rig.arm.config.max_translation_per_tick == pytest.approx(0.10 / 25.0)
    assert rig.arm.config.max_rotation_per_tick == pytest.approx(1.0 / 25.0)
    assert make_rig("sim").clock.rate_hz == 10.0
    for argv in (["record", "--rig", path, "--out", str(tmp_path / "ds")], ["gui"]):
        assert main.build_parser().parse_args(argv).rate is None  # None: the rig's own rate


def test_xarm_servo_mode_needs_a_fast_stream(tmp_path):
    text = BASE.replace('ip = "192.168.1.200"', 'ip = "192.168.1.200"\nmode = "servo"')
    with pytest.raises(RigConfigError, match=r'arm\] xArm mode "servo" needs rate_hz >= 100 \(got 10 Hz\).*'
                                             r'mode = "online"'):
        load_rig_config(write(tmp_path, text))
    config = load_rig_config(write(tmp_path, text.replace("rate_hz = 10", "rate_hz = 100")))
    assert config.arm.config.mode == "servo"
    assert config.arm.safety.max_translation_per_tick == pytest.approx(0.001)  # 0.10 m/s at 100 Hz
    with pytest.raises(RigConfigError, match=r'at 50 Hz: xArm mode "servo" needs rate_hz >= 100'):
        config.with_rate(50.0)


@pytest.mark.parametrize("edit,message", [
    (('role = "hand"', 'role = "wrist"'), r"cameras\[0\]\.role must be 'hand' or 'third', got 'wrist'"),
    (('type = "xarm"', 'type = "panda"'), r"arm\.type must be 'xarm' or 'ur', got 'panda'"),
    (('serial = "222"', 'serail = "222"'), r"cameras\[1\]\.serial is missing"),
    (('fps = 30\n[teleop]', 'fps = 30\nfsp = 30\n[teleop]'), r"cameras\[1\]\.fsp is not a known key; did you mean 'fps'\?"),
    (('width = 640', 'width = "640"'), r"cameras\[0\]\.width must be a whole number, got '640'"),
    (('min = [0.2, -0.3, 0.05]', 'min = [0.2, -0.3]'), r"arm\.workspace\.min must be a list of 3 numbers"),
    (('min = [0.2, -0.3, 0.05]', 'min = [0.7, -0.3, 0.05]'), r"arm\.workspace\.min must be below arm\.workspace\.max "
                                                             r"on every axis; on x: 0.7 >= 0.6"),
    (('position = [0.35, 0.0, 0.3]', 'position = [0.35, 0.0, 0.9]'), r"arm\.home\.position .* lies outside the "
                                                                     r"workspace"),
    (('max_step_m = 0.02', 'max_step_m = 0.2'), r"arm\.limits\.max_step_m must be <= 0.05, got 0.2"),
    (('max_step_m = 0.02', 'max_step_m = 0'), r"arm\.limits\.max_step_m must be > 0, got 0"),
    (('rate_hz = 10', 'rate_hz = 0'), r"rate_hz must be >= 1, got 0; allowed: \[1, 100\] Hz"),
    (('ip = "192.168.1.200"\n', ''), r"arm\.ip is missing; add it to the \[arm\] table"),
    (('type = "spacemouse"', 'type = "joystick"'), r"teleop\.type must be 'spacemouse', 'gamepad' or 'none'"),
    (('serial = "222"', 'serial = "111"'), r"serial '111' is given to two cameras"),
    (('role = "third"', 'role = "hand"'), r"two cameras have role 'hand'"),
    (('serial = "111"', 'serial = "111"\nhw_sync_role = "slave"'), r"'slave' but none is 'master'"),
    (('serial = "111"', 'serial = "111"\nhw_sync_role = "boss"'), r"hw_sync_role must be 'none', 'master' or 'slave'"),
    (('[teleop]\ntype = "spacemouse"', '[teleop]\ntype = "spacemouse"\nbuttons = { 0 = "fly" }'),
     r"teleop\.buttons\.0 must be 'gripper', .*got 'fly'"),
    (('mode', 'mode'), None),  # no-op edit: the base file itself is valid
])
def test_validation_messages(tmp_path, edit, message):
    old, new = edit
    text = BASE.replace(old, new, 1)
    path = write(tmp_path, text)
    if message is None:
        load_rig_config(path)
        return
    assert text != BASE
    with pytest.raises(RigConfigError, match=message) as info:
        load_rig_config(path)
    assert str(info.value).startswith(path + ": ")


def test_hardware_sync_without_depth_is_warned_about(tmp_path, caplog):
    text = BASE.replace('serial = "111"', 'serial = "111"\nhw_sync_role = "master"')
    load_rig_config(write(tmp_path, text))
    assert "cameras[0].hw_sync_role = 'master' with depth = false" in caplog.text
    assert "colour frames are not hardware-synchronised; set depth = true" in caplog.text
    caplog.clear()
    load_rig_config(write(tmp_path, text.replace('hw_sync_role = "master"', 'hw_sync_role = "master"\ndepth = true')))
    assert "hw_sync_role" not in caplog.text


def test_driver_level_errors_name_the_file(tmp_path):
    text = BASE.replace('type = "xarm"', 'type = "ur"').replace('[arm.workspace]', 'servo_gain = 50\n[arm.workspace]')
    with pytest.raises(RigConfigError, match=r"rig.toml: arm\.servo_gain must be >= 100, got 50"):
        load_rig_config(write(tmp_path, text))
    with pytest.raises(RigConfigError, match=r"arm\.mode is not a known key"):
        load_rig_config(write(tmp_path, text.replace("servo_gain = 50", 'mode = "online"')))


def test_timing_keys(tmp_path):
    ur = BASE.replace('type = "xarm"', 'type = "ur"')
    config = load_rig_config(write(tmp_path, ur))
    assert config.state_rate_hz == 50.0 and config.arm.config.servo_rate_hz == 125.0  # the defaults
    text = ur.replace("rate_hz = 10", "rate_hz = 10\nstate_rate_hz = 0").replace(
        "[arm.workspace]", "servo_rate_hz = 500\n[arm.workspace]")
    config = load_rig_config(write(tmp_path, text))
    assert config.state_rate_hz == 0.0 and config.arm.config.servo_rate_hz == 500.0
    assert build_rig(config).state_rate_hz == 0.0
    assert config.with_rate(30.0).arm.config.servo_rate_hz == 500.0  # the servo rate does not follow the tick
    with pytest.raises(RigConfigError, match=r"rig.toml: arm\.servo_rate_hz must be >= 125, got 100"):
        load_rig_config(write(tmp_path, text.replace("servo_rate_hz = 500", "servo_rate_hz = 100")))
    with pytest.raises(RigConfigError, match=r"rig.toml: \[arm\] servo_rate_hz \(500 Hz\) is faster than "
                                             r"rtde_frequency \(125 Hz\)"):
        load_rig_config(write(tmp_path, text.replace("servo_rate_hz = 500", "servo_rate_hz = 500\nrtde_frequency = 125")))
    with pytest.raises(RigConfigError, match=r"rig.toml: state_rate_hz must be <= 500, got 2000"):
        load_rig_config(write(tmp_path, text.replace("state_rate_hz = 0", "state_rate_hz = 2000")))


def test_file_errors(tmp_path):
    with pytest.raises(RigConfigError, match="no such rig file"):
        load_rig_config(tmp_path / "missing.toml")
    with pytest.raises(RigConfigError, match="not valid TOML"):
        load_rig_config(write(tmp_path, "rate_hz = = 3"))
    with pytest.raises(RigConfigError, match="cameras must be one or more"):
        load_rig_config(write(tmp_path, BASE.split("[[cameras]]")[0]))


def test_opencv_and_no_teleop(tmp_path):
    text = BASE.replace('type = "realsense"\nserial = "111"', 'type = "opencv"\nsource = "/dev/video4"')
    text = text.replace('type = "spacemouse"', 'type = "none"')
    config = load_rig_config(write(tmp_path, text))
    assert config.cameras[0].config.source == "/dev/video4" and config.teleop is None
    rig = build_rig(config)
    assert build_teleop(config, rig) is None
    with pytest.raises(ValueError, match=r"no \[teleop\] table"):
        make_teleop("config", rig)


def test_a_camera_without_stale_limit_derives_it_and_one_with_it_keeps_it(tmp_path):
    text = BASE.replace('serial = "222"', 'serial = "222"\nstale_limit_s = 0.3')
    rig = build_rig(load_rig_config(write(tmp_path, text)))
    hand, third = rig.cameras["hand"], rig.cameras["third"]
    assert hand.stale_limit.fixed_s is None and hand.stale_limit.bound_s == 1.0  # derived, within 1 s
    assert third.stale_limit.fixed_s == 0.3 and third.stale_limit.bound_s == 0.3


def test_factory_and_cli_take_the_rig_file(tmp_path):
    path = write(tmp_path, BASE)
    rig = make_rig(path, rate_hz=20.0)
    assert rig.clock.rate_hz == 20.0 and isinstance(rig.arm.inner, XArm)
    assert isinstance(make_teleop("config", rig), SpaceMouseTeleop)
    with pytest.raises(ValueError, match="--rig FILE"):
        make_teleop("config", make_rig("sim"))
    args = main.build_parser().parse_args(["record", "--rig", path, "--out", str(tmp_path / "ds")])
    assert args.rig == path and args.robot == "sim"  # main() then lets --rig override --robot


def test_cli_reports_a_bad_rig_file(tmp_path, capsys):
    path = write(tmp_path, BASE.replace('role = "hand"', 'role = "wrist"'))
    assert main.main(["devices", "--rig", path]) == 2
    assert "cameras[0].role must be 'hand' or 'third'" in capsys.readouterr().err


def test_devices_verb_without_hardware(capsys, tmp_path):
    from robot_drivers.realsense import list_devices

    attached = list_devices()  # the real USB enumeration: a developer may have cameras plugged in
    assert main.main(["devices"]) == 0
    out = capsys.readouterr().out
    if attached:
        assert f"RealSense cameras ({len(attached)}):" in out and f"serial {attached[0]['serial']}" in out
    else:
        assert "no RealSense cameras found" in out
    # --ping only ever targets the rig file's address: here the loopback, where nothing listens on 502.
    path = write(tmp_path, BASE.replace("192.168.1.200", "127.0.0.1"))
    assert main.main(["devices", "--rig", path, "--ping", "--timeout", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "arm: xarm at 127.0.0.1  port 502: NOT reachable" in out
    assert "camera hand: realsense serial 111, 640x480 @ 30 fps" in out and "teleop: spacemouse" in out


def test_check_reachable_on_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        assert check_reachable("127.0.0.1", server.getsockname()[1], 0.5) == (True, "")
    finally:
        server.close()


# -- "A NaN in a rig file switches off safety": every number finite and in range, every address an address ------
XARM = ROOT / "configs" / "xarm_realsense.toml"
UR5 = ROOT / "configs" / "ur5_realsense.toml"
WEBCAM = ROOT / "configs" / "webcam_xarm.toml"


@pytest.mark.parametrize("example,old,new,message", [
    (XARM, "max_step_m = 0.02", "max_step_m = nan",
     r"arm\.limits\.max_step_m must be a finite number, got nan; allowed: \(0, 0\.05\] m"),
    (XARM, "max_step_m = 0.02", "max_step_m = inf", r"arm\.limits\.max_step_m must be a finite number, got inf"),
    (XARM, "max_step_m = 0.02", "max_step_m = true", r"arm\.limits\.max_step_m must be a number, got true"),
    (XARM, "watchdog_s = 0.5", "watchdog_s = nan",
     r"arm\.limits\.watchdog_s must be a finite number, got nan; allowed: \[0\.05, 5\] s"),
    (XARM, "watchdog_s = 0.5", "watchdog_s = 0.001", r"arm\.limits\.watchdog_s must be >= 0\.05, got 0\.001"),
    (XARM, "min = [0.20, -0.35, 0.03]", "min = [0.20, nan, 0.03]",
     r"arm\.workspace\.min must be a list of 3 finite numbers, got \[0\.2, nan, 0\.03\]; allowed: \[-2, 2\] m"),
    (XARM, "max = [0.60, 0.35, 0.45]", "max = [0.60, 0.35, -inf]", r"arm\.workspace\.max must be a list of 3 finite"),
    (XARM, "max = [0.60, 0.35, 0.45]", "max = [60, 0.35, 0.45]", r"arm\.workspace\.max\[0\] is out of range, got 60"),
    (XARM, "rate_hz = 10", "rate_hz = nan", r"rate_hz must be a finite number, got nan; allowed: \[1, 100\] Hz"),
    (XARM, "width = 640", "width = 100000", r"cameras\[0\]\.width must be <= 1920, got 100000; allowed: \[1, 1920\]"),
    (WEBCAM, "width = 640", "width = 100000", r"cameras\[0\]\.width must be <= 4096, got 100000; allowed: \[1, 4096\]"),
    (WEBCAM, "fps = 30", "fps = nan", r"cameras\[0\]\.fps must be a finite number, got nan"),
    (XARM, 'ip = "192.168.1.200"', 'ip = "not an ip address!"',
     r"arm\.ip must be an IPv4 address such as \"192\.168\.1\.200\", got 'not an ip address!'"),
    (XARM, 'ip = "192.168.1.200"', 'ip = "192.168.1.300"', r"arm\.ip must be an IPv4 address"),
    (XARM, 'ip = "192.168.1.200"', 'ip = "fe80::1"', r"arm\.ip must be an IPv4 address .*serial port"),
    (XARM, 'ip = "192.168.1.200"', 'ip = "0.0.0.0"', r"arm\.ip must be the device's own address"),
    (UR5, 'ip = "192.168.1.102"', 'ip = "ur5.lab"', r"arm\.ip must be an IP address such as"),
    (UR5, "rtde_frequency = -1", "rtde_frequency = -500",
     r"arm\.rtde_frequency must be -1 \(the controller's own rate\) or in \[1, 500\] Hz, got -500"),
    (UR5, "rtde_frequency = -1", "rtde_frequency = 100000", r"arm\.rtde_frequency must be -1 .* got 100000"),
    (UR5, "rtde_frequency = -1", "rtde_frequency = nan", r"arm\.rtde_frequency must be a finite number, got nan"),
    (UR5, "port = 63352", 'port = 63352\nhost = "not a host!"', r"arm\.gripper\.host must be an IP address .* or a "
                                                                  r"host name, got 'not a host!'"),
    (UR5, "port = 63352", "port = 70000", r"arm\.gripper\.port must be <= 65535, got 70000"),
    (UR5, "force = 100", "force = nan", r"arm\.gripper\.force must be a whole number, got nan"),
    (UR5, "servo_gain = 300", "servo_gain = inf", r"arm\.servo_gain must be a finite number, got inf"),
    (XARM, "orientation = [1.0, 0.0, 0.0, 0.0]", "orientation = [2.0, 0.0, 0.0, 0.0]",
     r"arm\.home\.orientation must be a unit quaternion"),
    (XARM, "gripper = 1.0 }", "gripper = nan }", r"arm\.home\.gripper must be a finite number, got nan"),
    (XARM, "home_speed = 0.05", "home_speed = nan", r"arm\.home_speed must be a finite number, got nan"),
    (XARM, 'serial = "000000000001"', 'serial = "12 34; rm"', r"cameras\[0\]\.serial must be a camera serial"),
    (XARM, "dead_zone = 0.1", "dead_zone = nan", r"teleop\.dead_zone must be a finite number, got nan"),
    (XARM, "max_linear_speed = 0.08", "max_linear_speed = 50", r"teleop\.max_linear_speed must be <= 0\.5"),
    (XARM, "signs = [1, 1, 1, 1, 1, 1]", "signs = [1, 1, 1, 1, 1, 2]", r"teleop\.signs must be six values of 1 or -1"),
    (XARM, '0 = "gripper"', '00 = "gripper"', r"teleop\.buttons\.00 must be a button number in 0\.\.63"),
    (WEBCAM, "index = 0", "index = -1", r"teleop\.index must be >= 0, got -1; allowed: \[0, 15\]"),
    (WEBCAM, "source = 2", "source = 1000", r"cameras\[1\]\.source must be a device index in 0\.\.255"),
    (WEBCAM, 'fourcc = "MJPG"', 'fourcc = "MJ\\u0000G"', r"cameras\[0\]\.fourcc must be four characters"),
    # unknown keys in every table, nested ones included, name the nearest valid key
    (XARM, "watchdog_s = 0.5", "watchdog_s = 0.5\nwatchdogs = 0.5",
     r"arm\.limits\.watchdogs is not a known key; did you mean 'watchdog_s'\?"),
    (XARM, "gripper = 1.0 }", "gripper = 1.0, grippr = 1.0 }",
     r"arm\.home\.grippr is not a known key; did you mean 'gripper'\?"),
    (XARM, "max = [0.60, 0.35, 0.45]", "max = [0.60, 0.35, 0.45]\nmaxx = [0.60, 0.35, 0.45]",
     r"arm\.workspace\.maxx is not a known key; did you mean 'max'\?"),
    (UR5, "force = 100", "force = 100\nforse = 100", r"arm\.gripper\.forse is not a known key; did you mean 'force'\?"),
    (XARM, "rate_hz = 10", "rate_hz = 10\nrate_hs = 10", r"rate_hs is not a known key; did you mean 'rate_hz'\?"),
])
def test_non_finite_and_out_of_range_values_are_refused(tmp_path, example, old, new, message):
    text = example.read_text()
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1), name=example.name)
    with pytest.raises(RigConfigError, match=message) as info:
        load_rig_config(path)
    assert str(info.value).startswith(path + ": ")


def test_host_names_are_allowed_for_the_gripper_only(tmp_path):
    text = UR5.read_text().replace("port = 63352", 'port = 63352\nhost = "ur5-controller.lab.example"')
    config = load_rig_config(write(tmp_path, text))
    assert config.arm.gripper.host == "ur5-controller.lab.example"
    text = UR5.read_text().replace("192.168.1.102", "fe80::1")  # a UR (ur_rtde) also takes IPv6
    assert load_rig_config(write(tmp_path, text)).arm.gripper.host == "fe80::1"


def test_with_rate_refuses_nan_and_rates_below_1_hz():
    config = load_rig_config(XARM)
    for rate in (float("nan"), float("inf"), 0.5, 0.0, -10.0, 101.0):
        with pytest.raises(RigConfigError, match=r"is out of range; use one in \[1, 100\] Hz"):
            config.with_rate(rate)


def test_every_verb_validates_the_rig_file_before_connecting(tmp_path, capsys):
    """devices, record and gui all read the file with load_rig_config: a NaN is refused before any connection."""
    from gui.app import file_rig_factory

    path = write(tmp_path, BASE.replace("192.168.1.200", "127.0.0.1").replace("max_step_m = 0.02",
                                                                               "max_step_m = nan"))
    message = "arm.limits.max_step_m must be a finite number, got nan"
    assert main.main(["devices", "--rig", path]) == 2
    assert message in capsys.readouterr().err
    assert main.main(["record", "--rig", path, "--out", str(tmp_path / "ds")]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(RigConfigError, match=message):
        make_rig(path)
    with pytest.raises(RigConfigError, match=message):
        file_rig_factory(path)


def test_a_rig_file_of_any_name_works_with_every_verb(tmp_path, capsys):
    from gui.app import file_rig_factory

    path = write(tmp_path, BASE.replace("192.168.1.200", "127.0.0.1"), name="lab-rig.conf")
    rig = make_rig(path)  # what `record --rig lab-rig.conf` builds (not connected)
    assert isinstance(rig, HardwareRig) and isinstance(rig.arm, SafeArm) and not rig.arm.is_connected
    assert main.main(["devices", "--rig", path]) == 0
    assert "arm: xarm at 127.0.0.1" in capsys.readouterr().out
    assert callable(file_rig_factory(path))
    for robot in ("no/such/rig.toml", "xarm", str(tmp_path)):  # a directory is not a rig file either
        with pytest.raises(ValueError, match=r"unknown robot .*choose 'sim' or 'metaworld:<task>', or give the path of an existing rig "
                                             r"file"):
            make_rig(robot)
