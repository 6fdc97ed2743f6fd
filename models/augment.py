"""SCKD's training augmentations: random flip along the x-axis and global scaling [0.95, 1.05].

Inputs are the raw per-frame arrays: points (N, C) with xyz (ego metres) in columns 0..2 (LiDAR
[x, y, z, intensity], radar [x, y, z, rcs, v_r_comp, time]) and boxes (n, 7) [x, y, z, l, w, h,
yaw] or (n, 9) with [vx, vy]. numpy arrays and torch tensors both work; inputs are never
modified in place.

Why the flip is y -> -y: "flip along the x-axis" mirrors the scene across the x-axis (the line
y = 0). The VoD range is forward-only, x in [0, 51.2] m, but symmetric in y, [-25.6, 25.6] m,
so y -> -y keeps every in-range point in range; x -> -x would move the whole scene behind the
sensor, out of range. Under the mirror a heading yaw becomes -yaw and vy becomes -vy. Radar
radial velocity (v_r_comp) is a projection on the line of sight; the mirror maps both the line
of sight and the motion, so the scalar is unchanged, as are RCS, intensity and time.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

A = TypeVar("A", np.ndarray, torch.Tensor)
_VEL_COLS = slice(7, 9)  # vx, vy in (n, 9) boxes


def _copy(x: A) -> A:
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)


def _wrap_yaw(yaw: A) -> A:
    """Wrap to the canonical [-pi, pi)."""
    return (yaw + np.pi) % (2 * np.pi) - np.pi


def flip_y(points_list: Sequence[A], boxes: A) -> tuple[list[A], A]:
    """Mirror across the x-axis: y -> -y for points and boxes, yaw -> -yaw, vy -> -vy.

    Args:
        points_list: per-sensor point arrays (N, C), xyz in columns 0..2.
        boxes: (n, 7) or (n, 9) boxes.

    Returns:
        New (points_list, boxes).
    """
    out_points = []
    for pts in points_list:
        p = _copy(pts)
        p[:, 1] = -p[:, 1]
        out_points.append(p)
    b = _copy(boxes)
    b[:, 1] = -b[:, 1]
    b[:, 6] = _wrap_yaw(-b[:, 6])
    if b.shape[1] > 8:  # noqa: PLR2004
        b[:, 8] = -b[:, 8]
    return out_points, b


def global_scale(points: A | Sequence[A], boxes: A, s: float) -> tuple[A | list[A], A]:
    """Scale the scene about the ego origin by ``s``: xyz, box centres, sizes and velocities.

    Point features other than xyz (radar v_r_comp included) are left as they are, as in
    OpenPCDet's ``global_scaling``: a +-5 % speed change is inside radar velocity noise.

    Args:
        points: one (N, C) array or a sequence of them (same structure comes back).
        boxes: (n, 7) or (n, 9).
        s: scale factor (SCKD samples it from [0.95, 1.05]).
    """
    if s <= 0:
        raise ValueError(f"scale must be > 0, got {s}")
    single = isinstance(points, np.ndarray | torch.Tensor)
    scaled = []
    for pts in [points] if single else points:
        p = _copy(pts)
        p[:, :3] = p[:, :3] * s
        scaled.append(p)
    b = _copy(boxes)
    b[:, :6] = b[:, :6] * s
    b[:, _VEL_COLS] = b[:, _VEL_COLS] * s
    return (scaled[0] if single else scaled), b


def random_flip_scale(
    points_list: Sequence[A],
    boxes: A,
    rng: np.random.Generator,
    flip_prob: float = 0.5,
    scale_range: tuple[float, float] = (0.95, 1.05),
) -> tuple[list[A], A]:
    """SCKD's recipe in one call: flip_y with ``flip_prob``, then global_scale ~ U(scale_range)."""
    pts, b = list(points_list), boxes
    if rng.random() < flip_prob:
        pts, b = flip_y(pts, b)
    scaled, b = global_scale(pts, b, float(rng.uniform(*scale_range)))
    return list(scaled), b
