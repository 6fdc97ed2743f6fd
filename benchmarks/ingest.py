"""Ingest figures from DESIGN.md, each beside its baseline, measured in one run.

    python benchmarks/ingest.py --format vod --frames 2000
    python benchmarks/ingest.py --format nuscenes --scenes 50

1. ingest frames/s (LiDAR + radar + labels, written and committed; local Dask, 2 workers) vs the
   official devkit's load-only loop over the same files (goal >= 3x): nuScenes: `NuScenes` +
   `LidarPointCloud.from_file` + `RadarPointCloud.from_file`; VoD: vod-tudelft `FrameDataLoader`
   lidar_data + radar_data + raw_labels.
2. ingest vs the read limit: `np.fromfile` of the same raw point files, nothing written
   (>= 0.05x, DESIGN.md).
3. peak RSS of a single-process (sync) ingest at 1x and 10x frames (10x / 1x < 1.3).
4. random-order training reads from the store (StoreDataset) vs per-frame `np.fromfile` (>= 1.0x).
5. 2 Dask workers vs 1 on the same ingest (>= 1.7x); `--repeats N` runs each N times in ABBA
   order and reports the medians (one 10-20 s run on a shared machine moves by 5-10%).
6. `--profile-frames N`: cProfile of a sync ingest of the 1x world (its first N frames' blocks
   are the whole 1x world when N >= its size), top entries by own time, in the JSON.
Issue 17's goals are checked under `issue17`: >= 0.05x np.fromfile with 2 workers, 2 workers
>= 1.7x 1 worker, peak RSS at 10x frames < 1.3x.
Page cache: every timed pass reads files the world generator just wrote (warm), baselines too.
Threads: BLAS/OpenMP pools pinned to 1 in this process and its children (Dask workers get 1
each from the executor); `os.getloadavg()` is recorded before and after each phase, since the
machine may be shared: with a load above the core count, the worker-scaling figure is noise.
`--world DIR` / `--small DIR` keep the synthetic worlds across runs (made when missing).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy starts its pools (children inherit it)

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from kdpipe.api import run_workflow  # noqa: E402

# Peak RSS from VmHWM (this process's own address space): ru_maxrss of a child started by a
# large parent reports the parent's size, which it keeps across exec (Linux), so the earlier
# figures (420.8 vs 420.8 MB) were the benchmark process's, not the ingest's.
SYNC_RSS = """
import re, resource, sys
from kdpipe.api import run_workflow
run_workflow(sys.argv[1], sys.argv[2], scheduler="sync")
try:
    status = open("/proc/self/status").read()
    print(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def workflow(path: Path, fmt: str, root: Path) -> Path:
    path.write_text(
        f'[workflow]\nstages = ["ingest"]\n[ingest]\nformat = "{fmt}"\nroots = ["{root}"]\n'
    )
    return path


def cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its reaped children (the Dask
    workers once their cluster is closed): on a shared machine, CPU per frame is the figure
    that other jobs disturb least."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_ingest(wf: Path, ws: Path, scheduler: str) -> tuple[float, int, float]:
    """(wall s, frames ingested, CPU s of this process and its workers)."""
    c0, t0 = cpu_s(), time.perf_counter()
    rep = run_workflow(wf, str(ws), scheduler=scheduler)
    dt, cpu = time.perf_counter() - t0, cpu_s() - c0
    import polars as pl

    n = pl.read_parquet(Path(rep["stages"][0]["path"]) / "frames.parquet").height
    return dt, n, cpu


def alternating(wf: Path, tmp: Path, repeats: int) -> tuple[Any, Any, dict[str, Any]]:
    """`repeats` ingests with 2 workers and with 1, in ABBA order (drift in the machine's load
    falls on both alike); per scheduler the median (wall, frames, CPU) and every wall time.
    The last 2-worker workspace (`ws2`) is kept for the training-read figure."""
    out: dict[str, list[tuple[float, int, float]]] = {"local:2": [], "local:1": []}
    for i in range(repeats):
        for sched in ("local:2", "local:1")[:: 1 if i % 2 == 0 else -1]:
            ws = tmp / f"ws{sched[-1]}"
            shutil.rmtree(ws, ignore_errors=True)
            out[sched].append(timed_ingest(wf, ws, sched))
    med = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
    return med["local:2"], med["local:1"], {
        k: {"wall_s": [round(r[0], 2) for r in v], "cpu_s": [round(r[2], 2) for r in v]}
        for k, v in out.items()}


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
) -> tuple[float, float, float]:
    """(first pass over the store, second pass, raw per-frame fromfile) in seconds. The
    second pass reads what the first left in the page cache, like the raw files (which the
    world generator just wrote) in the baseline; the first reads whatever of the store the
    ingest's writes left cached."""
    from kdpipe.datasets.store_dataset import StoreDataset

    ds = StoreDataset(art, sensors=("lidar", "radar"), with_boxes=False)
    # A seeded numpy permutation: a reproducible read order, nothing cryptographic.
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    passes = []
    for _ in range(2):
        t0 = time.perf_counter()
        for i in order:
            ds[i]
        passes.append(time.perf_counter() - t0)
    order = np.random.default_rng(seed).permutation(len(files)).tolist()
    cols = {"vod": (4, 7)}.get(fmt)
    t0 = time.perf_counter()
    for i in order:
        for j, f in enumerate(files[i]):
            a = np.fromfile(f, dtype=np.float32 if cols else np.uint8)
            if cols:
                a.reshape(-1, cols[j])
    return passes[0], passes[1], time.perf_counter() - t0


