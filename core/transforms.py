"""Small rotation helpers. Quaternions are [x, y, z, w] (the project-wide convention)."""

from __future__ import annotations

import numpy as np

IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])


def normalize_quat(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q!r} has zero or non-finite norm")
    q = q / n
    # One canonical sign (w >= 0) so equal rotations compare equal.
    return -q if q[3] < 0 else q


def quat_nearest(q, reference) -> np.ndarray:
    """``q`` or ``-q`` (the same rotation), whichever lies in ``reference``'s hemisphere (dot product >= 0)."""
    q = np.asarray(q)
    return -q if float(np.dot(q, np.asarray(reference, dtype=np.float64))) < 0.0 else q


def sign_continuous(quats, reference=None) -> np.ndarray:
    """Quaternions along a path (shape [..., T, 4]) with signs chosen so that no step jumps to the opposite
    hemisphere: each one is put in the hemisphere of the one before it. The first one is put in
    ``reference``'s hemisphere (shape [4] or [..., 4]) when given, else kept. Rotations are unchanged;
    a path that is already continuous is returned as it was (the operation is idempotent)."""
    q = np.array(quats, copy=True)
    if q.shape[-1] != 4 or q.ndim < 2:
        raise ValueError(f"expected quaternions of shape [..., T, 4], got {q.shape}")
    if q.shape[-2] == 0:
        return q
    step = np.where(np.sum(q[..., 1:, :] * q[..., :-1, :], axis=-1) < 0.0, -1.0, 1.0)
    first = np.ones(q.shape[:-2] + (1,))
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        first = np.where(np.sum(q[..., :1, :] * ref[..., None, :], axis=-1) < 0.0, -1.0, 1.0)
    signs = np.cumprod(np.concatenate([first, step], axis=-1), axis=-1)
    return (q * signs[..., None]).astype(q.dtype, copy=False)


#: Where the quaternion sits in a flat pose / action / state vector (x y z qx qy qz qw [gripper]).
POSE_QUAT = slice(3, 7)


def sign_continuous_poses(rows, reference=None) -> np.ndarray:
    """:func:`sign_continuous` applied to the quaternion columns of flat pose vectors ([..., T, >=7])."""
    out = np.array(rows, copy=True)
    out[..., POSE_QUAT] = sign_continuous(out[..., POSE_QUAT], reference)
    return out


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product a * b (apply b first, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def quat_conjugate(q) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def quat_angle(a, b) -> float:
    """Rotation angle (rad, in [0, pi]) between two orientations."""
    d = abs(float(np.dot(normalize_quat(a), normalize_quat(b))))
    return 2.0 * float(np.arccos(min(1.0, d)))


def quat_slerp(a, b, t: float) -> np.ndarray:
    a = normalize_quat(a)
    b = normalize_quat(b)
    d = float(np.dot(a, b))
    if d < 0.0:
        b, d = -b, -d
    if d > 0.9995:
        return normalize_quat(a + t * (b - a))
    theta = np.arccos(d)
    return normalize_quat((np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta))


def rotvec_to_quat(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return IDENTITY_QUAT.copy()
    axis = v / angle
    s = np.sin(angle / 2.0)
    return np.array([axis[0] * s, axis[1] * s, axis[2] * s, np.cos(angle / 2.0)])


def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = normalize_quat(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def euler_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Extrinsic x-y-z (roll about x, then pitch about y, then yaw about z)."""
    qx = rotvec_to_quat([roll, 0, 0])
    qy = rotvec_to_quat([0, pitch, 0])
    qz = rotvec_to_quat([0, 0, yaw])
    return normalize_quat(quat_multiply(qz, quat_multiply(qy, qx)))


def yaw_of(q) -> float:
    """Heading of the rotated x axis projected on the ground plane."""
    m = quat_to_matrix(q)
    return float(np.arctan2(m[1, 0], m[0, 0]))


_HALF_TURN = {"rad": np.pi, "deg": 180.0}


def wrap_half_turn(angle, unit: str = "rad"):
    """``angle`` (a number or an array, in radians or, with ``unit="deg"``, degrees) wrapped into
    [-pi/2, pi/2) (or [-90, 90)): for what a half turn leaves as it was (a parallel gripper's closing line, a
    silhouette's axis). A number gives a float, an array an array."""
    if unit not in _HALF_TURN:
        raise ValueError(f"unit must be 'rad' or 'deg', got {unit!r}")
    half = _HALF_TURN[unit]
    wrapped = (np.asarray(angle, dtype=np.float64) + half / 2) % half - half / 2
    return float(wrapped) if wrapped.ndim == 0 else wrapped
