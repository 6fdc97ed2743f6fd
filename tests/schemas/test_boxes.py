"""Canonical box conversions: round trips, and agreement with the VoD and nuScenes devkits."""
from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion
from scipy.spatial.transform import Rotation
from vod.frame.labels import FrameLabels
from vod.visualization.helpers import get_2d_label_corners, get_transformed_3d_label_corners

from kdpipe.schemas import boxes as B

if TYPE_CHECKING:
    from pathlib import Path

VOD_FRAMES = ("00549", "01047", "01201")
VOD_IMAGE_WH = (1936, 1216)


# ----------------------------------------------------------------------------- helpers


def _ang_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute angle difference in [0, pi] (robust to the +-pi wrap)."""
    return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def _random_boxes(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.uniform(-60, 60, (n, 3)), rng.uniform(0.2, 15, (n, 3)), rng.uniform(-np.pi, np.pi, n)
    ])


def _random_rigid(seed: int) -> np.ndarray:
    """A random rigid 4x4 (camera_from_ego-like)."""

    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.uniform(-3, 3, 3)
    return T


def _random_quat(seed: int) -> np.ndarray:

    x, y, z, w = Rotation.random(random_state=seed).as_quat()
    return np.array([w, x, y, z])


def _vod_calib(real: Path, frame: str) -> tuple[np.ndarray, np.ndarray]:
    rows = dict(line.split(":", 1) for line in
                (real / f"vod/lidar/training/calib/{frame}.txt").read_text().splitlines())
    T = np.eye(4)
    T[:3] = np.array(rows["Tr_velo_to_cam"].split(), float).reshape(3, 4)
    return T, np.array(rows["P2"].split(), float).reshape(3, 4)


def _vod_labels(real: Path, frame: str) -> tuple[list[str], np.ndarray]:
    lines = (real / f"vod/lidar/training/label_2/{frame}.txt").read_text().splitlines()
    return lines, np.array([line.split()[1:] for line in lines], float)


# ----------------------------------------------------------------------------- basics

seeds = st.integers(0, 2**31 - 1)


@given(arrays(np.float64, st.integers(0, 20), elements=st.floats(-1e3, 1e3)))
def test_normalize_yaw_range_and_equivalence(yaw: np.ndarray) -> None:
    out = B.normalize_yaw(yaw)
    assert out.shape == yaw.shape
    assert np.all(out >= -np.pi) and np.all(out < np.pi)
    np.testing.assert_allclose(np.sin(out), np.sin(yaw), atol=1e-9)
    np.testing.assert_allclose(np.cos(out), np.cos(yaw), atol=1e-9)


def test_normalize_yaw_edges() -> None:
    np.testing.assert_allclose(B.normalize_yaw([np.pi, -np.pi, 3 * np.pi, 0.0]),
                               [-np.pi, -np.pi, -np.pi, 0.0])


def test_empty_inputs() -> None:
    empty = np.zeros((0, 7))
    T = np.eye(4)
    assert B.box_corners(empty).shape == (0, 8, 3)
    assert B.points_in_boxes(np.zeros((5, 3)), empty).shape == (0,)
    assert B.project_to_image_bbox(empty, T, np.eye(3, 4), (10, 10)).shape == (0, 4)
    assert B.kitti_camera_to_ego(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), T).shape == (0, 7)
    loc, dims, ry = B.ego_to_kitti_camera(empty, T)
    assert loc.shape == (0, 3) and dims.shape == (0, 3) and ry.shape == (0,)
    t, s, q = B.ego_to_nuscenes_global(empty, np.zeros(3), [1, 0, 0, 0])
    assert B.nuscenes_global_to_ego(t, s, q, np.zeros(3), [1, 0, 0, 0]).shape == (0, 7)


def test_bad_box_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        B.box_corners(np.zeros((7, 8)))
    assert B.box_corners(np.zeros(7)).shape == (1, 8, 3)


def test_box_corners_axis_aligned() -> None:
    c = B.box_corners([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, np.pi / 2]])[0]
    # Heading +y: length runs along y, width along x.
    np.testing.assert_allclose(c.min(0), [0.0, 0.0, 2.5], atol=1e-12)
    np.testing.assert_allclose(c.max(0), [2.0, 4.0, 3.5], atol=1e-12)
    np.testing.assert_allclose(c[[0, 1, 4, 5], 1], 4.0, atol=1e-12)  # front corners


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=50, deadline=None)
@given(seeds, st.integers(0, 8))
def test_kitti_round_trip(seed: int, n: int) -> None:
    boxes = _random_boxes(seed, n)
    boxes[:, 6] = B.normalize_yaw(boxes[:, 6])
    T = _random_rigid(seed)
    loc, dims, ry = B.ego_to_kitti_camera(boxes, T)
    assert np.all(ry >= -np.pi) and np.all(ry < np.pi)
    back = B.kitti_camera_to_ego(loc, dims, ry, T)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    assert np.all(_ang_err(back[:, 6], boxes[:, 6]) < 1e-9)
    loc2, dims2, ry2 = B.ego_to_kitti_camera(back, T)
    np.testing.assert_allclose(loc2, loc, atol=1e-9)
    np.testing.assert_allclose(dims2, dims, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(seeds, st.integers(0, 8))
def test_nuscenes_round_trip(seed: int, n: int) -> None:
    boxes = _random_boxes(seed, n)
    ego_t = np.random.default_rng(seed).uniform(-2000, 2000, 3)
    ego_q = _random_quat(seed)
    t, s, q = B.ego_to_nuscenes_global(boxes, ego_t, ego_q)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    back = B.nuscenes_global_to_ego(t, s, q, ego_t, ego_q)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    assert np.all(_ang_err(back[:, 6], boxes[:, 6]) < 1e-9)
    t2, s2, q2 = B.ego_to_nuscenes_global(back, ego_t, ego_q)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    np.testing.assert_allclose(q2, q, atol=1e-9)


def test_nuscenes_matches_devkit_box() -> None:
    rng = np.random.default_rng(7)
    n = 25
    # Global boxes are yaw-only in nuScenes; the ego pose is tilted a little (roll/pitch).
    translation = rng.uniform(-500, 500, (n, 3)) + [400.0, 1100.0, 0.0]
    size_wlh = rng.uniform(0.3, 10, (n, 3))
    rotation = np.array([Quaternion(axis=[0, 0, 1], angle=a).elements
                         for a in rng.uniform(-np.pi, np.pi, n)])
    ego_t = np.array([410.0, 1090.0, 0.0])
    ego_q = Quaternion(axis=[0.02, -0.03, 1.0], angle=2.3).elements
    ours = B.nuscenes_global_to_ego(translation, size_wlh, rotation, ego_t, ego_q)
    tilt_rad = np.arccos(Quaternion(ego_q).rotation_matrix[2, 2])
    for i in range(n):
        box = Box(translation[i], size_wlh[i], Quaternion(rotation[i]))
        box.translate(-ego_t)
        box.rotate(Quaternion(ego_q).inverse)
        np.testing.assert_allclose(ours[i, :3], box.center, atol=1e-9)
        np.testing.assert_allclose(ours[i, [4, 3, 5]], box.wlh, atol=1e-12)
        assert _ang_err(ours[i, 6], quaternion_yaw(box.orientation)) < 1e-9
        # Corners agree up to the ego tilt that yaw-only boxes drop: <= sin(tilt) * half diagonal.
        dev = box.corners().T  # (8, 3)
        mine = B.box_corners(ours[i : i + 1])[0]
        dist = np.linalg.norm(mine[:, None] - dev[None], axis=-1).min(axis=1)
        assert dist.max() <= 2 * np.sin(tilt_rad) * np.linalg.norm(size_wlh[i]) / 2 + 1e-9


# ----------------------------------------------------------------------------- VoD / KITTI devkits


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_corners_match_devkit(real: Path, frame: str) -> None:

    T, _ = _vod_calib(real, frame)
    lines, cols = _vod_labels(real, frame)
    boxes = B.kitti_camera_to_ego(cols[:, 10:13], cols[:, 7:10], cols[:, 13], T)
    dev = get_transformed_3d_label_corners(FrameLabels(lines), np.eye(4), T)
    dev_corners = np.stack([d["corners_3d_transformed"][:, :3] for d in dev])
    np.testing.assert_allclose(B.box_corners(boxes), dev_corners, atol=1e-9)


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_image_bbox_matches_devkit_projection(real: Path, frame: str) -> None:

    T, P = _vod_calib(real, frame)
    lines, cols = _vod_labels(real, frame)
    boxes = B.kitti_camera_to_ego(cols[:, 10:13], cols[:, 7:10], cols[:, 13], T)
    ours = B.project_to_image_bbox(boxes, T, P, VOD_IMAGE_WH, upright="ego")
    assert np.isfinite(ours).all()
    tm = SimpleNamespace(t_lidar_camera=np.linalg.inv(T), t_camera_lidar=T,
                         camera_projection_matrix=P)
    dev = get_2d_label_corners(FrameLabels(lines), tm)  # sorted by range, stable
    order = np.argsort(np.linalg.norm(cols[:, 10:13], axis=1), kind="stable")
    for k, i in enumerate(order):
        uv = np.array(dev[k]["corners"])
        expect = np.clip(np.r_[uv.min(0), uv.max(0)], 0, [*VOD_IMAGE_WH, *VOD_IMAGE_WH])
        np.testing.assert_allclose(ours[i], expect, atol=1e-6)


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_image_bbox_reproduces_label_bbox_columns(real: Path, frame: str) -> None:
    """Default (camera-upright) projection == VoD's exported GT bbox, so the 40 px filter agrees."""
    T, P = _vod_calib(real, frame)
    _, cols = _vod_labels(real, frame)
    boxes = B.kitti_camera_to_ego(cols[:, 10:13], cols[:, 7:10], cols[:, 13], T)
    ours = B.project_to_image_bbox(boxes, T, P, VOD_IMAGE_WH)
    np.testing.assert_allclose(ours, cols[:, 3:7], atol=1.0)  # file values are rounded float32
    # The physical (LiDAR-upright) box projects shorter: the camera is pitched against the LiDAR.
    ego = B.project_to_image_bbox(boxes, T, P, VOD_IMAGE_WH, upright="ego")
    assert np.mean((ego[:, 3] - ego[:, 1]) / (ours[:, 3] - ours[:, 1])) < 0.97


