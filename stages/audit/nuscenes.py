"""The nuScenes detection protocol on kdpipe tables, rule for rule as nuscenes-devkit's
`DetectionEval` (`detection_cvpr_2019`), but vectorised.

Rules taken from the devkit source (eval/common/loaders.py, eval/detection/algo.py, evaluate.py):
- classes: the 10 detection names; a class without ground truth scores AP 0 and still counts in
  the mean;
- boxes beyond the class range (car 50 m, pedestrian 40 m, cone 30 m, ...) are dropped from
  predictions and ground truth; the range is the xy norm of (box - ego) in the global frame;
- ground truth with zero LiDAR + radar points is dropped (predictions are never);
- bicycles and motorcycles (both sides) whose centre lies in a `static_object.bicycle_rack` box
  of the same sample are dropped;
- at most 500 predictions a sample (the submission keeps the 500 best);
- per class and distance threshold (0.5, 1, 2, 4 m): greedy matching over all samples by
  descending score on xy centre distance in the global frame, 101-point interpolated precision,
  recalls <= 0.1 cut, precision shifted by 0.1 and renormalised; AP = mean over thresholds,
  mAP = mean over classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kdpipe.evaluation.nuscenes_boxes import BIKE_RACK, devkit_keep, pose_rows, world_xy
from kdpipe.stages.audit.metrics import (
    BoxSet,
    ap_nuscenes,
    candidates,
    curve,
    greedy_match,
)

BOX_COLUMNS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]


@dataclass(frozen=True)
class NuScenesRules:
    class_names: tuple[str, ...]
    class_range_m: dict[str, float]
    dist_ths_m: tuple[float, ...]
    min_recall: float
    min_precision: float
    max_boxes_per_sample: int


def devkit_rules(name: str = "detection_cvpr_2019") -> NuScenesRules:
    """The devkit's own config, read from the installed package's JSON (what `config_factory`
    reads, without importing the devkit: 2 s of matplotlib and OpenCV; no numbers copied here;
    tests/stages/test_audit_submission.py checks it equals the imported devkit's)."""
    from kdpipe.evaluation.nuscenes_devkit import detection_config

    cfg = detection_config(name)
    return NuScenesRules(tuple(cfg["class_range"]), dict(cfg["class_range"]),
                         tuple(cfg["dist_ths"]), float(cfg["min_recall"]),
                         float(cfg["min_precision"]), int(cfg["max_boxes_per_sample"]))


def with_world_xy(df: pl.DataFrame, frames: pl.DataFrame) -> pl.DataFrame:
    """Add `x_world_m`, `y_world_m` and `ego_dist_m` (`world_xy`, the submission audit's
    expressions) from each row's frame pose in `frames`."""
    return df.lazy().join(pose_rows(frames.lazy()), on="frame_id", how="left",
                          maintain_order="left").with_columns(world_xy()) \
        .drop([f"_T{k}" for k in range(8)]).collect()


def apply_rules(dets: pl.DataFrame, gts: pl.DataFrame, frames: pl.DataFrame,
                rules: NuScenesRules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The devkit's box filters on a detections table and a BOXES table (labels = detection
    names). Both gain `x_world_m`, `y_world_m`, `ego_dist_m`."""
    racks = gts.filter(pl.col("class_name") == BIKE_RACK) if "class_name" in gts.columns \
        else gts.clear()
    # the submission's order (samples in frame order, each by descending score): the devkit
    # breaks score ties by it
    pos = {f: i for i, f in enumerate(frames["frame_id"].to_list())}
    dets = dets.filter(pl.col("label").is_in(rules.class_names)) \
        .with_columns(_f=pl.col("frame_id").replace_strict(pos, return_dtype=pl.Int64)) \
        .sort(["_f", "score"], descending=[False, True], maintain_order=True) \
        .with_columns(_r=pl.int_range(pl.len()).over("frame_id")) \
        .filter(pl.col("_r") < rules.max_boxes_per_sample).drop("_r", "_f")
    gts = gts.filter(pl.col("label").is_in(rules.class_names)
                     & ((pl.col("num_lidar_pts").fill_null(0)
                         + pl.col("num_radar_pts").fill_null(0)) != 0))
    rack_arrays = (_frame_index(racks, pos), racks.select(BOX_COLUMNS).to_numpy()
                   .astype(np.float64).reshape(-1, 7))
    c_idx = {c: i for i, c in enumerate(rules.class_names)}

    def keep(df: pl.DataFrame) -> pl.DataFrame:  # range and bike racks: the submission audit's
        df = with_world_xy(df, frames)
        return df.filter(pl.Series(devkit_keep(
            _frame_index(df, pos),
            df["label"].replace_strict(c_idx, default=-1, return_dtype=pl.Int64).to_numpy(),
            df["ego_dist_m"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
            df.select("x_ego_m", "y_ego_m", "z_ego_m").to_numpy().astype(np.float64),
            rules.class_names, rules.class_range_m, rack_arrays)))

    return keep(dets), keep(gts)


def _frame_index(df: pl.DataFrame, pos: dict[str, int]) -> np.ndarray:
    return df["frame_id"].replace_strict(pos, default=-1, return_dtype=pl.Int64).to_numpy()


def box_sets(dets: pl.DataFrame, gts: pl.DataFrame, frame_ids: list[str],
             classes: tuple[str, ...], xy: tuple[str, str]) -> tuple[BoxSet, BoxSet]:
    """Tables -> BoxSets (frame / class indices, `xy` columns as the matching centres)."""
    f_idx = {f: i for i, f in enumerate(frame_ids)}
    c_idx = {c: i for i, c in enumerate(classes)}

    def one(df: pl.DataFrame, with_score: bool) -> BoxSet:
        return BoxSet(
            frame=df["frame_id"].replace_strict(f_idx, return_dtype=pl.Int64).to_numpy(),
            cls=df["label"].replace_strict(c_idx, return_dtype=pl.Int64).to_numpy(),
            boxes=df.select(BOX_COLUMNS).to_numpy().astype(np.float64).reshape(-1, 7),
            xy=df.select(*xy).to_numpy().astype(np.float64).reshape(-1, 2),
            score=df["score"].to_numpy().astype(np.float64) if with_score else None)

    return one(dets, True), one(gts, False)


def nuscenes_map(dets: pl.DataFrame, gts: pl.DataFrame, frames: pl.DataFrame,
                 rules: NuScenesRules | None = None) -> dict[str, Any]:
    """mAP as DetectionEval computes it (no TP errors, no NDS).

    Args:
        dets: DETECTIONS rows of the evaluated samples, labels already detection names.
        gts: BOXES rows of the same samples (bike racks included: they are a filter).
        frames: FRAMES rows of exactly the evaluated samples (their poses).

    Returns:
        `mean_ap`, `class_ap` (mean over thresholds) and `ap` ({class: {threshold: AP}}).
    """
    rules = rules or devkit_rules()
    d, g = apply_rules(dets, gts, frames, rules)
    det, gt = box_sets(d, g, frames["frame_id"].to_list(), rules.class_names,
                       ("x_world_m", "y_world_m"))
    cand = candidates(det, gt, "center_distance", max(rules.dist_ths_m))
    n_gt = np.bincount(gt.cls, minlength=len(rules.class_names))
    ap: dict[str, dict[str, float]] = {c: {} for c in rules.class_names}
    for th in rules.dist_ths_m:
        matched = greedy_match(det, cand, len(gt), np.full(len(det), th), "center_distance")
        for k, name in enumerate(rules.class_names):
            m = det.cls == k
            assert det.score is not None
            c = curve(det.score[m], matched[m] >= 0, int(n_gt[k]))
            ap[name][f"{th:g}"] = ap_nuscenes(c, rules.min_recall, rules.min_precision)
    class_ap = {c: float(np.mean(list(v.values()))) for c, v in ap.items()}
    return {"mean_ap": float(np.mean(list(class_ap.values()))), "class_ap": class_ap, "ap": ap,
            "n_gt": {c: int(n) for c, n in zip(rules.class_names, n_gt, strict=True)},
            "n_det": int(len(det))}
