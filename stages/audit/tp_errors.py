"""nuScenes TP errors (ATE, ASE, AOE, AVE, AAE) and NDS on arrays of boxes, rule for rule as
nuscenes-devkit's `DetectionEval` (`detection_cvpr_2019`), vectorised.

Rules taken from the devkit source (eval/detection/algo.py `accumulate` / `calc_tp`,
evaluate.py `evaluate`, data_classes.py `DetectionMetrics`, eval/common/utils.py):
- the errors come from the matches at `dist_th_tp` (2 m), made as for AP (`nuscenes.py`);
- per match: ATE = xy centre distance, AVE = xy velocity difference (global frame), ASE =
  1 - IoU of the sizes aligned at one centre, AOE = smallest yaw difference (period pi for
  barriers, 2 pi otherwise; yaw = heading of the box x axis in the global xy plane), AAE =
  1 - (attributes equal), NaN where the ground truth has no attribute;
- per class: the cumulative mean over the matches in descending score (NaN-aware; all NaN ->
  1), interpolated onto the 101 recall points through the confidences; the error is its mean
  from the first recall point above `min_recall` to the highest recall reached (1 when that is
  below `min_recall`, or when the class has no ground truth or no match);
- traffic cones have no AOE / AVE / AAE, barriers no AVE / AAE (NaN); each mean error is the
  NaN-mean over classes, its score max(0, 1 - error), and NDS = (w mAP + sum of the five
  scores) / (w + 5) with w = `mean_ap_weight`.
Numbers (`dist_th_tp`, `min_recall`, `mean_ap_weight`, metric names) are read from the installed
devkit's files (kdpipe.evaluation.nuscenes_devkit); the class exceptions above are code in the
devkit (evaluate.py, algo.py), so they are code here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.evaluation.nuscenes_boxes import NusBoxes, devkit_filter
from kdpipe.evaluation.nuscenes_devkit import detection_config, detection_constants
from kdpipe.stages.audit.metrics import (
    BoxSet,
    Candidates,
    Curve,
    ap_nuscenes,
    candidates,
    greedy_match,
)
from kdpipe.stages.audit.nuscenes import NuScenesRules, devkit_rules

NUS_RECALL_POINTS = 101  # DetectionMetricData.nelem
SHORT_NAMES = {"trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE", "vel_err": "AVE",
               "attr_err": "AAE"}
# evaluate.py: these (class, metric) pairs are NaN, not computed
_NAN_METRICS = {"traffic_cone": {"attr_err", "vel_err", "orient_err"},
                "barrier": {"attr_err", "vel_err"}}
_HALF_TURN_CLASSES = {"barrier"}  # algo.py: orientation only defined up to 180 degrees


@dataclass(frozen=True)
class TPRules:
    metrics: tuple[str, ...]   # the devkit's TP_METRICS, in its order
    dist_th_tp_m: float
    min_recall: float
    mean_ap_weight: float


def devkit_tp_rules(name: str = "detection_cvpr_2019") -> TPRules:
    """The devkit's TP-error settings, read from the installed package's files."""
    cfg, const = detection_config(name), detection_constants()
    return TPRules(tuple(const["TP_METRICS"]), float(cfg["dist_th_tp"]),
                   float(cfg["min_recall"]), float(cfg["mean_ap_weight"]))


def pair_errors(d: np.ndarray, g: np.ndarray, matched: np.ndarray, half_turn: np.ndarray,
                attrs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(P, 5) errors of each matched detection, in the order trans, vel, scale, orient, attr
    (the devkit's `match_data`); rows of unmatched detections are NaN.

    Args:
        d, g: `NusBoxes.world` of detections (P, 8) and ground truth (G, 8).
        matched: (P,) ground-truth index or -1.
        half_turn: (P,) the detection's class has a yaw period of pi.
        attrs: (P,) and (G,) attribute codes (`attribute_codes`), -1 where none.
    """
    err = np.full((len(d), 5), np.nan)
    m = np.flatnonzero(matched >= 0)
    dm, gm = d[m], g[matched[m]]
    err[m, 0] = np.hypot(*(dm[:, :2] - gm[:, :2]).T)
    err[m, 1] = np.hypot(*(dm[:, 6:8] - gm[:, 6:8]).T)  # NaN when either velocity is unknown
    inter = np.prod(np.minimum(dm[:, 2:5], gm[:, 2:5]), axis=1)
    err[m, 2] = 1.0 - inter / (np.prod(dm[:, 2:5], axis=1) + np.prod(gm[:, 2:5], axis=1)
                               - inter)
    period = np.where(half_turn[m], np.pi, 2 * np.pi)
    diff = (gm[:, 5] - dm[:, 5] + period / 2) % period - period / 2  # the devkit's angle_diff
    err[m, 3] = np.abs(np.where(diff > np.pi, diff - 2 * np.pi, diff))
    g_attr, d_attr = attrs[1][matched[m]], attrs[0][m]
    err[m, 4] = np.where(g_attr < 0, np.nan, (g_attr != d_attr).astype(np.float64))
    return err


