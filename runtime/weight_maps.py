"""IMKD weight maps (`imkd-weights` outputs) read back: for training frames and for `kdpipe show`.

The layout (`imkd_weight_maps/1`): `<source>/<scene>/maps` (F, 4, H, W) float32 with channels
`CHANNELS`, row y0 first; the `weight_frames` table maps each frame to its (source, scene, row).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.models.batch import TrainFrame
from kdpipe.pipeline.errors import ConfigError, KdpipeError

CHANNELS = ("intensity_mean", "intensity_max", "occupancy", "weight")


def read_maps(weight_maps: Path, weight_frames: Path, frame_ids: list[str] | None = None
              ) -> dict[str, np.ndarray]:
    """frame_id -> (4, H, W) maps from the `imkd-weights` outputs (all frames, or those given)."""
    import zarr

    table = pl.read_parquet(weight_frames)
    if frame_ids is not None:
        table = table.filter(pl.col("frame_id").is_in(frame_ids))
    out: dict[str, np.ndarray] = {}
    for (source, scene), g in table.group_by("source", "scene", maintain_order=True):
        arr = zarr.open_array(store=str(Path(weight_maps) / str(source) / str(scene) / "maps"),
                              mode="r")
        data = arr.oindex[g["row"].to_list()]
        out.update(zip(g["frame_id"].to_list(), data, strict=True))
    return out


def attach_weight_maps(stage: str, weight_maps: Path, weight_frames: Path,
                       frames: Sequence[TrainFrame], config: Any) -> None:
    """Set each frame's `weight_map` (1, H, W); the maps' grid must be the student's."""
    maps = read_maps(weight_maps, weight_frames, sorted({f.frame_id for f in frames}))
    x0, y0, _, x1, y1, _ = config.point_cloud_range_m
    want = (round((y1 - y0) / config.pillar_size_m), round((x1 - x0) / config.pillar_size_m))
    for f in frames:
        m = maps.get(f.frame_id)
        if m is None:
            raise ConfigError(f"{stage}: frame {f.frame_id} has no weight map "
                              "(imkd-weights.splits must cover the training frames)")
        if m.shape[1:] != want:
            raise ConfigError(f"{stage}: weight maps are {m.shape[1:]} cells, the student "
                              f"grid {want}: set imkd-weights.point_cloud_range_m / cell_m to "
                              f"{list(config.point_cloud_range_m)} / {config.pillar_size_m}")
        f.weight_map = m[3:4]  # the combined weight channel


def frame_weight_map(ws: Any, frame_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(H, W) weight channel of `frame_id` from the newest committed `imkd-weights` artifact that
    has it, and its (x0, y0, x1, y1) range: what `kdpipe show FRAME --weights` draws."""
    recs = ws.committed("imkd-weights")
    for rec in recs:  # newest first
        art = Path(ws.artifact_dir("imkd-weights", rec["key"]))
        maps = read_maps(art / "weight_maps.zarr", art / "weight_frames.parquet", [frame_id])
        if frame_id in maps:
            x0, y0, _, x1, y1, _ = rec["config"]["point_cloud_range_m"]
            return maps[frame_id][CHANNELS.index("weight")], (x0, y0, x1, y1)
    raise KdpipeError(f"--weights: no committed imkd-weights artifact has frame {frame_id} "
                      f"({len(recs)} artifacts); run `kdpipe run imkd-weights` first")
