"""From an ingested store (`IngestStore`) to model inputs: field selection, cropping, targets.

Models read fixed feature columns (`kdpipe.models.batch.MODEL_FIELDS`): LiDAR x, y, z,
intensity and radar x, y, z, RCS, v_r_comp, time. The store keeps every native field, so columns
are picked here by the field names written in the Zarr attributes, never by position.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypedDict, Unpack

import numpy as np
import polars as pl
import torch

from kdpipe.datasets.store import IngestStore
from kdpipe.models.batch import (
    BOX_COLUMNS,
    EMPTY,
    MODEL_FIELDS,
    CameraInputs,
    FrameArrays,
    Targets,
    TrainFrame,
)
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.camera_data import read_group_cameras


def sensor_map(radar_sensor: str, modalities: Sequence[str]) -> dict[str, str]:
    """Model modality -> store sensor (`radar`, or an accumulated `radar_3` / `radar_5`)."""
    return {m: s for m, s in {"lidar": "lidar", "radar": radar_sensor}.items() if m in modalities}


class GroupReader:
    """All frames of one Zarr group (scene or block), read with one call per array.

    Inference visits every frame of a group in order, so one read of the whole (compressed,
    sharded) array beats one slice per frame.
    """

    def __init__(self, store: IngestStore, source: str, scene: str,
                 sensors: Mapping[str, str]) -> None:
        import zarr

        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        base = store.group(source, scene)
        for modality, sensor in sensors.items():
            if not (base / sensor).is_dir():
                raise ConfigError(f"sensor '{sensor}' is not in the store for {source}/{scene} "
                                  f"(have: {sorted(p.name for p in base.iterdir() if p.is_dir())})")
            g = zarr.open_group(store=str(base / sensor), mode="r")
            cols = frame_columns(list(g["points"].attrs["fields"]), modality)
            self.arrays[modality] = (g["points"][:][:, cols], g["offsets"][:])

    def frame(self, index: int) -> dict[str, np.ndarray]:
        out = {}
        for modality, (pts, off) in self.arrays.items():
            out[modality] = pts[int(off[index]):int(off[index + 1])]  # (N, C) float32 ego
        return out


class ReadOptions(TypedDict, total=False):
    """cameras: store camera channels whose images are read too (camera models; default none)."""

    cameras: Sequence[str]


def read_group_frames(store: IngestStore, source: str, scene: str, frame_indices: Sequence[int],
                      sensors: Mapping[str, str], pc_range: Sequence[float],
                      **options: Unpack[ReadOptions]
                      ) -> list[tuple[dict[str, np.ndarray], CameraInputs | None]]:
    """Model inputs of some frames of one group, cropped to the range, in the order given:
    per frame the point clouds by modality and, for `options["cameras"]`, the images.

    The one reader behind training, inference and the benchmark's bare-forward baseline.
    """
    cameras = options.get("cameras", ())
    reader = GroupReader(store, source, scene, sensors)
    points = [{m: crop(a, pc_range) for m, a in reader.frame(int(i)).items()}
              for i in frame_indices]
    cams: list[CameraInputs | None] = [None] * len(points)
    if cameras:
        cams = list(read_group_cameras(store, source, scene, frame_indices, cameras))
    return list(zip(points, cams, strict=True))


def frame_arrays(points: dict[str, np.ndarray], cameras: CameraInputs | None) -> FrameArrays:
    """One frame's model input from what `read_group_frames` returns (inference: no targets)."""
    return TrainFrame("", points, EMPTY, cameras).arrays()


def frame_columns(fields: list[str], modality: str) -> list[int]:
    want = MODEL_FIELDS[modality]
    missing = [f for f in want if f not in fields]
    if missing:
        raise ConfigError(f"{modality} points lack field(s) {missing} (store has {fields})")
    return [fields.index(f) for f in want]


def crop(points: np.ndarray, pc_range: Sequence[float]) -> np.ndarray:
    """Points inside [x0, x1) x [y0, y1) x [z0, z1): less to augment and to ship to the model."""
    x0, y0, z0, x1, y1, z1 = pc_range
    m = ((points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
         & (points[:, 2] >= z0) & (points[:, 2] < z1))
    return points[m]


def targets_from_table(table: pl.DataFrame, classes: Sequence[str],
                       ignore_other_classes: bool = True,
                       with_velocity: bool = False) -> dict[str, Targets]:
    """Ground truth (`boxes/1`) or pseudo-labels (`pseudo_labels/1`) grouped by frame.

    Boxes of classes the model does not predict (VoD's rider, bicycle, ...) and pseudo-labels in
    the ignore band become ignore regions rather than background: a detector should not be
    taught that a parked bicycle is nothing. `with_velocity` appends (vx, vy) in the ego frame
    (unknown velocities, e.g. all of VoD's, count as 0).
    """
    cls = {c: i for i, c in enumerate(classes)}
    state = table["state"] if "state" in table.columns else \
        pl.Series([None] * table.height, dtype=pl.String)
    t = table.with_columns(_state=state, _cls=pl.col("label").replace_strict(
        cls, default=-1, return_dtype=pl.Int64))
    out: dict[str, Targets] = {}
    for (fid,), g in t.group_by("frame_id", maintain_order=True):
        b = g.select(BOX_COLUMNS).to_numpy().astype(np.float32)
        if with_velocity:
            v = g.select(pl.col("vx_ego_mps", "vy_ego_mps").fill_null(0.0)).to_numpy()
            b = np.concatenate([b, v.astype(np.float32)], axis=1)     # (n, 9)
        c = g["_cls"].to_numpy()
        ign = (g["_state"] == "ignore").fill_null(False).to_numpy()
        pos = (c >= 0) & ~ign
        neg = ign | ((c < 0) & ignore_other_classes)
        out[str(fid)] = Targets(b[pos], c[pos].astype(np.int64), b[neg][:, :7])
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but no CUDA device is visible")
    return torch.device(name)


def tune_allocator() -> None:
    """Keep glibc from returning and re-faulting large blocks on every training step.

    Conv activations are tens of MB, above glibc's dynamic mmap threshold, so each step mmaps and
    unmaps them and pays page faults: measured 25% of a teacher step on this CPU. Raising the mmap
    threshold to its maximum (32 MB) and the trim threshold to 1 GB keeps them in the heap.
    (The same as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, but set where training starts.)
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.uname().sysname != "Linux":
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)            # M_TRIM_THRESHOLD
    except (OSError, AttributeError):        # not glibc (musl, macOS): nothing to tune
        return


def worker_threads() -> int:
    """Torch threads for this process: Dask workers pin OMP_NUM_THREADS=1; honour it."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