def peak_rss_kb(wf: Path, ws: Path) -> int:
    out = subprocess.run([sys.executable, "-c", SYNC_RSS, str(wf), str(ws)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def make_world(fmt: str, out: Path, frames: int, scenes: int, seed: int) -> None:
    """Synthesise the world into `out` unless a complete one is there (`_complete` marker)."""
    if (out / "_complete").exists():
        return
    shutil.rmtree(out, ignore_errors=True)
    if fmt == "vod":
        from kdpipe.datasets.synth.vod_writer import write_vod

        write_vod(out, frames, seed)
    else:
        from kdpipe.datasets.synth import write_nuscenes

        write_nuscenes(out, scenes, seed)
    (out / "_complete").write_text(f"{fmt} frames={frames} scenes={scenes} seed={seed}\n")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def profile_ingest(wf: Path, ws: Path, top: int = 15) -> dict[str, object]:
    """cProfile of a sync ingest (imports done before): wall time and the top entries by own
    time (compression and file writes run on zarr's I/O threads: they show as lock waits)."""
    import polars  # noqa: F401
    import zarr  # noqa: F401

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_workflow(wf, str(ws), scheduler="sync")
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof)
    repo = str(Path(__file__).resolve().parents[1])
    rows, ours = [], []
    for (file, line, fn), (_, ncalls, tottime, cumtime, _) in st.stats.items():  # type: ignore[attr-defined]
        row = {"function": f"{Path(file).name}:{line}({fn})", "ncalls": ncalls,
               "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)}
        rows.append(row)
        if file.startswith(repo) and "/pipeline/" not in file and "/kdpipe/" not in file:
            ours.append(row)
    rows.sort(key=lambda r: -float(r["tottime_s"]))  # type: ignore[arg-type]
    ours.sort(key=lambda r: -float(r["cumtime_s"]))  # type: ignore[arg-type]
    return {"wall_s": round(wall, 2), "top_by_tottime": rows[:top],
            "ingest_code_by_cumtime": ours[:top]}


def judge(res: dict[str, object], loads: dict[str, list[float]]) -> None:
    """`met` flags, and issue 17's goals with a word on whether the load spoils them."""
    for k in ("vs_devkit", "vs_fromfile", "workers_2_vs_1", "training_reads"):
        r = res[k]
        r["met"] = r["ratio"] >= r["goal"]  # type: ignore[index]
    pr = res["peak_rss_mb"]
    pr["met"] = pr["ratio"] < 1.3  # type: ignore[index]
    busy = max(v[0] for v in loads.values()) > (os.cpu_count() or 1)
    res["issue17"] = {
        "vs_fromfile_2workers": res["vs_fromfile"],  # goal and met set above
        "workers_2_vs_1": {**res["workers_2_vs_1"],  # type: ignore[dict-item]
                           "meaningful": not busy,
                           "note": ("1-min load average above the core count during the run: "
                                    "the worker-scaling ratio measures the other jobs too")
                           if busy else "machine not oversubscribed"},
        "rss_10x_vs_1x": pr,
    }


def memory_and_profile(args: argparse.Namespace, tmp: Path, worlds: tuple[Path, Path],
                       res: dict[str, object], loads: dict[str, list[float]]) -> None:
    """Peak RSS of sync ingests at 1x and 10x frames; the profile if asked."""
    wf, small = worlds
    shutil.rmtree(tmp / "ws1", ignore_errors=True)
    shutil.rmtree(tmp / "ws2", ignore_errors=True)
    loads["before_rss"] = load()
    wf_small = workflow(tmp / "wfs.toml", args.format, small)
    rss_small = peak_rss_kb(wf_small, tmp / "wss")
    rss_big = peak_rss_kb(wf, tmp / "wsb")
    res["peak_rss_mb"] = {
        "1x": round(rss_small / 1024, 1),
        "10x": round(rss_big / 1024, 1),
        "ratio": round(rss_big / rss_small, 2),
        "goal": "< 1.3",
    }
    if args.profile:
        loads["before_profile"] = load()
        res["profile_sync_1x"] = profile_ingest(wf_small, tmp / "wsp")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", choices=["vod", "nuscenes"], default="vod")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", type=Path, help="keep the 10x world here (reused if complete)")
    ap.add_argument("--small", type=Path, help="keep the 1x world here (reused if complete)")
    ap.add_argument("--profile", action="store_true", help="cProfile a sync ingest of the 1x world")
    ap.add_argument("--scheduler", default="local:2",
                    help="also time one ingest with this scheduler (e.g. sync: no cluster)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="ingests per scheduler (2 and 1 workers, alternating); medians reported")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    res: dict[str, object] = {
        "benchmark": "ingest",
        "format": args.format,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": {v: os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    loads: dict[str, list[float]] = {"start": load()}
    res["loadavg_1_5_15"] = loads
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        world, small = args.world or tmp / "world", args.small or tmp / "small"
        t0 = time.perf_counter()
        make_world(args.format, world, args.frames, args.scenes, args.seed)
        small_frames, small_scenes = max(args.frames // 10, 1), max(args.scenes // 10, 1)
        make_world(args.format, small, small_frames, small_scenes, args.seed)
        res["synth_s"] = round(time.perf_counter() - t0, 1)
        files = point_files(args.format, world)
        wf = workflow(tmp / "wf.toml", args.format, world)
        fromfile_loop(files)  # warm the page cache for everyone alike
        loads["before_baselines"] = load()
        dev_s, n_dev = devkit_loop(args.format, world)
        ff_s = statistics.median(fromfile_loop(files) for _ in range(args.repeats))
        loads["before_ingests"] = load()
        (t2, n, cpu2), (t1, _, cpu1), runs = alternating(wf, tmp, args.repeats)
        res["ingest_runs"] = runs
        loads["after_ingests"] = load()
        if args.scheduler != "local:2":  # a third, in-process run (no cluster start)
            loads["before_" + args.scheduler] = load()
            ts, _, cpus = timed_ingest(wf, tmp / "wss_t", args.scheduler)
            res["ingest_" + args.scheduler] = {"fps": round(n / ts, 1),
                                               "cpu_ms_per_frame": round(cpus / n * 1e3, 2)}
            shutil.rmtree(tmp / "wss_t", ignore_errors=True)
        raw_bytes = sum(f.stat().st_size for fr in files for f in fr)
        res.update({"frames": n, "raw_mb": round(raw_bytes / 1e6, 1)})
        res["ingest_fps_2workers"] = round(n / t2, 1)
        res["ingest_fps_1worker"] = round(n / t1, 1)
        # CPU of the driver and the workers together, process starts included
        res["ingest_cpu_ms_per_frame"] = {"2workers": round(cpu2 / n * 1e3, 2),
                                          "1worker": round(cpu1 / n * 1e3, 2)}
        res["devkit_load_fps"] = round(n_dev / dev_s, 1)
        res["fromfile_fps"] = round(len(files) / ff_s, 1)
        res["vs_devkit"] = {"ratio": round(dev_s / n_dev / (t2 / n), 3), "goal": 3.0}
        res["vs_fromfile"] = {"ratio": round(ff_s / len(files) / (t2 / n), 4), "goal": 0.05}
        res["workers_2_vs_1"] = {"ratio": round(t1 / t2, 2), "goal": 1.7}
        art = next((tmp / "ws2/artifacts/ingest").iterdir())
        store_s, warm_s, raw_s = training_reads(art, files, args.format)
        res["training_reads"] = {
            "store_fps": round(n / store_s, 1),
            "store_fps_second_pass": round(n / warm_s, 1),  # all from the page cache
            "fromfile_fps": round(len(files) / raw_s, 1),
            "ratio": round(raw_s / len(files) / (store_s / n), 2),
            "ratio_second_pass": round(raw_s / len(files) / (warm_s / n), 2),
            "goal": 1.0,
        }
        store_bytes = sum(p.stat().st_size for p in (art / "points.zarr").rglob("*") if p.is_file())
        res["store_mb"] = round(store_bytes / 1e6, 1)
        memory_and_profile(args, tmp, (wf, small), res, loads)
        loads["end"] = load()
    judge(res, loads)
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
