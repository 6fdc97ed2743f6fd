"""From an ingested store to model batches: field selection, cropping, augmentation, collation.

Models read fixed feature columns (`kdpipe.models`): LiDAR x, y, z, intensity and radar x, y, z,
RCS, v_r_comp, time. The store keeps every native field, so columns are picked here by the field
names written in the Zarr attributes, never by position.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.camera_data import collate_extras, read_group_cameras

MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "lidar": ("x", "y", "z", "intensity"),
    "radar": ("x", "y", "z", "rcs", "v_r_comp", "time"),
}
BOX_COLUMNS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]


def sensor_map(radar_sensor: str, modalities: Sequence[str]) -> dict[str, str]:
    """Model modality -> store sensor (`radar`, or an accumulated `radar_3` / `radar_5`)."""
    return {m: s for m, s in {"lidar": "lidar", "radar": radar_sensor}.items() if m in modalities}


def select_frames(ingest_dir: Path, splits: Sequence[str], *, labeled_only: bool = False,
                  max_frames: int | None = None) -> pl.DataFrame:
    """Frames of the given splits, in store order (source, scene, frame_index)."""
    frames = pl.read_parquet(Path(ingest_dir) / "frames.parquet")
    sel = frames.filter(pl.col("split").is_in(list(splits)))
    if labeled_only:
        sel = sel.filter(pl.col("labeled"))
    if sel.is_empty():
        have = sorted(frames["split"].unique().to_list())
        raise ConfigError(f"no {'labeled ' if labeled_only else ''}frames in split(s) "
                          f"{list(splits)} (the store has splits {have})")
    sel = sel.sort("source", "scene", "frame_index")
    return sel.head(max_frames) if max_frames else sel


class GroupReader:
    """All frames of one Zarr group (scene or block), read with one call per array.

    Inference visits every frame of a group in order, so one read of the whole (compressed,
    sharded) array beats one slice per frame.
    """

    def __init__(self, ingest_dir: Path, source: str, scene: str,
                 sensors: Mapping[str, str]) -> None:
        import zarr

        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        base = Path(ingest_dir) / "points.zarr" / source / scene
        for modality, sensor in sensors.items():
            if not (base / sensor).is_dir():
                raise ConfigError(f"sensor '{sensor}' is not in the store for {source}/{scene} "
                                  f"(have: {sorted(p.name for p in base.iterdir() if p.is_dir())})")
            g = zarr.open_group(store=str(base / sensor), mode="r")
            cols = _columns(list(g["points"].attrs["fields"]), modality)
            self.arrays[modality] = (g["points"][:][:, cols], g["offsets"][:])

    def frame(self, index: int) -> dict[str, np.ndarray]:
        out = {}
        for modality, (pts, off) in self.arrays.items():
            out[modality] = pts[int(off[index]):int(off[index + 1])]  # (N, C) float32 ego
        return out


def read_group_frames(ingest_dir: Path, source: str, scene: str, frame_indices: Sequence[int],
                      sensors: Mapping[str, str], pc_range: Sequence[float],
                      cameras: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """Model inputs of some frames of one group, cropped to the range, in the order given.

    The one reader behind training, inference and the benchmark's bare-forward baseline.
    `cameras`: store camera channels to add (`camera_data.read_group_cameras`), for camera models.
    """
    reader = GroupReader(ingest_dir, source, scene, sensors)
    out = [{m: crop(a, pc_range) for m, a in reader.frame(int(i)).items()}
           for i in frame_indices]
    if cameras:
        for f, cam in zip(out, read_group_cameras(ingest_dir, source, scene, frame_indices,
                                                  cameras), strict=True):
            f.update(cam)
    return out


def _columns(fields: list[str], modality: str) -> list[int]:
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


@dataclass
class Targets:
    """Per-frame training targets in the model's class indices."""

    boxes: np.ndarray     # (n, 7) ego
    labels: np.ndarray    # (n,) int64
    ignore: np.ndarray    # (m, 7) boxes whose neighbourhood carries no heatmap loss


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


def empty_targets(box_width: int = 7) -> Targets:
    """A frame with no objects (box_width 9 when the model regresses velocity)."""
    return Targets(np.zeros((0, box_width), np.float32), np.zeros(0, np.int64),
                   np.zeros((0, 7), np.float32))


EMPTY = empty_targets()


def collate(frames: Sequence[Mapping[str, np.ndarray]], modalities: Sequence[str]
            ) -> dict[str, Any]:
    """Per-frame arrays -> the model's batch: (N, 1 + C) tensors with the batch index first;
    camera models also get (B, N_cam, ...) image and geometry tensors."""
    batch: dict[str, Any] = {"batch_size": len(frames)}
    for m in modalities:
        if m not in MODEL_FIELDS:  # "camera": images and geometry, below
            continue
        parts = []
        for i, f in enumerate(frames):
            p = f[m]
            parts.append(np.concatenate([np.full((len(p), 1), i, np.float32), p], axis=1))
        batch[m] = torch.from_numpy(np.concatenate(parts) if parts else
                                    np.zeros((0, 1 + len(MODEL_FIELDS[m])), np.float32))
    batch.update(collate_extras(frames, modalities))  # camera tensors, per-frame BEV maps
    return batch


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def target_tensors(targets: Sequence[Targets], device: torch.device) -> list[dict[str, Any]]:
    return [{"boxes": torch.from_numpy(t.boxes).to(device),
             "labels": torch.from_numpy(t.labels).to(device),
             "ignore": torch.from_numpy(t.ignore).to(device)} for t in targets]


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


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