@pytest.mark.parametrize("frame", ["000000", "000001", "000002"])
def test_kitti_corners_match_camera_formula(real: Path, frame: str) -> None:
    rows = {}
    for line in (real / f"kitti/training/calib/{frame}.txt").read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
            rows[key] = np.array(vals.split(), float)
    R0 = np.eye(4)
    R0[:3, :3] = rows["R0_rect"].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3] = rows["Tr_velo_to_cam"].reshape(3, 4)
    T = R0 @ Tr
    cols = np.array([ln.split()[1:] for ln in
                     (real / f"kitti/training/label_2/{frame}.txt").read_text().splitlines()
                     if not ln.startswith("DontCare")], float)
    h, w, length = cols[:, 7], cols[:, 8], cols[:, 9]
    tilt_rad = np.arccos(-T[1, 2])  # angle between camera -y and ego +z
    assert tilt_rad < np.radians(2)
    boxes = B.kitti_camera_to_ego(cols[:, 10:13], cols[:, 7:10], cols[:, 13], T)
    mine_cam = B.transform_points(T, B.box_corners(boxes).reshape(-1, 3)).reshape(-1, 8, 3)
    for i in range(len(cols)):
        # KITTI devkit (compute_box_3d): rot_y about camera y, bottom-centre origin, y down.
        x = length[i] / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
        y = -h[i] * np.array([0, 0, 0, 0, 1, 1, 1, 1])
        z = w[i] / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
        c, s = np.cos(cols[i, 13]), np.sin(cols[i, 13])
        R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        ref = (R @ np.vstack([x, y, z])).T + cols[i, 10:13]
        dist = np.linalg.norm(mine_cam[i][:, None] - ref[None], axis=-1).min(axis=1)
        # KITTI's camera -y is not exactly the LiDAR z (~0.8 deg): bounded by that tilt.
        assert dist.max() <= 2 * np.sin(tilt_rad) * np.linalg.norm([h[i], w[i], length[i]]) + 1e-9
        np.testing.assert_allclose(B.kitti_camera_corners(cols[i:i + 1, 10:13], cols[i:i + 1, 7:10],
                                                          cols[i:i + 1, 13])[0], ref, atol=1e-9)


