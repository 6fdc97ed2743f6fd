"""Rotated box IoU (BEV and 3D) and greedy rotated NMS in plain, vectorised PyTorch.

Boxes are the canonical (N, 7) [x, y, z, l, w, h, yaw] (ego metres, yaw about +z, l along the
heading); extra columns (velocities) are ignored.

Intersection of two rotated rectangles without a per-pair Python loop: the intersection
polygon is convex and its vertices are drawn from (a) corners of A inside B, (b) corners of B
inside A and (c) crossings of A's and B's edges: 4 + 4 + 16 = 24 candidates per pair. Valid
candidates are sorted by angle around their mean and the shoelace formula gives the area;
invalid slots are overwritten with the first valid vertex so they add zero-length edges.
Only pairs whose circumscribed circles overlap are evaluated (the rest have IoU 0), so NMS over
a whole scene does not pay for every far-apart pair.

NMS runs on the boxes' device, batched over frames, with no per-box Python loop and no copy of
the IoU matrix to the host: greedy suppression is solved exactly as the fixed point of "kept
unless a kept, higher-ranked box overlaps it" (`_greedy_keep`).
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPS_M = 1e-6  # inside/on-edge tolerance (metres); far below any box edge length
_PREFILTER_SLACK_M = 1e-3  # batched NMS: widens the circle test (see _upper_over)
# Batched NMS holds a few dense (frames, k, k) float64 arrays: this many entries per step
# (32 MB each) bounds its memory when top_k is large; at k = 100 that is 419 frames per step.
_NMS_ENTRIES_PER_STEP = 1 << 22
_PAIRS_PER_CHUNK = 1 << 15  # bounds peak memory (~24 candidates x float64 per pair)
_CORNER_SIGNS = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]],
                             dtype=torch.float64)  # counter-clockwise


def _check(boxes: Tensor, name: str) -> Tensor:
    if boxes.ndim != 2 or boxes.shape[1] < 7:  # noqa: PLR2004
        raise ValueError(f"{name} must be (N, 7) [x, y, z, l, w, h, yaw], got {tuple(boxes.shape)}")
    return boxes[:, :7].double()


def _corners_bev(b: Tensor) -> Tensor:
    """(P, 7) -> (P, 4, 2) BEV corners, counter-clockwise."""
    local = _CORNER_SIGNS.to(b.device) * b[:, None, 3:5]  # (P, 4, 2)
    c, s = b[:, 6].cos()[:, None], b[:, 6].sin()[:, None]
    x = c * local[..., 0] - s * local[..., 1] + b[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + b[:, None, 1]
    return torch.stack([x, y], -1)


def _inside(points: Tensor, box: Tensor) -> Tensor:
    """(P, K, 2) points, (P, 7) boxes -> (P, K) point lies in (or on) its pair's box."""
    d = points - box[:, None, :2]
    c, s = box[:, 6].cos()[:, None], box[:, 6].sin()[:, None]
    lx = c * d[..., 0] + s * d[..., 1]  # rotate into the box frame by -yaw
    ly = -s * d[..., 0] + c * d[..., 1]
    return (lx.abs() <= box[:, None, 3] / 2 + _EPS_M) & (ly.abs() <= box[:, None, 4] / 2 + _EPS_M)


def _edge_crossings(ca: Tensor, cb: Tensor) -> tuple[Tensor, Tensor]:
    """(P, 4, 2) x 2 -> (P, 16, 2) crossings of every edge pair and (P, 16) validity."""
    p, r = ca[:, :, None], (ca.roll(-1, 1) - ca)[:, :, None]  # (P, 4, 1, 2) edge i of A
    q, s = cb[:, None], (cb.roll(-1, 1) - cb)[:, None]  # (P, 1, 4, 2) edge j of B

    def cross(u: Tensor, v: Tensor) -> Tensor:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denom = cross(r, s)  # (P, 4, 4)
    qp = q - p
    parallel = denom.abs() < 1e-12
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t, u = cross(qp, s) / safe, cross(qp, r) / safe
    tol = 1e-9
    valid = ~parallel & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    pts = p + t[..., None] * r  # (P, 4, 4, 2)
    return pts.reshape(-1, 16, 2), valid.reshape(-1, 16)


