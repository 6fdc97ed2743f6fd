"""Camera inputs for camera models (the IMKD student): images from the store, geometry from the
calibration table, in the per-frame dicts `model_data` collates.

Per frame, three arrays beside the point clouds:

* "camera" (N, 3, H, W) uint8: the `camera/<CH>` arrays ingest stored (already downscaled);
* "camera_intrinsics" (N, 3, 3) float32: K of *that* image, i.e. the calibration's K (original
  image pixels) scaled by stored size / original size;
* "camera_to_ego" (N, 4, 4) float32: the calibration's `t_ego_from_sensor` (optical frame ->
  ego of the LiDAR keyframe). The training loop multiplies it by the frame's flip/scale
  augmentation (`augment_geometry`), so the camera rays follow the augmented point clouds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kdpipe.pipeline.errors import ConfigError

CAMERA_KEYS = ("camera", "camera_intrinsics", "camera_to_ego")
# Per-frame extras that are stacked into the batch as they are when every frame has them.
STACKED_EXTRAS = ("aug_matrix", "weight_map")


def camera_channels(model: Any) -> tuple[str, ...]:
    """The store camera channels a model reads (none unless "camera" is one of its modalities)."""
    if "camera" not in getattr(model, "modalities", ()):
        return ()
    return tuple(getattr(model.config, "camera_channels", ()))


def read_group_cameras(ingest_dir: Path, source: str, scene: str, frame_indices: Sequence[int],
                       channels: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Camera arrays of some frames of one group, in the order given (see module docstring)."""
    import zarr

    ingest_dir = Path(ingest_dir)
    idx = [int(i) for i in frame_indices]
    frames = pl.read_parquet(ingest_dir / "frames.parquet",
                             columns=["frame_id", "source", "scene", "frame_index"]).filter(
        (pl.col("source") == source) & (pl.col("scene") == scene))
    id_of = dict(zip(frames["frame_index"].to_list(), frames["frame_id"].to_list(), strict=True))
    ids = [id_of[i] for i in idx]
    calib = pl.read_parquet(ingest_dir / "calibration.parquet").filter(
        pl.col("frame_id").is_in(ids) & pl.col("sensor").is_in(list(channels)))
    rows = {(r["frame_id"], r["sensor"]): r for r in calib.iter_rows(named=True)}
    base = ingest_dir / "points.zarr" / source / scene / "camera"
    images = {}
    for ch in channels:
        if not (base / ch).is_dir():
            raise ConfigError(f"camera '{ch}' is not in the store for {source}/{scene} "
                              f"(ingest.camera_channels must include it)")
        images[ch] = zarr.open_array(store=str(base / ch), mode="r").oindex[idx]  # (F, H, W, 3)
    out = []
    for j, fid in enumerate(ids):
        ks, ts, ims = [], [], []
        for ch in channels:
            r = rows.get((fid, ch))
            if r is None or r["intrinsics"] is None:
                raise ConfigError(f"no {ch} calibration with intrinsics for frame {fid}")
            img = images[ch][j]  # (H, W, 3)
            k = np.asarray(r["intrinsics"], np.float64).reshape(3, 4)[:, :3]
            sx, sy = img.shape[1] / r["image_width_px"], img.shape[0] / r["image_height_px"]
            ks.append(np.diag([sx, sy, 1.0]) @ k)
            ts.append(np.asarray(r["t_ego_from_sensor"], np.float64).reshape(4, 4))
            ims.append(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (3, H, W)
        out.append({"camera": np.stack(ims), "camera_intrinsics": np.stack(ks).astype(np.float32),
                    "camera_to_ego": np.stack(ts).astype(np.float32)})
    return out


def augment_geometry(extras: Mapping[str, np.ndarray], aug: np.ndarray) -> dict[str, np.ndarray]:
    """Apply the frame's linear point augmentation `aug` (3, 3) to camera extrinsics.

    Everything else passes unchanged; "aug_matrix" records `aug` so per-frame BEV maps (IMKD's
    weight maps) can be warped the same way where they are used.
    """
    out = dict(extras)
    if "camera_to_ego" in out:
        a4 = np.eye(4, dtype=np.float32)
        a4[:3, :3] = aug
        out["camera_to_ego"] = a4 @ out["camera_to_ego"]  # (N, 4, 4)
    out["aug_matrix"] = aug.astype(np.float32)
    return out


def collate_extras(frames: Sequence[Mapping[str, np.ndarray]], modalities: Sequence[str]
                   ) -> dict[str, torch.Tensor]:
    """Camera tensors (B, N, ...) when "camera" is a modality, plus the stacked extras."""
    keys = [k for k in STACKED_EXTRAS if frames and all(k in f for f in frames)]
    if "camera" in modalities and frames:
        keys += list(CAMERA_KEYS)
    return {k: torch.from_numpy(np.stack([np.asarray(f[k]) for f in frames])) for k in keys}
