"""DetectorConfig: one frozen, validated description of a BEV CenterPoint-style detector.

Two size presets share every code path:

* ``size="small"`` (default) is CPU-cheap so the whole pipeline trains on a CPU in minutes:
  0.4 m pillars (SCKD's 128 x 128 BEV on the VoD range), 32-channel encoders, the SECOND
  two-level layout with one extra conv per level and 32/64 filters, head at the full 128 x 128
  (0.4 m cells, so pedestrians keep their own centre cell). Measured on 2 CPU threads, VoD-like
  frames, batch 4: teacher train step ~0.08 s/frame.
* ``size="paper"`` is SECOND-like (SCKD's teacher and student): 64 -> 128-channel encoders,
  2D backbone layer_nums [5, 5], strides [1, 2], filters [128, 256], upsampled to 256 + 256
  channels, head at the full 128 x 128 BEV.

Fields not given explicitly come from the preset named by ``size``; explicit fields win, so
``DetectorConfig(size="paper", pillar_size_m=0.2)`` is the paper network on a finer grid.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

# Preset values per size. Only architecture knobs live here; data/loss knobs have plain defaults.
_PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "pillar_size_m": 0.4,
        "encoder_channels": 32,
        "encoder_hidden_channels": None,
        "backbone_layer_nums": (1, 1),
        "backbone_strides": (1, 2),
        "backbone_filters": (32, 64),
        "upsample_strides": (1, 2),
        "upsample_filters": (32, 32),
        "head_channels": 32,
    },
    "paper": {
        "pillar_size_m": 0.4,
        "encoder_channels": 128,
        "encoder_hidden_channels": 64,
        "backbone_layer_nums": (5, 5),
        "backbone_strides": (1, 2),
        "backbone_filters": (128, 256),
        "upsample_strides": (1, 2),
        "upsample_filters": (256, 256),
        "head_channels": 64,
    },
}

# Box regression code: [dx, dy, z, log l, log w, log h, sin yaw, cos yaw] (+ [vx, vy]).
BOX_CODE_SIZE = 8
VELOCITY_CODE_SIZE = 2


class DetectorConfig(BaseModel):
    """Hyperparameters of one detector; stored in every checkpoint beside the weights.

    Frames/units: all ranges and sizes are metres in the ego frame (x forward, y left, z up).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: Literal["small", "paper"] = "small"
    # (x0, y0, z0, x1, y1, z1): VoD range used by SCKD and the VoD PP-Radar recipe.
    point_cloud_range_m: tuple[float, float, float, float, float, float] = (
        0.0, -25.6, -3.0, 51.2, 25.6, 2.0,
    )
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    lidar_features: int = 4  # x, y, z, intensity
    radar_features: int = 6  # x, y, z, rcs, v_r_comp, time

    # Architecture (defaults from the preset named by `size`).
    pillar_size_m: float
    encoder_channels: int  # C of every BEV map F_L / F_R
    encoder_hidden_channels: int | None  # None: one Linear+BN+ReLU per point, else two
    backbone_layer_nums: tuple[int, ...]  # extra 3x3 convs per level (after the strided one)
    backbone_strides: tuple[int, ...]
    backbone_filters: tuple[int, ...]
    upsample_strides: tuple[int, ...]
    upsample_filters: tuple[int, ...]
    head_channels: int

    # Radar students: residual dilated-conv alignment blocks after the radar encoder (0 = off;
    # RadarDistill's cross-modality alignment, models/align.py).
    radar_align_layers: int = 0

    # SCKD teacher only.
    fusion: Literal["af", "concat"] = "af"
    p_drop: float = 0.2  # P_drop of the modality dropout gate (Eq. 6-7)
    p_lidar: float = 0.2  # P_L: given a drop, the chance that it is LiDAR that goes

    # Head / targets / loss (CenterPoint defaults).
    with_velocity: bool = False
    min_gaussian_radius: int = 2  # cells of the head grid; >= 1 so pedestrians get a blob
    gaussian_min_overlap: float = 0.1
    box_loss_weight: float = 0.25
    velocity_code_weight: float = 0.2
    heatmap_init_bias: float = -2.19  # sigmoid(-2.19) ~ 0.1 prior, CenterNet/CenterPoint

    # Decode.
    nms_iou_bev: float | None = None  # None: peaks only (3x3 max-pool), no rotated NMS

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = _PRESETS.get(data.get("size", "small"))
        if preset is None:  # let the Literal check produce the error message
            return data
        return {**preset, **data}

    @model_validator(mode="after")
    def _check(self) -> DetectorConfig:
        x0, y0, z0, x1, y1, z1 = self.point_cloud_range_m
        if not (x1 > x0 and y1 > y0 and z1 > z0):
            raise ValueError(
                f"point_cloud_range_m must have max > min, got {self.point_cloud_range_m}")
        if self.pillar_size_m <= 0:
            raise ValueError("pillar_size_m must be > 0")
        for span in (x1 - x0, y1 - y0):
            cells = span / self.pillar_size_m
            if abs(cells - round(cells)) > 1e-4:
                raise ValueError(
                    f"range span {span} m is not a multiple of pillar {self.pillar_size_m} m")
        n = len(self.backbone_layer_nums)
        lens = {len(self.backbone_strides), len(self.backbone_filters),
                len(self.upsample_strides), len(self.upsample_filters)}
        if n == 0 or lens != {n}:
            raise ValueError("backbone_* and upsample_* tuples must be non-empty and equally long")
        if min(self.backbone_strides + self.upsample_strides) < 1:
            raise ValueError("backbone and upsample strides must be integers >= 1")
        strides = [math.prod(self.backbone_strides[: i + 1]) / u
                   for i, u in enumerate(self.upsample_strides)]
        if len(set(strides)) != 1:
            raise ValueError(f"backbone levels upsample to different resolutions: {strides}")
        grid_w, grid_h = self.grid_size
        if grid_w % self.out_stride or grid_h % self.out_stride:
            raise ValueError(
                f"BEV grid {self.grid_size} not divisible by head stride {self.out_stride}")
        if not self.classes:
            raise ValueError("classes must not be empty")
        if self.radar_align_layers < 0:
            raise ValueError("radar_align_layers must be >= 0")
        if self.min_gaussian_radius < 1:
            raise ValueError("min_gaussian_radius must be >= 1 cell")
        if not (0.0 <= self.p_drop <= 1.0 and 0.0 <= self.p_lidar <= 1.0):
            raise ValueError("p_drop and p_lidar are probabilities")
        return self

    @property
    def grid_size(self) -> tuple[int, int]:
        """(W, H) of the encoder BEV grid: W cells along x, H cells along y."""
        x0, y0, _, x1, y1, _ = self.point_cloud_range_m
        return (round((x1 - x0) / self.pillar_size_m), round((y1 - y0) / self.pillar_size_m))

    @property
    def out_stride(self) -> int:
        """Encoder cells per head cell (the head grid is the BEV grid divided by this)."""
        return round(self.backbone_strides[0] / self.upsample_strides[0])

    @property
    def out_cell_m(self) -> float:
        """Edge of one head-grid cell (metres)."""
        return self.pillar_size_m * self.out_stride

    @property
    def box_code_size(self) -> int:
        """R: channels of the box regression map."""
        return BOX_CODE_SIZE + (VELOCITY_CODE_SIZE if self.with_velocity else 0)
