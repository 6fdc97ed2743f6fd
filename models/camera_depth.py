"""LiDAR -> camera depth supervision for the IMKD student's depth distribution (BEVDepth's loss).

IMKD builds its camera branch on BEVDepth (METHODS.md A2.1): the per-pixel depth distribution
D(u, v) that lifts image features into the BEV grid learns from LiDAR depth during training
and needs no LiDAR at test time. Without it, D learns only from the detection loss through the
splat, which says little about where along a ray an object is. Ours:

* target: the frame's LiDAR points (already augmented, like `camera_to_ego`) projected into
  each camera; per feature cell, the depth (along the optical axis) of its nearest return,
  as BEVDepth keeps the minimum of each downsampling patch, then its bin among the model's
  uniform depth bins (-1: no return in the cell, or outside the bins);
* loss: cross-entropy of D at the target bin, averaged over the cells that have one.
"""
from __future__ import annotations

import torch
from torch import Tensor


def lidar_depth_bins(lidar: Tensor, intrinsics: Tensor, camera_to_ego: Tensor,
                     image_hw: tuple[int, int], feat_hw: tuple[int, int],
                     bins: tuple[tuple[float, float], int]) -> Tensor:
    """The depth bin of the nearest LiDAR return in every feature cell of every camera.

    Args:
        lidar: (P, 1 + 3+) [b, x, y, z, ...] ego-frame points of the batch (batch index first).
        intrinsics: (B, N, 3, 3) K of the fed image (pixels, centres at integers).
        camera_to_ego: (B, N, 4, 4) optical frame (x right, y down, z forward) -> ego.
        image_hw: (H, W) of the fed image; feat_hw: (h, w) of the depth map.
        bins: (depth_range_m, D): D uniform bins over the range (metres along the optical
            axis), as the camera branch's (`CameraBEV`) depth distribution has them.

    Returns:
        (B, N, h, w) int64 bin index, -1 where the cell has no return inside the bins.
    """
    b, n = intrinsics.shape[:2]
    h, w = feat_hw
    img_h, img_w = image_hw
    nearest = torch.full((b * n * h * w,), float("inf"), device=lidar.device)
    ego_to_cam = torch.linalg.inv(camera_to_ego.float())  # (B, N, 4, 4)
    cams = torch.arange(n, device=lidar.device)
    for i in range(b):
        xyz = lidar[lidar[:, 0] == i, 1:4].float()  # (P_i, 3) ego
        cam = torch.einsum("nij,pj->pni", ego_to_cam[i, :, :3, :3], xyz) \
            + ego_to_cam[i, :, :3, 3]  # (P_i, N, 3) optical frame
        z = cam[..., 2]
        pix = torch.einsum("nij,pnj->pni", intrinsics[i].float(), cam)  # (P_i, N, 3)
        zs = z.clamp(min=1e-3)
        col = torch.floor((pix[..., 0] / zs + 0.5) * (w / img_w)).long()  # (P_i, N)
        row = torch.floor((pix[..., 1] / zs + 0.5) * (h / img_h)).long()
        ok = (z > 1e-3) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        flat = ((i * n + cams.view(1, n)) * h + row) * w + col  # (P_i, N)
        nearest.scatter_reduce_(0, flat[ok], z[ok], reduce="amin")
    (d0, d1), n_bins = bins
    k = torch.floor((nearest - d0) / ((d1 - d0) / n_bins))
    valid = torch.isfinite(nearest) & (k >= 0) & (k < n_bins)
    return torch.where(valid, k, torch.full_like(k, -1)).long().view(b, n, h, w)


def depth_loss(depth: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy of the depth distribution at the target bins.

    Args:
        depth: (B, N, D, h, w) per-pixel probabilities (softmax over D).
        bins: (B, N, h, w) target bin, -1 = no target.

    Returns:
        Mean -log D[target] over the cells with a target; 0 (with a graph) if none has one.
    """
    valid = bins >= 0  # (B, N, h, w)
    if not bool(valid.any()):
        return depth.sum() * 0.0
    probs = depth.permute(0, 1, 3, 4, 2)[valid]  # (V, D)
    picked = probs.gather(1, bins[valid].unsqueeze(1)).squeeze(1)  # (V,)
    return -torch.log(picked.clamp(min=1e-6)).mean()
