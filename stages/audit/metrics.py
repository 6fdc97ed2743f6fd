"""Audit metrics: detections matched to held-out ground truth, then curves, AP, calibration.

Pure numpy (no plotting, no tables). Boxes come in as `BoxSet`s: frame index, class index,
canonical (N, 7) ego boxes, the xy used for centre distances, and scores for detections.

Matching (one pass, all frames and classes at once): detections are visited in descending
score (ties: the later input row first, as nuscenes-devkit's `accumulate` sorts); each takes
the best not-yet-taken ground truth of its own frame and class (highest IoU, or nearest centre)
and is a true positive when that one is good enough (IoU >= the class threshold; distance <
the threshold, strict, as the devkit). Greedy by score makes the matches of any score prefix
the matches of the full run, so precision/recall at every threshold come from one cumulative
sum. The loop runs over the rank of a detection inside its (frame, class) group: at one rank
no two detections compete for the same ground truth, so each step is one vectorised argmin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kdpipe.stages.audit.thresholds import (  # re-exported: their home was here
    at_threshold,
    bin_index,
    bin_names,
    recommend,
    reliability,
    thresholds_table,
)

__all__ = ["BoxSet", "Candidates", "Curve", "ap_all_points", "ap_nuscenes", "at_threshold",
           "bin_index", "bin_names", "candidates", "curve", "greedy_match", "recommend",
           "reliability", "score_order", "thresholds_table"]

Criterion = Literal["iou_bev", "iou_3d", "center_distance"]
NUS_RECALL_POINTS = 101  # nuscenes-devkit DetectionMetricData.nelem


@dataclass(frozen=True)
class BoxSet:
    """Boxes of many frames, as arrays (detections carry `score`)."""

    frame: np.ndarray               # (N,) int64 frame index
    cls: np.ndarray                 # (N,) int64 class index
    boxes: np.ndarray               # (N, 7) x, y, z, l, w, h, yaw (ego)
    xy: np.ndarray                  # (N, 2) centres for the distance criterion (ego or world)
    score: np.ndarray | None = None  # (N,) detections only

    def __len__(self) -> int:
        return int(self.frame.shape[0])


@dataclass(frozen=True)
class Candidates:
    """Each detection's possible matches: same frame, same class, close enough to matter."""

    gt: np.ndarray    # (P, K) ground-truth index, -1 padding
    cost: np.ndarray  # (P, K) centre distance (m) or minus the IoU; +inf padding


_PAIRS_PER_CHUNK = 1 << 22  # bounds the transient (pairs, 2) arrays of a large evaluation