# ----------------------------------------------------------------------------- projection / counts


def _simple_camera() -> tuple[np.ndarray, np.ndarray]:
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]  # ego x fwd, y left, z up -> cam
    P = np.array([[500.0, 0, 320, 0], [0, 500.0, 240, 0], [0, 0, 1, 0]])
    return T, P


def test_project_front_behind_and_straddling() -> None:
    T, P = _simple_camera()
    boxes = np.array([
        [10.0, 0, 0, 2, 2, 2, 0],   # ahead, centred
        [-10.0, 0, 0, 2, 2, 2, 0],  # fully behind
        [0.0, 0, 0, 4, 2, 2, 0],    # straddles the camera
        [10.0, 100, 0, 2, 2, 2, 0],  # in front but far off to the side
    ])
    out = B.project_to_image_bbox(boxes, T, P, (640, 480))
    # This camera is exactly LiDAR-upright, so both box readings agree.
    np.testing.assert_allclose(B.project_to_image_bbox(boxes, T, P, (640, 480), upright="ego"), out)
    # Nearest face at depth 9 m, half extent 1 m -> 500/9 px either side of the principal point.
    np.testing.assert_allclose(out[0], [320 - 500 / 9, 240 - 500 / 9, 320 + 500 / 9, 240 + 500 / 9])
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[2], [0, 0, 640, 480])  # near-plane clip fills the image
    assert np.isnan(out[3]).all()


