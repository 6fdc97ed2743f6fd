"""CenterPoint training targets and losses, vectorised over every box of a batch.

Target encoding (per GT box centred in the head cell (ix, iy) = floor of its grid position):
    box code = [cx - ix, cy - iy, z_m, log l, log w, log h, sin yaw, cos yaw (, vx, vy)]
with cx, cy the centre in head-grid cells. The heatmap is the CenterNet Gaussian splat, peak
exactly 1.0 at the centre cell (the focal loss' positives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .config import DetectorConfig


@dataclass(frozen=True)
class CenterTargets:
    """Dense heatmap targets plus the sparse regression targets at the centre cells."""

    heatmap: Tensor  # (B, K, Ho, Wo) Gaussian splats in [0, 1]
    heatmap_weight: Tensor  # (B, 1, Ho, Wo) 0 inside ignore bands, else 1
    index: Tensor  # (P,) int64 flat index b * Ho * Wo + iy * Wo + ix of each centre cell
    box: Tensor  # (P, R) box code at that cell
    box_weight: Tensor  # (P,) per-box regression weight
    labels: Tensor  # (P,) int64 class of each positive


def gaussian_radius(length_cells: Tensor, width_cells: Tensor, min_overlap: float) -> Tensor:
    """CenterNet's radius: the largest centre shift keeping IoU >= min_overlap (3 cases, min).

    Same formula as CenterPoint's ``gaussian_radius((length, width), min_overlap)``; sizes in
    head-grid cells, any shape.
    """
    h, w, o = length_cells, width_cells, min_overlap
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _splat(
    grid_hw: tuple[int, int], centre_xy: Tensor, radius: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian window cells of every box: (n, S) flat cell ids, values and validity.

    ``centre_xy`` (n, 2) int64 head cells, ``radius`` (n,) int64; S = (2 * max_r + 1) ** 2.
    sigma = diameter / 6 as in CenterNet's ``gaussian2D``.
    """
    h, w = grid_hw
    r_max = int(radius.max()) if radius.numel() else 0
    steps = torch.arange(-r_max, r_max + 1, device=centre_xy.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)  # (1, S)
    sigma = (2 * radius + 1).float().unsqueeze(1) / 6  # (n, 1)
    value = torch.exp(-(dx**2 + dy**2).float() / (2 * sigma**2))  # (n, S)
    x, y = centre_xy[:, :1] + dx, centre_xy[:, 1:] + dy  # (n, S)
    r = radius.unsqueeze(1)
    valid = (dx.abs() <= r) & (dy.abs() <= r) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    # CenterNet zeroes the float-eps tail of the kernel.
    valid &= value >= torch.finfo(torch.float32).eps
    return y.clamp(0, h - 1) * w + x.clamp(0, w - 1), value, valid


def _boxes(value: object, width: int, device: torch.device, what: str) -> Tensor:
    """(n, >= width) array-like -> (n, width) float32 tensor; extra columns are ignored."""
    v = torch.as_tensor(value if value is not None else (), dtype=torch.float32, device=device)
    v = v.reshape(0, width) if v.numel() == 0 else v
    if v.ndim != 2 or v.shape[1] < width:  # noqa: PLR2004
        raise ValueError(f"{what} must be (n, {width}), got shape {tuple(v.shape)}")
    return v[:, :width]


