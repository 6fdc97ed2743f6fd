"""An ingested store as a stage sees it: the paths of its input ports, and nothing beside them.

`ingest` writes the points (Zarr, `points/1`) and the frames, boxes and calibration tables as
separate artifacts; a later stage may replace any of them (a `radar-filter` writes new points
and a new frames table) and every consumer downstream must read the replacement. So a stage
never derives one file from another's folder: it builds an `IngestStore` from its ports,

    store = IngestStore.from_inputs(ctx.inputs)     # points + frames (+ boxes, calibration)

and every reader (training frames, inference, cameras, audit) takes that store.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.pipeline.errors import ConfigError


@dataclass(frozen=True)
class IngestStore:
    """Paths of one ingested store's parts (small and picklable: Dask tasks carry it)."""

    points: Path                    # points.zarr: <source>/<scene>/<sensor>/{points,offsets}
    frames: Path                    # frames/1 Parquet
    boxes: Path | None = None       # boxes/1, when the stage has a `boxes` port
    calibration: Path | None = None  # calibration/1, when the stage has a `calibration` port
    stage: str = ""                 # who reads it, for error messages

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Path], stage: str = "") -> IngestStore:
        """The store behind a stage's `points` / `frames` / `boxes` / `calibration` ports."""
        return cls(Path(inputs["points"]), Path(inputs["frames"]),
                   Path(inputs["boxes"]) if "boxes" in inputs else None,
                   Path(inputs["calibration"]) if "calibration" in inputs else None, stage)

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path) -> IngestStore:
        """All parts of one `ingest` artifact directory, or of the one holding the given
        `points.zarr` (for users and tools, never stages: they have ports)."""
        d = Path(artifact_dir)
        if d.suffix == ".zarr":
            d = d.parent
        return cls(d / "points.zarr", d / "frames.parquet", d / "boxes.parquet",
                   d / "calibration.parquet")

    def read_frames(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.frames, columns=list(columns) if columns else None)

    def read_boxes(self) -> pl.DataFrame:
        return pl.read_parquet(self._need("boxes", self.boxes))

    def read_calibration(self) -> pl.DataFrame:
        return pl.read_parquet(self._need("calibration", self.calibration))

    def _need(self, port: str, path: Path | None) -> Path:
        if path is None:
            who = f"stage '{self.stage}'" if self.stage else "this store"
            raise ConfigError(f"{who} has no '{port}' input port, but reading it was asked for")
        return path

    def group(self, source: str, scene: str) -> Path:
        """The Zarr group of one scene (or block of frames)."""
        return self.points / source / scene

    def select_frames(self, splits: Sequence[str], *, labeled_only: bool = False,
                      max_frames: int | None = None) -> pl.DataFrame:
        """Frames of the given splits, in store order (source, scene, frame_index)."""
        frames = self.read_frames()
        sel = frames.filter(pl.col("split").is_in(list(splits)))
        if labeled_only:
            sel = sel.filter(pl.col("labeled"))
        if sel.is_empty():
            what = f"no {'labeled ' if labeled_only else ''}frames in split(s) {list(splits)}"
            if frames.is_empty():  # e.g. every frame rejected: say so, not "splits []"
                raise ConfigError(f"{what}: the ingested store holds no frames at all (ingest "
                                  "kept none; its rejects.parquet says why)")
            have = sorted(frames["split"].unique().to_list())
            raise ConfigError(f"{what} (the store has splits {have})")
        sel = sel.sort("source", "scene", "frame_index")
        return sel.head(max_frames) if max_frames else sel

    def ingest_config(self) -> dict[str, Any]:
        """The `ingest` config this store came from (roots, format, version), read from the
        points' root attributes; a derived store (e.g. `radar-filter`) keeps its upstream's."""
        import zarr

        attrs: Mapping[str, Any] = dict(zarr.open_group(store=str(self.points), mode="r").attrs)
        while "upstream" in attrs:  # derived stores nest their upstream's root attributes
            attrs = attrs["upstream"]
        return dict(json.loads(str(attrs.get("kdpipe", "{}"))).get("config", {}))
