"""Camera images by painter's-algorithm rasterisation of the scene through the calibration.

Sky, ground, road with lane markings, then every sensor-facing box face sorted far to near, each
shaded by a fixed sun direction. Faces are clipped against the near plane before projection, so
geometry next to or behind the camera never wraps around. The intrinsics used to draw are exactly
those written to the calibration files, which is what makes the labels' 2D boxes line up.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from kdpipe.datasets.synth.world import (
    BICYCLE_RACK,
    CAR,
    CYCLIST,
    PEDESTRIAN,
    POLE,
    WALL,
    Scene,
    WorldState,
)
from kdpipe.schemas.boxes import box_corners

if TYPE_CHECKING:
    from pathlib import Path

    from kdpipe.datasets.synth.geometry import FloatArray

_NEAR_M = 0.3
_SUN_W = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
_SKY, _GROUND, _ROAD, _MARK = (150, 185, 225), (128, 132, 118), (72, 72, 78), (225, 225, 215)
_PALETTE = {
    CAR: [(180, 30, 30), (30, 60, 150), (200, 200, 205), (25, 25, 30), (90, 110, 95)],
    PEDESTRIAN: [(200, 120, 80), (60, 60, 120), (150, 60, 60)],
    CYCLIST: [(40, 150, 200), (220, 170, 40)],
    BICYCLE_RACK: [(110, 110, 115)],
    WALL: [(160, 90, 70), (200, 185, 160), (140, 140, 145), (120, 70, 60)],
    POLE: [(85, 85, 90)],
}
# Faces as corner indices of kdpipe.schemas.boxes.box_corners, with outward normals in box frame.
_FACES = np.array([[0, 1, 5, 4], [2, 3, 7, 6], [3, 0, 4, 7], [1, 2, 6, 5], [4, 5, 6, 7],
                   [0, 3, 2, 1]])
_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])


def _clip_near(poly: FloatArray) -> FloatArray:
    """Clip a camera-frame polygon ``(k, 3)`` to depth >= near (Sutherland-Hodgman, one plane)."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        if a[2] >= _NEAR_M:
            out.append(a)
        if (a[2] >= _NEAR_M) != (b[2] >= _NEAR_M):
            out.append(a + (_NEAR_M - a[2]) / (b[2] - a[2]) * (b - a))
    return np.asarray(out).reshape(-1, 3)


class _Canvas:
    """A PIL image plus the camera model; draws world-frame polygons."""

    def __init__(self, T_cam_world: FloatArray, K: FloatArray, wh: tuple[int, int]) -> None:
        self.T, self.K, self.wh = T_cam_world, K, wh
        self.img = Image.new("RGB", wh, _SKY)
        self.draw = ImageDraw.Draw(self.img)

    def to_cam(self, xyz_w: FloatArray) -> FloatArray:
        return xyz_w @ self.T[:3, :3].T + self.T[:3, 3]

    def polygon(self, poly_cam: FloatArray, color: tuple[int, int, int]) -> None:
        if (poly_cam[:, 2] < _NEAR_M).any():
            poly_cam = _clip_near(poly_cam)
            if len(poly_cam) < 3:
                return
        uvw = poly_cam @ self.K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
        # Off-screen polygons are cheap to skip and keep PIL away from huge coordinates.
        if (uv[:, 0].max() < 0 or uv[:, 1].max() < 0 or uv[:, 0].min() > self.wh[0]
                or uv[:, 1].min() > self.wh[1]):
            return
        self.draw.polygon([tuple(p) for p in np.clip(uv, -1e5, 1e5)], fill=color)


