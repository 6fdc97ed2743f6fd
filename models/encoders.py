"""Dynamic pillar encoder: points -> dense BEV map, in plain PyTorch (no spconv, no torch_scatter).

"Dynamic" (as in OpenPCDet's DynamicPillarVFE): every point in range is used, no cap on points
per pillar and no fixed pillar count, so a 30k-point LiDAR sweep and a 300-point radar scan go
through the same code without padding. Pillar statistics use ``index_add_`` over a dense
(B * H * W) buffer; that buffer is at most a few MB at 0.4 m, cheaper than ``torch.unique``.

Grid convention: the BEV map is (B, C, H, W) with H indexing y (row 0 at y0, the right-most
strip in the ego frame) and W indexing x (column 0 at x0, nearest the sensor).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Extra per-point features: 3 offsets to the pillar's point mean + 2 to the pillar centre (x, y).
_EXTRA_FEATURES = 5


class PointNorm(nn.BatchNorm1d):
    """BatchNorm over points that tolerates < 2 points in training by using running stats.

    A frame batch with a single radar point is legal input; plain BatchNorm1d raises on it.
    """

    def forward(self, x: Tensor) -> Tensor:  # (N, C)
        if self.training and x.shape[0] < 2:  # noqa: PLR2004
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        return super().forward(x)


class DynamicPillarEncoder(nn.Module):
    """Points (N, 1 + F) rows [batch_index, x, y, z, ...] -> BEV map (B, C, H, W).

    Args:
        in_features: F, raw per-point features after the batch index (x, y, z first).
        out_channels: C.
        hidden_channels: None for one Linear+BN+ReLU, else two layers F' -> hidden -> C.
        point_cloud_range_m: (x0, y0, z0, x1, y1, z1) ego frame; points outside are dropped.
        pillar_size_m: BEV cell edge (metres).
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        hidden_channels: int | None,
        point_cloud_range_m: tuple[float, ...],
        pillar_size_m: float,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_channels = out_channels
        self.pillar_size_m = pillar_size_m
        self.register_buffer(
            "range_m", torch.tensor(point_cloud_range_m, dtype=torch.float32), persistent=False
        )
        x0, y0, _, x1, y1, _ = point_cloud_range_m
        self.grid_w = round((x1 - x0) / pillar_size_m)
        self.grid_h = round((y1 - y0) / pillar_size_m)
        widths = [in_features + _EXTRA_FEATURES]
        widths += [hidden_channels, out_channels] if hidden_channels else [out_channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            # No bias: the norm right after makes it redundant.
            layers += [nn.Linear(c_in, c_out, bias=False),
                       PointNorm(c_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, points: Tensor | None, batch_size: int) -> Tensor:
        """Encode one modality's points of a whole batch.

        Args:
            points: (N, 1 + F) float, or None (modality absent: an empty map comes back).
            batch_size: B; rows with batch_index outside [0, B) are dropped.

        Returns:
            (B, C, H, W) BEV features; empty pillars are 0.
        """
        h, w, c = self.grid_h, self.grid_w, self.out_channels
        device = self.range_m.device
        if points is None or points.shape[0] == 0:
            return torch.zeros(batch_size, c, h, w, device=device)
        if points.ndim != 2 or points.shape[1] != 1 + self.in_features:  # noqa: PLR2004
            raise ValueError(
                f"points must be (N, 1 + {self.in_features}) [batch_index, x, y, z, ...], "
                f"got {tuple(points.shape)}"
            )
        points = points.to(device=device, dtype=torch.float32)
        flat_idx, keep = self._pillar_index(points, batch_size)
        points, flat_idx = points[keep], flat_idx[keep]
        feats = points[:, 1:]  # (N, F)
        xyz_m = feats[:, :3]

        # Offsets to the pillar's point mean (index_add over the dense buffer, then gather back).
        n_cells = batch_size * h * w
        sums = torch.zeros(n_cells, 3, device=device).index_add_(0, flat_idx, xyz_m)
        counts = torch.bincount(flat_idx, minlength=n_cells).clamp_(min=1).unsqueeze(1)
        to_mean = xyz_m - (sums / counts)[flat_idx]  # (N, 3)
        # Offsets to the pillar's geometric centre (x, y only: a pillar spans the whole z range).
        cell = torch.remainder(flat_idx, h * w)
        iy, ix = torch.div(cell, w, rounding_mode="floor"), torch.remainder(cell, w)
        centre_xy = (torch.stack([ix, iy], 1).float() + 0.5) * self.pillar_size_m + self.range_m[:2]
        to_centre = xyz_m[:, :2] - centre_xy  # (N, 2)

        point_feats = self.mlp(torch.cat([feats, to_mean, to_centre], dim=1))  # (N, C)
        # Max over each pillar's points; include_self=False so empty pillars stay exactly 0
        # and occupied ones are the true max even if all its features were negative.
        bev = point_feats.new_zeros(batch_size * h * w, c)  # (B*H*W, C), dtype follows autocast
        bev = bev.scatter_reduce(
            0, flat_idx.unsqueeze(1).expand(-1, c), point_feats, reduce="amax", include_self=False
        )
        return bev.view(batch_size, h, w, c).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    def _pillar_index(self, points: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """Flat cell index b*H*W + iy*W + ix per point, and the in-range mask."""
        r = self.range_m
        b = points[:, 0]
        xyz = points[:, 1:4]
        ix = torch.floor((xyz[:, 0] - r[0]) / self.pillar_size_m).long()
        iy = torch.floor((xyz[:, 1] - r[1]) / self.pillar_size_m).long()
        # Index tests (not only metre tests) so float rounding at x1/y1 can never give ix == W.
        keep = (
            (ix >= 0) & (ix < self.grid_w) & (iy >= 0) & (iy < self.grid_h)
            & (xyz[:, 2] >= r[2]) & (xyz[:, 2] < r[5])
            & (b >= 0) & (b < batch_size) & torch.isfinite(xyz).all(dim=1)
        )
        bi = b.long().clamp(0, batch_size - 1)
        iy, ix = iy.clamp(0, self.grid_h - 1), ix.clamp(0, self.grid_w - 1)
        flat = (bi * self.grid_h + iy) * self.grid_w + ix
        return flat, keep
