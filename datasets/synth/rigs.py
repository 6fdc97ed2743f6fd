"""Sensor rigs: where each synthetic sensor sits on the ego vehicle, and its intrinsics.

VoD numbers are copied from the real View-of-Delft calibration files (example_set frame 00549,
see fixtures/real/vod): camera intrinsics, LiDAR->camera and radar->camera. nuScenes numbers
follow the published nuScenes rig (LIDAR_TOP yawed -90 deg, five ARS408 radars, six cameras),
rounded; rotations are kept yaw-only so the ground stays level in every sensor frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdpipe.datasets.synth.geometry import (
    R_BODY_FROM_CAMERA,
    FloatArray,
    invert,
    pose,
    rot_z,
    yaw_pose,
)

# ---------------------------------------------------------------------------------- VoD
VOD_IMAGE_WH = (1936, 1216)
VOD_K = np.array([[1495.468642, 0.0, 961.272442], [0.0, 1495.468642, 624.89592], [0, 0, 1.0]])
_VOD_TR_VELO_TO_CAM = np.array([
    [-0.0079802, -0.9998541, 0.0151049, 0.151], [0.118497, -0.0159445, -0.9928264, -0.461],
    [0.9929224, -0.0061331, 0.1186069, -0.915]])
_VOD_TR_RADAR_TO_CAM = np.array([
    [-0.013857, -0.9997468, 0.01772762, 0.05283124],
    [0.10934269, -0.01913807, -0.99381983, 0.98100483],
    [0.99390751, -0.01183297, 0.1095802, 1.44445002]])
# The LiDAR frame is the VoD ego frame; it sits this high above the ground (real scans put the
# road at z ~ -1.55 m, and the camera is 1.30 m above ground in the pose files).
VOD_LIDAR_HEIGHT_M = 1.62


def _orthonormal(m34: FloatArray) -> FloatArray:
    """``(4, 4)`` rigid transform from a 3x4 with a slightly non-orthonormal rotation (SVD fix)."""
    u, _, vt = np.linalg.svd(m34[:, :3])
    return pose(u @ vt, m34[:, 3])


@dataclass(frozen=True)
class VodRig:
    """VoD sensor extrinsics (all ``(4, 4)``) and camera model for a given image scale."""

    T_body_lidar: FloatArray
    T_cam_lidar: FloatArray
    T_cam_radar: FloatArray
    K: FloatArray
    image_wh: tuple[int, int]

    @property
    def T_lidar_radar(self) -> FloatArray:
        return invert(self.T_cam_lidar) @ self.T_cam_radar

    @property
    def P(self) -> FloatArray:
        """``(3, 4)`` KITTI projection matrix (P0..P3 are all this in VoD)."""
        return np.column_stack([self.K, np.zeros(3)])


def vod_rig(image_scale: float) -> VodRig:
    """The VoD rig with images scaled by ``image_scale`` (intrinsics scaled to match)."""
    wh = (round(VOD_IMAGE_WH[0] * image_scale), round(VOD_IMAGE_WH[1] * image_scale))
    K = VOD_K.copy()
    K[0, :] *= wh[0] / VOD_IMAGE_WH[0]
    K[1, :] *= wh[1] / VOD_IMAGE_WH[1]
    return VodRig(yaw_pose(0.0, 0.0, VOD_LIDAR_HEIGHT_M, 0.0), _orthonormal(_VOD_TR_VELO_TO_CAM),
                  _orthonormal(_VOD_TR_RADAR_TO_CAM), K, wh)


# ---------------------------------------------------------------------------------- nuScenes
NUS_IMAGE_WH = (1600, 900)
NUS_LIDAR = "LIDAR_TOP"
NUS_LIDAR_T_BODY = yaw_pose(0.943713, 0.0, 1.84023, -np.pi / 2)
# channel: (x, y, z, yaw_deg)
NUS_RADARS: dict[str, tuple[float, float, float, float]] = {
    "RADAR_FRONT": (3.412, 0.0, 0.5, 0.0),
    "RADAR_FRONT_LEFT": (2.422, 0.8, 0.78, 88.0),
    "RADAR_FRONT_RIGHT": (2.422, -0.8, 0.77, -89.0),
    "RADAR_BACK_LEFT": (-0.562, 0.628, 0.53, 176.0),
    "RADAR_BACK_RIGHT": (-0.562, -0.618, 0.53, -178.0),
}
# channel: (x, y, z, yaw_deg, focal_px, cx, cy) at 1600 x 900
NUS_CAMERAS: dict[str, tuple[float, ...]] = {
    "CAM_FRONT": (1.70079, 0.01594, 1.51095, 0.0, 1266.42, 816.27, 491.51),
    "CAM_FRONT_RIGHT": (1.55085, -0.4931, 1.49575, -55.0, 1260.85, 807.97, 495.33),
    "CAM_BACK_RIGHT": (1.0149, -0.48057, 1.56239, -110.0, 1259.51, 807.25, 501.19),
    "CAM_BACK": (0.02832, 0.00345, 1.57910, 180.0, 809.22, 829.22, 481.77),
    "CAM_BACK_LEFT": (1.03569, 0.48480, 1.59097, 110.0, 1256.75, 817.79, 451.95),
    "CAM_FRONT_LEFT": (1.52387, 0.49463, 1.50932, 55.0, 1272.60, 826.62, 479.75),
}


def nus_radar_pose(channel: str) -> FloatArray:
    """``(4, 4)`` body-from-radar of one nuScenes radar channel."""
    x, y, z, yaw_deg = NUS_RADARS[channel]
    return yaw_pose(x, y, z, np.deg2rad(yaw_deg))


def nus_camera(channel: str, image_scale: float) -> tuple[FloatArray, FloatArray, tuple[int, int]]:
    """Body-from-camera ``(4, 4)`` (optical axes), intrinsics ``(3, 3)`` and image size."""
    x, y, z, yaw_deg, f, cx, cy = NUS_CAMERAS[channel]
    wh = (round(NUS_IMAGE_WH[0] * image_scale), round(NUS_IMAGE_WH[1] * image_scale))
    sx, sy = wh[0] / NUS_IMAGE_WH[0], wh[1] / NUS_IMAGE_WH[1]
    K = np.array([[f * sx, 0.0, cx * sx], [0.0, f * sy, cy * sy], [0.0, 0.0, 1.0]])
    return pose(rot_z(np.deg2rad(yaw_deg)) @ R_BODY_FROM_CAMERA, [x, y, z]), K, wh
