"""IMKD weight maps (`imkd-weights` outputs) read back: for training frames and for `kdpipe show`.

The layout (`imkd_weight_maps/1`): `<source>/<scene>/maps` (F, 4, H, W) float32 with channels
`CHANNELS`, row y0 first; the `weight_frames` table maps each frame to its (source, scene, row).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

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


class MapReader:
    """Per-frame weight maps read on demand (training frames carry them as `weight_map`)."""

    def __init__(self, weight_maps: Path, rows: Mapping[str, tuple[str, str, int]]) -> None:
        self.root, self.rows = Path(weight_maps), dict(rows)
        self._pid, self._open = -1, {}

    def __getstate__(self) -> dict[str, Any]:  # zarr handles never cross a process boundary
        return {"root": self.root, "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["rows"])  # type: ignore[misc]

    def frame(self, frame_id: str) -> np.ndarray:
        """(1, H, W) combined weight channel of one frame."""
        import zarr

        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        source, scene, row = self.rows[frame_id]
        if (source, scene) not in self._open:
            self._open[(source, scene)] = zarr.open_array(
                store=str(self.root / source / scene / "maps"), mode="r")
        arr = self._open[(source, scene)]
        return np.asarray(arr[row, CHANNELS.index("weight")])[None]


def weight_map_reader(stage: str, weight_maps: Path, weight_frames: Path,
                      frame_ids: Sequence[str], config: Any) -> MapReader:
    """A reader for the maps of `frame_ids`, checked up front: every frame has one, and their
    grid is the student's (`config`: its point_cloud_range_m and pillar_size_m)."""
    import zarr

    table = pl.read_parquet(weight_frames).filter(pl.col("frame_id").is_in(list(frame_ids)))
    rows = {str(f): (str(s), str(g), int(r)) for f, s, g, r in
            table.select("frame_id", "source", "scene", "row").iter_rows()}
    missing = sorted(set(frame_ids) - set(rows))
    if missing:
        raise ConfigError(f"{stage}: frame {missing[0]} has no weight map "
                          "(imkd-weights.splits must cover the training frames)")
    x0, y0, _, x1, y1, _ = config.point_cloud_range_m
    want = (round((y1 - y0) / config.pillar_size_m), round((x1 - x0) / config.pillar_size_m))
    for source, scene in sorted({(s, g) for s, g, _ in rows.values()}):
        shape = zarr.open_array(store=str(Path(weight_maps) / source / scene / "maps"),
                                mode="r").shape  # (F, 4, H, W)
        if tuple(shape[2:]) != want:
            raise ConfigError(f"{stage}: weight maps are {tuple(shape[2:])} cells, the student "
                              f"grid {want}: set imkd-weights.point_cloud_range_m / cell_m to "
                              f"{list(config.point_cloud_range_m)} / {config.pillar_size_m}")
    return MapReader(Path(weight_maps), rows)


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
