"""SCKD teacher fusion: the modality dropout gate (Eqs. 6-7) and Adaptive Fusion (Eqs. 3-5)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def modality_dropout_gate(
    batch_size: int,
    p_drop: float,
    p_lidar: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample keep gates (G_L, G_R), each (B,) float in {0, 1}.

    SCKD Eq. 6-7 with p1, p2 ~ U(0, 1):
        G_L = 1(p1 > P_drop or p2 > P_L),  G_R = 1(p1 > P_drop or p2 <= P_L).
    So with probability P_drop one modality is dropped, LiDAR with probability P_L of that
    (0.2 * 0.2 = 0.04) and radar otherwise (0.2 * 0.8 = 0.16); never both. Training only: the
    caller decides (the model only calls this in train mode).
    """
    p1 = torch.rand(batch_size, generator=generator, device=device)
    p2 = torch.rand(batch_size, generator=generator, device=device)
    keep_any = p1 > p_drop
    g_lidar = (keep_any | (p2 > p_lidar)).float()
    g_radar = (keep_any | (p2 <= p_lidar)).float()
    return g_lidar, g_radar


class AdaptiveFusion(nn.Module):
    """F_fusion = Concat(W_L * F_L, W_R * F_R) with spatial weights from Softmax(BN(Conv(F_mix))).

    F_mix = Concat(AvgPool(F_L), AvgPool(F_R)). The paper does not state the pooling kernel, and
    its Fig. 3 shows a spatial "Weight Map", so the pool must keep the resolution: we use a 3x3,
    stride-1, padded average (count_include_pad=False so border cells are not biased towards 0),
    i.e. a local context smoother rather than a global pool. The conv is 3x3 for the same reason
    (a little context per weight). Softmax runs over the 2 modality channels, so W_L + W_R = 1
    at every cell.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.conv = nn.Conv2d(2 * channels, 2, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(2, eps=1e-3, momentum=0.01)

    def forward(self, f_lidar: Tensor, f_radar: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) x 2 -> F_fusion (B, 2C, H, W) and weights (B, 2, H, W) [W_L, W_R]."""
        f_mix = torch.cat([self.pool(f_lidar), self.pool(f_radar)], dim=1)  # (B, 2C, H, W)
        weights = torch.softmax(self.norm(self.conv(f_mix)), dim=1)  # (B, 2, H, W)
        fused = torch.cat([weights[:, :1] * f_lidar, weights[:, 1:] * f_radar], dim=1)
        return fused, weights
