"""Ingest figures from DESIGN.md, each beside its baseline, measured in one run.

    python benchmarks/ingest.py --format vod --frames 2000
    python benchmarks/ingest.py --format nuscenes --scenes 50

1. ingest frames/s (LiDAR + radar + labels, written and committed; local Dask, 2 workers) vs the
   official devkit's load-only loop over the same files (goal >= 3x): nuScenes: `NuScenes` +
   `LidarPointCloud.from_file` + `RadarPointCloud.from_file`; VoD: vod-tudelft `FrameDataLoader`
   lidar_data + radar_data + raw_labels.
2. ingest vs the read limit: `np.fromfile` of the same raw point files, nothing written (>= 0.5x).
3. peak RSS of a single-process (sync) ingest at 1x and 10x frames (10x / 1x < 1.3).
4. random-order training reads from the store (StoreDataset) vs per-frame `np.fromfile` (>= 1.0x).
5. 2 Dask workers vs 1 on the same ingest (>= 1.7x).
Page cache: every timed pass reads files the world generator just wrote (warm), baselines too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kdpipe.api import run_workflow

SYNC_RSS = """
import resource, sys
from kdpipe.api import run_workflow
run_workflow(sys.argv[1], sys.argv[2], scheduler="sync")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def workflow(path: Path, fmt: str, root: Path) -> Path:
    path.write_text(
        f'[workflow]\nstages = ["ingest"]\n[ingest]\nformat = "{fmt}"\nroots = ["{root}"]\n'
    )
    return path


