"""Vectorised ray casting against oriented boxes (slab test) and the ground plane z = 0.

All geometry here is in the road ("world") frame: z up, ground at z = 0, boxes yaw-only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kdpipe.datasets.synth.geometry import FloatArray

# Direction components below this are nudged so 1/d never produces inf * 0 = NaN.
_EPS_DIR = 1e-12


def ray_box_hits(origin: FloatArray, dirs: FloatArray,
                 boxes: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Entry distance of every ray into every box.

    Args:
        origin: ``(3,)`` common ray origin, world frame, metres.
        dirs: ``(R, 3)`` unit ray directions, world frame.
        boxes: ``(N, 7)`` canonical boxes, world frame.

    Returns:
        ``t (N, R)`` entry distance in metres (``inf`` on a miss or when the origin is inside the
        box), and ``cos_incidence (N, R)``: |cos| of the angle between ray and the face it enters.
    """
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]  # (N, 1)
    rel = origin[None, :] - boxes[:, :3]  # (N, 3)
    o_local = np.stack([c[:, 0] * rel[:, 0] + s[:, 0] * rel[:, 1],
                        -s[:, 0] * rel[:, 0] + c[:, 0] * rel[:, 1], rel[:, 2]], axis=-1)  # (N, 3)
    d_local = np.stack([c * dirs[None, :, 0] + s * dirs[None, :, 1],
                        -s * dirs[None, :, 0] + c * dirs[None, :, 1],
                        np.broadcast_to(dirs[None, :, 2], c.shape[:1] + dirs.shape[:1])],
                       axis=-1)  # (N, R, 3)
    d_safe = np.where(np.abs(d_local) < _EPS_DIR, _EPS_DIR, d_local)
    half = boxes[:, None, 3:6] / 2.0  # (N, 1, 3)
    t1 = (-half - o_local[:, None, :]) / d_safe
    t2 = (half - o_local[:, None, :]) / d_safe
    t_min = np.minimum(t1, t2)  # (N, R, 3)
    t_near = t_min.max(axis=-1)
    t_far = np.maximum(t1, t2).min(axis=-1)
    hit = (t_near <= t_far) & (t_near > 1e-6)
    axis = t_min.argmax(axis=-1)  # the slab entered last is the face that is hit
    cos_inc = np.abs(np.take_along_axis(d_local, axis[..., None], axis=-1)[..., 0])
    return np.where(hit, t_near, np.inf), cos_inc


def ground_hits(origin: FloatArray, dirs: FloatArray) -> FloatArray:
    """``(R,)`` distance to the ground plane z = 0 along each ray (``inf``: never gets there)."""
    dz = dirs[:, 2]
    with np.errstate(divide="ignore"):
        t = np.where(dz < -_EPS_DIR, -origin[2] / np.where(dz < 0, dz, -1.0), np.inf)
    return t


def nearest_hits(origin: FloatArray, dirs: FloatArray,
                 boxes: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Nearest surface along each ray (boxes and ground), for a small number of rays.

    Returns:
        ``t (R,)`` metres (``inf`` = no hit) and ``hit_id (R,)``: box index, -1 ground, -2 none.
    """
    t = ground_hits(origin, dirs)
    hit_id = np.where(np.isfinite(t), -1, -2)
    if boxes.shape[0]:
        t_box, _ = ray_box_hits(origin, dirs, boxes)  # (N, R)
        j = t_box.argmin(axis=0)
        tb = t_box[j, np.arange(dirs.shape[0])]
        closer = tb < t
        t = np.where(closer, tb, t)
        hit_id = np.where(closer, j, hit_id)
    return t, hit_id


def boxes_in_frame(boxes_w: FloatArray, T_frame_world: FloatArray) -> FloatArray:
    """Express ``(N, 7)`` world boxes in a frame that differs from the world by yaw and shift."""
    R = T_frame_world[:3, :3]
    centres = boxes_w[:, :3] @ R.T + T_frame_world[:3, 3]
    yaw = boxes_w[:, 6] + np.arctan2(R[1, 0], R[0, 0])
    return np.column_stack([centres, boxes_w[:, 3:6], yaw])
