"""Audit mAP vs nuscenes-devkit `DetectionEval` on the same predictions (goal: same mAP within
1e-3, kdpipe >= 10x faster).

A synthetic nuScenes v1.0-mini world (`kdpipe synth nuscenes`, small sensors: only the boxes
matter here) is ingested; predictions are its ground truth made realistic: 15% missed,
centre noise growing with range, size and yaw noise, 10% duplicates at lower scores, 3% with
a wrong class, and clutter (40% as many false positives as objects). They are written once as
a DETECTIONS Parquet table and once as the devkit's submission JSON (kdpipe's
`write_submission`), and evaluated over a custom split holding every scene.

Timed in one process after one untimed warm-up round (imports, page cache), median of
`--repeats`, both sides from their own inputs on disk:
- devkit `NuScenes(...)` table load (its ground truth source), reported on its own;
- devkit `DetectionEval(...)` construction (reads the JSON, builds GT boxes from the loaded
  tables, ego distances, range / point / bike-rack filters) + `evaluate()` (matching, AP, and
  the TP errors it computes along the way; NDS needs them, mAP does not);
- kdpipe: read detections / frames / boxes Parquet + `nuscenes_map` (the same filters,
  matching and AP; no TP errors).
`speedup` compares devkit construction + evaluate (its tables already loaded) with kdpipe's
reads + mAP; `speedup_with_table_load` adds the devkit's table load; `speedup_eval_only`
compares `evaluate()` alone with `nuscenes_map` on tables already in memory;
`speedup_full_audit` puts every figure of the audit JSON (mAP plus the 2 m matching, curves,
calibration, bands: the stage's `compute`, without the HTML and the FP radar counts) against
the devkit.

    python benchmarks/audit.py [--scenes 10] [--samples 20] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.evaluation.nuscenes_eval import write_submission
from kdpipe.schemas.tables import DETECTIONS
from kdpipe.stages.audit.nuscenes import nuscenes_map
from kdpipe.stages.audit.stage import AuditConfig, compute
from kdpipe.testing import ingest_store
from kdpipe.testing.submissions import add_split_of_every_scene

SPLIT = "bench_all"  # custom devkit split (v1.0-mini/splits.json) holding every scene


def predictions(gt: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Detections made from ground truth with misses, noise, duplicates, confusions, clutter."""
    rng = np.random.default_rng(seed)
    gt = gt.filter(pl.col("label").is_not_null())
    hit = gt.filter(pl.Series(rng.random(gt.height) > 0.15))
    n = hit.height
    sd_m = 0.1 + 0.02 * np.hypot(hit["x_ego_m"].to_numpy(), hit["y_ego_m"].to_numpy())
    names = sorted(set(gt["label"].to_list()))
    confused = rng.random(n) < 0.03
    tp = hit.with_columns(
        x_ego_m=pl.col("x_ego_m") + rng.normal(0, sd_m), y_ego_m=pl.col("y_ego_m")
        + rng.normal(0, sd_m), z_ego_m=pl.col("z_ego_m") + rng.normal(0, 0.1, n),
        length_m=pl.col("length_m") * rng.normal(1, 0.05, n),
        width_m=pl.col("width_m") * rng.normal(1, 0.05, n),
        yaw_ego_rad=pl.col("yaw_ego_rad") + rng.normal(0, 0.1, n),
        label=pl.when(pl.Series(confused)).then(pl.Series(rng.choice(names, n)))
        .otherwise(pl.col("label")),
        score=pl.Series(np.clip(rng.beta(5, 2, n) - 0.004 * sd_m, 0.01, 1.0)))
    dup = tp.sample(fraction=0.1, seed=seed).with_columns(
        x_ego_m=pl.col("x_ego_m") + rng.normal(0, 1.0), score=pl.col("score") * 0.6)
    n_fp = int(0.4 * gt.height)
    fp = gt.sample(n_fp, with_replacement=True, seed=seed + 1).with_columns(
        x_ego_m=pl.Series(rng.uniform(-55, 55, n_fp)),
        y_ego_m=pl.Series(rng.uniform(-55, 55, n_fp)), score=pl.Series(rng.beta(2, 5, n_fp)))
    return pl.concat([tp, dup, fp]).with_columns(
        det_index=pl.lit(0, pl.Int32), vx_ego_mps=pl.col("vx_ego_mps").fill_null(0.0),
        vy_ego_mps=pl.col("vy_ego_mps").fill_null(0.0)).select(list(DETECTIONS))


def world(tmp: Path, scenes: int, samples: int) -> tuple[Path, Path]:
    root = tmp / "nus"
    write_nuscenes(root, scenes, seed=11, cfg=SynthConfig(
        nus_samples_per_scene=samples, image_scale=0.1, nus_lidar_azimuths=128,
        nus_radar_sweeps=1, nus_cameras=()))
    add_split_of_every_scene(root / "v1.0-mini", SPLIT)
    return root, ingest_store(tmp, root, "nuscenes", camera_channels=[])


