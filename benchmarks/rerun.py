"""No-op re-run over a workspace holding artifacts for 10,000 frames (goal: < 2 s).

Raw input: 10,000 frames x 5 files (the file count of a VoD frame: LiDAR, radar, label, calib,
pose), so the raw-input fingerprint stats 50,000 files, as a re-run over real data would. The
workflow is the three-stage toy DAG from kdpipe.testing (source -> scale -> report) run once
for real; then `kdpipe run` is timed end to end as a user runs it (a fresh process, imports
included), plus the in-process planning cost alone.

    python benchmarks/rerun.py [--frames 10000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdpipe.api import run_workflow
from kdpipe.testing import toy_workflow

FILES_PER_FRAME = ("lidar.bin", "radar.bin", "label.txt", "calib.txt", "pose.json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw = tmp / "raw"
        raw.mkdir()
        for i in range(args.frames):
            for name in FILES_PER_FRAME:
                (raw / f"{i:06d}_{name}").write_bytes(i.to_bytes(4, "little") * 8)
        wf = toy_workflow(tmp / "wf.toml", raw)
        t0 = time.perf_counter()
        first = run_workflow(wf, str(tmp / "ws"), scheduler="sync")
        first_s = time.perf_counter() - t0
        assert {s["status"] for s in first["stages"]} == {"ran"}
        cli, inproc = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "kdpipe", "run", "--workflow", str(wf),
                                  "--workspace", str(tmp / "ws"), "--json"],
                                 capture_output=True, text=True, check=True)
            cli.append(time.perf_counter() - t0)
            assert {s["status"] for s in json.loads(res.stdout)["stages"]} == {"cached"}
            t0 = time.perf_counter()
            rep = run_workflow(wf, str(tmp / "ws"))
            inproc.append(time.perf_counter() - t0)
            assert {s["status"] for s in rep["stages"]} == {"cached"}
    print(json.dumps({
        "benchmark": "rerun_noop", "frames": args.frames,
        "raw_files": args.frames * len(FILES_PER_FRAME), "stages": 3,
        "first_run_s": round(first_s, 2),
        "noop_cli_s_median": round(statistics.median(cli), 3),
        "noop_cli_s_max": round(max(cli), 3),
        "noop_inprocess_s_median": round(statistics.median(inproc), 3),
        "goal_s": 2.0, "met": max(cli) < 2.0,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }, indent=1))


if __name__ == "__main__":
    main()
