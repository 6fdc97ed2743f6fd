"""The audit on nuScenes-format data: its mAP is DetectionEval's on the same predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.evaluation.nuscenes_boxes import centres_in_boxes
from kdpipe.evaluation.nuscenes_eval import score_nuscenes, write_submission
from kdpipe.schemas.tables import DETECTIONS
from kdpipe.stages.audit.nuscenes import devkit_rules
from kdpipe.stages.audit.stage import AuditConfig, compute
from kdpipe.testing import ingest_store


def noisy_predictions(gt: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Ground truth with misses, centre noise growing with range, duplicates and clutter."""
    rng = np.random.default_rng(seed)
    gt = gt.filter(pl.col("label").is_not_null())
    hit = gt.filter(pl.Series(rng.random(gt.height) > 0.15))
    rng_m = np.hypot(hit["x_ego_m"].to_numpy(), hit["y_ego_m"].to_numpy())
    sd = 0.1 + 0.02 * rng_m
    tp = hit.with_columns(x_ego_m=pl.col("x_ego_m") + rng.normal(0, sd),
                          y_ego_m=pl.col("y_ego_m") + rng.normal(0, sd),
                          score=pl.Series(rng.beta(5, 2, hit.height)))
    dup = tp.sample(fraction=0.1, seed=seed).with_columns(
        x_ego_m=pl.col("x_ego_m") + 0.7, score=pl.col("score") * 0.5)
    n_fp = max(1, int(0.4 * gt.height))
    fp = gt.sample(n_fp, with_replacement=True, seed=seed + 1).with_columns(
        x_ego_m=pl.Series(rng.uniform(-55, 55, n_fp)),
        y_ego_m=pl.Series(rng.uniform(-55, 55, n_fp)), score=pl.Series(rng.beta(2, 5, n_fp)))
    out = pl.concat([tp, dup, fp]).with_columns(
        det_index=pl.lit(0, pl.Int32), vx_ego_mps=pl.col("vx_ego_mps").fill_null(0.0),
        vy_ego_mps=pl.col("vy_ego_mps").fill_null(0.0))
    return out.select(list(DETECTIONS))


@pytest.fixture(scope="module")
def nus_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("audit_nus")
    root = tmp / "nus"
    write_nuscenes(root, 2, seed=4, cfg=SynthConfig(
        nus_samples_per_scene=6, image_scale=0.1, nus_lidar_azimuths=128, nus_radar_sweeps=1,
        nus_cameras=()))
    return root, ingest_store(tmp, root, "nuscenes", camera_channels=[])


def test_nuscenes_audit_map_equals_detection_eval(nus_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, ingest = nus_store
    frames = pl.read_parquet(ingest / "frames.parquet").filter(pl.col("split") == "val")
    boxes = pl.read_parquet(ingest / "boxes.parquet").filter(
        pl.col("frame_id").is_in(frames["frame_id"].implode()))
    dets = noisy_predictions(boxes, seed=0)
    assert dets.height > 50
    sub = tmp_path / "sub.json"
    write_submission(dets, frames, sub)
    want = score_nuscenes(root, "v1.0-mini", "mini_val", sub, tmp_path / "eval")
    rep, table, _ = compute(AuditConfig(), frames, dets, boxes)
    assert rep["protocol"]["criterion"] == "center_distance" and rep["protocol"]["nuscenes_rules"]
    got = rep["nuscenes"]
    assert 0.05 < want["mean_ap"] < 0.95  # a case with something to get right
    assert abs(got["mean_ap"] - want["mean_ap"]) < 1e-3
    for cls, ap in want["class_ap"].items():
        assert abs(got["class_ap"][cls] - ap) < 1e-3, cls
    assert rep["mean_ap"] == got["mean_ap"]
    # the per-threshold analyses run at 2 m on the same filtered boxes
    assert rep["protocol"]["match_threshold"]["car"] == 2.0
    assert table["n_gt"].sum() == sum(c["n_gt"] for c in rep["classes"].values())
    assert sum(got["n_gt"].values()) == table["n_gt"].sum()


def test_nuscenes_filters_range_points_and_bike_racks() -> None:
    rules = devkit_rules()
    assert rules.class_range_m["car"] == 50 and rules.class_range_m["pedestrian"] == 40
    assert rules.dist_ths_m == (0.5, 1.0, 2.0, 4.0)
    rack = np.array([[10.0, 0.0, 0.0, 2.0, 1.0, 1.0, np.pi / 2]])
    c = np.array([[10.0, 0.9, 0.0], [10.0, 1.1, 0.0], [10.4, 0.0, 0.5]])  # in, out, on faces
    assert centres_in_boxes(c, np.repeat(rack, 3, axis=0)).tolist() == [True, False, True]
    from kdpipe.stages.audit.nuscenes import apply_rules

    pose = [np.eye(4).reshape(-1).tolist()]
    frames = pl.DataFrame({"frame_id": ["f"], "t_world_from_ego": pose}, schema={
        "frame_id": pl.String, "t_world_from_ego": pl.Array(pl.Float64, 16)})
    base = {"frame_id": "f", "z_ego_m": 0.0, "length_m": 1.0, "width_m": 1.0, "height_m": 1.0,
            "yaw_ego_rad": 0.0}
    gts = pl.DataFrame([
        {**base, "label": "car", "class_name": "vehicle.car", "x_ego_m": 49.0, "y_ego_m": 0.0,
         "num_lidar_pts": 1, "num_radar_pts": 0},
        {**base, "label": "car", "class_name": "vehicle.car", "x_ego_m": 51.0, "y_ego_m": 0.0,
         "num_lidar_pts": 1, "num_radar_pts": 0},          # beyond 50 m
        {**base, "label": "pedestrian", "class_name": "human.pedestrian.adult", "x_ego_m": 5.0,
         "y_ego_m": 0.0, "num_lidar_pts": 0, "num_radar_pts": 0},  # no points
        {**base, "label": "bicycle", "class_name": "vehicle.bicycle", "x_ego_m": 10.0,
         "y_ego_m": 0.5, "num_lidar_pts": 3, "num_radar_pts": 0},  # in the rack
        {**base, "label": None, "class_name": "static_object.bicycle_rack", "x_ego_m": 10.0,
         "y_ego_m": 0.0, "num_lidar_pts": 9, "num_radar_pts": 0, "length_m": 2.0}])
    gts = gts.with_columns(yaw_ego_rad=pl.Series([0.0, 0.0, 0.0, 0.0, np.pi / 2]))
    dets = gts.filter(pl.col("label").is_not_null()).with_columns(score=pl.lit(0.5))
    d, g = apply_rules(dets, gts, frames, rules)
    assert g["x_ego_m"].to_list() == [49.0]
    assert sorted(d["x_ego_m"].to_list()) == [5.0, 49.0]  # predictions keep zero-point boxes