def time_devkit(root: Path, sub: Path, out: Path, nusc: Any
                ) -> tuple[float, float, dict[str, Any]]:
    """(construction s, evaluate s, {mean_ap, class_ap}) of one DetectionEval run, silenced."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(sub), SPLIT,
                           str(out), verbose=False)
        t1 = time.perf_counter()
        metrics, _ = ev.evaluate()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, {"mean_ap": float(metrics.mean_ap),
                              "class_ap": {k: float(v) for k, v in metrics.mean_dist_aps.items()}}


def time_kdpipe(ingest: Path, dets_path: Path) -> tuple[float, float, dict[str, Any], float]:
    """(Parquet reads s, nuscenes_map s, its result, full audit figures s)."""
    t0 = time.perf_counter()
    frames = pl.read_parquet(ingest / "frames.parquet")
    dets = pl.read_parquet(dets_path)
    boxes = pl.read_parquet(ingest / "boxes.parquet")
    t1 = time.perf_counter()
    m = nuscenes_map(dets, boxes, frames)
    t2 = time.perf_counter()
    compute(AuditConfig(), frames, dets, boxes)  # every figure of the audit JSON (no HTML)
    return t1 - t0, t2 - t1, m, time.perf_counter() - t2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=20, help="samples per scene")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from nuscenes import NuScenes

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root, ingest = world(tmp, args.scenes, args.samples)
        frames = pl.read_parquet(ingest / "frames.parquet")
        boxes = pl.read_parquet(ingest / "boxes.parquet")
        dets = predictions(boxes, seed=0)
        dets_path = tmp / "detections.parquet"
        dets.write_parquet(dets_path)
        sub = tmp / "submission.json"
        write_submission(dets, frames, sub)
        load_s, init_s, eval_s, read_s, map_s, full_s = [], [], [], [], [], []
        for rep in range(args.repeats + 1):  # the first round warms imports and caches
            with contextlib.redirect_stdout(io.StringIO()):
                t0 = time.perf_counter()
                nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
                load_s_now = time.perf_counter() - t0
            i, e, dev = time_devkit(root, sub, tmp / "eval", nusc)
            r, m, kd, f = time_kdpipe(ingest, dets_path)
            if rep:
                for acc, v in zip((load_s, init_s, eval_s, read_s, map_s, full_s), (
                        load_s_now, i, e, r, m, f), strict=True):
                    acc.append(v)
    med = statistics.median
    devkit_s, kdpipe_s = med(init_s) + med(eval_s), med(read_s) + med(map_s)
    speedup = devkit_s / kdpipe_s
    dev_map, kd_map = dev["mean_ap"], kd["mean_ap"]
    class_diff = max(abs(dev["class_ap"][c] - kd["class_ap"][c]) for c in dev["class_ap"])
    print(json.dumps({
        "benchmark": "audit_vs_detection_eval", "machine": platform.platform(),
        "samples": frames.height, "gt_boxes_detection_classes": int(boxes["label"].is_not_null()
                                                                     .sum()),
        "predictions": dets.height, "repeats": args.repeats,
        "map_devkit": dev_map, "map_kdpipe": kd_map, "map_abs_diff": abs(dev_map - kd_map),
        "class_ap_max_abs_diff": class_diff, "class_ap_devkit": dev["class_ap"],
        "seconds": {"devkit_table_load": med(load_s), "devkit_detection_eval_init": med(init_s),
                    "devkit_evaluate": med(eval_s), "kdpipe_parquet_reads": med(read_s),
                    "kdpipe_nuscenes_map": med(map_s),
                    "kdpipe_full_audit_figures": med(full_s)},
        "devkit_seconds": devkit_s, "kdpipe_seconds": kdpipe_s,
        "speedup": speedup,
        "speedup_with_table_load": (devkit_s + med(load_s)) / kdpipe_s,
        "speedup_eval_only": med(eval_s) / med(map_s),
        "speedup_full_audit": devkit_s / (med(read_s) + med(full_s)),
        "devkit_scope": "DetectionEval construction (JSON read, GT from the loaded tables, "
                        "filters) + evaluate() (matching, AP and TP errors); the NuScenes table "
                        "load is reported apart",
        "kdpipe_scope": "Parquet reads (detections, frames, boxes) + nuscenes_map (filters, "
                        "matching, AP)",
        "goal": "same mAP within 1e-3 and >= 10x faster",
        "goal_met": bool(abs(dev_map - kd_map) < 1e-3 and speedup >= 10.0),
    }, indent=1))


if __name__ == "__main__":
    main()
