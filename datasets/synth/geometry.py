"""Small rigid-transform helpers shared by the synthetic sensors and writers.

Transforms are ``(4, 4)`` float64 matrices named ``T_<target>_from_<source>`` (or
``T_world_<sensor>`` for a sensor pose); quaternions are (w, x, y, z) like nuScenes.
"""
from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Optical camera axes (x right, y down, z forward) expressed in a body frame (x fwd, y left, z up).
R_BODY_FROM_CAMERA: FloatArray = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_z(yaw_rad: float) -> FloatArray:
    """``(3, 3)`` rotation about +z by ``yaw_rad``."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose(rotation: npt.ArrayLike, translation: npt.ArrayLike) -> FloatArray:
    """``(4, 4)`` transform from a ``(3, 3)`` rotation and a ``(3,)`` translation."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def yaw_pose(x: float, y: float, z: float, yaw_rad: float) -> FloatArray:
    """``(4, 4)`` pose of a frame at ``(x, y, z)`` rotated by ``yaw_rad`` about +z."""
    return pose(rot_z(yaw_rad), [x, y, z])


def invert(T: FloatArray) -> FloatArray:
    """Inverse of a rigid ``(4, 4)`` transform (no general matrix inverse, so it stays exact)."""
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def matrix_to_quat_wxyz(R: npt.ArrayLike) -> FloatArray:
    """``(3, 3)`` rotation matrix -> unit quaternion ``(4,)`` (w, x, y, z) with ``w >= 0``."""
    m = np.asarray(R, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    quat = np.asarray(q) / np.linalg.norm(q)
    return -quat if quat[0] < 0 else quat


def quat_wxyz_to_matrix(q: npt.ArrayLike) -> FloatArray:
    """Unit quaternion (w, x, y, z) -> ``(3, 3)`` rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def frame_rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent, reproducible RNG for one (seed, dataset, scene, frame, stream) tuple.

    SeedSequence mixes the key list, so frames can be generated in any order or in parallel and
    still produce identical bytes.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, keys)]))


def token(*parts: object) -> str:
    """Deterministic 32-hex token (nuScenes style) from any printable key parts."""
    return hashlib.md5("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()
