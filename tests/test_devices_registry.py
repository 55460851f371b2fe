"""The device registry: every registered kind builds from the shipped rig files, the names the command line and
the errors offer are the registered ones, and a device registered from outside works from a rig file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.types import Pose, TeleopCommand
from robot_drivers import factory, registry
from robot_drivers.fake import KinematicArm, SyntheticCamera
from robot_drivers.rig_config import HardwareRig, RigConfigError, build_rig, build_teleop, load_rig_config
from robot_drivers.safety import SafeArm
from robot_drivers.teleop import Teleop, hand_controller_from_rig_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))
SDKS = ("pyrealsense2", "xarm", "rtde_control", "rtde_receive", "pyspacemouse", "pygame", "pybullet")


def _types(kind: str) -> set[str]:
    """The ``type`` of every ``kind`` in the shipped rig files."""
    found = set()
    for path in EXAMPLES:
        data = tomllib.loads(path.read_text())
        tables = {"arm": [data["arm"]], "camera": data["cameras"], "teleop": [data.get("teleop", {})]}[kind]
        found |= {t["type"] for t in tables if "type" in t}
    return found


# -- the built-in kinds -------------------------------------------------------------------------------------------
def test_the_built_in_names_in_their_order():
    assert registry.names("arm") == ("xarm", "ur")
    assert registry.names("camera") == ("realsense", "opencv")
    assert registry.names("teleop") == ("spacemouse", "gamepad")
    assert registry.names("rig") == ("sim", "metaworld")


@pytest.mark.parametrize("kind", ["arm", "camera", "teleop"])
def test_every_registered_kind_has_an_example_rig_file(kind):
    assert set(registry.names(kind)) <= _types(kind), "a registered device no example in configs/ shows"


def test_every_built_in_device_says_how_the_devices_verb_shows_it():
    assert {r.name: r.option("port") for r in registry.registrations("arm")} == {"xarm": 502, "ur": 30004}
    assert {r.name: r.option("ident") for r in registry.registrations("camera")} == {"realsense": "serial",
                                                                                      "opencv": "source"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_builds_its_registered_drivers(path):
    config = load_rig_config(path)
    rig = build_rig(config)
    assert isinstance(rig, HardwareRig) and isinstance(rig.arm, SafeArm) and not rig.arm.is_connected
    arm = registry.lookup("arm", config.arm.type)
    assert type(rig.arm.inner) is arm.driver and isinstance(config.arm.config, arm.config)
    for entry in config.cameras:
        camera = registry.lookup("camera", entry.type)
        assert type(rig.cameras[entry.role]) is camera.driver and isinstance(entry.config, camera.config)
    teleop = registry.lookup("teleop", config.teleop.type)
    assert type(build_teleop(config, rig)) is teleop.driver and isinstance(config.teleop.config, teleop.config)


def test_every_registered_rig_builds():
    """Each built-in robot builds, not connected, at its own rate; one that takes a parameter (metaworld:<task>)
    is built with the first of its choices."""
    own_rates = {"sim": 10.0, "metaworld": 20.0}
    for r in registry.registrations("rig"):
        name = f"{r.name}:{r.option('choices')()[0]}" if r.option("parameter") else r.name
        rig = factory.make_rig(name)
        try:
            assert rig.clock.rate_hz == own_rates.get(r.name, rig.clock.rate_hz) > 0 and not rig.arm.is_connected
            assert rig.scene_control() is not None and rig.scripted_operator(0) is not None
        finally:
            rig.close()


def test_registering_imports_no_vendor_sdk():
    """The registry lists every kind, and the example rigs build, without importing an optional SDK."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from robot_drivers import factory, registry
        from robot_drivers.rig_config import build_rig, build_teleop, load_rig_config
        names = [registry.names(kind) for kind in registry.KINDS]
        for path in sorted(Path("configs").glob("*.toml")):
            config = load_rig_config(path)
            build_teleop(config, build_rig(config))
        print(sorted(m for m in {SDKS!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_kind_is_named_in_rig_config_or_factory():
    """rig_config.py and factory.py look kinds up: no comparison with a registered name, no driver import."""
    for module in ("rig_config", "factory"):
        source = (ROOT / "robot_drivers" / f"{module}.py").read_text()
        for kind in ("arm", "camera", "teleop", "rig"):
            for r in registry.registrations(kind):
                assert f'== "{r.name}"' not in source and f"import {r.driver.__name__}" not in source, (module, r)
                assert f"from {r.driver.__module__} import" not in source, (module, r)


# -- names in --help and errors -----------------------------------------------------------------------------------
def test_command_line_choices_are_the_registered_names(capsys):
    import main

    assert factory.ROBOTS == registry.names("rig")
    assert factory.TELEOPS == ("scripted", "config", *registry.names("teleop"))
    assert [n.partition(":")[0] for n in factory.robot_names()] == list(factory.ROBOTS)
    with pytest.raises(SystemExit):
        main.main(["record", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "{" + ",".join(factory.TELEOPS) + "}" in text
    # --robot is checked by a parser of its own (a robot may take a parameter: metaworld:<task>); its help lists
    # the built-in robots as a user names them
    assert "--robot ROBOT" in text and " or ".join(factory.robot_names()) in text


@pytest.mark.parametrize("kind,old,new,message", [
    ("arm", 'type = "xarm"', 'type = "xarn"', r"arm\.type must be 'xarm' or 'ur', got 'xarn'; did you mean 'xarm'\?"),
    ("camera", 'type = "realsense"', 'type = "realsence"',
     r"cameras\[0\]\.type must be 'realsense' or 'opencv', got 'realsence'; did you mean 'realsense'\?"),
    ("teleop", 'type = "spacemouse"', 'type = "spacemous"',
     r"teleop\.type must be 'spacemouse', 'gamepad' or 'none', got 'spacemous'; did you mean 'spacemouse'\?"),
    ("arm", 'type = "xarm"', 'type = "panda"', r"arm\.type must be 'xarm' or 'ur', got 'panda'$"),
])
def test_an_unknown_kind_names_the_registered_ones_and_the_nearest(tmp_path, kind, old, new, message):
    text = (ROOT / "configs" / "xarm_realsense.toml").read_text()
    path = tmp_path / "rig.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RigConfigError, match=message):
        load_rig_config(path)


def test_unknown_names_on_the_command_line_name_the_nearest():
    with pytest.raises(ValueError, match=r"unknown robot 'sin'.*choose 'sim'.*; did you mean 'sim'\?"):
        factory.make_rig("sin")
    rig = factory.make_rig_from_file(ROOT / "configs" / "webcam_xarm.toml")
    with pytest.raises(ValueError, match=r"choose one of scripted, config, spacemouse, gamepad; did you mean "
                                         r"'gamepad'\?"):
        factory.make_teleop("gamepd", rig)
    with pytest.raises(registry.UnknownDeviceError, match=r"unknown camera 'opnecv'; choose 'realsense' or "
                                                          r"'opencv'; did you mean 'opencv'\?"):
        registry.lookup("camera", "opnecv")


# -- a device registered from outside -----------------------------------------------------------------------------
@dataclass
class BenchArmConfig:
    ip: str
    workspace_min: tuple
    workspace_max: tuple
    home_position: tuple
    home_orientation: tuple
    home_gripper: float
    tracking: float = 1.0


class BenchArm(KinematicArm):
    """The kinematic fake as a registered arm: it takes its config like a driver."""

    def __init__(self, config: BenchArmConfig):
        super().__init__(home=Pose(np.asarray(config.home_position), np.asarray(config.home_orientation)),
                         tracking=config.tracking)
        self.config = config


def bench_arm_from_rig_table(t, shared):
    return BenchArmConfig(**shared.fields, tracking=t.num("tracking", 1.0, 0.0, 1.0, low_open=True)), None


@dataclass
class BenchCameraConfig:
    width: int
    height: int
    fps: float
    stale_limit_s: float
    seed: int = 0


class BenchCamera(SyntheticCamera):
    def __init__(self, config: BenchCameraConfig, name: str):
        super().__init__(name, config.width, config.height, config.fps, seed=config.seed)
        self.config = config


def bench_camera_from_rig_table(t, width, height, fps, stale_limit_s):
    return BenchCameraConfig(width, height, fps, stale_limit_s, seed=int(t.num("seed", 0, 0, 100, integer=True)))


def check_bench_cameras(configs):
    if len({c.seed for c in configs}) < len(configs):
        raise ValueError("two bench cameras have one seed")


@dataclass
class BenchTeleopConfig:
    scaling: object = None
    buttons: dict | None = None
    push: float = 0.0


class BenchTeleop(Teleop):
    name = "bench"

    def __init__(self, config: BenchTeleopConfig | None = None):
        self.config = config or BenchTeleopConfig()

    def get_command(self, state, dt):
        return TeleopCommand(linear_velocity=np.array([self.config.push, 0.0, 0.0]))


def bench_teleop_from_rig_table(t):
    hand = hand_controller_from_rig_table(t, dead_zone=0.2)  # the axes and buttons every hand-held device has
    return BenchTeleopConfig(push=t.num("push", 0.0, -0.1, 0.1, unit="m/s"), **hand)


BENCH_RIG = """
rate_hz = 20
[arm]
type = "bench-arm"
ip = "127.0.0.1"
tracking = 0.5
home = { position = [0.35, 0.0, 0.3], orientation = [1.0, 0.0, 0.0, 0.0], gripper = 1.0 }
[arm.workspace]
min = [0.2, -0.3, 0.05]
max = [0.6, 0.3, 0.5]
[[cameras]]
role = "hand"
type = "bench-camera"
width = 32
height = 24
fps = 50
[[cameras]]
role = "third"
type = "bench-camera"
width = 32
height = 24
fps = 50
seed = 1
[teleop]
type = "bench-teleop"
push = 0.05
buttons = { 0 = "gripper" }
"""


@pytest.fixture
def bench_devices():
    registry.register_arm("bench-arm", BenchArmConfig, parse=bench_arm_from_rig_table)(BenchArm)
    registry.register_camera("bench-camera", BenchCameraConfig, parse=bench_camera_from_rig_table,
                             check_rig=check_bench_cameras, max_width=64, max_height=64, max_fps=100.0)(BenchCamera)
    registry.register_teleop("bench-teleop", BenchTeleopConfig, parse=bench_teleop_from_rig_table)(BenchTeleop)
    yield
    registry.unregister("arm", "bench-arm")
    registry.unregister("camera", "bench-camera")
    registry.unregister("teleop", "bench-teleop")


def test_a_registered_device_works_from_a_rig_file(tmp_path, bench_devices):
    path = tmp_path / "bench.toml"
    path.write_text(BENCH_RIG)
    config = load_rig_config(path)
    assert config.arm.type == "bench-arm" and config.arm.config.tracking == 0.5
    assert config.arm.safety.max_translation_per_tick == pytest.approx(0.10 / 20.0)  # the shared limits apply
    assert [c.config.seed for c in config.cameras] == [0, 1]
    assert config.teleop.config.push == 0.05 and config.teleop.config.scaling.dead_zone == 0.2
    assert config.teleop.config.buttons == {0: "gripper"}
    rig = factory.make_rig(str(path))
    assert isinstance(rig.arm, SafeArm) and isinstance(rig.arm.inner, BenchArm)
    assert {name: type(cam) for name, cam in rig.cameras.items()} == {"hand": BenchCamera, "third": BenchCamera}
    with rig:
        assert rig.is_connected and rig.arm.is_connected
        rig.wait_for_cameras()
        observation = rig.observe()
        assert set(observation.frames) == {"hand", "third"} and observation.frames["hand"].image.shape == (24, 32, 3)
        teleop = factory.make_teleop("config", rig)
        assert isinstance(teleop, BenchTeleop) and rig.extras["teleop"] is teleop
        assert teleop.get_command(observation.state, 0.05).linear_velocity[0] == 0.05
    assert not rig.is_connected and not rig.arm.is_connected
    assert isinstance(factory.make_teleop("bench-teleop", rig), BenchTeleop)  # by name, as on the command line
    from robot_drivers.devices import rig_lines

    assert rig_lines(str(path), ping=True) == [
        f"rig bench ({path}), 20 Hz:", "  arm: bench-arm at 127.0.0.1  (no port registered for this arm: not pinged)",
        "  camera hand: bench-camera, 32x24 @ 50 fps", "  camera third: bench-camera, 32x24 @ 50 fps",
        "  teleop: bench-teleop"]


def test_a_registered_device_is_validated_like_the_built_ins(tmp_path, bench_devices):
    cases = [
        ("tracking = 0.5", "tracking = 2", r"arm\.tracking must be <= 1, got 2"),
        ("tracking = 0.5", "trackng = 0.5", r"arm\.trackng is not a known key; did you mean 'tracking'\?"),
        ("width = 32", "width = 128", r"cameras\[0\]\.width must be <= 64, got 128; allowed: \[1, 64\] pixels"),
        ("seed = 1", "seed = 0", r"rig\.toml: two bench cameras have one seed"),
        ("push = 0.05", "push = nan", r"teleop\.push must be a finite number, got nan"),
        ('type = "bench-arm"', 'type = "bench-arn"',
         r"arm\.type must be 'xarm', 'ur' or 'bench-arm', got 'bench-arn'; did you mean 'bench-arm'\?"),
    ]
    for old, new, message in cases:
        path = tmp_path / "rig.toml"
        path.write_text(BENCH_RIG.replace(old, new, 1))
        with pytest.raises(RigConfigError, match=message):
            load_rig_config(path)


def test_unregistered_it_is_unknown_again(tmp_path, bench_devices):
    registry.unregister("arm", "bench-arm")
    path = tmp_path / "rig.toml"
    path.write_text(BENCH_RIG)
    with pytest.raises(RigConfigError, match=r"arm\.type must be 'xarm' or 'ur', got 'bench-arm'"):
        load_rig_config(path)


def test_registration_is_checked():
    with pytest.raises(ValueError, match="unknown device kind 'gripper'"):
        registry.register("gripper", "robotiq")
    with pytest.raises(ValueError, match="needs a non-empty name"):
        registry.register_arm(" ", BenchArmConfig)
