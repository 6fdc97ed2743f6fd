"""The per-frame decode and host-loop greedy NMS that the batched, on-device versions replaced.

Kept unchanged as the oracle of tests/models/test_batched_nms.py (the batched code must keep
the same boxes, in the same order, with the same scores) and as the baseline that
benchmarks/decode_nms.py times in the same run. Not used by the pipeline.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .iou import boxes_iou_bev

if TYPE_CHECKING:
    from .config import DetectorConfig

_CLASS_OFFSET_M = 1.0e4


def nms_bev_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """The previous `nms_bev`: greedy rotated NMS over a host copy of the IoU matrix.

    Args:
        boxes: (N, 7+) boxes.
        scores: (N,) scores.
        iou_threshold: suppression threshold on BEV IoU.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError("boxes and scores must have the same length")
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    over = (boxes_iou_bev(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()  # (N, N)
    suppressed = over[0] & False  # (N,) all False, numpy bool
    keep = []
    # O(N) steps of O(N) numpy work: the pairwise IoU above is the expensive, vectorised part.
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def decode_boxes_reference(
    heatmap: Tensor,
    box: Tensor,
    cfg: DetectorConfig,
    score_threshold: float = 0.0,
    top_k: int = 100,
) -> list[dict[str, Tensor]]:
    """The previous `decode_boxes`: decode, then threshold and NMS one frame at a time.

    Args:
        heatmap: (B, K, Ho, Wo) logits.
        box: (B, R, Ho, Wo) box code [dx, dy, z, log l, log w, log h, sin, cos (, vx, vy)].
        cfg: detector config (range, head cell size, nms_iou_bev).
        score_threshold: keep peaks with sigmoid score > this (0.0 keeps every peak).
        top_k: peaks kept per frame before the threshold and NMS.

    Returns:
        One dict per frame: "boxes" (N, 7 or 9) float32 [x, y, z, l, w, h, yaw (, vx, vy)],
        "scores" (N,) float32, "labels" (N,) int64, sorted by descending score.
    """
    heatmap, box = heatmap.detach().float(), box.detach().float()
    batch, n_cls, h, w = heatmap.shape
    x0, y0 = cfg.point_cloud_range_m[:2]
    cell_m = cfg.out_cell_m
    heat = heatmap.sigmoid()
    # A cell is a peak if it is the max of its 3x3 neighbourhood (CenterNet's cheap NMS).
    peak = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat.masked_fill(~peak, -1.0)  # non-peaks sort last and never pass the threshold
    k = min(top_k, n_cls * h * w)
    scores, flat = heat.view(batch, -1).topk(k, dim=1)  # (B, k), sorted descending
    labels = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat - labels * h * w
    iy, ix = torch.div(cell, w, rounding_mode="floor"), cell % w
    code = box.flatten(2).gather(2, cell.unsqueeze(1).expand(-1, box.shape[1], -1))  # (B, R, k)
    code = code.transpose(1, 2)  # (B, k, R)

    x = (ix.float() + code[..., 0]) * cell_m + x0
    y = (iy.float() + code[..., 1]) * cell_m + y0
    dims = code[..., 3:6].clamp(max=10.0).exp()  # clamp: a wild logit must not give inf sizes
    yaw = torch.atan2(code[..., 6], code[..., 7])
    yaw = torch.where(yaw >= torch.pi, yaw - 2 * torch.pi, yaw)  # canonical [-pi, pi)
    parts = [x.unsqueeze(-1), y.unsqueeze(-1), code[..., 2:3], dims, yaw.unsqueeze(-1)]
    if cfg.with_velocity:
        parts.append(code[..., 8:10])
    boxes = torch.cat(parts, -1)  # (B, k, 7 or 9)

    results = []
    for b in range(batch):
        keep = scores[b] > max(score_threshold, 0.0)
        bx, sc, lb = boxes[b][keep], scores[b][keep], labels[b][keep]
        if cfg.nms_iou_bev is not None and bx.shape[0] > 1:
            shifted = bx[:, :7].clone()
            shifted[:, 0] += lb.float() * _CLASS_OFFSET_M
            idx = nms_bev_reference(shifted, sc, cfg.nms_iou_bev)  # descending score order
            bx, sc, lb = bx[idx], sc[idx], lb[idx]
        results.append({"boxes": bx.contiguous(), "scores": sc.contiguous(), "labels": lb.long()})
    return results
