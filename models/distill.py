"""SCKD feature distillation (METHODS.md A1.3): adapters and the LRFD / FRFD losses.

- LRFD: MSE(Adapter_L(F_R^S), F_L^T): the student's radar BEV map, through one conv adapter, is
  pulled toward the teacher's LiDAR BEV map.
- FRFD: MSE(Concat[Adapter_L'(F_R^S), Adapter_R'(F_R^S)], F_fusion^T) with two separate adapters
  (one adapter, "FRFD*", maps straight to the 2C fused channels).
Both tap the BEV maps before the 2D backbone; `models/kd/` registers them as the methods "lrfd"
and "frfd" beside the other feature-distillation methods, and `KDLoss` sums them. The paper's
weights (alpha = beta = 3e-4) only make sense for a summed squared error (a mean over ~0.5 M
elements would make the terms vanish), so the MSE here is summed over (C, H, W) and averaged
over the batch: our reading, not stated.
"""
from __future__ import annotations

from typing import TypedDict, Unpack

import torch
from torch import nn


class FeatureAdapter(nn.Module):
    """"A simple convolution layer" (kernel size not stated: 3x3 lets a radar cell borrow from
    its neighbours, which LiDAR-dense targets around sparse radar returns need)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        return self.conv(x)


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared error summed over (C, H, W), mean over the batch; teacher gets no gradient."""
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)} vs teacher "
                         f"{tuple(teacher.shape)}")
    return (student - teacher.detach()).pow(2).flatten(1).sum(1).mean()


class AdapterOptions(TypedDict, total=False):
    """frfd_adapters: 2 (FRFD: L' and R', default) or 1 (FRFD*: one adapter to the fused
    channels); kernel: the adapters' conv kernel size (default 3)."""

    frfd_adapters: int
    kernel: int


class SCKDAdapters(nn.Module):
    """The adapters one SCKD student needs, sized from the student and teacher channels."""

    def __init__(self, c_student: int, c_lidar: int, c_fusion: int, *, lrfd: bool, frfd: bool,
                 **options: Unpack[AdapterOptions]) -> None:
        super().__init__()
        frfd_adapters, kernel = options.get("frfd_adapters", 2), options.get("kernel", 3)
        self.lidar = FeatureAdapter(c_student, c_lidar, kernel) if lrfd else None
        self.fusion: nn.ModuleList | None = None
        if frfd:
            if frfd_adapters == 2:
                if c_fusion % 2:
                    raise ValueError(f"fusion channels {c_fusion} cannot split into L' and R'")
                self.fusion = nn.ModuleList([FeatureAdapter(c_student, c_fusion // 2, kernel),
                                             FeatureAdapter(c_student, c_fusion // 2, kernel)])
            elif frfd_adapters == 1:
                self.fusion = nn.ModuleList([FeatureAdapter(c_student, c_fusion, kernel)])
            else:
                raise ValueError("frfd_adapters must be 1 (FRFD*) or 2 (FRFD)")

    def lrfd(self, f_student: torch.Tensor, f_lidar: torch.Tensor) -> torch.Tensor:
        assert self.lidar is not None
        return feature_mse(self.lidar(f_student), f_lidar)

    def frfd(self, f_student: torch.Tensor, f_fusion: torch.Tensor) -> torch.Tensor:
        assert self.fusion is not None
        return feature_mse(torch.cat([a(f_student) for a in self.fusion], 1), f_fusion)