def _pair_index(det: BoxSet, gt: BoxSet, radius_m: float = np.inf
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth sorted by (frame, class), and for each detection where its candidates
    start there and how many there are: (g_order, lo, n). With a finite `radius_m` the ground
    truth is sorted by x inside a group and a detection's candidates are those within
    `radius_m` of it in x (a superset of those within `radius_m` in xy; the caller keeps the
    true distances), else its whole group, in input order."""
    n_cls = int(max(det.cls.max(initial=0), gt.cls.max(initial=0))) + 1
    g_key = (gt.frame * n_cls + gt.cls).astype(np.float64)
    d_key = (det.frame * n_cls + det.cls).astype(np.float64)
    lo_off = hi_off = 0.0
    if np.isfinite(radius_m) and np.isfinite(gt.xy[:, 0]).all() \
            and np.isfinite(det.xy[:, 0]).all():
        # key = group * width + x - x_min: groups never overlap, x orders inside a group; the
        # window gets a margin for the rounding of these sums (it only adds candidates)
        x_min = min(gt.xy[:, 0].min(initial=0.0), det.xy[:, 0].min(initial=0.0))
        x_max = max(gt.xy[:, 0].max(initial=0.0), det.xy[:, 0].max(initial=0.0))
        width = x_max - x_min + 2 * radius_m + 1.0
        g_key = g_key * width + (gt.xy[:, 0] - x_min)
        d_key = d_key * width + (det.xy[:, 0] - x_min)
        margin = 1e-6 * (1.0 + float(np.abs(g_key).max(initial=0.0)) * 1e-6)
        lo_off, hi_off = -radius_m - margin, radius_m + margin
    g_order = np.argsort(g_key, kind="stable")                # same key: input order
    sorted_key = g_key[g_order]
    lo = np.searchsorted(sorted_key, d_key + lo_off, side="left")
    n = np.searchsorted(sorted_key, d_key + hi_off, side="right") - lo  # (P,) candidates
    return g_order, lo, n


def _pairs(index: tuple[np.ndarray, np.ndarray, np.ndarray], a: int, b: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of detections a..b-1, by detection."""
    g_order, lo, n = index[0], index[1][a:b], index[2][a:b]
    p = np.repeat(np.arange(a, b), n)
    start = np.repeat(np.cumsum(n) - n, n)
    return p, g_order[np.repeat(lo, n) + np.arange(p.size) - start]


def _group_pairs(det: BoxSet, gt: BoxSet) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of the same frame and class, by detection."""
    return _pairs(_pair_index(det, gt), 0, len(det))


def _pack(p: np.ndarray, g: np.ndarray, cost: np.ndarray, n_det: int) -> Candidates:
    """Pairs (sorted by p) -> padded (P, K) arrays."""
    n = np.bincount(p, minlength=n_det)
    k = int(n.max(initial=0))
    slot = np.arange(p.size) - np.repeat(np.cumsum(n) - n, n)
    gt_idx = np.full((n_det, k), -1, dtype=np.int64)
    c = np.full((n_det, k), np.inf)
    gt_idx[p, slot], c[p, slot] = g, cost
    return Candidates(gt_idx, c)


def candidates(det: BoxSet, gt: BoxSet, criterion: Criterion, max_distance_m: float = np.inf
               ) -> Candidates:
    """Pairs that can match: same frame and class, centre distance < `max_distance_m` (the
    largest threshold that will be used) or IoU > 0. A pair beyond that can never be the
    match, and a nearer untaken one always wins over it, so dropping it changes nothing."""
    if len(det) == 0 or len(gt) == 0:
        return Candidates(np.full((len(det), 0), -1, np.int64), np.zeros((len(det), 0)))
    if criterion == "center_distance":
        ps, gs, cs = [], [], []
        index = _pair_index(det, gt, max_distance_m)   # the ground truth sorted once
        ends = np.cumsum(index[2])                     # pairs up to each detection
        a = 0
        while a < len(det):  # chunks of at most _PAIRS_PER_CHUNK pairs (one detection at least)
            base = int(ends[a - 1]) if a else 0
            b = max(a + 1, int(np.searchsorted(ends, base + _PAIRS_PER_CHUNK, side="right")))
            p, g = _pairs(index, a, b)
            d = np.hypot(*(det.xy[p] - gt.xy[g]).T)
            keep = d < max_distance_m
            ps.append(p[keep])
            gs.append(g[keep])
            cs.append(d[keep])
            a = b
        p, g, c = np.concatenate(ps), np.concatenate(gs), np.concatenate(cs)
        # each detection's candidates in ground-truth input order (not x order): of equal
        # distances the first wins, as in the devkit
        by = np.lexsort((g, p))
        return _pack(p[by], g[by], c[by], len(det))
    import torch

    from kdpipe.models.iou import boxes_iou_3d, boxes_iou_bev

    iou_fn = boxes_iou_bev if criterion == "iou_bev" else boxes_iou_3d
    p, g = _group_pairs(det, gt)
    iou = np.zeros(p.size)
    for f in np.unique(det.frame[p]):  # one IoU matrix per frame (classes mixed, then picked)
        m = det.frame[p] == f
        dp, dg = np.unique(p[m], return_inverse=True)
        gp, gg = np.unique(g[m], return_inverse=True)
        mat = iou_fn(torch.from_numpy(det.boxes[dp]), torch.from_numpy(gt.boxes[gp])).numpy()
        iou[m] = mat[dg, gg]
    keep = iou > 0
    return _pack(p[keep], g[keep], -iou[keep], len(det))


def score_order(score: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties: the later index first (the devkit's `sorted()[::-1]`)."""
    idx = np.arange(score.size)
    return np.lexsort((-idx, -score))


def greedy_match(det: BoxSet, cand: Candidates, n_gt: int, limit: np.ndarray,
                 criterion: Criterion) -> np.ndarray:
    """Greedy matching by descending score.

    Args:
        cand: from `candidates`.
        n_gt: number of ground-truth boxes.
        limit: (P,) threshold per detection: the IoU it needs (IoU criteria) or the centre
            distance it must stay under (metres).

    Returns:
        (P,) index of the matched ground-truth box, -1 for a false positive.
    """
    n = len(det)
    matched = np.full(n, -1, dtype=np.int64)
    if n == 0 or cand.gt.shape[1] == 0:
        return matched
    assert det.score is not None
    # a detection none of whose candidates is another's cannot lose one to an earlier
    # detection, nor take one from a later: its nearest (best) candidate is its match, with no
    # loop; only the contested ones go through the rank loop (those without candidates: none)
    valid = cand.gt >= 0                                       # (P, K)
    shared = np.bincount(cand.gt[valid], minlength=n_gt) > 1
    contested = (valid & shared[np.where(valid, cand.gt, 0)]).any(axis=1)
    free = np.flatnonzero(valid.any(axis=1) & ~contested)
    _take_best(free, cand, limit, criterion, matched)
    loop = np.flatnonzero(contested)
    if loop.size:
        matched[loop] = _greedy_loop(det, cand, n_gt, limit, criterion, loop)
    return matched


def _take_best(ps: np.ndarray, cand: Candidates, limit: np.ndarray, criterion: Criterion,
               matched: np.ndarray) -> np.ndarray:
    """Detections `ps` take their best candidate where it meets their limit (into `matched`);
    returns the ground truth taken."""
    c = cand.cost[ps]                                          # (k, K), +inf: none or taken
    j = c.argmin(axis=1)
    best = c[np.arange(ps.size), j]
    ok = best < limit[ps] if criterion == "center_distance" else -best >= limit[ps]
    ok &= np.isfinite(best)
    g = cand.gt[ps[ok], j[ok]]
    matched[ps[ok]] = g
    return g


def _greedy_loop(det: BoxSet, cand: Candidates, n_gt: int, limit: np.ndarray,
                 criterion: Criterion, rows: np.ndarray) -> np.ndarray:
    """`greedy_match` of detections `rows` among themselves, one vectorised step per rank."""
    assert det.score is not None
    n = rows.size
    matched = np.full(n, -1, dtype=np.int64)
    frame, cls, score = det.frame[rows], det.cls[rows], det.score[rows]
    sub = Candidates(cand.gt[rows], cand.cost[rows])
    group = frame * (int(cls.max()) + 1) + cls
    idx = np.arange(n)
    order = np.lexsort((-idx, -score, group))                 # by group, then as score_order
    g_sorted = group[order]
    first = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    rank = idx - np.maximum.accumulate(np.where(first, idx, 0))  # rank inside its group
    taken = np.zeros(n_gt + 1, dtype=bool)                     # last slot: the -1 padding
    by_rank = order[np.argsort(rank, kind="stable")]
    bounds = np.cumsum(np.bincount(rank))
    lim = limit[rows]
    for r, end in enumerate(bounds):
        ps = by_rank[(bounds[r - 1] if r else 0):end]          # one detection per group
        step = Candidates(sub.gt[ps], np.where(taken[sub.gt[ps]], np.inf, sub.cost[ps]))
        got = np.full(ps.size, -1, dtype=np.int64)
        taken[_take_best(np.arange(ps.size), step, lim[ps], criterion, got)] = True
        matched[ps] = got
    return matched


@dataclass(frozen=True)
class Curve:
    """One class's detections in descending score with cumulative counts."""

    score: np.ndarray     # (P,) descending
    tp: np.ndarray        # (P,) cumulative true positives
    fp: np.ndarray        # (P,) cumulative false positives
    n_gt: int

    @property
    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.tp + self.fp, 1)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / max(self.n_gt, 1)


