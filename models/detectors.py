"""The registered detectors: pillar encoder(s) -> BEV -> SECOND 2D backbone -> CenterPoint head.

    "sckd-teacher"  LiDAR + radar encoders, modality dropout gate (train only), Adaptive Fusion
    "lidar-only"    LiDAR encoder (a LiDAR-only teacher)
    "radar-only"    radar encoder (radar baseline and the SCKD student family)

Every model shares :class:`CenterPointDetector`'s forward / loss / decode; a subclass only says
how a batch becomes the BEV map fed to the backbone (``encode``), like OpenPCDet's slot topology.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .align import RadarAlign
from .backbone import CenterHead, SecondBackbone
from .config import BOX_CODE_SIZE, DetectorConfig
from .decode import decode_boxes
from .encoders import DynamicPillarEncoder
from .fusion import AdaptiveFusion, modality_dropout_gate
from .registry import register_model
from .targets import CenterTargets, box_regression_loss, build_targets, gaussian_focal_loss

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def _encoder(cfg: DetectorConfig, in_features: int) -> DynamicPillarEncoder:
    return DynamicPillarEncoder(in_features, cfg.encoder_channels, cfg.encoder_hidden_channels,
                                cfg.point_cloud_range_m, cfg.pillar_size_m)


class CenterPointDetector(nn.Module):
    """Shared backbone, head, loss and decode. Subclasses implement :meth:`encode`.

    Attributes:
        name: registry name.
        config: the DetectorConfig it was built from.
        modalities: the batch keys it reads ("lidar", "radar").
        classes: class names; heatmap channel k is classes[k].
    """

    modalities: tuple[str, ...] = ()

    def __init__(self, name: str, config: DetectorConfig, bev_channels: int) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.classes = config.classes
        self.backbone = SecondBackbone(
            bev_channels, config.backbone_layer_nums, config.backbone_strides,
            config.backbone_filters, config.upsample_strides, config.upsample_filters,
        )
        self.head = CenterHead(self.backbone.out_channels, config.head_channels,
                               len(config.classes), config.box_code_size, config.heatmap_init_bias)
        weights = [1.0] * BOX_CODE_SIZE + [config.velocity_code_weight] * (
            config.box_code_size - BOX_CODE_SIZE)
        self.register_buffer("code_weights", torch.tensor(weights), persistent=False)

    def encode(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Batch -> (backbone input (B, C_bev, H, W), feature taps by name)."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Run the detector.

        Args:
            batch: "batch_size" int; "lidar" (N, 1 + 4) [b, x, y, z, intensity] and/or "radar"
                (M, 1 + 6) [b, x, y, z, rcs, v_r_comp, time], ego frame, metres. Keys of
                modalities the model does not use are ignored.

        Returns:
            "heatmap" (B, K, Ho, Wo) logits; "box" (B, R, Ho, Wo) box code; "features" the BEV
            maps before the 2D backbone (for distillation); "bev" the backbone output.
        """
        bev_in, features = self.encode(batch)
        bev = self.backbone(bev_in)  # (B, C_up, Ho, Wo)
        heatmap, box = self.head(bev)
        return {"heatmap": heatmap, "box": box, "features": features, "bev": bev}

    def build_targets(self, targets: Sequence[Mapping[str, Tensor]]) -> CenterTargets:
        """Per-frame GT dicts -> CenterPoint targets on this model's head grid."""
        return build_targets(targets, self.config, device=self.code_weights.device)

    def loss(self, out: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]
             ) -> dict[str, Tensor]:
        """CenterPoint loss: Gaussian focal heatmap loss + weighted L1 box loss.

        Args:
            out: the forward output.
            targets: one dict per frame, see :func:`kdpipe.models.targets.build_targets`.

        Returns:
            "loss" (total), "loss_heatmap", "loss_box" scalars.
        """
        if len(targets) != out["heatmap"].shape[0]:
            raise ValueError(
                f"{len(targets)} target frames for a batch of {out['heatmap'].shape[0]}")
        t = build_targets(targets, self.config, device=out["heatmap"].device)
        loss_heatmap = gaussian_focal_loss(out["heatmap"], t.heatmap, t.heatmap_weight)
        loss_box = box_regression_loss(out["box"], t, self.code_weights)
        loss_box = self.config.box_loss_weight * loss_box
        return {"loss": loss_heatmap + loss_box, "loss_heatmap": loss_heatmap, "loss_box": loss_box}

    @torch.no_grad()
    def decode(self, out: Mapping[str, Any], score_threshold: float = 0.0, top_k: int = 100
               ) -> list[dict[str, Tensor]]:
        """Per-frame "boxes" (N, 7 or 9) ego, "scores" (N,), "labels" (N,), best first."""
        return decode_boxes(out["heatmap"], out["box"], self.config, score_threshold, top_k)


