"""kdpipe.datasets.formats: raw-format parsers (KITTI, VoD, nuScenes PCD/bin) used by ingest.

Every parser raises :class:`FormatError` (``path``, ``check``, ``reason``) for bad content, never a
bare ``IndexError``/``struct.error``, so ingest can turn each bad file into one rejects-table row.
"""
from __future__ import annotations

from kdpipe.datasets.formats.bins import (
    read_float32_bin,
    read_text,
    safe_join,
    write_float32_bin,
)
from kdpipe.datasets.formats.errors import CHECKS, FormatError
from kdpipe.datasets.formats.kitti import (
    KittiLabels,
    read_kitti_calib,
    read_kitti_labels,
    write_kitti_calib,
    write_kitti_labels,
)
from kdpipe.datasets.formats.pcd import (
    RADAR_PCD_DTYPE,
    read_nuscenes_lidar,
    read_radar_pcd,
    write_radar_pcd,
)
from kdpipe.datasets.formats.vod import (
    VodLayout,
    read_vod_lidar,
    read_vod_pose,
    read_vod_radar,
    write_vod_pose,
)

__all__ = [
    "CHECKS",
    "RADAR_PCD_DTYPE",
    "FormatError",
    "KittiLabels",
    "VodLayout",
    "read_float32_bin",
    "read_kitti_calib",
    "read_kitti_labels",
    "read_nuscenes_lidar",
    "read_radar_pcd",
    "read_text",
    "read_vod_lidar",
    "read_vod_pose",
    "read_vod_radar",
    "safe_join",
    "write_float32_bin",
    "write_kitti_calib",
    "write_kitti_labels",
    "write_radar_pcd",
    "write_vod_pose",
]
