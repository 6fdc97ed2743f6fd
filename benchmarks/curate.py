"""Curate speed: each strategy on N frames (K teacher boxes each) vs reading the tables.

    python benchmarks/curate.py --frames 100000 --boxes 20 --budget 1000

Tables are generated (frames in scenes of 40, random radar counts, boxes with uniform scores and
a skewed class mix), written as Parquet, then timed in one process:
- baseline: `pl.read_parquet` of the frames and detections tables (the I/O floor every curate run
  pays);
- each strategy: `curate.make_selection` (where filter + score + seeded pick), tables in memory;
- stage: the whole `curate` stage body (read, check, select, write), as `kdpipe run curate` runs it.
Prints JSON; the best of `--repeat` runs each.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.schemas.tables import DETECTIONS, FRAMES
from kdpipe.stages.curate.stage import CurateConfig, make_selection


def tables(n_frames: int, n_boxes: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"bench/{i:07d}" for i in range(n_frames)]
    frames = pl.DataFrame({
        "frame_id": ids, "dataset": "vod", "source": "bench",
        "scene": [f"scene_{i // 40:05d}" for i in range(n_frames)],
        "frame": [i.split("/")[1] for i in ids],
        "frame_index": np.arange(n_frames, dtype=np.int32) % 40,
        "split": np.where(rng.random(n_frames) < 0.8, "unlabeled", "train"),
        "labeled": False, "timestamp_us": None,
        "n_lidar": rng.integers(20_000, 120_000, n_frames).astype(np.int32),
        "n_radar": rng.integers(50, 400, n_frames).astype(np.int32),
        "n_boxes": np.int32(0), "t_world_from_ego": None,
        "lidar_path": [f"/raw/lidar/{i[-7:]}.bin" for i in ids],
        "radar_path": [f"/raw/radar/{i[-7:]}.bin" for i in ids],
        "image_path": None, "image_sha256": None,
    }).cast({k: v for k, v in FRAMES.items()})
    n = n_frames * n_boxes
    dets = pl.DataFrame({
        "frame_id": np.repeat(ids, n_boxes),
        "det_index": np.tile(np.arange(n_boxes, dtype=np.int32), n_frames),
        "label": rng.choice(["Car", "Pedestrian", "Cyclist"], n, p=[0.8, 0.15, 0.05]),
        "score": rng.random(n), **{c: rng.random(n) for c in
                                   ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m",
                                    "height_m", "yaw_ego_rad"]},
        "vx_ego_mps": None, "vy_ego_mps": None,
    }).cast({k: v for k, v in DETECTIONS.items()})
    return frames, dets


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    frames, dets = tables(args.frames, args.boxes, 0)
    counts = {"Car": 5000, "Pedestrian": 900, "Cyclist": 300}
    with tempfile.TemporaryDirectory() as d:
        fp, dp = Path(d) / "frames.parquet", Path(d) / "detections.parquet"
        frames.write_parquet(fp)
        dets.write_parquet(dp)
        out: dict[str, Any] = {"frames": args.frames, "boxes_per_frame": args.boxes,
                               "budget": args.budget, "unlabeled_frames":
                               frames.filter(pl.col("split") == "unlabeled").height,
                               "seconds": {}}
        out["seconds"]["baseline_read_tables"] = best(
            lambda: (pl.read_parquet(fp), pl.read_parquet(dp)), args.repeat)
        for strategy in ("uncertainty", "rare-class", "radar-density", "diversity", "mix"):
            cfg = CurateConfig(strategy=strategy, budget=args.budget, where=["n_radar > 100"])
            out["seconds"][strategy] = best(
                lambda c=cfg: make_selection(frames, c, dets, counts), args.repeat)

        def stage() -> None:
            cfg = CurateConfig(budget=args.budget, where=["n_radar > 100"])
            f, t = pl.read_parquet(fp), pl.read_parquet(dp)
            sel, _ = make_selection(f, cfg, t, counts)
            sel.write_parquet(Path(d) / "selection.parquet")

        out["seconds"]["stage_mix_read_select_write"] = best(stage, args.repeat)
    out["boxes_table_rows"] = args.frames * args.boxes
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
