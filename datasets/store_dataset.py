"""A torch `Dataset` over an ingested store: random access by frame, multi-worker safe.

Zarr arrays are opened lazily per process (after a DataLoader fork/spawn each worker opens its
own handles), and each item reads one contiguous slice `points[offsets[i]:offsets[i+1]]` per
sensor, touching only the shards that hold that frame.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from torch.utils.data import Dataset

from kdpipe.datasets.store import IngestStore


class StoreDataset(Dataset):  # type: ignore[type-arg]
    """Frames of an `ingest` artifact, as dicts of numpy arrays.

    Args:
        store: the store a stage reads through its ports (`IngestStore.from_inputs`), or an
            `ingest` artifact directory `<workspace>/artifacts/ingest/<key>` (tools, notebooks).
        sensors: point sensors to read, e.g. ("lidar", "radar").
        where: optional polars expression selecting frames (e.g. `pl.col("split") == "train"`).
        with_boxes: attach `boxes_ego` (B, 7) float32 and `labels` (B,) str.

    Item: {"frame_id": str, "<sensor>": (N, C) float32 in the ego frame, "boxes_ego": ...}.
    """

    def __init__(self, store: IngestStore | str | Path,
                 sensors: tuple[str, ...] = ("lidar", "radar"),
                 where: pl.Expr | None = None, with_boxes: bool = True) -> None:
        self.store = store if isinstance(store, IngestStore) else IngestStore.from_artifact(store)
        frames = self.store.read_frames()
        if where is not None:
            frames = frames.filter(where)
        self.frames = frames.select("frame_id", "source", "scene", "frame_index").to_dicts()
        self.sensors = sensors
        self.boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if with_boxes:
            b = self.store.read_boxes().filter(
                pl.col("frame_id").is_in([f["frame_id"] for f in self.frames]))
            cols = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m",
                    "yaw_ego_rad"]
            for (fid,), g in b.group_by("frame_id"):
                self.boxes[str(fid)] = (g.select(cols).to_numpy().astype(np.float32),
                                        g["label"].to_numpy())
        self.with_boxes = with_boxes
        self._handles: dict[tuple[str, str, str], Any] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.frames)

    def _arrays(self, source: str, scene: str, sensor: str) -> tuple[Any, np.ndarray]:
        if self._pid != os.getpid():  # new worker process: never share handles across a fork
            self._handles, self._pid = {}, os.getpid()
        k = (source, scene, sensor)
        if k not in self._handles:
            import zarr

            g = zarr.open_group(store=str(self.store.group(source, scene) / sensor), mode="r")
            self._handles[k] = (g["points"], g["offsets"][:])
        return self._handles[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.frames[i]
        item: dict[str, Any] = {"frame_id": f["frame_id"]}
        for s in self.sensors:
            points, offsets = self._arrays(f["source"], f["scene"], s)
            j = f["frame_index"]
            item[s] = points[int(offsets[j]):int(offsets[j + 1])]  # (N, C) float32
        if self.with_boxes:
            b, labels = self.boxes.get(f["frame_id"], (np.zeros((0, 7), np.float32),
                                                        np.array([], dtype=str)))
            item["boxes_ego"], item["labels"] = b, labels
        return item

