"""IMKD camera+radar student (METHODS.md A2) and its intensity-aware distillation losses.

    "imkd-student"  camera BEV (LSS lift-splat, `camera_bev.py`) + radar pillar BEV
                    -> intensity-guided fusion -> SECOND backbone -> CenterPoint head

The paper publishes the three stages, not their formulas; docs/IMKD.md separates what follows
the paper from our reading. Ours:

* Fusion (level 3): AF-style spatial modality weights [W_C, W_R] = Softmax(BN(Conv(Concat(
  AvgPool F_C, AvgPool F_R)))) and, when `intensity_gate`, a predicted intensity map
  g = sigmoid(Conv(Concat(F_C, F_R))) that amplifies the fused map, F = Concat(W_C F_C,
  W_R F_R) * (1 + g). In training g is supervised by the LiDAR weight map (`intensity_kl`), so
  at test time, without LiDAR, the fusion still knows where LiDAR would have seen structure.
* Levels 1 and 2: squared feature error summed over channels, weighted per BEV cell by the
  LiDAR weight map and normalised by the weight sum (`weighted_feature_mse`).

The head, loss and decode are `CenterPointDetector`'s, so pseudo-labels, evaluation and export
work on this model unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from .batch import CAMERA_KEYS
from .camera_bev import CameraBEV
from .camera_depth import depth_loss, lidar_depth_bins
from .config import DetectorConfig
from .detectors import CenterPointDetector, _encoder
from .distill import FeatureAdapter
from .registry import register_model


class IMKDConfig(DetectorConfig):
    """DetectorConfig plus the camera branch and the fusion gate."""

    camera_channels: tuple[str, ...] = ("CAM_FRONT",)  # store channels fed, in this order
    image_width: int = 32                # CNN channels of the camera encoder
    depth_bins: int = 32
    depth_range_m: tuple[float, float] = (1.0, 60.0)   # bin centres uniform inside
    intensity_gate: bool = True          # level 3: the intensity-guided fusion gate

    @model_validator(mode="after")
    def _check_camera(self) -> IMKDConfig:
        if self.depth_bins < 1 or not 0 < self.depth_range_m[0] < self.depth_range_m[1]:
            raise ValueError("depth_bins >= 1 and 0 < depth_range_m[0] < depth_range_m[1]")
        return self


class IntensityGuidedFusion(nn.Module):
    """(B, C, H, W) camera + radar -> fused (B, 2C, H, W), modality weights, gate logits."""

    def __init__(self, channels: int, gate: bool) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.conv = nn.Conv2d(2 * channels, 2, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(2, eps=1e-3, momentum=0.01)
        self.gate = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1)) if gate else None

    def forward(self, f_cam: Tensor, f_radar: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        both = torch.cat([f_cam, f_radar], 1)  # (B, 2C, H, W)
        mix = torch.cat([self.pool(f_cam), self.pool(f_radar)], 1)
        w = torch.softmax(self.norm(self.conv(mix)), 1)  # (B, 2, H, W), sums to 1 per cell
        fused = torch.cat([w[:, :1] * f_cam, w[:, 1:] * f_radar], 1)
        if self.gate is None:
            return fused, w, None
        logit = self.gate(both)  # (B, 1, H, W)
        return fused * (1.0 + torch.sigmoid(logit)), w, logit


class IMKDStudent(CenterPointDetector):
    """Camera + radar BEV student. Features: "camera", "radar" (B, C, H, W), "fusion" (B, 2C,
    H, W); the output also carries "intensity_logit" (B, 1, H, W) when the gate is on and
    "camera_depth" (B, N, D, h, w), the camera branch's depth distribution (None without images)."""

    modalities = ("radar", "camera")

    def __init__(self, name: str, config: IMKDConfig) -> None:
        super().__init__(name, config, 2 * config.encoder_channels)
        self.radar_encoder = _encoder(config, config.radar_features)
        self.camera = CameraBEV(config.encoder_channels, config.image_width, config.depth_bins,
                                config.depth_range_m, config.point_cloud_range_m,
                                config.pillar_size_m)
        self.fusion = IntensityGuidedFusion(config.encoder_channels, config.intensity_gate)

    def forward(self, batch: Any) -> dict[str, Any]:
        """CenterPointDetector's outputs plus "intensity_logit" and "camera_depth" (or None)."""
        out = super().forward(batch)
        out["intensity_logit"] = out["features"].pop("intensity_logit", None)
        out["camera_depth"] = out["features"].pop("camera_depth", None)
        return out

    def encode(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        bsz = int(batch["batch_size"])
        f_radar = self.radar_encoder(batch.get("radar"), bsz)  # (B, C, H, W)
        f_cam, depth = self.camera(*(batch.get(k) for k in CAMERA_KEYS), bsz)  # (B, C, H, W)
        fused, weights, logit = self.fusion(f_cam, f_radar)
        feats = {"camera": f_cam, "radar": f_radar, "fusion": fused}
        if depth is not None:
            feats["camera_depth"] = depth  # (B, N, D, h, w)
        if logit is not None:
            feats["intensity_logit"] = logit
        return fused, feats


@register_model("imkd-student")
def imkd_student(**cfg: Any) -> IMKDStudent:
    """IMKD camera+radar student (LSS camera branch, radar pillars, intensity-guided fusion)."""
    return IMKDStudent("imkd-student", IMKDConfig(**cfg))


# ------------------------------------------------------------------------------ losses

def weighted_feature_mse(student: Tensor, teacher: Tensor, weight: Tensor) -> Tensor:
    """sum_cells w * ||s - t||^2 / sum_cells w, per frame, mean over the batch.

    student, teacher (B, C, H, W); weight (B, 1, H, W) >= 0. The teacher gets no gradient; a
    zero-weight cell contributes nothing; a frame whose weights are all zero contributes 0.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)} vs teacher "
                         f"{tuple(teacher.shape)}")
    if weight.shape != (student.shape[0], 1, *student.shape[2:]):
        raise ValueError(f"weight map {tuple(weight.shape)} does not match features "
                         f"{tuple(student.shape)}")
    w = weight.detach()
    se = (student - teacher.detach()).pow(2).sum(1, keepdim=True)  # (B, 1, H, W)
    return ((se * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1e-6)).mean()


def intensity_kl(logit: Tensor, target: Tensor) -> Tensor:
    """Bernoulli KL(target || sigmoid(logit)) averaged over cells: BCE minus the target's
    entropy, so the gradient is BCE's and the value is 0 exactly when the gate equals the map."""
    t = target.detach().clamp(0.0, 1.0)
    bce = F.binary_cross_entropy_with_logits(logit, t, reduction="none")
    entropy = -(torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t))
    return (bce - entropy).clamp(min=0.0).mean()


