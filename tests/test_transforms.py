"""The rotation helpers of `core/transforms.py` (quaternions [x, y, z, w]), and the one half-turn wrap."""

import numpy as np
import pytest

from core.transforms import (euler_to_quat, normalize_quat, quat_angle, quat_multiply, quat_slerp, quat_to_matrix,
                             rotvec_to_quat, wrap_half_turn, yaw_of)
from core.types import Action, Pose


def test_rotvec_and_angle_agree():
    q = rotvec_to_quat([0, 0, 0.3])
    assert quat_angle([0, 0, 0, 1], q) == pytest.approx(0.3)
    assert yaw_of(q) == pytest.approx(0.3)


def test_slerp_halfway_and_sign_invariance():
    a = euler_to_quat(np.pi, 0, 0)
    b = euler_to_quat(np.pi, 0, 1.0)
    mid = quat_slerp(a, -b, 0.5)  # -b is the same rotation as b
    assert quat_angle(a, mid) == pytest.approx(0.5, abs=1e-6)


def test_multiply_matches_matrices():
    a, b = euler_to_quat(0.1, 0.2, 0.3), euler_to_quat(-0.4, 0.5, 1.1)
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)


def test_bad_quaternion_and_action_rejected():
    with pytest.raises(ValueError, match="zero or non-finite"):
        normalize_quat([0, 0, 0, 0])
    with pytest.raises(ValueError, match="not finite"):
        Pose([np.nan, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="8 values"):
        Action.from_array(np.zeros(7))


def test_action_array_round_trip():
    a = Action(Pose([0.4, 0.1, 0.2], euler_to_quat(np.pi, 0, 0.3)), 0.25)
    b = Action.from_array(a.as_array())
    np.testing.assert_allclose(b.as_array(), a.as_array(), atol=1e-6)


def test_radians_and_degrees_wrap_into_a_half_open_half_turn():
    degrees = np.linspace(-1000.0, 1000.0, 20001)
    np.testing.assert_array_equal(wrap_half_turn(degrees, unit="deg"), (degrees + 90.0) % 180.0 - 90.0)
    radians = np.radians(degrees)
    np.testing.assert_array_equal(wrap_half_turn(radians), (radians + np.pi / 2) % np.pi - np.pi / 2)
    assert wrap_half_turn(90.0, unit="deg") == -90.0 and wrap_half_turn(-90.0, unit="deg") == -90.0
    assert wrap_half_turn(np.pi) == pytest.approx(0.0) and wrap_half_turn(3 * np.pi / 4) == pytest.approx(-np.pi / 4)
    assert type(wrap_half_turn(1.0)) is float and type(wrap_half_turn(np.float32(10.0), unit="deg")) is float
    assert wrap_half_turn([0.0, 3.0]).shape == (2,)
    with pytest.raises(ValueError, match="unit must be 'rad' or 'deg'"):
        wrap_half_turn(1.0, unit="turns")