class SCKDTeacher(CenterPointDetector):
    """SCKD teacher: F_L, F_R -> dropout gate (training) -> AF (or concat) -> (B, 2C, H, W)."""

    modalities = ("lidar", "radar")

    def __init__(self, name: str, config: DetectorConfig) -> None:
        super().__init__(name, config, 2 * config.encoder_channels)
        self.lidar_encoder = _encoder(config, config.lidar_features)
        self.radar_encoder = _encoder(config, config.radar_features)
        self.fusion = AdaptiveFusion(config.encoder_channels) if config.fusion == "af" else None

    def encode(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        bsz = int(batch["batch_size"])
        f_lidar = self.lidar_encoder(batch.get("lidar"), bsz)  # (B, C, H, W)
        f_radar = self.radar_encoder(batch.get("radar"), bsz)  # (B, C, H, W)
        g_lidar, g_radar = f_lidar, f_radar
        if self.training and self.config.p_drop > 0:
            keep_l, keep_r = modality_dropout_gate(bsz, self.config.p_drop, self.config.p_lidar,
                                                   device=f_lidar.device)
            g_lidar = f_lidar * keep_l.view(-1, 1, 1, 1)
            g_radar = f_radar * keep_r.view(-1, 1, 1, 1)
        if self.fusion is not None:
            fused, _ = self.fusion(g_lidar, g_radar)
        else:
            fused = torch.cat([g_lidar, g_radar], dim=1)
        # Taps: F_L / F_R are the encoder outputs (pre-gate; identical in eval, where the
        # frozen teacher serves distillation), F_fusion is what the backbone sees.
        return fused, {"lidar": f_lidar, "radar": f_radar, "fusion": fused}


class SingleModalityDetector(CenterPointDetector):
    """One pillar encoder ("lidar" or "radar") straight into the backbone."""

    def __init__(self, name: str, config: DetectorConfig, modality: str) -> None:
        super().__init__(name, config, config.encoder_channels)
        self.modality = modality
        self.modalities = (modality,)
        n_feat = config.lidar_features if modality == "lidar" else config.radar_features
        self.encoder = _encoder(config, n_feat)
        layers = config.radar_align_layers if modality == "radar" else 0
        self.align = RadarAlign(config.encoder_channels, layers) if layers else None

    def encode(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        f = self.encoder(batch.get(self.modality), int(batch["batch_size"]))  # (B, C, H, W)
        if self.align is None:
            return f, {self.modality: f}
        # The tap is the aligned map (what the backbone sees and what distillation pulls on).
        aligned = self.align(f)
        return aligned, {self.modality: aligned, f"{self.modality}_raw": f}


@register_model("sckd-teacher")
def sckd_teacher(**cfg: Any) -> SCKDTeacher:
    """SCKD LiDAR+radar teacher (Adaptive Fusion + modality dropout)."""
    return SCKDTeacher("sckd-teacher", DetectorConfig(**cfg))


@register_model("lidar-only")
def lidar_only(**cfg: Any) -> SingleModalityDetector:
    """LiDAR-only detector (IMKD-style or SCKD Table 5 "L-only" teacher)."""
    return SingleModalityDetector("lidar-only", DetectorConfig(**cfg), "lidar")


@register_model("radar-only")
def radar_only(**cfg: Any) -> SingleModalityDetector:
    """Radar-only detector: the SECOND-like baseline and the SCKD student."""
    return SingleModalityDetector("radar-only", DetectorConfig(**cfg), "radar")
