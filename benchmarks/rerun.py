"""No-op re-run over a workspace holding artifacts for N frames (goal, issue 16: < 1 s at 100k
frames = 500k raw files, `kdpipe run` in a fresh process, median of the repeats).

Raw input: N frames x 5 files (the file count of a VoD frame: LiDAR, radar, label, calib, pose).
`--layout vod` (the default) writes them as a View-of-Delft tree holds them, 5 folders of N files
(`lidar/000123.bin`, `radar/...`, `label_2/...`, `calib/...`, `pose/...`); `--layout flat` writes
all 5N into one folder (`000123_lidar.bin`, the layout of the figures before 2026-11-30). The
workflow is the three-stage toy DAG from kdpipe.testing (source -> scale -> report), run once for
real (its source reads only top-level files, none in the vod layout: no timed figure depends on
that; the raw-input fingerprint still covers all 5N files). Then:

- one untimed-for-the-goal no-op (`warmup`): the first run after the files were written scans
  from scratch and writes the fingerprint's stat cache (a folder changed less than
  `fingerprint.RACY_NS` ago is not cached, so it waits that long first);
- `--repeats` no-op runs, `kdpipe run --json` in a fresh process (imports, planning,
  fingerprinting included), wall and CPU time (user + sys of the child), plus the in-process
  `run_workflow` time; the baseline, interleaved: the same run with the stat cache off
  (KDPIPE_FINGERPRINT_CACHE=off: every folder listed, every row formatted and sorted); the
  cached run without the prefetch (KDPIPE_PREFETCH=off: the stat pass starts once the plan asks,
  after the imports, as before 2026-12-02); and the cached run with the stat pass in this process
  only and no prefetch (KDPIPE_STAT_PROCS=1, as before forked stat children);
- the safety check: one raw file rewritten in place (same size, mtime + 1 s, its folder's mtime
  untouched) must make the source stage run again.

The fingerprint cache goes to a temporary KDPIPE_CACHE (a cold start, nothing left behind). The
1-minute load average is recorded before and after: the machine may be shared.

    python benchmarks/rerun.py [--frames 10000] [--repeats 5] [--layout vod|flat]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdpipe.api import run_workflow
from kdpipe.pipeline import fingerprint
from kdpipe.testing import toy_workflow

FILES_PER_FRAME = ("lidar.bin", "radar.bin", "label.txt", "calib.txt", "pose.json")
VOD_FOLDERS = {"lidar.bin": "lidar", "radar.bin": "radar", "label.txt": "label_2",
               "calib.txt": "calib", "pose.json": "pose"}
GOAL_S = 1.0


def write_raw(raw: Path, frames: int, layout: str) -> list[Path]:
    """N frames x 5 files of 32 bytes; the paths written, in order."""
    out = []
    if layout == "vod":
        for name in FILES_PER_FRAME:
            (raw / VOD_FOLDERS[name]).mkdir(parents=True)
    else:
        raw.mkdir(parents=True)
    for i in range(frames):
        for name in FILES_PER_FRAME:
            ext = name.rsplit(".", 1)[1]
            p = raw / VOD_FOLDERS[name] / f"{i:06d}.{ext}" if layout == "vod" \
                else raw / f"{i:06d}_{name}"
            p.write_bytes(i.to_bytes(4, "little") * 8)
            out.append(p)
    return out


def cli_run(wf: Path, ws: Path, env: dict[str, str]) -> tuple[float, float, dict[str, str]]:
    """(wall s, child CPU s, stage -> status) of one `kdpipe run --json` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "kdpipe", "run", "--workflow", str(wf),
                          "--workspace", str(ws), "--json"],
                         capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, {s["stage"]: s["status"] for s in json.loads(res.stdout)["stages"]}


