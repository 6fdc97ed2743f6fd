"""From matches to the audit's figures: per class, per distance band, per radar-point bin.

Pure numpy; every number the report plots or tabulates comes from here (and goes to JSON).

Band and bin membership (our choice, stated in docs/AUDIT.md): ground truth is placed by its own
centre range / radar point count; a true positive by the ground truth it matched (so a band's
true positives and its found ground truth are the same boxes); a false positive, which has no
ground truth, by its own centre range and by the radar points inside its own box (counted by
the stage from the store, the same rule ingest uses for `num_radar_pts`). Where those counts
are unknown (`det_radar` -1), precision-side numbers of that breakdown are reported as null.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import numpy as np

from kdpipe.stages.audit.metrics import (
    BoxSet,
    Curve,
    ap_all_points,
    at_threshold,
    bin_index,
    bin_names,
    curve,
    recommend,
    reliability,
    thresholds_table,
)

MAX_CURVE_POINTS = 400  # curves in the JSON are decimated to this many points (tables are not)


@dataclass(frozen=True)
class SummarySpec:
    classes: tuple[str, ...]
    sigma: float = 0.1
    class_thresholds: dict[str, float] = field(default_factory=dict)
    precision_target: float | None = None
    distance_bands_m: tuple[float, ...] = (0.0, 20.0, 40.0)
    radar_bins: tuple[int, ...] = (0, 1, 3, 6)
    calibration_bins: int = 10
    ap: Callable[[Curve], float] = ap_all_points

    def operating(self, cls: str) -> float:
        """The threshold pseudo-label applies to this class."""
        return float(self.class_thresholds.get(cls, self.sigma))


def _decimate(arrays: dict[str, np.ndarray]) -> dict[str, list[float]]:
    n = len(next(iter(arrays.values())))
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_CURVE_POINTS)).round().astype(int)) \
        if n else np.zeros(0, int)
    return {k: [float(x) for x in v[keep]] for k, v in arrays.items()}


def class_summary(c: Curve, spec: SummarySpec, name: str, is_tp_sorted: np.ndarray
                  ) -> dict[str, Any]:
    tab = thresholds_table(c)
    marked = {"sigma": at_threshold(c, spec.sigma)}
    if name in spec.class_thresholds:
        marked["class_threshold"] = at_threshold(c, spec.class_thresholds[name])
    return {
        "n_gt": c.n_gt, "n_det": int(c.score.size), "ap": spec.ap(c),
        "pr_curve": _decimate({"recall": c.recall, "precision": c.precision, "score": c.score}),
        "f1_curve": _decimate({k: tab[k] for k in ("threshold", "precision", "recall", "f1")}),
        "marked": marked, "operating": at_threshold(c, spec.operating(name)),
        "recommended": recommend(c, spec.precision_target),
        "calibration": reliability(c.score, is_tp_sorted, spec.calibration_bins),
    }


@dataclass(frozen=True)
class _Bins:
    """A breakdown's bins: index of each detection's and ground truth's bin (-1 unknown) and
    the bins' names."""

    det: np.ndarray     # (P,)
    gt: np.ndarray      # (G,)
    names: list[str]


def _breakdown(det: BoxSet, gt: BoxSet, matched: np.ndarray, bins: _Bins,
               spec: SummarySpec) -> dict[str, Any]:
    assert det.score is not None
    det_bin, gt_bin, names = bins.det, bins.gt, bins.names
    tp = matched >= 0
    # a true positive sits in its ground truth's bin; a false positive in its own
    d_bin = np.where(tp, gt_bin[np.where(tp, matched, 0)], det_bin)
    out: dict[str, Any] = {"bins": names}
    for k, cname in enumerate(spec.classes):
        rows = []
        for b, bname in enumerate(names):
            n_gt = int(np.sum((gt.cls == k) & (gt_bin == b)))
            m = (det.cls == k) & (d_bin == b)
            unknown = bool(np.any((det.cls == k) & ~tp & (det_bin < 0)))
            c = curve(det.score[m], tp[m], n_gt)
            op = at_threshold(c, spec.operating(cname))
            best = recommend(c)["best_f1"]
            row = {"bin": bname, "n_gt": n_gt, "n_det": int(m.sum()),
                   "ap": None if unknown else spec.ap(c), "recall": op["recall"],
                   "precision": None if unknown else op["precision"],
                   "f1": None if unknown else op["f1"],
                   "best_f1": None if unknown or best is None else best["f1"]}
            rows.append(row)
        out[cname] = rows
    return out


