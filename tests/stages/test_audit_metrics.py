"""Audit metrics on hand-built cases with known answers, and against nuscenes-devkit's own
`accumulate` + `calc_ap` on random cases (ties included)."""
from __future__ import annotations

import numpy as np
import pytest

from kdpipe.stages.audit.metrics import (
    BoxSet,
    ap_all_points,
    ap_nuscenes,
    at_threshold,
    bin_names,
    candidates,
    curve,
    greedy_match,
    recommend,
    reliability,
    thresholds_table,
)
from kdpipe.stages.audit.summary import SummarySpec, frame_counts, summarise

SIZE_LWH = (4.0, 2.0, 1.5)  # every box: a car, heading along x (yaw 0)


def _set(frame: list[int], cls: list[int], xy: list[tuple[float, float]],
         score: list[float] | None = None, z: float = 0.0) -> BoxSet:
    n = len(frame)
    boxes = np.zeros((n, 7))
    if n:
        boxes[:, :2] = np.asarray(xy, dtype=np.float64)
        boxes[:, 2], boxes[:, 3:6], boxes[:, 6] = z, SIZE_LWH, 0.0
    return BoxSet(np.asarray(frame, np.int64), np.asarray(cls, np.int64), boxes,
                  boxes[:, :2].copy(), None if score is None else np.asarray(score, np.float64))


def _match(det: BoxSet, gt: BoxSet, crit: str, limit: float | list[float]
           ) -> np.ndarray:
    lim = np.broadcast_to(np.asarray(limit, np.float64), (len(det),)).copy()
    cand = candidates(det, gt, crit, float(lim.max()) if crit == "center_distance"  # type: ignore[arg-type]
                      else np.inf)
    return greedy_match(det, cand, len(gt), lim, crit)  # type: ignore[arg-type]


# 3 GT (two in frame 0, one in frame 1), 4 detections: TP, FP (nothing near), TP, duplicate.
GT = _set([0, 0, 1], [0, 0, 0], [(10, 0), (20, 0), (15, 5)])
DET = _set([0, 0, 1, 0], [0, 0, 0, 0], [(10.2, 0), (30, 0), (15, 5.3), (10.1, 0)],
           [0.95, 0.85, 0.75, 0.65])


def test_hand_case_precision_recall_f1_ap() -> None:
    matched = _match(DET, GT, "center_distance", 1.0)
    assert matched.tolist() == [0, -1, 2, -1]  # the duplicate finds GT 0 taken, GT 1 too far
    c = curve(DET.score, matched >= 0, 3)  # type: ignore[arg-type]
    assert np.allclose(c.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert np.allclose(c.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    tab = thresholds_table(c)
    assert np.allclose(tab["threshold"], [0.95, 0.85, 0.75, 0.65])
    assert np.allclose(tab["f1"], [1 / 2, 2 / 5, 2 / 3, 4 / 7])
    assert tab["fn"].tolist() == [2, 2, 1, 1]
    # all-point AP: precision envelope 1 up to recall 1/3, 2/3 up to 2/3 -> 1/3 + 2/9
    assert ap_all_points(c) == pytest.approx(5 / 9)
    # nuScenes AP by hand: 101 recall points, recall <= 0.1 dropped, precision - 0.1 clipped:
    # 23 points (0.11-0.33) at 0.9, 33 points (0.34-0.66) on the line from (1/3, .5) to
    # (2/3, 2/3) minus 0.1, 34 points past recall 2/3 at 0 -> 36.65 / 90 / 0.9
    assert ap_nuscenes(c) == pytest.approx(36.65 / 90 / 0.9, abs=1e-12)
    op = at_threshold(c, 0.8)
    assert (op["tp"], op["fp"], op["fn"]) == (1, 1, 2)
    assert op["precision"] == 0.5 and op["recall"] == pytest.approx(1 / 3)


def test_threshold_recommendation() -> None:
    c = curve(DET.score, np.array([True, False, True, False]), 3)  # type: ignore[arg-type]
    rec = recommend(c, precision_target=0.6)
    assert rec["best_f1"] is not None and rec["best_f1"]["threshold"] == 0.75
    assert rec["best_f1"]["f1"] == pytest.approx(2 / 3)
    # lowest threshold with precision >= 0.6 is 0.75 (2/3); 0.65 gives 1/2
    assert rec["precision_target"] is not None and rec["precision_target"]["threshold"] == 0.75
    assert recommend(c, precision_target=0.9)["precision_target"]["threshold"] == 0.95  # type: ignore[index]
    assert recommend(c, precision_target=1.0)["precision_target"]["threshold"] == 0.95  # type: ignore[index]
    none = curve(np.array([0.9, 0.5]), np.array([False, False]), 2)
    assert recommend(none, 0.5) == {"best_f1": None, "precision_target": None}


def test_calibration_hand_case() -> None:
    cal = reliability(np.array([0.95, 0.85, 0.75, 0.65]), np.array([1, 0, 1, 0], bool), 10)
    assert cal["count"] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert cal["accuracy"][6:] == [0.0, 1.0, 0.0, 1.0]
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.25 + 0.65) / 4)
    perfect = reliability(np.array([1.0, 1.0, 0.0]), np.array([1, 1, 0], bool), 4)
    assert perfect["ece"] == 0.0 and perfect["count"] == [1, 0, 0, 2]  # 1.0 in the last bin


