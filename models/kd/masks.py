"""Where feature distillation looks: masks over BEV cells, (B, 1, H, W) in [0, 1].

- `box_mask`: the foreground Gaussians of the batch's target boxes (pseudo-labels and/or GT),
  i.e. CenterPoint's heatmap target, max over classes (FG-masked KD as in BEVDistill/CRKD).
- `teacher_mask`: the frozen teacher's own heatmap probability, max over classes: its proposals,
  soft (RadarDistill's proposal-based regions, without the hard threshold unless one is given).
- `activation_mask`: cells where the teacher's feature map is active (channel mean of |F| above
  a share of the frame's maximum): RadarDistill's activation-based regions.
- `occupancy_mask`: cells where the student's own encoder map is non-zero, i.e. where it has
  radar returns: the only cells where it has evidence to reproduce the teacher's features from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdpipe.models.targets import CenterTargets


def fit_to(mask: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resample a (B, 1, h, w) mask onto an (H, W) grid: nearest when finer, max when coarser
    (a coarse cell is foreground when any of its fine cells is)."""
    if tuple(mask.shape[-2:]) == hw:
        return mask
    if mask.shape[-2] >= hw[0]:
        return F.adaptive_max_pool2d(mask, hw)
    return F.interpolate(mask, size=hw, mode="nearest")


def box_mask(targets: CenterTargets) -> Tensor:
    """(B, 1, Ho, Wo): Gaussian foreground of the target boxes, 1 at their centres."""
    return targets.heatmap.amax(1, keepdim=True)


def teacher_mask(teacher_heatmap: Tensor, threshold: float = 0.0) -> Tensor:
    """(B, 1, Ho, Wo): the teacher's max class probability; cells below `threshold` are 0."""
    p = teacher_heatmap.detach().sigmoid().amax(1, keepdim=True)  # (B, 1, Ho, Wo)
    return torch.where(p >= threshold, p, torch.zeros_like(p))


def activation_mask(feature: Tensor, threshold: float) -> Tensor:
    """(B, 1, H, W) 0/1: channel-mean |F| >= threshold x the frame's largest such value."""
    a = feature.detach().abs().mean(1, keepdim=True)  # (B, 1, H, W)
    peak = a.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    return (a >= threshold * peak).to(feature.dtype)


def occupancy_mask(encoder_map: Tensor) -> Tensor:
    """(B, 1, H, W) 0/1: cells whose pillar features are not all zero (the scatter leaves
    empty pillars at exactly 0)."""
    return (encoder_map.detach() != 0).any(1, keepdim=True).to(encoder_map.dtype)
