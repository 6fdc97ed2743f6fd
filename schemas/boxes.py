"""Canonical 3D boxes and conversions from/to the KITTI/VoD and nuScenes label conventions.

Canonical convention (every stage after ingest speaks only this):

* ``boxes`` is an ``(N, 7)`` float64 array ``[x, y, z, length, width, height, yaw_rad]``.
* Frame: the dataset's ego frame (VoD: the LiDAR frame; nuScenes: the ego/body frame), x forward,
  y left, z up, metres.
* ``(x, y, z)`` is the geometric box *centre*; ``length`` runs along the heading, ``width``
  across it.
* ``yaw_rad`` is the rotation about +z, 0 = facing +x, normalised to ``[-pi, pi)``. Boxes are
  yaw-only: roll and pitch are not represented.

All functions are vectorised over boxes and accept ``N == 0``.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Corner order (box frame, before rotation): bottom face 0-3, then top face 4-7 above them.
# Same order as the VoD devkit (`vod/visualization/helpers.py::get_3d_label_corners`), so corner
# arrays can be compared index by index.
_CORNER_SIGNS = np.array(
    [[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
     [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]],
    dtype=np.float64,
)  # (8, 3) signs of (l/2, w/2, h/2)

# Points with camera depth below this are "behind" the camera when projecting (metres).
_Z_NEAR_M = 0.01
# The 12 box edges as corner-index pairs (for clipping against the camera's near plane).
_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
     [0, 4], [1, 5], [2, 6], [3, 7]]
)


def normalize_yaw(yaw: npt.ArrayLike) -> FloatArray:
    """Wrap angles (radians) to ``[-pi, pi)``; any shape."""
    yaw_rad = np.asarray(yaw, dtype=np.float64)
    out = np.mod(yaw_rad + np.pi, 2.0 * np.pi) - np.pi
    # np.mod of a tiny negative rounds up to exactly 2*pi; fold that back to keep [-pi, pi).
    folded: FloatArray = np.where(out >= np.pi, out - 2.0 * np.pi, out)
    return folded


def transform_points(T: npt.ArrayLike, xyz: npt.ArrayLike) -> FloatArray:
    """Apply a rigid/affine ``(4, 4)`` transform ``T`` (target_from_source) to points ``(N, 3)``."""
    T = np.asarray(T, dtype=np.float64)
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    moved: FloatArray = xyz @ T[:3, :3].T + T[:3, 3]
    return moved


def _as_boxes(boxes: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape == (7,) or (arr.ndim == 1 and arr.size == 0):
        arr = arr.reshape(-1, 7)
    if arr.ndim != 2 or arr.shape[1] != 7:  # noqa: PLR2004
        raise ValueError(f"boxes must be (N, 7) [x, y, z, l, w, h, yaw], got shape {arr.shape}")
    return arr


def box_corners(boxes: npt.ArrayLike) -> FloatArray:
    """The 8 corners of each box, in the boxes' own frame.

    Args:
        boxes: ``(N, 7)`` canonical boxes.

    Returns:
        ``(N, 8, 3)`` corners; 0-3 are the bottom face (z - h/2), 4-7 the top face; corners 0, 1,
        4, 5 are at the front (+length/2).
    """
    b = _as_boxes(boxes)
    half_lwh = b[:, None, 3:6] / 2.0  # (N, 1, 3)
    local = _CORNER_SIGNS[None] * half_lwh  # (N, 8, 3)
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    corners: FloatArray = np.stack([x, y, local[..., 2]], axis=-1) + b[:, None, :3]
    return corners


# ----------------------------------------------------------------------------- KITTI / VoD


def kitti_camera_to_ego(
    loc_cam: npt.ArrayLike,
    dims_hwl: npt.ArrayLike,
    rot_y: npt.ArrayLike,
    T_cam_from_ego: npt.ArrayLike,
) -> FloatArray:
    """KITTI/VoD label boxes (rectified camera frame) to canonical ego boxes.

    Follows the VoD devkit (`get_transformed_3d_label_corners`) and OpenPCDet
    (`boxes3d_kitti_camera_to_lidar`): the label's bottom centre is mapped into the ego frame and
    the box is then raised by h/2 along *ego* +z; yaw = -(rotation_y + pi/2), a rotation about
    ego z. VoD annotates in the LiDAR frame and exports "rotation about LiDAR -Z", so this is
    exact for VoD; for KITTI (camera y not exactly ego -z) it is the community convention.
    Caveat: VoD's camera is pitched ~6 deg against its LiDAR, and VoD's evaluator and GT 2D boxes
    read the same label camera-upright instead (:func:`kitti_camera_corners`).

    Args:
        loc_cam: ``(N, 3)`` bottom-centre location in the rectified camera frame (y down), metres.
        dims_hwl: ``(N, 3)`` height, width, length, metres.
        rot_y: ``(N,)`` KITTI rotation_y, radians.
        T_cam_from_ego: ``(4, 4)`` rectified-camera-from-ego (for KITTI: R0_rect @ Tr_velo_to_cam).

    Returns:
        ``(N, 7)`` canonical boxes in the ego frame.
    """
    loc_cam = np.asarray(loc_cam, dtype=np.float64).reshape(-1, 3)
    hwl = np.asarray(dims_hwl, dtype=np.float64).reshape(-1, 3)
    rot_y = np.asarray(rot_y, dtype=np.float64).reshape(-1)
    T_ego_from_cam = np.linalg.inv(np.asarray(T_cam_from_ego, dtype=np.float64))
    xyz_ego = transform_points(T_ego_from_cam, loc_cam)
    xyz_ego[:, 2] += hwl[:, 0] / 2.0
    yaw_rad = normalize_yaw(-(rot_y + np.pi / 2.0))
    return np.column_stack([xyz_ego, hwl[:, 2], hwl[:, 1], hwl[:, 0], yaw_rad])


def ego_to_kitti_camera(
    boxes: npt.ArrayLike, T_cam_from_ego: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Exact inverse of :func:`kitti_camera_to_ego`.

    Args:
        boxes: ``(N, 7)`` canonical ego boxes.
        T_cam_from_ego: ``(4, 4)`` rectified-camera-from-ego.

    Returns:
        ``loc_cam (N, 3)`` bottom centre in the camera frame, ``dims_hwl (N, 3)``,
        ``rot_y (N,)`` in ``[-pi, pi)``.
    """
    b = _as_boxes(boxes)
    bottom_ego = b[:, :3].copy()
    bottom_ego[:, 2] -= b[:, 5] / 2.0
    loc_cam = transform_points(np.asarray(T_cam_from_ego, dtype=np.float64), bottom_ego)
    dims_hwl = b[:, [5, 4, 3]].copy()
    rot_y = normalize_yaw(-b[:, 6] - np.pi / 2.0)
    return loc_cam, dims_hwl, rot_y