def rewrite_in_place(path: Path) -> dict[str, bool]:
    """Same size, new bytes, mtime + 1 s; says whether the folder's mtime stayed as it was."""
    folder_mtime, st = path.parent.stat().st_mtime_ns, path.stat()
    with open(path, "r+b") as f:
        f.write(bytes(255 - b for b in path.read_bytes()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return {"same_size": path.stat().st_size == st.st_size,
            "folder_mtime_unchanged": path.parent.stat().st_mtime_ns == folder_mtime}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layout", choices=("vod", "flat"), default="vod",
                    help="vod: 5 folders of N files (real layout); flat: 5N files in one folder")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        os.environ["KDPIPE_CACHE"] = str(tmp / "cache")  # in-process runs and children
        env = dict(os.environ)
        files = write_raw(tmp / "raw", args.frames, args.layout)
        written_ns = time.time_ns()
        wf = toy_workflow(tmp / "wf.toml", tmp / "raw")
        t0 = time.perf_counter()
        first = run_workflow(wf, str(tmp / "ws"), scheduler="sync")
        first_s = time.perf_counter() - t0
        assert {s["status"] for s in first["stages"]} == {"ran"}
        time.sleep(max(0.0, (written_ns + fingerprint.RACY_NS - time.time_ns()) / 1e9 + 0.05))
        warm_s, warm_cpu, status = cli_run(wf, tmp / "ws", env)
        assert set(status.values()) == {"cached"}, status
        cli, cpu, inproc, base, base_cpu, one, late = [], [], [], [], [], [], []
        for _ in range(args.repeats):
            wall, c, status = cli_run(wf, tmp / "ws", env)
            assert set(status.values()) == {"cached"}, status
            cli.append(wall)
            cpu.append(c)
            wall, c, status = cli_run(wf, tmp / "ws", {**env, "KDPIPE_FINGERPRINT_CACHE": "off"})
            assert set(status.values()) == {"cached"}, status
            base.append(wall)
            base_cpu.append(c)
            wall, c, status = cli_run(wf, tmp / "ws", {**env, "KDPIPE_PREFETCH": "off"})
            assert set(status.values()) == {"cached"}, status
            late.append(wall)
            wall, c, status = cli_run(wf, tmp / "ws", {**env, "KDPIPE_STAT_PROCS": "1",
                                                       "KDPIPE_PREFETCH": "off"})
            assert set(status.values()) == {"cached"}, status
            one.append(wall)
            t0 = time.perf_counter()
            rep = run_workflow(wf, str(tmp / "ws"))
            inproc.append(time.perf_counter() - t0)
            assert {s["status"] for s in rep["stages"]} == {"cached"}
        changed = files[len(files) // 2]
        write = rewrite_in_place(changed)
        change_s, _, status = cli_run(wf, tmp / "ws", env)
        detected = status["toy-source"] != "cached"
    load_after = os.getloadavg()
    median = statistics.median(cli)
    print(json.dumps({
        "benchmark": "rerun_noop", "frames": args.frames, "layout": args.layout,
        "raw_files": args.frames * len(FILES_PER_FRAME), "stages": 3,
        "first_run_s": round(first_s, 2),
        "warmup_noop_cli_s": round(warm_s, 3), "warmup_noop_cli_cpu_s": round(warm_cpu, 3),
        "noop_cli_s_median": round(median, 3), "noop_cli_s_max": round(max(cli), 3),
        "noop_cli_s_all": [round(x, 3) for x in cli],
        "noop_cli_cpu_s_median": round(statistics.median(cpu), 3),
        "noop_inprocess_s_median": round(statistics.median(inproc), 3),
        "noop_cli_no_prefetch_s_median": round(statistics.median(late), 3),
        "noop_cli_one_process_stats_s_median": round(statistics.median(one), 3),
        "baseline_no_cache_cli_s_median": round(statistics.median(base), 3),
        "baseline_no_cache_cli_cpu_s_median": round(statistics.median(base_cpu), 3),
        "in_place_change": {"file": str(changed.relative_to(tmp / "raw")), **write,
                            "source_status": status["toy-source"], "detected": detected,
                            "cli_s": round(change_s, 3)},
        "goal_s": GOAL_S, "met": median < GOAL_S and detected,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }, indent=1))


if __name__ == "__main__":
    main()
