"""Camera branch of the IMKD student: a small CNN, a per-pixel depth distribution, LSS lift-splat.

The IMKD paper (METHODS.md A2.1) describes a BEVDepth/LSS-style camera branch: image features
F_I, a context map C and a per-pixel depth distribution D(u, v) = Softmax(Conv(F_I)(u, v)).
Each feature pixel is lifted to D points along its ray (one per depth bin), carrying
D(u, v)[k] * C(u, v), and the points are sum-pooled into the BEV grid the radar encoder uses
("splat"). The grid convention is the pillar encoder's: (B, C, H, W), H indexing y from y0,
W indexing x from x0 (`kdpipe.models.encoders`).

Geometry comes from the batch, never from the weights: per camera the intrinsics K of the
image as fed (pixels of the stored, downscaled image) and `camera_to_ego` (4, 4), which the
training loop has already multiplied by the frame's flip/scale augmentation, so the lifted
points land where the augmented LiDAR and radar are (BEVDet's BEV data augmentation).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

_BN = {"eps": 1e-3, "momentum": 0.01}


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out, **_BN), nn.ReLU(inplace=True)]


class ImageEncoder(nn.Module):
    """RGB (B*N, 3, H, W) -> depth logits (B*N, D, H/4, W/4) and context (B*N, C, H/4, W/4).

    CPU-sized: two stride-2 stages (16 and `width` channels) and one 3x3 refinement, then a 1x1
    conv emitting D depth logits and C context channels together (BEVDepth's DepthNet in small).
    """

    stride = 4

    def __init__(self, width: int, depth_bins: int, context_channels: int) -> None:
        super().__init__()
        self.depth_bins = depth_bins
        self.body = nn.Sequential(*_conv(3, 16, 2), *_conv(16, width, 2), *_conv(width, width))
        self.out = nn.Conv2d(width, depth_bins + context_channels, 1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.out(self.body(images))  # (B*N, D + C, h, w)
        return x[:, :self.depth_bins], x[:, self.depth_bins:]


def frustum_points_ego(intrinsics: Tensor, camera_to_ego: Tensor, depths_m: Tensor,
                       feat_hw: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """Ego coordinates of every (depth bin, feature pixel) of every camera.

    Args:
        intrinsics: (B, N, 3, 3) K of the fed image (pixels).
        camera_to_ego: (B, N, 4, 4) optical camera frame (x right, y down, z forward) -> ego.
        depths_m: (D,) depth of each bin centre along the optical axis (metres).
        feat_hw: (h, w) of the feature map; image_hw: (H, W) of the fed image.

    Returns:
        (B, N, D, h, w, 3) ego-frame points (metres).
    """
    h, w = feat_hw
    img_h, img_w = image_hw
    dev, dt = intrinsics.device, intrinsics.dtype
    # Centre of each feature cell in image pixel coordinates (pixel centres at integers).
    u = (torch.arange(w, device=dev, dtype=dt) + 0.5) * (img_w / w) - 0.5
    v = (torch.arange(h, device=dev, dtype=dt) + 0.5) * (img_h / h) - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], -1)  # (h, w, 3)
    rays = torch.einsum("bnij,hwj->bnhwi", torch.linalg.inv(intrinsics), pix)  # (B, N, h, w, 3)
    cam = rays.unsqueeze(2) * depths_m.to(dt).view(1, 1, -1, 1, 1, 1)  # z = depth: K^-1 has z=1
    rot, trans = camera_to_ego[..., :3, :3], camera_to_ego[..., :3, 3]
    ego = torch.einsum("bnij,bndhwj->bndhwi", rot, cam)
    return ego + trans.view(*trans.shape[:2], 1, 1, 1, 3)


def splat(features: Tensor, points_ego: Tensor, point_cloud_range_m: tuple[float, ...],
          cell_m: float, grid_hw: tuple[int, int]) -> Tensor:
    """Sum-pool lifted features into the BEV grid (LSS "splat").

    Args:
        features: (B, N, D, h, w, C) lifted features.
        points_ego: (B, N, D, h, w, 3) their ego coordinates.
        point_cloud_range_m: (x0, y0, z0, x1, y1, z1); points outside contribute nothing.
        cell_m: BEV cell edge; grid_hw: (H, W).

    Returns:
        (B, C, H, W) camera BEV features.
    """
    b, c = features.shape[0], features.shape[-1]
    gh, gw = grid_hw
    x0, y0, z0, _, _, z1 = point_cloud_range_m
    feats = features.reshape(-1, c)  # (P, C)
    xyz = points_ego.reshape(-1, 3)
    batch_idx = torch.arange(b, device=feats.device).view(b, 1).expand(
        b, feats.shape[0] // b).reshape(-1)
    ix = torch.floor((xyz[:, 0] - x0) / cell_m).long()
    iy = torch.floor((xyz[:, 1] - y0) / cell_m).long()
    keep = ((ix >= 0) & (ix < gw) & (iy >= 0) & (iy < gh) & (xyz[:, 2] >= z0) & (xyz[:, 2] < z1))
    flat = (batch_idx[keep] * gh + iy[keep]) * gw + ix[keep]
    bev = feats.new_zeros(b * gh * gw, c).index_add_(0, flat, feats[keep])
    return bev.view(b, gh, gw, c).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


class CameraBEV(nn.Module):
    """Images + geometry -> camera BEV map (B, C, H, W) on the radar encoder's grid.

    Args:
        out_channels: C (the radar encoder's channels, so fusion sees equal maps).
        width: CNN width; depth_bins / depth_range_m: the categorical depth (uniform bins).
        point_cloud_range_m / cell_m: the BEV grid.
    """

    def __init__(self, out_channels: int, width: int, depth_bins: int,
                 depth_range_m: tuple[float, float], point_cloud_range_m: tuple[float, ...],
                 cell_m: float) -> None:
        super().__init__()
        self.encoder = ImageEncoder(width, depth_bins, out_channels)
        d0, d1 = depth_range_m
        step = (d1 - d0) / depth_bins
        self.register_buffer("depths_m", d0 + step * (torch.arange(depth_bins) + 0.5),
                             persistent=False)
        self.range_m = tuple(point_cloud_range_m)
        self.cell_m = cell_m
        x0, y0, _, x1, y1, _ = self.range_m
        self.grid_hw = (round((y1 - y0) / cell_m), round((x1 - x0) / cell_m))
        self.out_channels = out_channels
        # One BEV conv after the splat: depth-smeared rays are spread along their direction.
        self.bev = nn.Sequential(*_conv(out_channels, out_channels))

    def forward(self, images: Tensor | None, intrinsics: Tensor | None,
                camera_to_ego: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """images (B, N, 3, H, W) uint8 or float in [0, 255]; None -> an all-zero map.

        Returns the BEV map (B, C, H, W) and the depth distribution (B, N, D, h, w) (or None).
        """
        gh, gw = self.grid_hw
        if images is None or intrinsics is None or camera_to_ego is None or images.shape[1] == 0:
            return self.depths_m.new_zeros(batch_size, self.out_channels, gh, gw), None
        b, n, _, img_h, img_w = images.shape
        x = images.reshape(b * n, 3, img_h, img_w).float() / 255.0 - 0.5
        depth_logits, context = self.encoder(x)  # (B*N, D, h, w), (B*N, C, h, w)
        h, w = depth_logits.shape[-2:]
        depth = depth_logits.softmax(1).view(b, n, -1, h, w)  # (B, N, D, h, w)
        ctx = context.view(b, n, 1, -1, h, w)  # (B, N, 1, C, h, w)
        lifted = (depth.unsqueeze(3) * ctx).permute(0, 1, 2, 4, 5, 3)  # (B, N, D, h, w, C)
        pts = frustum_points_ego(intrinsics.float(), camera_to_ego.float(), self.depths_m,
                                 (h, w), (img_h, img_w))
        bev = splat(lifted, pts, self.range_m, self.cell_m, self.grid_hw)
        return self.bev(bev), depth