def _gather_frames(
    targets: Sequence[Mapping[str, Tensor]], box_dim: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """All frames concatenated: boxes, frame index, labels, weights, ignore boxes, their frame."""
    keys = ("box", "frame", "label", "weight", "ign", "ifr")
    cols: dict[str, list[Tensor]] = {k: [] for k in keys}
    for b, t in enumerate(targets):
        box = _boxes(t.get("boxes"), box_dim, device, "boxes")
        n = box.shape[0]
        label = torch.as_tensor(t.get("labels", ()), dtype=torch.long, device=device).reshape(-1)
        w = t.get("weights")
        weight = (torch.ones(n, device=device) if w is None
                  else torch.as_tensor(w, dtype=torch.float32, device=device).reshape(-1))
        if not label.shape[0] == n == weight.shape[0]:
            raise ValueError(f"frame {b}: {n} boxes but {label.shape[0]} labels / "
                             f"{weight.shape[0]} weights")
        ign = _boxes(t.get("ignore"), 7, device, "ignore")
        cols["box"].append(box)
        cols["label"].append(label)
        cols["weight"].append(weight)
        cols["frame"].append(torch.full((n,), b, dtype=torch.long, device=device))
        cols["ign"].append(ign)
        cols["ifr"].append(torch.full((ign.shape[0],), b, dtype=torch.long, device=device))
    if not targets:
        raise ValueError("targets must hold one dict per frame (got none)")
    box, frame, label, weight, ign, ifr = (torch.cat(cols[k]) for k in keys)
    return box, frame, label, weight, ign, ifr


def build_targets(
    targets: Sequence[Mapping[str, Tensor]], cfg: DetectorConfig, device: torch.device | str = "cpu"
) -> CenterTargets:
    """Encode per-frame GT into CenterPoint targets on the head grid.

    Args:
        targets: one dict per frame: "boxes" (n, 7) [x, y, z, l, w, h, yaw] ego metres/radians,
            (n, 9) with [vx, vy] m/s when cfg.with_velocity; "labels" (n,) int64; optional
            "weights" (n,) regression weights; optional "ignore" (m, 7) boxes whose Gaussian
            window gets heatmap weight 0 (ST3D-style ignore band, never positives).
        cfg: the detector's config (range, head grid, radius rules).
    """
    device = torch.device(device)
    n_cls, code = len(cfg.classes), cfg.box_code_size
    box_dim = 9 if cfg.with_velocity else 7
    w_cells, h_cells = (g // cfg.out_stride for g in cfg.grid_size)
    batch = len(targets)
    x0, y0, _, x1, y1, _ = cfg.point_cloud_range_m
    cell_m = cfg.out_cell_m

    boxes, frame, labels, weights, ignore, ignore_frame = _gather_frames(targets, box_dim, device)
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_cls):
        raise ValueError(f"labels must index cfg.classes (0..{n_cls - 1})")

    # Drop boxes centred outside the BEV range, and degenerate ones (log of the size).
    keep = ((boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
            & (boxes[:, 3:6] > 0).all(1) & torch.isfinite(boxes).all(1))
    boxes, frame, labels, weights = boxes[keep], frame[keep], labels[keep], weights[keep]

    centre = torch.stack([(boxes[:, 0] - x0) / cell_m, (boxes[:, 1] - y0) / cell_m], 1)  # (n, 2)
    centre_int = centre.floor().long().clamp_(min=0)
    centre_int[:, 0].clamp_(max=w_cells - 1)
    centre_int[:, 1].clamp_(max=h_cells - 1)
    radius = _radius(boxes, cfg)

    heatmap = torch.zeros(batch * n_cls * h_cells * w_cells, device=device)
    if boxes.shape[0]:
        cells, value, valid = _splat((h_cells, w_cells), centre_int, radius)
        plane = (frame * n_cls + labels).unsqueeze(1) * (h_cells * w_cells)
        heatmap.scatter_reduce_(0, (plane + cells)[valid], value[valid], reduce="amax")
    heatmap = heatmap.view(batch, n_cls, h_cells, w_cells)

    weight = torch.ones(batch * h_cells * w_cells, device=device)
    ok = (ignore[:, 3:6] > 0).all(1) & torch.isfinite(ignore).all(1)
    ignore, ignore_frame = ignore[ok], ignore_frame[ok]
    if ignore.shape[0]:
        ic = torch.stack([(ignore[:, 0] - x0) / cell_m, (ignore[:, 1] - y0) / cell_m], 1)
        cells, _, valid = _splat((h_cells, w_cells), ic.floor().long(), _radius(ignore, cfg))
        # Cells of boxes centred off-grid are clamped to the border: drop them via validity.
        flat = ignore_frame.unsqueeze(1) * (h_cells * w_cells) + cells
        weight[flat[valid]] = 0.0
    weight = weight.view(batch, 1, h_cells, w_cells)
    # A real object's centre inside an ignore band still counts as a positive.
    weight = torch.where(heatmap.eq(1).any(1, keepdim=True), torch.ones_like(weight), weight)

    yaw = boxes[:, 6]
    parts = [centre - centre_int.float(), boxes[:, 2:3], boxes[:, 3:6].log(),
             yaw.sin().unsqueeze(1), yaw.cos().unsqueeze(1)]
    if cfg.with_velocity:
        parts.append(boxes[:, 7:9])
    box = torch.cat(parts, 1) if boxes.shape[0] else torch.zeros(0, code, device=device)
    index = frame * (h_cells * w_cells) + centre_int[:, 1] * w_cells + centre_int[:, 0]
    return CenterTargets(heatmap, weight, index, box, weights, labels)


def _radius(boxes: Tensor, cfg: DetectorConfig) -> Tensor:
    """Integer Gaussian radius (head cells) per box, at least cfg.min_gaussian_radius."""
    r = gaussian_radius(boxes[:, 3] / cfg.out_cell_m, boxes[:, 4] / cfg.out_cell_m,
                        cfg.gaussian_min_overlap)
    return r.floor().long().clamp(min=cfg.min_gaussian_radius)


def gaussian_focal_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """CenterNet focal loss (alpha=2, beta=4), summed and divided by the number of positives.

    Args:
        logits: (B, K, Ho, Wo) raw heatmap logits.
        target: (B, K, Ho, Wo) Gaussian targets; cells equal to 1 are positives.
        weight: broadcastable to target; 0 removes a cell from the loss (ignore bands).
    """
    pos = target.eq(1).float()
    # logsigmoid instead of log(clamp(sigmoid)): finite for any logit and keeps its gradient.
    prob = logits.sigmoid()
    pos_loss = -F.logsigmoid(logits) * (1 - prob) ** 2 * pos
    neg_loss = -F.logsigmoid(-logits) * prob**2 * (1 - target) ** 4 * (1 - pos)
    return ((pos_loss + neg_loss) * weight).sum() / pos.sum().clamp(min=1.0)


def box_regression_loss(box_map: Tensor, t: CenterTargets, code_weights: Tensor) -> Tensor:
    """Weighted L1 on the box code at the centre cells, divided by the number of positives.

    Args:
        box_map: (B, R, Ho, Wo) predicted box code.
        t: targets from :func:`build_targets`.
        code_weights: (R,) per-code-entry weights.
    """
    r = box_map.shape[1]
    pred = box_map.permute(0, 2, 3, 1).reshape(-1, r)[t.index]  # (P, R)
    l1 = (pred - t.box).abs() * code_weights * t.box_weight.unsqueeze(1)
    # Sum over P keeps the graph attached to box_map even with no positives (loss = 0, grad 0).
    return l1.sum() / max(t.index.numel(), 1)
