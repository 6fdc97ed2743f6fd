"""`imkd-weights`: per-frame BEV weight maps from the ingested LiDAR (IMKD's intensity prior).

IMKD (METHODS.md A2) uses "LiDAR intensity as a reliability prior" that replaces uniform or binary
KD masks with adaptive weights, but publishes no formula. OUR READING, per BEV cell c of the
student's grid, from the keyframe LiDAR points inside the point-cloud range:

    n_c      points in c                    occ_c = 1 - exp(-n_c / occupancy_ref_points)
    I_mean_c mean intensity / s,  I_max_c max intensity / s, both clipped to [0, 1], where s is
             `intensity_scale` or, when unset, the frame's `intensity_quantile` of intensities
    W_c  =   floor + (1 - floor) * occ_c * (alpha + (1 - alpha) * (I_mean_c + I_max_c) / 2)

So empty cells weigh `floor`, a cell hit by LiDAR at least `floor + (1 - floor) * alpha * occ`,
and bright returns (vehicles, signs, markings; not asphalt) up to 1. The four maps are stored
per frame as channels [intensity_mean, intensity_max, occupancy, weight] of `<source>/<scene>/
maps` (F, 4, H, W) float32, one Zarr group per scene like the points, with the frame ids and
the grid in the attributes; `weight_frames` lists every frame's row and summary statistics.
Distillation warps a map with the frame's flip/scale augmentation (`models.imkd.warp_maps`);
reading maps back is `runtime/weight_maps.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.stage import (
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.weight_maps import CHANNELS

WEIGHT_FRAMES = {"frame_id": pl.String, "source": pl.String, "scene": pl.String,
                 "row": pl.Int32, "lidar_points": pl.Int32, "occupied_cells": pl.Int32,
                 "mean_weight": pl.Float64, "intensity_scale": pl.Float64}


class WeightMapConfig(StageConfig):
    # The student's BEV grid (x0, y0, z0, x1, y1, z1) and cell; distill checks they match.
    point_cloud_range_m: tuple[float, float, float, float, float, float] = (
        -51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
    cell_m: float = Field(0.8, gt=0)
    occupancy_ref_points: float = Field(4.0, gt=0)
    floor: float = Field(0.05, ge=0.0, le=1.0)
    alpha: float = Field(0.25, ge=0.0, le=1.0)
    intensity_scale: float | None = Field(None, gt=0)  # None: per-frame quantile
    intensity_quantile: float = Field(0.99, gt=0.0, le=1.0)
    splits: list[str] | None = None       # None: every frame of the store


def grid_hw(cfg: WeightMapConfig) -> tuple[int, int]:
    x0, y0, _, x1, y1, _ = cfg.point_cloud_range_m
    return round((y1 - y0) / cfg.cell_m), round((x1 - x0) / cfg.cell_m)


def bev_maps(lidar: np.ndarray, cfg: WeightMapConfig) -> tuple[np.ndarray, float]:
    """One frame's (4, H, W) maps [intensity_mean, intensity_max, occupancy, weight] from its
    (N, >= 4) LiDAR [x, y, z, intensity] (ego metres), and the intensity scale used."""
    h, w = grid_hw(cfg)
    x0, y0, z0, x1, y1, z1 = cfg.point_cloud_range_m
    ix = np.floor((lidar[:, 0] - x0) / cfg.cell_m).astype(np.int64)
    iy = np.floor((lidar[:, 1] - y0) / cfg.cell_m).astype(np.int64)
    keep = ((ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (lidar[:, 2] >= z0) & (lidar[:, 2] < z1)
            & np.isfinite(lidar[:, :4]).all(axis=1))
    flat, inten = iy[keep] * w + ix[keep], lidar[keep, 3].astype(np.float64)
    scale = cfg.intensity_scale or (float(np.quantile(inten, cfg.intensity_quantile))
                                    if len(inten) else 1.0)
    scale = max(scale, 1e-6)
    n = np.bincount(flat, minlength=h * w).astype(np.float64)
    i_mean = np.bincount(flat, weights=inten, minlength=h * w) / np.maximum(n, 1.0)
    i_max = np.zeros(h * w)
    np.maximum.at(i_max, flat, inten)
    i_mean, i_max = np.clip(i_mean / scale, 0, 1), np.clip(i_max / scale, 0, 1)
    occ = 1.0 - np.exp(-n / cfg.occupancy_ref_points)
    bright = (i_mean + i_max) / 2
    weight = cfg.floor + (1 - cfg.floor) * occ * (cfg.alpha + (1 - cfg.alpha) * bright)
    return np.stack([i_mean, i_max, occ, weight]).reshape(4, h, w).astype(np.float32), scale


@dataclass(frozen=True)
class _Task:
    store: IngestStore
    source: str
    scene: str
    frame_ids: tuple[str, ...]
    frame_indices: tuple[int, ...]
    zarr_root: str
    config: WeightMapConfig


def _scene(task: _Task) -> list[dict[str, Any]]:
    import zarr

    from kdpipe.runtime.model_data import GroupReader

    reader = GroupReader(task.store, task.source, task.scene, {"lidar": "lidar"})
    maps, rows = [], []
    for row, (fid, idx) in enumerate(zip(task.frame_ids, task.frame_indices, strict=True)):
        lidar = reader.frame(idx)["lidar"]
        m, scale = bev_maps(lidar, task.config)
        maps.append(m)
        rows.append({"frame_id": fid, "source": task.source, "scene": task.scene, "row": row,
                     "lidar_points": len(lidar), "occupied_cells": int((m[2] > 0).sum()),
                     "mean_weight": float(m[3].mean()), "intensity_scale": scale})
    data = np.stack(maps)  # (F, 4, H, W)
    x0, y0, z0, x1, y1, z1 = task.config.point_cloud_range_m
    group = zarr.open_group(store=str(Path(task.zarr_root) / task.source / task.scene), mode="w",
                            zarr_format=3, attributes={"frames": list(task.frame_ids)})
    group.create_array("maps", data=data, chunks=(1, *data.shape[1:]),
                       dimension_names=("frame", "channel", "y", "x"),
                       attributes={"channels": list(CHANNELS), "frames": list(task.frame_ids),
                                   "point_cloud_range_m": [x0, y0, z0, x1, y1, z1],
                                   "cell_m": task.config.cell_m,
                                   "meaning": "maps[i] belongs to frames[i]; row y0 first"})
    return rows


def run(ctx: StageContext[WeightMapConfig]) -> None:
    import zarr

    cfg = ctx.config
    store = IngestStore.from_inputs(ctx.inputs, ctx.stage)
    frames = store.read_frames()
    if cfg.splits is not None:
        frames = frames.filter(pl.col("split").is_in(cfg.splits))
    frames = frames.sort("source", "scene", "frame_index")
    root = ctx.outputs["weight_maps"]
    top = zarr.open_group(store=str(root), mode="a", zarr_format=3)
    top.attrs.update({"layout": "<source>/<scene>/maps (F, 4, H, W)", "channels": list(CHANNELS),
                      "formula": "W = floor + (1 - floor) * occ * (alpha + (1 - alpha) * "
                                 "(I_mean + I_max) / 2), our reading (docs/IMKD.md)",
                      "config": cfg.model_dump(mode="json"), **ctx.file_metadata()})
    tasks = []
    for (source, scene), g in frames.group_by("source", "scene", maintain_order=True):
        top.require_group(str(source))
        tasks.append(_Task(store, str(source), str(scene), tuple(g["frame_id"].to_list()),
                           tuple(int(i) for i in g["frame_index"]), str(root), cfg))
    rows = [r for part in ctx.map(_scene, tasks, desc="weight maps") for r in part]
    pl.DataFrame(rows, schema=WEIGHT_FRAMES).sort("frame_id").write_parquet(
        ctx.outputs["weight_frames"], metadata=ctx.file_metadata())


STAGE = Stage(
    name="imkd-weights", config=WeightMapConfig, run=run, version=1,
    inputs=(Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1")),
    outputs=(Port("weight_maps", ZarrArtifact, "imkd_weight_maps/1"),
             Port("weight_frames", ParquetArtifact)),
    description="ingested LiDAR -> per-frame BEV intensity/occupancy weight maps (IMKD prior)",
)