def test_iou_matching_per_class_thresholds_and_greedy_by_score() -> None:
    gt = _set([0, 0], [0, 1], [(10, 0), (5, 5)])
    gt.boxes[1, 3:6] = (0.8, 0.8, 1.7)
    # car shifted 0.5 m: BEV IoU 7/9; pedestrian shifted 0.3 m: IoU 0.4/0.88 (>= 0.25);
    # a car label on the pedestrian: never a match
    det = _set([0, 0, 0], [0, 1, 0], [(10.5, 0), (5.3, 5), (5, 5)], [0.9, 0.8, 0.7])
    det.boxes[1:, 3:6] = (0.8, 0.8, 1.7)
    lim = np.array([0.5, 0.25])[det.cls]
    assert _match(det, gt, "iou_bev", lim).tolist() == [0, 1, -1]
    # the same car 1.5 m off: IoU 5/11 < 0.5, but enough for a 0.25 class
    far = _set([0], [0], [(11.5, 0)], [0.9])
    assert _match(far, gt, "iou_bev", 0.5).tolist() == [-1]
    assert _match(far, gt, "iou_bev", 0.25).tolist() == [0]
    # 3D: the same BEV overlap but half the height overlapping -> IoU drops below 0.5
    up = _set([0], [0], [(10.5, 0)], [0.9], z=0.75)
    assert _match(up, gt, "iou_3d", 0.5).tolist() == [-1]
    assert _match(up, gt, "iou_bev", 0.5).tolist() == [0]
    # greedy by score: the higher score takes the GT even though the other overlaps more
    two = _set([0, 0], [0, 0], [(11.0, 0), (10.1, 0)], [0.9, 0.6])
    assert _match(two, gt, "iou_bev", 0.5).tolist() == [0, -1]


def test_bands_place_true_positives_with_their_ground_truth() -> None:
    gt = _set([0, 0], [0, 0], [(19.5, 0), (30, 0)])
    det = _set([0, 0], [0, 0], [(20.5, 0), (50, 0)], [0.9, 0.8])  # TP across the 20 m edge; FP
    matched = _match(det, gt, "center_distance", 2.0)
    assert matched.tolist() == [0, -1]
    spec = SummarySpec(("Car",), sigma=0.1, distance_bands_m=(0.0, 20.0, 40.0),
                       radar_bins=(0, 1, 3, 6))
    rep = summarise(det, gt, matched, det_range_m=det.boxes[:, 0], gt_range_m=gt.boxes[:, 0],
                    det_radar=np.array([4, -1]), gt_radar=np.array([2, 7]), spec=spec)
    near, mid, far = rep["by_distance"]["Car"]
    assert (near["n_gt"], near["n_det"], near["recall"], near["precision"]) == (1, 1, 1.0, 1.0)
    assert (mid["n_gt"], mid["n_det"], mid["recall"]) == (1, 0, 0.0)
    assert (far["n_gt"], far["n_det"], far["precision"]) == (0, 1, 0.0)
    assert rep["by_distance"]["bins"] == ["0-20 m", "20-40 m", "40+ m"]
    radar = rep["by_radar_points"]
    assert radar["bins"] == ["0", "1-2", "3-5", "6+"]
    # the TP sits in its GT's bin (2 points -> "1-2"), not its own count (4); the FP's count
    # is unknown, so precision-side numbers are null
    assert [r["n_gt"] for r in radar["Car"]] == [0, 1, 0, 1]
    assert radar["Car"][1]["recall"] == 1.0 and radar["Car"][1]["precision"] is None
    assert rep["recommended_thresholds"] == {"Car": 0.9}
    counts = frame_counts(det, gt, matched, 1, [0.85])
    assert {k: v.tolist() for k, v in counts.items()} == \
        {"n_gt": [2], "n_det": [1], "tp": [1], "fp": [0], "fn": [1]}