# ----------------------------------------------------------------------------- nuScenes


def _quat_to_rotmat(q_wxyz: FloatArray) -> FloatArray:
    """``(N, 4)`` quaternions (w, x, y, z; normalised here) -> ``(N, 3, 3)`` rotation matrices."""
    q = q_wxyz / np.linalg.norm(q_wxyz, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def _quat_mul(a: FloatArray, b: FloatArray) -> FloatArray:
    """Hamilton product ``a * b`` of ``(N, 4)`` wxyz quaternions (broadcasts)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def nuscenes_global_to_ego(
    translation: npt.ArrayLike,
    size_wlh: npt.ArrayLike,
    rotation_wxyz: npt.ArrayLike,
    ego_translation: npt.ArrayLike,
    ego_rotation_wxyz: npt.ArrayLike,
) -> FloatArray:
    """nuScenes ``sample_annotation`` boxes (global frame) to canonical ego boxes.

    Equivalent to the devkit's ``box.translate(-ego_t); box.rotate(Quaternion(ego_q).inverse)``
    followed by ``nuscenes.eval.common.utils.quaternion_yaw`` (heading of the box's x-axis
    projected on the ego xy-plane; *not* pyquaternion's ``yaw_pitch_roll[0]``, which uses another
    Euler order and differs once the box is tilted).
    Any residual roll/pitch of the box relative to the ego frame is dropped: canonical boxes are
    yaw-only (nuScenes boxes are annotated yaw-only in the global frame, so this is the ego
    pose's own small roll/pitch).

    Args:
        translation: ``(N, 3)`` box centres, global frame, metres.
        size_wlh: ``(N, 3)`` width, length, height, metres.
        rotation_wxyz: ``(N, 4)`` box orientation quaternions (w, x, y, z), global frame.
        ego_translation: ``(3,)`` ego position in the global frame (``ego_pose.translation``).
        ego_rotation_wxyz: ``(4,)`` ego orientation (``ego_pose.rotation``).

    Returns:
        ``(N, 7)`` canonical boxes in the ego frame.
    """
    t_glob = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    wlh = np.asarray(size_wlh, dtype=np.float64).reshape(-1, 3)
    q_glob = np.asarray(rotation_wxyz, dtype=np.float64).reshape(-1, 4)
    ego_t = np.asarray(ego_translation, dtype=np.float64).reshape(3)
    ego_q = np.asarray(ego_rotation_wxyz, dtype=np.float64).reshape(1, 4)
    R_glob_from_ego = _quat_to_rotmat(ego_q)[0]
    xyz_ego = (t_glob - ego_t) @ R_glob_from_ego  # row-vector form of R^T (t - t_ego)
    ego_q_inv = ego_q * np.array([1.0, -1.0, -1.0, -1.0]) / np.sum(ego_q**2)
    R_box_ego = _quat_to_rotmat(_quat_mul(ego_q_inv, q_glob))  # (N, 3, 3)
    yaw_rad = normalize_yaw(np.arctan2(R_box_ego[:, 1, 0], R_box_ego[:, 0, 0]))
    return np.column_stack([xyz_ego, wlh[:, 1], wlh[:, 0], wlh[:, 2], yaw_rad])


def ego_to_nuscenes_global(
    boxes: npt.ArrayLike, ego_translation: npt.ArrayLike, ego_rotation_wxyz: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Canonical ego boxes to the nuScenes global convention (inverse of the above).

    Args:
        boxes: ``(N, 7)`` canonical ego boxes.
        ego_translation: ``(3,)`` ego position in the global frame.
        ego_rotation_wxyz: ``(4,)`` ego orientation quaternion (w, x, y, z).

    Returns:
        ``translation (N, 3)`` global centres, ``size_wlh (N, 3)``, ``rotation_wxyz (N, 4)``
        unit quaternions with ``w >= 0``.
    """
    b = _as_boxes(boxes)
    ego_t = np.asarray(ego_translation, dtype=np.float64).reshape(3)
    ego_q = np.asarray(ego_rotation_wxyz, dtype=np.float64).reshape(1, 4)
    ego_q = ego_q / np.linalg.norm(ego_q)
    translation = b[:, :3] @ _quat_to_rotmat(ego_q)[0].T + ego_t
    half = b[:, 6] / 2.0
    q_yaw = np.column_stack([np.cos(half), np.zeros_like(half), np.zeros_like(half), np.sin(half)])
    q = _quat_mul(ego_q, q_yaw)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, :1] < 0, -q, q)  # one canonical sign per rotation
    size_wlh = b[:, [4, 3, 5]].copy()
    return translation, size_wlh, q