def timed_ingest(wf: Path, ws: Path, scheduler: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    rep = run_workflow(wf, str(ws), scheduler=scheduler)
    dt = time.perf_counter() - t0
    import polars as pl

    n = pl.read_parquet(Path(rep["stages"][0]["path"]) / "frames.parquet").height
    return dt, n


def point_files(fmt: str, root: Path) -> list[list[Path]]:
    """Per frame, the raw point files ingest reads."""
    if fmt == "vod":
        ids = sorted(p.stem for p in (root / "lidar/training/velodyne").glob("*.bin"))
        return [
            [root / f"{sensor}/training/velodyne/{i}.bin" for sensor in ("lidar", "radar")]
            for i in ids
        ]
    samples = json.loads((root / "v1.0-mini/sample_data.json").read_text())
    by_sample: dict[str, list[Path]] = {}
    for sd in samples:
        if sd["is_key_frame"] and ("LIDAR" in sd["filename"] or "RADAR" in sd["filename"]):
            by_sample.setdefault(sd["sample_token"], []).append(root / sd["filename"])
    return list(by_sample.values())


def devkit_loop(fmt: str, root: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    if fmt == "nuscenes":
        from nuscenes import NuScenes
        from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud

        nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
        for s in nusc.sample:
            for ch, tok in s["data"].items():
                path = nusc.get_sample_data_path(tok)
                if ch == "LIDAR_TOP":
                    LidarPointCloud.from_file(path)
                elif ch.startswith("RADAR"):
                    RadarPointCloud.from_file(path)
            n += 1
    else:
        from vod.configuration import KittiLocations
        from vod.frame import FrameDataLoader

        loc = KittiLocations(root_dir=str(root))
        for f in sorted(p.stem for p in (root / "lidar/training/velodyne").glob("*.bin")):
            fd = FrameDataLoader(kitti_locations=loc, frame_number=f)
            _ = fd.lidar_data, fd.radar_data, fd.raw_labels
            n += 1
    return time.perf_counter() - t0, n


def fromfile_loop(files: list[list[Path]]) -> float:
    t0 = time.perf_counter()
    for frame in files:
        for f in frame:
            np.fromfile(f, dtype=np.uint8)
    return time.perf_counter() - t0


def training_reads(
    art: Path, files: list[list[Path]], fmt: str, seed: int = 0
) -> tuple[float, float]:
    from kdpipe.datasets.store_dataset import StoreDataset

    ds = StoreDataset(art, sensors=("lidar", "radar"), with_boxes=False)
    # A seeded numpy permutation: a reproducible read order, nothing cryptographic.
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    t0 = time.perf_counter()
    for i in order:
        ds[i]
    store_s = time.perf_counter() - t0
    order = np.random.default_rng(seed).permutation(len(files)).tolist()
    cols = {"vod": (4, 7)}.get(fmt)
    t0 = time.perf_counter()
    for i in order:
        for j, f in enumerate(files[i]):
            a = np.fromfile(f, dtype=np.float32 if cols else np.uint8)
            if cols:
                a.reshape(-1, cols[j])
    return store_s, time.perf_counter() - t0


def peak_rss_kb(wf: Path, ws: Path) -> int:
    out = subprocess.run([sys.executable, "-c", SYNC_RSS, str(wf), str(ws)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def make_world(fmt: str, out: Path, frames: int, scenes: int, seed: int) -> None:
    if fmt == "vod":
        from kdpipe.datasets.synth.vod_writer import write_vod

        write_vod(out, frames, seed)
    else:
        from kdpipe.datasets.synth import write_nuscenes

        write_nuscenes(out, scenes, seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", choices=["vod", "nuscenes"], default="vod")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    res: dict[str, object] = {
        "benchmark": "ingest",
        "format": args.format,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        world, small = tmp / "world", tmp / "small"
        t0 = time.perf_counter()
        make_world(args.format, world, args.frames, args.scenes, args.seed)
        small_frames, small_scenes = max(args.frames // 10, 1), max(args.scenes // 10, 1)
        make_world(args.format, small, small_frames, small_scenes, args.seed)
        res["synth_s"] = round(time.perf_counter() - t0, 1)
        files = point_files(args.format, world)
        wf = workflow(tmp / "wf.toml", args.format, world)
        dev_s, n_dev = devkit_loop(args.format, world)
        ff_s = fromfile_loop(files)
        t2, n = timed_ingest(wf, tmp / "ws2", "local:2")
        t1, _ = timed_ingest(wf, tmp / "ws1", "local:1")
        raw_bytes = sum(f.stat().st_size for fr in files for f in fr)
        res.update({"frames": n, "raw_mb": round(raw_bytes / 1e6, 1)})
        res["ingest_fps_2workers"] = round(n / t2, 1)
        res["ingest_fps_1worker"] = round(n / t1, 1)
        res["devkit_load_fps"] = round(n_dev / dev_s, 1)
        res["fromfile_fps"] = round(len(files) / ff_s, 1)
        res["vs_devkit"] = {"ratio": round(dev_s / n_dev / (t2 / n), 2), "goal": 3.0}
        res["vs_fromfile"] = {"ratio": round(ff_s / len(files) / (t2 / n), 3), "goal": 0.5}
        res["workers_2_vs_1"] = {"ratio": round(t1 / t2, 2), "goal": 1.7}
        art = next((tmp / "ws2/artifacts/ingest").iterdir())
        store_s, raw_s = training_reads(art, files, args.format)
        res["training_reads"] = {
            "store_fps": round(n / store_s, 1),
            "fromfile_fps": round(len(files) / raw_s, 1),
            "ratio": round(raw_s / len(files) / (store_s / n), 2),
            "goal": 1.0,
        }
        rss_small = peak_rss_kb(workflow(tmp / "wfs.toml", args.format, small), tmp / "wss")
        rss_big = peak_rss_kb(wf, tmp / "wsb")
        res["peak_rss_mb"] = {
            "1x": round(rss_small / 1024, 1),
            "10x": round(rss_big / 1024, 1),
            "ratio": round(rss_big / rss_small, 2),
            "goal": "< 1.3",
        }
        store_bytes = sum(p.stat().st_size for p in (art / "points.zarr").rglob("*") if p.is_file())
        res["store_mb"] = round(store_bytes / 1e6, 1)
    for k in ("vs_devkit", "vs_fromfile", "workers_2_vs_1", "training_reads"):
        r = res[k]
        r["met"] = r["ratio"] >= r["goal"]  # type: ignore[index]
    pr = res["peak_rss_mb"]
    pr["met"] = pr["ratio"] < 1.3  # type: ignore[index]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
