"""Random-order frame reads from the ingested store vs per-frame `np.fromfile` (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/store_reads.py --frames 300 --stores lz4,none,lz4:8192:64

One synthetic VoD world (`write_vod`) is ingested once per store layout (`--stores`: ingest
`compressor[:chunk_rows[:shard_chunks]]`, ingest's defaults where left out; the first one is the
headline); every frame's LiDAR and radar is then read in one seeded random order by
  (a) `np.fromfile` of the raw VoD .bin files (the frames table's `lidar_path` / `radar_path`),
  (b) zarr-python slices `points[off[i]:off[i + 1]]` (what StoreDataset did before PointsReader),
  (c) `PointsReader.frame` (a fresh reader per pass: its chunk cache starts empty),
  (d) `StoreDataset` items (c behind the torch Dataset, boxes off).
Page cache warm for all (every raw and store file is read once first); one thread everywhere
(OMP_NUM_THREADS=1, blosc nthreads=1). Passes alternate a, b, c, d so load drift hits all
alike; the median pass is reported. Goal: reads_vs_fromfile = (c) / (a) >= 1.0.
`decode_floor_us` is what blosc alone needs per frame to decode just that frame's own bytes
(whole chunks decoded back to back, scaled to the mean frame): no reader of a compressed store
can be faster than it, single-threaded.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch start their pools

import argparse  # noqa: E402 -- after pinning the thread pools
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

Frame = tuple[str, str, int, str, str]  # source, scene, frame_index, lidar_path, radar_path
SENSORS = ("lidar", "radar")


def fromfile_pass(frames: list[Frame], order: list[int]) -> None:
    for i in order:
        np.fromfile(frames[i][3], dtype=np.float32).reshape(-1, 4)
        np.fromfile(frames[i][4], dtype=np.float32).reshape(-1, 7)


def zarr_pass(points: Path, frames: list[Frame], order: list[int]) -> None:
    import zarr

    handles: dict[tuple[str, str, str], tuple[Any, np.ndarray]] = {}
    for i in order:
        src, scene, j = frames[i][:3]
        for s in SENSORS:
            k = (src, scene, s)
            if k not in handles:
                d = points / src / scene / s
                handles[k] = (zarr.open_array(store=str(d / "points"), mode="r"),
                              np.asarray(zarr.open_array(store=str(d / "offsets"), mode="r")[:]))
            arr, off = handles[k]
            arr[int(off[j]):int(off[j + 1])]


def reader_pass(points: Path, frames: list[Frame], order: list[int]) -> dict[str, int]:
    from kdpipe.datasets.points_reader import PointsReader

    r = PointsReader(points)
    for i in order:
        src, scene, j = frames[i][:3]
        for s in SENSORS:
            r.frame(src, scene, s, j)
    r.close()
    return r.stats


def dataset_pass(ds: Any, order: list[int]) -> None:
    for i in order:
        ds[i]


def warm(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        n += len(p.read_bytes())
    return n


def decode_floor_us(points: Path, mean_frame_bytes: float) -> float | None:
    """blosc's own time to decode `mean_frame_bytes` (every LiDAR chunk decoded once)."""
    from numcodecs import blosc

    from kdpipe.datasets.points_reader import parse_layout

    secs = nbytes = 0.0
    for meta in sorted(points.glob("*/*/lidar/points/zarr.json")):
        lay = parse_layout(json.loads(meta.read_text()))
        if lay is None or not lay.blosc:
            return None
        for shard in sorted(meta.parent.glob("c/*/0")):
            raw = shard.read_bytes()
            n = 16 * lay.per_shard
            idx = np.frombuffer(raw[-n - 4 * lay.crc:len(raw) - 4 * lay.crc], "<u8").reshape(-1, 2)
            for off, size in idx[idx[:, 0] != 2**64 - 1].tolist():
                src, dst = raw[off:off + size], np.empty(lay.rows * lay.cols * 4, np.uint8)
                t0 = time.perf_counter()
                blosc.decompress(src, dst)
                secs += time.perf_counter() - t0
                nbytes += dst.nbytes
    return round(secs / nbytes * mean_frame_bytes * 1e6, 1) if nbytes else None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(art: Path, frames: list[Frame], repeats: int, seed: int) -> dict[str, Any]:
    from kdpipe.datasets.store_dataset import StoreDataset

    points = art / "points.zarr"
    warm([Path(f[3]) for f in frames] + [Path(f[4]) for f in frames] +
         [p for p in points.rglob("*") if p.is_file()])
    order = np.random.default_rng(seed).permutation(len(frames)).tolist()
    secs: dict[str, list[float]] = {k: [] for k in ("fromfile", "zarr", "reader", "dataset")}
    stats: dict[str, int] = {}
    for _ in range(repeats):
        secs["fromfile"].append(timed(lambda: fromfile_pass(frames, order))[0])
        secs["zarr"].append(timed(lambda: zarr_pass(points, frames, order))[0])
        s, stats = timed(lambda: reader_pass(points, frames, order))
        secs["reader"].append(s)
        ds = StoreDataset(art, sensors=SENSORS, with_boxes=False)  # built outside the timing
        secs["dataset"].append(timed(functools.partial(dataset_pass, ds, order))[0])
    fps = {k: round(len(frames) / statistics.median(v), 1) for k, v in secs.items()}
    lidar_bytes = np.mean([os.path.getsize(f[3]) for f in frames])
    return {"frames_per_s": fps,
            "reads_vs_fromfile": round(fps["reader"] / fps["fromfile"], 3),
            "dataset_vs_fromfile": round(fps["dataset"] / fps["fromfile"], 3),
            "zarr_vs_fromfile": round(fps["zarr"] / fps["fromfile"], 3),
            "reader_vs_zarr": round(fps["reader"] / fps["zarr"], 1),
            "us_per_frame": {k: round(1e6 / v, 1) for k, v in fps.items()},
            "decode_floor_us": decode_floor_us(points, float(lidar_bytes)),
            "reader_chunk_reads": stats,
            "store_mb": round(sum(p.stat().st_size for p in points.rglob("*") if p.is_file())
                              / 2**20, 1),
            "passes_s": {k: [round(x, 3) for x in v] for k, v in secs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stores", default="lz4,none",
                    help="comma-separated compressor[:chunk_rows[:shard_chunks]]")
    args = ap.parse_args()
    from numcodecs import blosc

    from kdpipe.datasets.synth.vod_writer import write_vod
    from kdpipe.testing import ingest_store

    blosc.set_nthreads(1)  # one core, as np.fromfile uses
    res: dict[str, Any] = {
        "benchmark": "store_reads", "date": time.strftime("%Y-%m-%d"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "blosc_nthreads": 1},
        "frames": args.frames, "seed": args.seed, "repeats": args.repeats, "goal": 1.0,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        write_vod(tmp / "world", args.frames, seed=args.seed)
        for spec in args.stores.split(","):
            comp, *rest = spec.split(":")
            layout: dict[str, Any] = dict(zip(("chunk_rows", "shard_chunks"), map(int, rest),
                                              strict=False))
            art = ingest_store(tmp, tmp / "world", ws=f"ws_{spec.replace(':', '_')}",
                               compressor=comp, **layout)
            df = pl.read_parquet(art / "frames.parquet").sort("source", "scene", "frame_index")
            frames: list[Frame] = list(df.select("source", "scene", "frame_index", "lidar_path",
                                                 "radar_path").iter_rows())
            res[spec] = measure(art, frames, args.repeats, args.seed)
            res["points_per_frame"] = {s: round(float(np.mean(df[f"n_{s}"].to_numpy())), 1)
                                       for s in SENSORS}
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["reads_vs_fromfile"] = res[args.stores.split(",")[0]]["reads_vs_fromfile"]
    res["goal_met"] = res["reads_vs_fromfile"] >= 1.0
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