class BoxFacts(TypedDict):
    """Per-box facts the breakdowns bin by (all required).

    det_range_m, gt_range_m: (P,) / (G,) BEV centre range from the ego origin, metres.
    det_radar: (P,) radar points inside each detection box (-1 unknown); gt_radar: (G,) the
    ground truth's `num_radar_pts` (-1 unknown).
    """

    det_range_m: np.ndarray
    gt_range_m: np.ndarray
    det_radar: np.ndarray
    gt_radar: np.ndarray


def summarise(det: BoxSet, gt: BoxSet, matched: np.ndarray, *, spec: SummarySpec,
              **facts: Unpack[BoxFacts]) -> dict[str, Any]:
    """All figures of one audit.

    Args:
        matched: (P,) from `greedy_match` at the audit's matching threshold.
        **facts: the boxes' ranges and radar point counts (`BoxFacts`).
    """
    assert det.score is not None
    tp = matched >= 0
    classes: dict[str, Any] = {}
    recommended: dict[str, float] = {}
    for k, name in enumerate(spec.classes):
        m = det.cls == k
        c = curve(det.score[m], tp[m], int(np.sum(gt.cls == k)))
        order_tp = np.diff(np.r_[0.0, c.tp]) > 0
        classes[name] = class_summary(c, spec, name, order_tp)
        rec = classes[name]["recommended"]
        pick = rec["precision_target"] or rec["best_f1"]
        if pick is not None:
            recommended[name] = round(float(pick["threshold"]), 4)
    overall = reliability(det.score, tp, spec.calibration_bins)
    det_radar, gt_radar = facts["det_radar"], facts["gt_radar"]
    by_distance = _Bins(bin_index(facts["det_range_m"], spec.distance_bands_m),
                        bin_index(facts["gt_range_m"], spec.distance_bands_m),
                        bin_names(spec.distance_bands_m, " m"))
    by_radar = _Bins(np.where(det_radar < 0, -1, bin_index(det_radar, spec.radar_bins)),
                     np.where(gt_radar < 0, -1, bin_index(gt_radar, spec.radar_bins)),
                     bin_names(spec.radar_bins, integer=True))
    return {
        "classes": classes,
        "mean_ap": float(np.mean([v["ap"] for v in classes.values()])) if classes else 0.0,
        "calibration": overall,
        "recommended_thresholds": recommended,
        "by_distance": _breakdown(det, gt, matched, by_distance, spec),
        "by_radar_points": _breakdown(det, gt, matched, by_radar, spec),
    }


def frame_counts(det: BoxSet, gt: BoxSet, matched: np.ndarray, n_frames: int,
                 thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """Per frame TP / FP / FN keeping detections at or above their class's threshold
    (`thresholds[class index]`). Greedy matching by score makes this the matching of the kept
    detections alone."""
    assert det.score is not None
    keep = det.score >= np.asarray(thresholds, dtype=np.float64)[det.cls]
    tp = np.bincount(det.frame[keep & (matched >= 0)], minlength=n_frames)
    fp = np.bincount(det.frame[keep & (matched < 0)], minlength=n_frames)
    n_gt = np.bincount(gt.frame, minlength=n_frames)
    return {"n_gt": n_gt, "n_det": tp + fp, "tp": tp, "fp": fp, "fn": n_gt - tp}
