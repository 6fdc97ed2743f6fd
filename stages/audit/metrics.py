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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


def thresholds_table(c: Curve) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and counts when keeping score >= t, for every distinct score t."""
    last = np.r_[c.score[1:] != c.score[:-1], True] if c.score.size else np.zeros(0, bool)
    tp, fp = c.tp[last], c.fp[last]
    p = tp / np.maximum(tp + fp, 1)
    r = tp / max(c.n_gt, 1)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return {"threshold": c.score[last], "precision": p, "recall": r, "f1": f1,
            "tp": tp, "fp": fp, "fn": c.n_gt - tp}


def at_threshold(c: Curve, threshold: float) -> dict[str, float]:
    """Counts and P/R/F1 keeping detections with score >= threshold."""
    k = int(np.searchsorted(-c.score, -threshold, side="right"))  # how many have score >= t
    tp = float(c.tp[k - 1]) if k else 0.0
    fp = float(c.fp[k - 1]) if k else 0.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / c.n_gt if c.n_gt else 0.0
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": c.n_gt - tp,
            "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def recommend(c: Curve, precision_target: float | None = None
              ) -> dict[str, dict[str, float] | None]:
    """Thresholds worth using: the best F1 (the highest threshold among equal F1s: fewer boxes
    for the same F1), and the lowest threshold whose precision reaches the target (the most
    recall that still meets it); None where no threshold finds a true positive / meets it."""
    tab = thresholds_table(c)
    out: dict[str, dict[str, float] | None] = {"best_f1": None, "precision_target": None}
    if tab["threshold"].size == 0 or tab["f1"].max() == 0:
        return out  # no true positive at any threshold: nothing to recommend
    out["best_f1"] = at_threshold(c, float(tab["threshold"][int(np.argmax(tab["f1"]))]))
    if precision_target is not None:
        ok = np.flatnonzero(tab["precision"] >= precision_target)
        if ok.size:
            out["precision_target"] = at_threshold(c, float(tab["threshold"][ok[-1]]))
    return out


def reliability(score: np.ndarray, is_tp: np.ndarray, n_bins: int = 10) -> dict[str, object]:
    """Reliability diagram over equal-width score bins and the expected calibration error
    ECE = sum_b n_b / N * |accuracy_b - mean score_b| (accuracy = share of true positives)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins - 1)  # 1.0 -> last
    n = np.bincount(b, minlength=n_bins).astype(np.float64)
    s = np.bincount(b, weights=score, minlength=n_bins)
    a = np.bincount(b, weights=is_tp.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = s / n, a / n
    ece = float(np.sum(n[n > 0] / n.sum() * np.abs(acc[n > 0] - conf[n > 0]))) if n.sum() else 0.0
    return {"edges": edges.tolist(), "count": n.astype(int).tolist(),
            "mean_score": [None if k == 0 else float(v) for k, v in zip(n, conf, strict=True)],
            "accuracy": [None if k == 0 else float(v) for k, v in zip(n, acc, strict=True)],
            "ece": ece}


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value for bins [e0, e1), [e1, e2), ..., [e_last, inf); -1 below e0 or NaN."""
    v = np.asarray(values, dtype=np.float64)
    out = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="right") - 1
    return np.where(np.isfinite(v), out, -1)


def bin_names(edges: Sequence[float], unit: str = "", integer: bool = False) -> list[str]:
    """'0-20 m', '40+ m'; integer bins read '1-2' for [1, 3)."""
    names = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        lo_s = f"{lo:g}"
        if hi is None:
            names.append(f"{lo_s}+{unit}")
        elif integer and hi - lo == 1:
            names.append(f"{lo_s}{unit}")
        else:
            names.append(f"{lo_s}-{(hi - 1) if integer else hi:g}{unit}")
    return names