def _intersection_area_pairs(a: Tensor, b: Tensor) -> Tensor:
    """(P, 7) x (P, 7) float64 -> (P,) BEV intersection area (m^2) of a[i] with b[i]."""
    ca, cb = _corners_bev(a), _corners_bev(b)
    cross_pts, cross_ok = _edge_crossings(ca, cb)
    pts = torch.cat([ca, cb, cross_pts], 1)  # (P, 24, 2)
    ok = torch.cat([_inside(ca, b), _inside(cb, a), cross_ok], 1)  # (P, 24)
    n_ok = ok.sum(1)
    okf = ok.unsqueeze(-1).double()
    mean = (pts * okf).sum(1) / n_ok.clamp(min=1).unsqueeze(-1)  # (P, 2)
    rel = pts - mean[:, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0]).masked_fill(~ok, float("inf"))
    order = angle.argsort(1)  # valid vertices first, counter-clockwise
    rel = rel.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    ok = ok.gather(1, order)
    rel = torch.where(ok.unsqueeze(-1), rel, rel[:, :1])  # pad with vertex 0: zero-length edges
    nxt = rel.roll(-1, 1)
    area = 0.5 * (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(1)
    return torch.where(n_ok >= 3, area.abs(), torch.zeros_like(area))  # noqa: PLR2004


def _bev_intersection(a: Tensor, b: Tensor) -> Tensor:
    """(N, 7) x (M, 7) float64 -> (N, M) BEV intersection areas."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    if out.numel() == 0:
        return out
    # Circumscribed-circle test: far-apart pairs cannot intersect.
    ra, rb = a[:, 3:5].norm(dim=1) / 2, b[:, 3:5].norm(dim=1) / 2
    dist = torch.cdist(a[:, :2], b[:, :2])
    ia, ib = torch.nonzero(dist <= ra[:, None] + rb[None] + _EPS_M, as_tuple=True)
    for start in range(0, ia.numel(), _PAIRS_PER_CHUNK):
        sa, sb = ia[start:start + _PAIRS_PER_CHUNK], ib[start:start + _PAIRS_PER_CHUNK]
        out[sa, sb] = _intersection_area_pairs(a[sa], b[sb])
    return out


def boxes_iou_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated bird's-eye-view IoU.

    Args:
        boxes_a: (N, 7+) [x, y, z, l, w, h, yaw].
        boxes_b: (M, 7+).

    Returns:
        (N, M) IoU in [0, 1], dtype of boxes_a (computed in float64).
    """
    a, b = _check(boxes_a, "boxes_a"), _check(boxes_b, "boxes_b")
    inter = _bev_intersection(a, b)
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / union.clamp(min=1e-12)
    return iou.clamp(0.0, 1.0).to(boxes_a.dtype)


def boxes_iou_3d(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Rotated 3D IoU of yaw-only boxes: BEV intersection x z-overlap / union of volumes.

    Args:
        boxes_a: (N, 7+) [x, y, z (centre), l, w, h, yaw].
        boxes_b: (M, 7+).

    Returns:
        (N, M) IoU in [0, 1], dtype of boxes_a.
    """
    a, b = _check(boxes_a, "boxes_a"), _check(boxes_b, "boxes_b")
    inter_bev = _bev_intersection(a, b)
    top = torch.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None])
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None])
    inter = inter_bev * (top - bottom).clamp(min=0)
    vol_a, vol_b = a[:, 3:6].prod(1), b[:, 3:6].prod(1)
    iou = inter / (vol_a[:, None] + vol_b[None] - inter).clamp(min=1e-12)
    return iou.clamp(0.0, 1.0).to(boxes_a.dtype)


def _upper_over(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """(B, k, 7+) ranked boxes -> (B, k, k) bool: over[b, i, j] = i < j, both valid and
    BEV IoU(i, j) > threshold.

    The IoU of each pair is computed exactly as `boxes_iou_bev` does (float64, the same pair
    arithmetic, cast to the boxes' dtype before the comparison), so the relation, and with it
    the kept set, is the one a per-frame `boxes_iou_bev` gives.
    """
    batch, k = valid.shape
    b = boxes[..., :7].double()  # (B, k, 7)
    radius = b[..., 3:5].norm(dim=-1) / 2  # (B, k) circumscribed circles
    # Circle test on squared distances (no sqrt, no reduction over a size-2 dim: both are slow
    # on a CPU). The extra millimetre keeps it a superset of boxes_iou_bev's pair set; the pairs
    # it adds lie >= 1 um apart, where the candidate polygon is empty and the IoU exactly 0.
    reach = radius[:, :, None] + radius[:, None, :] + _EPS_M + _PREFILTER_SLACK_M  # (B, k, k)
    dx = b[:, :, None, 0] - b[:, None, :, 0]  # (B, k, k)
    dy = b[:, :, None, 1] - b[:, None, :, 1]
    upper = torch.ones(k, k, dtype=torch.bool, device=b.device).triu(1)  # only j > i is used
    cand = upper & valid[:, :, None] & valid[:, None, :] & (dx * dx + dy * dy <= reach * reach)
    iou = torch.zeros(batch, k, k, dtype=boxes.dtype, device=b.device)  # (B, k, k)
    fb, ia, ib = torch.nonzero(cand, as_tuple=True)  # one host sync: the pair count
    area = b[..., 3] * b[..., 4]  # (B, k)
    for start in range(0, fb.numel(), _PAIRS_PER_CHUNK):
        sl = slice(start, start + _PAIRS_PER_CHUNK)
        f, i, j = fb[sl], ia[sl], ib[sl]
        inter = _intersection_area_pairs(b[f, i], b[f, j])  # (P,)
        union = area[f, i] + area[f, j] - inter  # same operation order as boxes_iou_bev
        iou[f, i, j] = (inter / union.clamp(min=1e-12)).clamp(0.0, 1.0).to(boxes.dtype)
    # Pairs outside `cand` have IoU 0; comparing the full matrix keeps a threshold < 0 exact too.
    return (iou > iou_threshold) & upper & valid[:, :, None] & valid[:, None, :]


def _greedy_keep(over: Tensor, valid: Tensor) -> Tensor:
    """Greedy NMS keep mask (B, k) from the ranked (B, k, k) upper-triangular `over` relation.

    Greedy keeps box j iff no kept box i < j has over[i, j]. Iterating
    keep <- valid & ~any_i(keep[i] & over[i, j]) from keep = valid fixes one more leading box
    per step (box 0 is final after one, box t after t + 1), so it reaches greedy's unique fixed
    point in at most k + 1 steps; in practice in a few (the longest chain of suppressions).
    One host sync per step (the convergence test), none per box.
    """
    keep = valid.clone()
    for _ in range(valid.shape[-1] + 1):
        suppressed = (keep.unsqueeze(2) & over).any(1)  # (B, k): a kept earlier box overlaps
        new = valid & ~suppressed
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def rank_by_score(scores: Tensor, valid: Tensor) -> Tensor:
    """(B, k) -> (B, k) int64 ranks: valid entries by descending score, ties in index order
    (`argsort(stable=True)`, as a per-frame sort of the valid entries alone), invalid last."""
    masked = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
    return torch.argsort(masked, dim=1, descending=True, stable=True)


def nms_bev_batched(boxes: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float
                    ) -> tuple[Tensor, Tensor]:
    """Greedy rotated NMS of every frame of a padded batch at once, on the boxes' device.

    Args:
        boxes: (B, k, 7+) boxes (padding rows: anything finite).
        scores: (B, k) scores.
        valid: (B, k) bool, False for padding (never kept, never suppresses).
        iou_threshold: suppression threshold on BEV IoU.

    Returns:
        order (B, k) int64: each frame's entries ranked as `nms_bev` ranks them, and
        keep (B, k) bool in that ranked order: frame b keeps ``order[b][keep[b]]``, which is
        exactly ``nms_bev(boxes[b][valid[b]], scores[b][valid[b]])`` mapped back to indices
        of the padded row.
    """
    if boxes.ndim != 3 or boxes.shape[2] < 7 or scores.shape != boxes.shape[:2] \
            or valid.shape != scores.shape:
        raise ValueError(f"need boxes (B, k, 7+), scores and valid (B, k); got "
                         f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(valid.shape)}")
    order = rank_by_score(scores, valid)  # (B, k)
    ranked = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, boxes.shape[2]))  # (B, k, 7+)
    ranked_valid = valid.gather(1, order)  # (B, k)
    k = max(1, scores.shape[1])
    step = max(1, _NMS_ENTRIES_PER_STEP // (k * k))  # frames per step: every one at k = 100
    keep = [_greedy_keep(_upper_over(ranked[s:s + step], ranked_valid[s:s + step], iou_threshold),
                         ranked_valid[s:s + step]) for s in range(0, ranked.shape[0], step)]
    return order, torch.cat(keep) if keep else ranked_valid.clone()


def nms_bev(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy rotated NMS: keep the best box, drop every later box with BEV IoU > threshold.

    Args:
        boxes: (N, 7+) boxes.
        scores: (N,) scores.
        iou_threshold: suppression threshold on BEV IoU.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by descending score (ties in index
        order).
    """
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError("boxes and scores must have the same length")
    _check(boxes, "boxes")
    valid = torch.ones(1, scores.shape[0], dtype=torch.bool, device=scores.device)  # (1, N)
    order, keep = nms_bev_batched(boxes[None], scores[None], valid, iou_threshold)
    return order[0][keep[0]]