def curve(score: np.ndarray, is_tp: np.ndarray, n_gt: int) -> Curve:
    order = score_order(score)
    t = is_tp[order].astype(np.float64)
    return Curve(score[order], np.cumsum(t), np.cumsum(1.0 - t), int(n_gt))


def ap_nuscenes(c: Curve, min_recall: float = 0.1, min_precision: float = 0.1) -> float:
    """nuscenes-devkit AP: precision at 101 recall points (np.interp, 0 beyond the max recall),
    recalls <= min_recall dropped, precision shifted by min_precision and renormalised."""
    if c.n_gt == 0 or c.tp.size == 0 or c.tp[-1] == 0:
        return 0.0  # the devkit's `no_predictions()`: zero precision everywhere
    rec_interp = np.linspace(0, 1, NUS_RECALL_POINTS)
    prec = np.interp(rec_interp, c.tp / float(c.n_gt), c.tp / (c.fp + c.tp), right=0)
    prec = prec[round(100 * min_recall) + 1:] - min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def ap_all_points(c: Curve) -> float:
    """Area under the precision envelope (VOC 2010+ / COCO-style all-point interpolation)."""
    if c.n_gt == 0 or c.tp.size == 0:
        return 0.0
    rec = np.r_[0.0, c.recall, 1.0]
    prec = np.r_[0.0, c.precision, 0.0]
    prec = np.maximum.accumulate(prec[::-1])[::-1]            # best precision at recall >= r
    step = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[step + 1] - rec[step]) * prec[step + 1]))