def cummean(x: np.ndarray) -> np.ndarray:
    """The devkit's NaN-aware cumulative mean, column by column: (T, K) -> (T, K); a column
    that is all NaN is all ones."""
    s = np.nancumsum(x, axis=0)
    n = np.cumsum(~np.isnan(x), axis=0)
    out = np.divide(s, n, out=np.zeros_like(s), where=n != 0)
    out[:, np.isnan(x).all(axis=0)] = 1.0
    return out


def class_tp_errors(conf: np.ndarray, hit: np.ndarray, err: np.ndarray, n_gt: int,
                    min_recall: float) -> np.ndarray:
    """One class's five errors ((P,) scores in `score_order`, (P,) match flags, (P, 5) errors,
    same order) -> (5,)."""
    if n_gt == 0 or not hit.any():
        return np.ones(err.shape[1])  # DetectionMetricData.no_predictions -> calc_tp = 1
    tp = np.cumsum(hit).astype(float)
    rec = tp / float(n_gt)
    rec_interp = np.linspace(0, 1, NUS_RECALL_POINTS)
    conf_interp = np.interp(rec_interp, rec, conf, right=0)               # (101,)
    cm = cummean(err[hit])                                                # (T, 5)
    match_conf = conf[hit][::-1]
    first = round(100 * min_recall) + 1
    nz = np.flatnonzero(conf_interp)
    last = int(nz[-1]) if nz.size else 0
    if last < first:
        return np.ones(err.shape[1])
    out = np.empty(err.shape[1])
    for k in range(err.shape[1]):
        md = np.interp(conf_interp[::-1], match_conf, cm[::-1, k])[::-1]  # (101,)
        out[k] = np.mean(md[first:last + 1])
    return out


def match_thresholds(det: BoxSet, cand: Candidates, n_gt: int, n_frames: int,
                     dist_ths_m: tuple[float, ...]) -> np.ndarray:
    """`greedy_match` at every distance threshold in one call -> (T, P) matched ground-truth
    index or -1. Threshold t works on its own copy of the frames (frame + t F) and of the
    ground truth (index + t G), so the copies never compete; one pass over the ranks instead
    of T."""
    n_th, n_det = len(dist_ths_m), len(det)
    if n_det == 0 or cand.gt.shape[1] == 0:
        return np.full((n_th, n_det), -1, dtype=np.int64)
    assert det.score is not None
    th = np.asarray(dist_ths_m)
    out = np.full((n_th, n_det), -1, dtype=np.int64)
    # most detections share no candidate with another detection (within the largest
    # threshold, so within any): nothing is taken from them and they take from no one, so at
    # each threshold their match is their nearest candidate if it is near enough
    valid = cand.gt >= 0                                                    # (P, K)
    shared = np.bincount(cand.gt[valid], minlength=n_gt) > 1
    contested = (valid & shared[np.where(valid, cand.gt, 0)]).any(axis=1)
    free = np.flatnonzero(valid[:, 0] & ~contested)   # slot 0 is filled first
    j = cand.cost[free].argmin(axis=1)
    best, g = cand.cost[free, j], cand.gt[free, j]
    out[:, free] = np.where(best < th[:, None], g, -1)
    # the others: a pair at or beyond threshold t never matches there, so it is out of copy
    # t's candidates; a copy left with none stays out of the matching (it can take nothing)
    rows = np.flatnonzero(contested)
    near = cand.cost[rows] < th[:, None, None]                              # (T, C, K)
    t, i = np.nonzero(near.any(axis=2))              # the copies that can match, t-major
    p = rows[i]
    rep = BoxSet(frame=det.frame[p] + t * n_frames, cls=det.cls[p], boxes=det.boxes,
                 xy=det.xy, score=det.score[p])
    gt_rep = np.where(near[t, i], cand.gt[p] + (t * n_gt)[:, None], -1)    # (M, K)
    matched = greedy_match(rep, Candidates(gt_rep, np.where(near[t, i], cand.cost[p], np.inf)),
                           n_th * n_gt, th[t], "center_distance")
    out[t, p] = np.where(matched >= 0, matched - t * n_gt, -1)
    return out


