"""Operating points and calibration on a class's curve: precision / recall / F1 at every
threshold, recommended thresholds, the reliability diagram, and the bins of the audit's
breakdowns (split out of `metrics`, which re-exports them)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kdpipe.stages.audit.metrics import Curve


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