def _road_quads(scene: Scene, s_cam: float, strip_d: tuple[float, float], step_m: float,
                dash: tuple[float, float] | None = None) -> FloatArray:
    """``(Q, 4, 3)`` world-frame quads tiling the lateral strip ``strip_d`` around the camera."""
    d_lo, d_hi = strip_d
    s = np.arange(np.floor((s_cam - 120) / step_m) * step_m, s_cam + 150, step_m)
    if dash is not None:  # lane-marking dashes: dash[0] long, every dash[1] metres
        s = s[np.mod(s, dash[1]) < 1e-6]
        s_end = s + dash[0]
    else:
        s_end = s + step_m
    ss = np.stack([s, s_end, s_end, s], axis=1)
    dd = np.broadcast_to(np.array([d_lo, d_lo, d_hi, d_hi]), ss.shape)
    x, y, _ = scene._road_xy(ss.ravel(), dd.ravel().copy())
    return np.stack([x, y, np.full(x.shape, 0.01)], axis=-1).reshape(-1, 4, 3)


def render(scene: Scene, state: WorldState, T_cam_world: FloatArray, K: FloatArray,
           wh: tuple[int, int]) -> Image.Image:
    """Render one RGB image.

    Args:
        scene: the scene (road geometry).
        state: actors at the exposure time, world frame.
        T_cam_world: ``(4, 4)`` camera-from-world (optical frame: x right, y down, z forward).
        K: ``(3, 3)`` intrinsics of the *written* calibration (already scaled).
        wh: image width and height, pixels.
    """
    cv = _Canvas(T_cam_world, K, wh)
    cam_w = -T_cam_world[:3, :3].T @ T_cam_world[:3, 3]
    ground = cam_w[:2] + np.array([[-400, -400], [400, -400], [400, 400], [-400, 400.0]])
    cv.polygon(cv.to_cam(np.column_stack([ground, np.zeros(4)])), _GROUND)
    s_cam = float(scene.road_sd(np.array([cam_w[0]]), np.array([cam_w[1]]))[0][0])
    for quad in _road_quads(scene, s_cam, (-7.0, 7.0), 10.0):
        cv.polygon(cv.to_cam(quad), _ROAD)
    for d in (-3.5, 0.0, 3.5):
        for quad in _road_quads(scene, s_cam, (d - 0.08, d + 0.08), 1.0, dash=(3.0, 9.0)):
            cv.polygon(cv.to_cam(quad), _MARK)

    rel = state.boxes[:, :3] - cam_w
    near = np.flatnonzero(np.hypot(rel[:, 0], rel[:, 1]) < 150.0)
    corners_c = cv.to_cam(box_corners(state.boxes[near]).reshape(-1, 3)).reshape(-1, 8, 3)
    in_front = (corners_c[:, :, 2] > _NEAR_M).any(axis=1)
    faces = []  # (depth, polygon_cam, colour)
    for i in np.flatnonzero(in_front):
        b = near[i]
        c, s = np.cos(state.boxes[b, 6]), np.sin(state.boxes[b, 6])
        normals_w = _NORMALS @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]).T  # (6, 3)
        to_cam = cam_w - state.boxes[b, :3]
        palette = _PALETTE[int(state.cls[b])]
        base = np.array(palette[int(state.track_id[b]) % len(palette)], dtype=np.float64)
        for f in range(6):
            poly = corners_c[i, _FACES[f]]
            half_extent = state.boxes[b, 3:6] @ np.abs(_NORMALS[f]) / 2.0
            centre_w = state.boxes[b, :3] + normals_w[f] * half_extent
            if normals_w[f] @ (cam_w - centre_w) <= 0:  # back face
                continue
            shade = 0.5 + 0.5 * max(0.0, float(normals_w[f] @ _SUN_W))
            colour = tuple(int(v) for v in np.clip(base * shade, 0, 255))
            faces.append((float(np.linalg.norm(to_cam)), f, poly, colour))
    for _, _, poly, colour in sorted(faces, key=lambda t: (-t[0], t[1])):
        cv.polygon(poly, colour)
    return cv.img


def save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    """Write a baseline JPEG (no EXIF, no timestamps: identical bytes for identical pixels)."""
    img.save(path, format="JPEG", quality=quality, optimize=False, progressive=False)