class IMKDAdapters(nn.Module):
    """Level 1: radar (C_s) -> LiDAR (C_t); level 2: fused (2 C_s) -> LiDAR (C_t)."""

    def __init__(self, c_student: int, c_teacher: int, *, level1: bool, level2: bool,
                 kernel: int = 3) -> None:
        super().__init__()
        self.radar = FeatureAdapter(c_student, c_teacher, kernel) if level1 else None
        self.fused = FeatureAdapter(2 * c_student, c_teacher, kernel) if level2 else None

    def level1(self, f_radar: Tensor, f_lidar: Tensor, weight: Tensor) -> Tensor:
        assert self.radar is not None
        return weighted_feature_mse(self.radar(f_radar), f_lidar, weight)

    def level2(self, f_fused: Tensor, f_lidar: Tensor, weight: Tensor) -> Tensor:
        assert self.fused is not None
        return weighted_feature_mse(self.fused(f_fused), f_lidar, weight)


def warp_maps(maps: Tensor, aug_matrix: Tensor, point_cloud_range_m: Sequence[float]) -> Tensor:
    """Resample (B, K, H, W) BEV maps into the augmented frame (aug_matrix (B, 3, 3): augmented
    point = aug @ original). Exact for the identity and for a y-flip on a y-symmetric grid."""
    x0, y0, _, x1, y1, _ = point_cloud_range_m
    c = maps.new_tensor([(x0 + x1) / 2, (y0 + y1) / 2])
    half = maps.new_tensor([(x1 - x0) / 2, (y1 - y0) / 2])
    inv = torch.linalg.inv(aug_matrix.to(maps.dtype))[:, :2, :2]  # augmented -> original (x, y)
    lin = inv * half.view(1, 1, 2) / half.view(1, 2, 1)          # H^-1 A^-1 H
    shift = ((inv @ c) - c) / half                                 # H^-1 (A^-1 c - c)
    theta = torch.cat([lin, shift.unsqueeze(-1)], dim=2)           # (B, 2, 3)
    grid = F.affine_grid(theta, list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class IMKDLoss:
    """IMKD's objective as `fit`'s loss: L_det + l1 * L1 + l2 * L2 + l3 * L3 (module docstring)
    + lambda_d * L_depth (LiDAR depth for the camera branch, `camera_depth.py`) when `depth`.

    Levels 1 and 2 weight every cell by the batch's "weight_map", warped by its "aug_matrix" so
    it stays on the augmented LiDAR; the frozen teacher runs only when level 1 or 2 is on.
    """

    def __init__(self, teacher: nn.Module, adapters: IMKDAdapters,
                 weights: tuple[float, float, float], point_cloud_range_m: Sequence[float],
                 depth: tuple[float, tuple[tuple[float, float], int]] | None = None) -> None:
        self.teacher, self.adapters = teacher, adapters
        self.w1, self.w2, self.w3 = weights
        self.pc_range = tuple(point_cloud_range_m)
        # (lambda_d, (the student's depth_range_m, depth_bins)): LiDAR depth for its camera branch
        self.depth = depth

    def __call__(self, model: nn.Module, batch: dict[str, Any], targets: list[dict[str, Any]],
                 frames: Sequence[Any] = ()) -> dict[str, Tensor]:
        l1, l2, l3 = self.w1 > 0, self.w2 > 0, self.w3 > 0
        out = model(batch)
        det = model.loss(out, targets)
        losses = {"loss_det": det["loss"], **{k: v for k, v in det.items() if k != "loss"}}
        total = losses["loss_det"]
        if l1 or l2 or l3:
            w = warp_maps(batch["weight_map"], batch["aug_matrix"], self.pc_range)  # (B,1,H,W)
        if l1 or l2:
            with torch.no_grad():                               # teacher: eval mode, frozen
                f_lidar = self.teacher(batch)["features"]["lidar"]   # (B, C_t, H, W)
            if l1:
                losses["loss_level1"] = self.adapters.level1(out["features"]["radar"], f_lidar, w)
                total = total + self.w1 * losses["loss_level1"]
            if l2:
                losses["loss_level2"] = self.adapters.level2(out["features"]["fusion"], f_lidar, w)
                total = total + self.w2 * losses["loss_level2"]
        if l3:
            losses["loss_level3"] = intensity_kl(out["intensity_logit"], w)
            total = total + self.w3 * losses["loss_level3"]
        if self.depth is not None and out.get("camera_depth") is not None:
            wd, depth_bins = self.depth
            depth = out["camera_depth"]  # (B, N, D, h, w)
            bins = lidar_depth_bins(batch["lidar"], batch["camera_intrinsics"],
                                    batch["camera_to_ego"], tuple(batch["camera"].shape[-2:]),
                                    tuple(depth.shape[-2:]), depth_bins)
            losses["loss_depth"] = depth_loss(depth, bins)
            total = total + wd * losses["loss_depth"]
        losses["loss"] = total
        return losses
