"""`ingest`: raw dataset roots -> Zarr v3 point store + Parquet frames/boxes/calibration/rejects.

Each root is one source (its folder name, unless `names` says otherwise); frame ids in the store
are "<source>/<native id>". Work is split into groups (scenes, or blocks of consecutive frames),
one Dask task each, and a group is redone after a kill only if its done-marker is missing.
Every problem frame becomes a rejects row; input frames = ingested + rejected.

`ingest.format` picks one registered `IngestFormat` (datasets/ingest_format.py): its config model
(`VodIngestConfig`, `NuscenesIngestConfig`, `KittiRadarIngestConfig`) holds the common fields
plus that format's own, so another format's options never enter the cache key.
"""
from __future__ import annotations

from pathlib import Path

from kdpipe.datasets.common import Storage, assemble
from kdpipe.datasets.ingest_format import IngestConfig, IngestFormat, get_format
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import ParquetArtifact, Port, Stage, StageContext, ZarrArtifact


def _sources(cfg: IngestConfig, fmt: IngestFormat) -> list[tuple[str, Path]]:
    names = cfg.names or [Path(r).name for r in cfg.roots]
    if len(names) != len(cfg.roots):
        raise ConfigError("ingest.names must have one entry per ingest.roots entry")
    if len(set(names)) != len(names):
        raise ConfigError(f"ingest: two roots share a source name ({names}); set ingest.names")
    out = []
    for name, root in zip(names, cfg.roots, strict=True):
        p = Path(root).resolve()
        if not p.is_dir():
            raise ConfigError(f"ingest root not found: {root} (a {fmt.name} root holds "
                              f"{fmt.expected_layout})")
        out.append((name, p))
    return out


def run(ctx: StageContext[IngestConfig]) -> None:
    cfg = ctx.config
    zarr_root = ctx.outputs["points"]
    import zarr

    root = zarr.open_group(store=str(zarr_root), mode="a", zarr_format=3)
    root.attrs.update({"format": cfg.format, "frame": "ego", "layout": "<source>/<scene>/<sensor>/"
                       "{points,offsets}", **ctx.file_metadata()})
    storage = Storage(cfg.chunk_rows, cfg.shard_chunks, cfg.clevel, cfg.compressor)
    fmt = get_format(cfg.format)
    tasks, roots = [], _sources(cfg, fmt)
    for name, path in roots:
        root.require_group(name)  # created here, once: tasks only create their own subgroup
        mine = fmt.make_tasks(cfg, name, path, ctx.workdir, zarr_root, storage)
        if not mine:
            raise _no_frames(fmt, path)
        tasks += mine
    ctx.map(fmt.run_task, tasks, desc="ingest groups")
    sources, ctx.output_digests["points"] = assemble(
        ctx.workdir, zarr_root,
        {k: ctx.outputs[k] for k in ("frames", "boxes", "calibration", "rejects")},
        ctx.file_metadata())
    import polars as pl

    seen = {s for k in ("frames", "rejects")  # distinct in polars: 10^6 rows, a few sources
            for s in pl.read_parquet(ctx.outputs[k], columns=["source"])["source"].unique()}
    for name, path in roots:  # tasks that found no frame at all (e.g. nuScenes scenes, no sample)
        if name not in seen:
            raise _no_frames(fmt, path)
    ctx.record_sources(sources)


def _no_frames(fmt: IngestFormat, root: Path) -> ConfigError:
    """A root where the format finds no frame (not even a rejected one) is a wrong root or a
    wrong `ingest.format`, never an empty success."""
    held = sorted(p.name + "/" * p.is_dir() for p in root.iterdir())
    what = (f"no {fmt.name} frame found (it holds {', '.join(held[:6])}"
            f"{', ...' if len(held) > 6 else ''})" if held else "an empty folder")
    return ConfigError(f"ingest root {root}: {what}; format '{fmt.name}' expects "
                       f"{fmt.expected_layout} (check ingest.roots and ingest.format)")


STAGE = Stage(
    name="ingest", config=IngestConfig, run=run, version=1,
    inputs=(),
    outputs=(Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
             Port("boxes", ParquetArtifact, "boxes/1"),
             Port("calibration", ParquetArtifact, "calibration/1"),
             Port("rejects", ParquetArtifact, "rejects/1")),
    sources=lambda c: [Path(r) for r in c.roots],
    description="raw dataset roots -> Zarr points + Parquet tables",
)
