"""Camera inputs for camera models (the IMKD student): images from the store, geometry from the
calibration table (both through the stage's ports), as `models.batch.CameraInputs` per frame:

* images (N, 3, H, W) uint8: the `camera/<CH>` arrays ingest stored (already downscaled);
* intrinsics (N, 3, 3) float32: K of *that* image, i.e. the calibration's K (original image
  pixels) scaled by stored size / original size;
* camera_to_ego (N, 4, 4) float32: the calibration's `t_ego_from_sensor` (optical frame -> ego of
  the LiDAR keyframe). The training loop multiplies it by the frame's flip/scale augmentation
  (`augment_geometry`), so the camera rays follow the augmented point clouds.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from kdpipe.models.batch import CameraInputs, FrameArrays
from kdpipe.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from kdpipe.datasets.store import IngestStore


def camera_channels(model: Any) -> tuple[str, ...]:
    """The store camera channels a model reads (none unless "camera" is one of its modalities)."""
    if "camera" not in getattr(model, "modalities", ()):
        return ()
    return tuple(getattr(model.config, "camera_channels", ()))


def read_group_cameras(store: IngestStore, source: str, scene: str, frame_indices: Sequence[int],
                       channels: Sequence[str]) -> list[CameraInputs]:
    """Camera inputs of some frames of one group, in the order given (see module docstring)."""
    import zarr

    idx = [int(i) for i in frame_indices]
    frames = store.read_frames(["frame_id", "source", "scene", "frame_index"]).filter(
        (pl.col("source") == source) & (pl.col("scene") == scene))
    id_of = dict(zip(frames["frame_index"].to_list(), frames["frame_id"].to_list(), strict=True))
    ids = [id_of[i] for i in idx]
    calib = store.read_calibration().filter(
        pl.col("frame_id").is_in(ids) & pl.col("sensor").is_in(list(channels)))
    rows = {(r["frame_id"], r["sensor"]): r for r in calib.iter_rows(named=True)}
    base = store.group(source, scene) / "camera"
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
        out.append(CameraInputs(np.stack(ims), np.stack(ks).astype(np.float32),
                                np.stack(ts).astype(np.float32)))
    return out


def augment_geometry(extras: FrameArrays, aug: np.ndarray) -> FrameArrays:
    """Apply the frame's linear point augmentation `aug` (3, 3) to camera extrinsics.

    Everything else passes unchanged; "aug_matrix" records `aug` so per-frame BEV maps (IMKD's
    weight maps) can be warped the same way where they are used.
    """
    out = extras.copy()
    if "camera_to_ego" in out:
        a4 = np.eye(4, dtype=np.float32)
        a4[:3, :3] = aug
        out["camera_to_ego"] = a4 @ out["camera_to_ego"]  # (N, 4, 4)
    out["aug_matrix"] = aug.astype(np.float32)
    return out