def test_points_in_boxes_counts() -> None:
    boxes = np.array([[0.0, 0, 0, 4, 2, 2, np.pi / 4], [10.0, 0, 0, 1, 1, 1, 0]])
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    rot = np.array([[c, -s], [s, c]])
    inside_local = np.array([[1.9, 0.9, 0.9], [-1.9, -0.9, -0.9], [0, 0, 0]])
    outside_local = np.array([[2.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]])
    pts = np.vstack([inside_local, outside_local])
    pts[:, :2] = pts[:, :2] @ rot.T
    pts = np.vstack([pts, [[10.2, 0.3, -0.4]]])
    np.testing.assert_array_equal(B.points_in_boxes(pts, boxes), [3, 1])


def test_points_in_boxes_matches_devkit_and_chunking() -> None:

    rng = np.random.default_rng(3)
    boxes = _random_boxes(3, 40)
    boxes[:, :3] /= 6
    pts = rng.uniform(-12, 12, (30_000, 3))  # 40 x 30k forces several chunks
    ours = B.points_in_boxes(pts, boxes)
    ref = [
        points_in_box(Box(b[:3], b[[4, 3, 5]], Quaternion(axis=[0, 0, 1], angle=b[6])), pts.T).sum()
        for b in boxes
    ]
    np.testing.assert_array_equal(ours, ref)
    assert ours.sum() > 0