# ----------------------------------------------------------------------------- geometry


def kitti_camera_corners(
    loc_cam: npt.ArrayLike, dims_hwl: npt.ArrayLike, rot_y: npt.ArrayLike
) -> FloatArray:
    """Corners of KITTI label boxes read literally in the camera frame (KITTI ``compute_box_3d``).

    The box stands upright along camera -y and turns about camera +y. This is the geometry the
    KITTI/VoD evaluators (camera-frame IoU) and VoD's exported 2D ``bbox`` columns use. In VoD
    the camera is pitched ~6 deg against the LiDAR, so it differs from :func:`box_corners` of the
    converted ego box (the physical, LiDAR-upright box) by that tilt.

    Args:
        loc_cam: ``(N, 3)`` bottom centre, camera frame.
        dims_hwl: ``(N, 3)`` height, width, length.
        rot_y: ``(N,)`` radians.

    Returns:
        ``(N, 8, 3)`` camera-frame corners in the :func:`box_corners` order.
    """
    loc = np.asarray(loc_cam, dtype=np.float64).reshape(-1, 3)
    hwl = np.asarray(dims_hwl, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(rot_y, dtype=np.float64).reshape(-1)
    x = _CORNER_SIGNS[None, :, 0] * hwl[:, 2:3] / 2.0  # along the length
    z = _CORNER_SIGNS[None, :, 1] * hwl[:, 1:2] / 2.0  # signs chosen so the order matches ego
    y = -(_CORNER_SIGNS[None, :, 2] + 1.0) / 2.0 * hwl[:, 0:1]  # bottom at 0, top at -h
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    corners: FloatArray = np.stack([c * x + s * z, y, -s * x + c * z], axis=-1) + loc[:, None, :]
    return corners


def project_to_image_bbox(
    boxes: npt.ArrayLike,
    T_cam_from_ego: npt.ArrayLike,
    P: npt.ArrayLike,
    image_wh: tuple[int, int],
    *,
    upright: Literal["camera", "ego"] = "camera",
) -> FloatArray:
    """2D image boxes of the projected 3D boxes (KITTI ``bbox`` columns).

    The 12 box edges are clipped against the camera near plane (depth 1 cm) before projecting, so
    a box that straddles the camera still gets the correct, image-clipped extent instead of the
    mirrored garbage that projecting points with negative depth gives.

    Args:
        boxes: ``(N, 7)`` canonical ego boxes.
        T_cam_from_ego: ``(4, 4)`` rectified-camera-from-ego.
        P: ``(3, 4)`` camera projection matrix (rectified camera -> pixels), e.g. KITTI ``P2``.
        image_wh: image ``(width, height)`` in pixels.
        upright: ``"camera"`` (default) projects :func:`kitti_camera_corners` of the exported
            label, which reproduces VoD's ground-truth ``bbox`` columns to < 1 px, so the
            evaluator's 40 px height filter treats predictions like GT. ``"ego"`` projects the
            physical :func:`box_corners` (as the VoD devkit's 2D visualisation does); in VoD
            that is up to ~25% shorter.

    Returns:
        ``(N, 4)`` ``left, top, right, bottom`` pixels clipped to ``[0, w] x [0, h]``. Rows are
        NaN when no part of the box is in front of the camera or its projection misses the image.
    """
    b = _as_boxes(boxes)
    n = b.shape[0]
    out = np.full((n, 4), np.nan)
    if n == 0:
        return out
    T = np.asarray(T_cam_from_ego, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    if upright == "camera":
        corners_cam = kitti_camera_corners(*ego_to_kitti_camera(b, T))
    else:
        corners_cam = transform_points(T, box_corners(b).reshape(-1, 3)).reshape(n, 8, 3)
    # Edge/near-plane intersections: one per edge (invalid ones are masked below).
    p0, p1 = corners_cam[:, _EDGES[:, 0]], corners_cam[:, _EDGES[:, 1]]  # (N, 12, 3)
    z0, z1 = p0[..., 2], p1[..., 2]
    crosses = (z0 - _Z_NEAR_M) * (z1 - _Z_NEAR_M) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, (_Z_NEAR_M - z0) / (z1 - z0), 0.0)
    pts = np.concatenate([corners_cam, p0 + t[..., None] * (p1 - p0)], axis=1)  # (N, 20, 3)
    valid = np.concatenate([corners_cam[..., 2] >= _Z_NEAR_M, crosses], axis=1)  # (N, 20)
    uvw = pts @ P[:, :3].T + P[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / uvw[..., 2:3]
    uv_min = np.where(valid[..., None], uv, np.inf).min(axis=1)  # (N, 2)
    uv_max = np.where(valid[..., None], uv, -np.inf).max(axis=1)
    wh = np.array([float(image_wh[0]), float(image_wh[1])])
    visible = valid.any(axis=1) & np.all(uv_max > 0, axis=1) & np.all(uv_min < wh, axis=1)
    clipped = np.column_stack([np.clip(uv_min, 0.0, wh), np.clip(uv_max, 0.0, wh)])
    out[visible] = clipped[visible]
    return out


def points_in_boxes(xyz: npt.ArrayLike, boxes: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Number of points inside each box (faces inclusive, like the nuScenes devkit's points_in_box).

    Args:
        xyz: ``(M, 3)`` points in the boxes' frame, metres.
        boxes: ``(N, 7)`` canonical boxes.

    Returns:
        ``(N,)`` int64 counts (for ``num_lidar_pts`` / ``num_radar_pts``).
    """
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    b = _as_boxes(boxes)
    counts = np.zeros(b.shape[0], dtype=np.int64)
    if b.shape[0] == 0 or pts.shape[0] == 0:
        return counts
    # Prefilter on a sorted x axis: each box only looks at points within its bounding radius in
    # x (a binary search), so the cost is ~ points near boxes, not M x N (a 60k-point LiDAR scan
    # with 15 boxes: 20x faster than the dense test, same counts).
    order = np.argsort(pts[:, 0], kind="stable")
    xs = pts[order, 0]
    radius = 0.5 * np.sqrt(b[:, 3] ** 2 + b[:, 4] ** 2)
    lo = np.searchsorted(xs, b[:, 0] - radius, side="left")
    hi = np.searchsorted(xs, b[:, 0] + radius, side="right")
    for i in range(b.shape[0]):
        cand = pts[order[lo[i]:hi[i]]]  # (K, 3)
        d = cand - b[i, :3]
        c, s_ = np.cos(b[i, 6]), np.sin(b[i, 6])
        lx = c * d[:, 0] + s_ * d[:, 1]  # rotate into the box frame by -yaw
        ly = -s_ * d[:, 0] + c * d[:, 1]
        counts[i] = int(np.count_nonzero((np.abs(lx) <= b[i, 3] / 2.0)
                                         & (np.abs(ly) <= b[i, 4] / 2.0)
                                         & (np.abs(d[:, 2]) <= b[i, 5] / 2.0)))
    return counts
