"""`radar-filter`: drop radar points below an RCS threshold, writing a new points store.

A small stage between `ingest` and training (CONTRIBUTING.md builds it step by step): it reads
the store through its `points` and `frames` ports and writes `filtered_points` (the same Zarr
layout, `points/1`: every non-radar array copied byte for byte, each radar sensor's points
filtered and its offsets recomputed) and `filtered_frames` (`n_radar` recounted). Downstream
stages read the filtered store by binding their ports to it:

    [teacher-train]
    ports = { points = "filtered_points", frames = "filtered_frames" }

One Dask task per group (scene); the root keeps the upstream store's attributes under
`upstream`, so `IngestStore.ingest_config()` still finds the ingest that made the data.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

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
from kdpipe.schemas.tables import FRAMES


class RadarFilterConfig(StageConfig):
    min_rcs_dbsm: float = 0.0             # keep radar points with rcs >= this
    sensors: list[str] | None = None      # store radar sensors to filter; None: radar, radar_3...
    rcs_field: str = Field("rcs", min_length=1)  # field name in the points' "fields" attribute


@dataclass(frozen=True)
class _Task:
    src: Path                             # input group <points>/<source>/<scene>
    dst: Path                             # output group
    config: RadarFilterConfig


def _filter_group(task: _Task) -> dict[str, list[int]]:
    """Copy one group, filtering its radar sensors; returns sensor -> points kept per frame."""
    import zarr

    shutil.rmtree(task.dst, ignore_errors=True)   # a killed earlier attempt
    shutil.copytree(task.src, task.dst)           # cameras, LiDAR, metadata: unchanged bytes
    group = zarr.open_group(store=str(task.dst), mode="r+")
    wanted = task.config.sensors
    counts: dict[str, list[int]] = {}
    for name in sorted(group.group_keys()):
        if not (name in wanted if wanted is not None else name.startswith("radar")):
            continue
        src = zarr.open_group(store=str(task.src / name), mode="r")
        points, offsets = src["points"], src["offsets"][:]
        fields = list(points.attrs["fields"])
        col = fields.index(task.config.rcs_field)
        data = points[:]                                                # (N, C) float32
        keep = data[:, col] >= task.config.min_rcs_dbsm
        csum = np.concatenate([[0], np.cumsum(keep)])
        new_off = csum[offsets].astype(np.int64)      # (F + 1,) kept points before each frame
        kept = np.diff(new_off)
        shutil.rmtree(task.dst / name)
        g = group.create_group(name, attributes=dict(src.attrs))
        g.create_array("points", data=data[keep], chunks=points.chunks, shards=points.shards,
                       compressors=points.compressors, dimension_names=("point", "field"),
                       attributes=dict(points.attrs))
        g.create_array("offsets", data=new_off, chunks=(max(len(new_off), 1),),
                       compressors=None, attributes=dict(src["offsets"].attrs))
        counts[name] = kept.tolist()
    return counts


def run(ctx: StageContext[RadarFilterConfig]) -> None:
    import zarr

    store = IngestStore.from_inputs(ctx.inputs, ctx.stage)
    out = ctx.outputs["filtered_points"]
    upstream = dict(zarr.open_group(store=str(store.points), mode="r").attrs)
    root = zarr.open_group(store=str(out), mode="w", zarr_format=3)
    root.attrs.update({**{k: v for k, v in upstream.items() if k != "kdpipe"},
                       "upstream": upstream, **ctx.file_metadata()})
    frames = store.read_frames().sort("source", "scene", "frame_index")
    groups = frames.select("source", "scene").unique(maintain_order=True).rows()
    for source in sorted({s for s, _ in groups}):
        root.require_group(str(source))
    tasks = [_Task(store.group(s, g), out / s / g, ctx.config) for s, g in groups]
    results = ctx.map(_filter_group, tasks, desc="radar groups")
    n_radar = []
    for (source, scene), counts in zip(groups, results, strict=True):
        g = frames.filter((pl.col("source") == source) & (pl.col("scene") == scene))
        radar = counts.get("radar")
        n_radar += [radar[i] if radar else n for i, n in zip(g["frame_index"], g["n_radar"],
                                                             strict=True)]
    ordered = pl.concat([frames.filter((pl.col("source") == s) & (pl.col("scene") == g))
                         for s, g in groups])
    ordered.with_columns(n_radar=pl.Series(n_radar, dtype=FRAMES["n_radar"])) \
        .select(list(FRAMES)).sort("frame_id") \
        .write_parquet(ctx.outputs["filtered_frames"], metadata=ctx.file_metadata())


STAGE = Stage(
    name="radar-filter", config=RadarFilterConfig, run=run, version=1,
    inputs=(Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1")),
    outputs=(Port("filtered_points", ZarrArtifact, "points/1"),
             Port("filtered_frames", ParquetArtifact, "frames/1")),
    description="points store -> the same store with radar points below an RCS threshold dropped",
)