_ERR_ORDER = ("trans_err", "vel_err", "scale_err", "orient_err", "attr_err")  # pair_errors'


def nuscenes_scores(dets: NusBoxes, gts: NusBoxes, n_frames: int,
                    racks: tuple[np.ndarray, np.ndarray], rules: NuScenesRules | None = None,
                    tp_rules: TPRules | None = None) -> dict[str, Any]:
    """mAP, the TP errors and NDS as DetectionEval computes them.

    Args:
        dets: the submission's boxes in file order (samples in results order: score ties
            break by it, as in the devkit), with scores.
        gts: the ground truth of the same samples that has points (`store_boxes`).
        n_frames: number of evaluated samples.
        racks: the bike racks of those samples, ((R,) sample index, (R, 7) ego boxes).

    Returns:
        `mean_ap`, `nd_score`, `tp_errors` ({metric: mean over classes}), `class_ap`,
        `class_tp_errors` ({class: {metric: error or NaN}}), `ap`, `n_gt`, `n_det`.
    """
    rules, tpr = rules or devkit_rules(), tp_rules or devkit_tp_rules()
    d = devkit_filter(dets, rules.class_names, rules.class_range_m, racks)
    g = devkit_filter(gts, rules.class_names, rules.class_range_m, racks)
    # the ego boxes are not used by centre-distance matching
    det = BoxSet(d.frame, d.cls, np.zeros((len(d), 7)), d.world[:, :2], d.score)
    gt = BoxSet(g.frame, g.cls, np.zeros((len(g), 7)), g.world[:, :2])
    assert det.score is not None
    cand = candidates(det, gt, "center_distance", max(rules.dist_ths_m))
    n_gt = np.bincount(gt.cls, minlength=len(rules.class_names))
    ap: dict[str, dict[str, float]] = {c: {} for c in rules.class_names}
    matched_all = match_thresholds(det, cand, len(gt), n_frames, rules.dist_ths_m)
    matched_tp = matched_all[rules.dist_ths_m.index(tpr.dist_th_tp_m)]
    # one order for every class and threshold: by class, then as `score_order` inside it
    order = np.lexsort((-np.arange(len(det)), -det.score, det.cls))
    bounds = np.r_[0, np.cumsum(np.bincount(det.cls, minlength=len(rules.class_names)))]
    seg = [order[bounds[k]:bounds[k + 1]] for k in range(len(rules.class_names))]
    for th, matched in zip(rules.dist_ths_m, matched_all, strict=True):
        for k, name in enumerate(rules.class_names):
            hit = (matched[seg[k]] >= 0).astype(np.float64)
            c = Curve(det.score[seg[k]], np.cumsum(hit), np.cumsum(1.0 - hit), int(n_gt[k]))
            ap[name][f"{th:g}"] = ap_nuscenes(c, rules.min_recall, rules.min_precision)
    half = np.isin(det.cls, [rules.class_names.index(c) for c in _HALF_TURN_CLASSES
                             if c in rules.class_names])
    err = pair_errors(d.world, g.world, matched_tp, half, (d.attribute, g.attribute))  # (P, 5)
    class_tp: dict[str, dict[str, float]] = {}
    for k, name in enumerate(rules.class_names):
        e = class_tp_errors(det.score[seg[k]], matched_tp[seg[k]] >= 0, err[seg[k]],
                            int(n_gt[k]), tpr.min_recall)
        by_name = dict(zip(_ERR_ORDER, e.tolist(), strict=True))
        class_tp[name] = {metric: (float("nan") if metric in _NAN_METRICS.get(name, ())
                                   else float(by_name[metric])) for metric in tpr.metrics}
    class_ap = {c: float(np.mean(list(v.values()))) for c, v in ap.items()}
    mean_ap = float(np.mean(list(class_ap.values())))
    tp_errors = {metric: float(np.nanmean([class_tp[c][metric] for c in rules.class_names]))
                 for metric in tpr.metrics}
    tp_scores = {metric: max(0.0, 1.0 - e) for metric, e in tp_errors.items()}
    nds = (tpr.mean_ap_weight * mean_ap + sum(tp_scores.values())) \
        / (tpr.mean_ap_weight + len(tp_scores))
    return {"mean_ap": mean_ap, "nd_score": float(nds), "tp_errors": tp_errors,
            "tp_scores": tp_scores, "class_ap": class_ap, "class_tp_errors": class_tp, "ap": ap,
            "n_gt": {c: int(n) for c, n in zip(rules.class_names, n_gt, strict=True)},
            "n_det": int(len(det))}
