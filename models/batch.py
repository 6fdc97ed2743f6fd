"""The model input contract: per-frame arrays, training targets, and how they become a batch.

Every detector reads the same batch (`collate`); the fields are fixed here and nowhere else:

* "batch_size" int;
* "lidar" (N, 1 + 4) [b, x, y, z, intensity] and "radar" (M, 1 + 6) [b, x, y, z, rcs,
  v_r_comp, time], float32, ego frame, metres, the batch index first (`MODEL_FIELDS`);
* camera models: "camera" (B, N_cam, 3, H, W) uint8, "camera_intrinsics" (B, N_cam, 3, 3) of the
  stored (downscaled) image, "camera_to_ego" (B, N_cam, 4, 4) (`CAMERA_KEYS`);
* "aug_matrix" (B, 3, 3): the frame's linear augmentation (augmented = aug @ original), and
  "weight_map" (B, 1, H, W): IMKD's LiDAR prior on the BEV grid, when frames carry them.

Training frames (`TrainFrame`) hold these as typed fields; `FrameArrays` is one frame's worth of
the batch, what augmentation returns and `collate` stacks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch

# Point features each modality feeds the model, picked from the store by field name.
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "lidar": ("x", "y", "z", "intensity"),
    "radar": ("x", "y", "z", "rcs", "v_r_comp", "time"),
}
# Feature taps a detector's forward returns under "features" (BEV maps before the 2D backbone):
# "lidar" / "radar" / "camera" per modality encoder, "fusion" after fusing them (what
# distillation reads: SCKD's "lidar" and "fusion" teacher taps, the student's "radar").
FEATURE_TAPS = ("lidar", "radar", "camera", "fusion")
CAMERA_KEYS = ("camera", "camera_intrinsics", "camera_to_ego")
# Per-frame extras stacked into the batch as they are when every frame has them.
STACKED_EXTRAS = ("aug_matrix", "weight_map")
BOX_COLUMNS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]


class FrameArrays(TypedDict, total=False):
    """One frame of model input (the keys present depend on the model's modalities)."""

    lidar: np.ndarray               # (N, 4) float32 ego
    radar: np.ndarray               # (M, 6) float32 ego
    camera: np.ndarray              # (N_cam, 3, H, W) uint8
    camera_intrinsics: np.ndarray   # (N_cam, 3, 3) float32
    camera_to_ego: np.ndarray       # (N_cam, 4, 4) float32
    aug_matrix: np.ndarray          # (3, 3) float32
    weight_map: np.ndarray          # (1, H, W) float32


@dataclass(frozen=True)
class CameraInputs:
    """The camera images of one frame and the geometry that places them in the ego frame."""

    images: np.ndarray              # (N_cam, 3, H, W) uint8, stored (downscaled) size
    intrinsics: np.ndarray          # (N_cam, 3, 3) float32, K of the stored image
    camera_to_ego: np.ndarray       # (N_cam, 4, 4) float32, optical frame -> ego


@dataclass
class Targets:
    """Per-frame training targets in the model's class indices."""

    boxes: np.ndarray     # (n, 7) ego, or (n, 9) with (vx, vy)
    labels: np.ndarray    # (n,) int64
    ignore: np.ndarray    # (m, 7) boxes whose neighbourhood carries no heatmap loss


def empty_targets(box_width: int = 7) -> Targets:
    """A frame with no objects (box_width 9 when the model regresses velocity)."""
    return Targets(np.zeros((0, box_width), np.float32), np.zeros(0, np.int64),
                   np.zeros((0, 7), np.float32))


EMPTY = empty_targets()


@dataclass
class TrainFrame:
    """One training frame: model inputs as typed fields, and its targets."""

    frame_id: str
    points: dict[str, np.ndarray]         # modality -> (N, C) float32 ego, cropped to the range
    targets: Targets
    cameras: CameraInputs | None = None   # camera models only
    weight_map: np.ndarray | None = None  # (1, H, W) IMKD weight map on the student's grid

    def arrays(self) -> FrameArrays:
        """The frame as model input, before augmentation."""
        out: dict[str, np.ndarray] = dict(self.points)
        if self.cameras is not None:
            out.update(camera=self.cameras.images, camera_intrinsics=self.cameras.intrinsics,
                       camera_to_ego=self.cameras.camera_to_ego)
        if self.weight_map is not None:
            out["weight_map"] = self.weight_map
        return out  # type: ignore[return-value]


def collate(frames: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """Per-frame arrays (`FrameArrays`) -> the model's batch (see the module docstring)."""
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
    keys = [k for k in STACKED_EXTRAS if frames and all(k in f for f in frames)]
    if "camera" in modalities and frames:
        keys += list(CAMERA_KEYS)
    batch.update({k: torch.from_numpy(np.stack([np.asarray(f[k]) for f in frames]))
                  for k in keys})
    return batch


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def target_tensors(targets: Sequence[Targets], device: torch.device) -> list[dict[str, Any]]:
    """Targets as the per-frame dicts `Detector.loss` takes ("boxes", "labels", "ignore")."""
    return [{"boxes": torch.from_numpy(t.boxes).to(device),
             "labels": torch.from_numpy(t.labels).to(device),
             "ignore": torch.from_numpy(t.ignore).to(device)} for t in targets]