def test_bin_names() -> None:
    assert bin_names([0, 1, 3, 6], integer=True) == ["0", "1-2", "3-5", "6+"]
    assert bin_names([0.0, 20.0], " m") == ["0-20 m", "20+ m"]


def test_center_distance_ap_equals_devkit_accumulate_on_random_cases() -> None:
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap
    from nuscenes.eval.detection.data_classes import DetectionBox

    names = ["car", "pedestrian", "bicycle"]
    rng = np.random.default_rng(7)
    for trial in range(3):
        gts, dets = EvalBoxes(), EvalBoxes()
        g_rows: list[tuple[int, int, float, float]] = []
        d_rows: list[tuple[int, int, float, float, float]] = []
        for s in range(25):
            tok = f"s{trial}_{s}"
            gl, dl = [], []
            for _ in range(rng.integers(0, 9)):
                c, x, y = int(rng.integers(0, 3)), *rng.uniform(-40, 40, 2)
                g_rows.append((s, c, x, y))
                gl.append(DetectionBox(tok, (x, y, 0.0), (2, 4, 1.5), detection_name=names[c]))
                for _ in range(rng.integers(0, 3)):  # 0-2 detections near each object
                    dx, dy = rng.normal(0, 1.2, 2)
                    d_rows.append((s, c, x + dx, y + dy, round(float(rng.uniform()), 2)))
            for _ in range(rng.integers(0, 4)):  # false positives anywhere
                d_rows.append((s, int(rng.integers(0, 3)), *rng.uniform(-40, 40, 2),
                               round(float(rng.uniform()), 2)))
            for r in [r for r in d_rows if r[0] == s]:
                dl.append(DetectionBox(tok, (r[2], r[3], 0.0), (2, 4, 1.5),
                                       detection_name=names[r[1]], detection_score=r[4]))
            gts.add_boxes(tok, gl)
            dets.add_boxes(tok, dl)
        g = np.array(g_rows).reshape(-1, 4)
        d = np.array(d_rows).reshape(-1, 5)
        gt = BoxSet(g[:, 0].astype(int), g[:, 1].astype(int), np.zeros((len(g), 7)), g[:, 2:4])
        det = BoxSet(d[:, 0].astype(int), d[:, 1].astype(int), np.zeros((len(d), 7)), d[:, 2:4],
                     d[:, 4])
        for th in (0.5, 1.0, 2.0, 4.0):
            matched = _match(det, gt, "center_distance", th)
            for k, name in enumerate(names):
                want = calc_ap(accumulate(gts, dets, name, center_distance, th), 0.1, 0.1)
                m = det.cls == k
                got = ap_nuscenes(curve(d[m, 4], matched[m] >= 0, int(np.sum(gt.cls == k))))
                assert got == pytest.approx(want, abs=1e-12), (trial, th, name)


def test_candidates_in_chunks_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdpipe.stages.audit import metrics as audit_metrics

    rng = np.random.default_rng(3)
    gt = BoxSet(rng.integers(0, 5, 60), rng.integers(0, 3, 60), np.zeros((60, 7)),
                rng.uniform(-20, 20, (60, 2)))
    det = BoxSet(rng.integers(0, 5, 90), rng.integers(0, 3, 90), np.zeros((90, 7)),
                 rng.uniform(-20, 20, (90, 2)), rng.uniform(size=90))
    whole = candidates(det, gt, "center_distance", 8.0)
    monkeypatch.setattr(audit_metrics, "_PAIRS_PER_CHUNK", 100)  # 1 detection a chunk
    parts = candidates(det, gt, "center_distance", 8.0)
    assert np.array_equal(whole.gt, parts.gt) and np.array_equal(whole.cost, parts.cost)
    assert whole.gt.shape[1] > 1 and np.isfinite(whole.cost).any()
    # every kept pair is same frame, same class, within the cutoff
    p, k = np.nonzero(whole.gt >= 0)
    g = whole.gt[p, k]
    assert (det.frame[p] == gt.frame[g]).all() and (det.cls[p] == gt.cls[g]).all()
    assert (np.hypot(*(det.xy[p] - gt.xy[g]).T) < 8.0).all()
