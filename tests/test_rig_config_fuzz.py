"""Property test: a mutated rig file is either refused with a clear RigConfigError, or its safety limits hold.

Each example starts from a shipped rig file (configs/*.toml, read with tomllib) and mutates it: a number
anywhere in the tree becomes nan, inf, 0, a negative, a huge value, a string or a boolean; a key is deleted;
a misspelt key is added; an address becomes random text. The tree is written back with the small TOML
writer below and loaded. Either ``load_rig_config`` raises :class:`RigConfigError` naming the file, or the
config's safety numbers are finite and positive, ``build_rig`` gives a :class:`SafeArm`, and behind it (the
driver swapped for a kinematic fake: nothing connects) a command 20 cm away moves at most one per-tick step
and a target outside the workspace is clipped into the box.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
import socket
import tomllib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robot_drivers.fake import KinematicArm
from robot_drivers.rig_config import RigConfigError, build_rig, build_teleop, load_rig_config
from robot_drivers.safety import SafeArm
from core.transforms import quat_angle, rotvec_to_quat, quat_multiply
from core.types import Action, Pose

ROOT = Path(__file__).resolve().parents[1]
BASES = {name: tomllib.loads((ROOT / "configs" / name).read_text())
         for name in ("xarm_realsense.toml", "ur5_realsense.toml", "webcam_xarm.toml")}

# Every key name the loader knows in some table: a "misspelling" that is one of them is not a typo.
KNOWN_KEYS = {
    "name", "rate_hz", "state_rate_hz", "arm", "cameras", "teleop",
    "type", "ip", "mode", "gripper", "clear_errors_on_connect", "home", "home_speed", "workspace", "limits",
    "rtde_frequency", "servo_lookahead", "servo_gain", "servo_rate_hz", "position", "orientation", "min", "max",
    "max_step_m", "max_step_rad", "max_speed_m_s", "max_angular_speed_rad_s", "watchdog_s", "host", "port",
    "speed", "force", "role", "serial", "width", "height", "fps", "depth", "hw_sync_role", "warmup_frames",
    "stale_limit_s", "playback_file", "source", "fourcc", "dead_zone", "max_linear_speed", "max_angular_speed",
    "signs", "operator_yaw_deg", "buttons", "device", "index",
}
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*")


# -- a tiny TOML writer: everything as inline tables and arrays, keys always quoted -------------------------------
def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(tree: dict) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in tree.items())


def test_the_toml_writer_round_trips_the_examples():
    for tree in BASES.values():
        assert tomllib.loads(dump_toml(tree)) == tree
    odd = {"a": 'quote " back \\ tab \t del \x7f ü', "n": [float("inf"), -0.0, 1e300, 10 ** 15], "t": {"": True}}
    assert tomllib.loads(dump_toml(odd)) == odd


# -- the tree: where numbers, keys, tables and addresses are ----------------------------------------------------
def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path, node


def _tables(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _tables(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _tables(value, (*path, i))


def _parent(tree, path):
    node = tree
    for part in path[:-1]:
        node = node[part]
    return node


BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), 0, 0.0, -1, -0.5, -1e9, 1e300, 10 ** 15, 5e-324,
               True, False, "0.02", "", "nan"]
numbers = st.one_of(st.sampled_from(BAD_NUMBERS), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10 ** 6, 10 ** 6))
scales = st.sampled_from([-1.0, 0.0, 0.5, 0.9, 1.1, 1.5, 2.0, 10.0, 1e6])
garbage = st.one_of(st.sampled_from(["not an ip address!", "192.168.1.300", "", " ", "0.0.0.0", "255.255.255.255",
                                     "224.0.0.1", "::", "localhost", "1.2.3", "192.168.1.200 ", "fe80::1",
                                     "ur5.lab", "-bad-.host", "a..b", "/dev/ttyUSB0", "127.0.0.5"]),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=24))


def _misspell(draw, key: str) -> str:
    how = draw(st.sampled_from(["drop", "double", "swap", "upper", "suffix"]))
    i = draw(st.integers(0, max(0, len(key) - 1)))
    if how == "drop" and len(key) > 1:
        return key[:i] + key[i + 1:]
    if how == "double":
        return key[:i] + key[i:i + 1] * 2 + key[i + 1:]
    if how == "swap" and len(key) > 1:
        i = min(i, len(key) - 2)
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    if how == "upper":
        return key.upper()
    return key + "_"


@st.composite
def mutated_rigs(draw):
    """(example name, mutated tree, the mutations applied)."""
    name = draw(st.sampled_from(sorted(BASES)))
    tree = copy.deepcopy(BASES[name])
    applied = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["number", "scale", "scale", "delete", "delete", "misspell", "address"]))
        if kind in ("number", "scale"):
            spots = [(p, v) for p, v in _leaves(tree) if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if not spots:
                continue
            path, old = draw(st.sampled_from(spots))
            new = draw(numbers) if kind == "number" else old * draw(scales)
            _parent(tree, path)[path[-1]] = new
            applied.append((kind, path, new))
        elif kind == "delete":
            keys = [(p, k) for p, table in _tables(tree) for k in table]
            if not keys:
                continue
            path, key = draw(st.sampled_from(keys))
            del _parent(tree, (*path, key))[key]
            applied.append((kind, (*path, key), None))
        elif kind == "misspell":
            spots = [(p, table, k) for p, table in _tables(tree) if not (p and p[-1] == "buttons") for k in table]
            if not spots:
                continue
            path, table, key = draw(st.sampled_from(spots))
            typo = _misspell(draw, key)
            if typo in KNOWN_KEYS or typo in table:
                continue
            table[typo] = copy.deepcopy(table[key])
            applied.append((kind, (*path, typo), key))
        else:
            arm = tree.get("arm")
            if not isinstance(arm, dict):
                continue
            targets = [("arm", "ip")]
            if isinstance(arm.get("gripper"), dict):
                targets.append(("arm", "gripper", "host"))
            path = draw(st.sampled_from(targets))
            new = draw(garbage)
            _parent(tree, path)[path[-1]] = new
            applied.append((kind, path, new))
    return name, tree, applied


def _exists(tree, path) -> bool:
    node = tree
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _no_network(*args, **kwargs):
    raise AssertionError("a rig-file test tried to open a network connection")


def _turned(orientation, radians: float):
    return quat_multiply(rotvec_to_quat([0.0, 0.0, radians]), orientation)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated_rigs())
def test_a_mutated_rig_file_is_refused_or_safe(tmp_path, case):
    name, tree, applied = case
    typos = [path for kind, path, _ in applied if kind == "misspell" and _exists(tree, path)]  # not deleted since
    path = tmp_path / f"mutated-{name}"
    path.write_text(dump_toml(tree), encoding="utf-8")
    with mock.patch.object(socket.socket, "connect", _no_network), \
            mock.patch.object(socket, "create_connection", _no_network):
        try:
            config = load_rig_config(path)
        except RigConfigError as exc:
            event("refused")
            assert str(exc).startswith(f"{path}: "), exc
            if typos and all(kind == "misspell" for kind, _, _ in applied):
                assert "is not a known key" in str(exc), exc
            return
        assert not typos, f"a misspelt key was accepted: {applied}"
        event("accepted")
        _check_safe(config)


def _check_safe(config) -> None:
    safety = config.arm.safety
    step, turn = safety.max_translation_per_tick, safety.max_rotation_per_tick
    for value in (step, turn, safety.watchdog_timeout, safety.violation_margin, safety.measured_max_age,
                  safety.stop_wait):
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    assert 0 < step <= 0.05 and 0 < turn <= 0.5 and 0.05 <= safety.watchdog_timeout <= 5.0
    lo, hi = np.asarray(safety.workspace_min, float), np.asarray(safety.workspace_max, float)
    assert lo.shape == hi.shape == (3,) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)
    assert 1.0 <= config.rate_hz <= 100.0 and math.isfinite(config.state_rate_hz)
    address = ipaddress.ip_address(config.arm.config.ip)  # the arm is always addressed by an IP address
    assert not (address.is_unspecified or address.is_multicast)
    if config.arm.gripper is not None:
        host = config.arm.gripper.host
        assert _is_ip(host) or HOST_NAME.fullmatch(host), host
    for camera in config.cameras:
        assert 1 <= camera.config.width <= 4096 and 1 <= camera.config.height <= 4096
        assert 1 <= camera.config.fps <= 120

    rig = build_rig(config)
    build_teleop(config, rig)
    safe = rig.arm
    assert isinstance(safe, SafeArm) and safe.config == safety and not safe.is_connected
    # The real driver is swapped for a kinematic fake at the home pose; nothing connects, no watchdog thread.
    home = Pose(np.asarray(config.arm.config.home_position, float), np.asarray(config.arm.config.home_orientation))
    fake = KinematicArm(home=home)
    safe.inner = fake
    fake.connect()
    try:
        far = home.position + np.array([0.2, 0.0, 0.0])  # 20 cm away, maybe outside the box too
        sent = safe.send_action(Action(Pose(far, _turned(home.orientation, 1.0)), 1.0))
        assert np.linalg.norm(sent.pose.position - home.position) <= step + 1e-9
        assert quat_angle(home.orientation, sent.pose.orientation) <= turn + 1e-6
        assert np.all(sent.pose.position >= lo - 1e-12) and np.all(sent.pose.position <= hi + 1e-12)
        outside = hi + 1.0  # a target outside the workspace on every axis
        previous = sent.pose.position
        sent = safe.send_action(Action(Pose(outside, home.orientation), 5.0))
        assert np.linalg.norm(sent.pose.position - previous) <= step + 1e-9
        assert np.all(sent.pose.position >= lo - 1e-12) and np.all(sent.pose.position <= hi + 1e-12)
        assert 0.0 <= sent.gripper <= 1.0
        assert fake.sent[-1] is sent and len(fake.sent) == 2  # what reached the driver is the clipped command
    finally:
        fake.disconnect()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_unmutated_examples_pass_the_property(name):
    _check_safe(load_rig_config(ROOT / "configs" / name))
