"""Crash drill: SIGKILL `kdpipe run` at seeded random moments across ingest, teacher-train,
teacher-label, pseudo-label and distill (their per-epoch checkpoint writes included), re-run,
and compare every final artifact's sha256 (and every lineage digest) with an uninterrupted run.

    python benchmarks/crash_drill.py [--kills 24] [--seed 0] [--scheduler local:2] [--frames 24]

Prints JSON: kills, kills by the stage they interrupted, artifacts (output ports) and files
compared, mismatches, leftovers (.partial/.tmp after completion), locks still held after a kill.
Goal (DESIGN.md): zero mismatches. See kdpipe/drills.py for the method.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from kdpipe.datasets.synth import write_vod
from kdpipe.testing.drills import crash_drill


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scheduler", default="local:2", help="sync | local[:N] | tcp://...")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--kills-per-chain", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        write_vod(tmp / "world", args.frames, seed=3)
        rep = crash_drill(tmp, tmp / "world", kills=args.kills, seed=args.seed,
                          scheduler=args.scheduler, kills_per_chain=args.kills_per_chain,
                          epochs=args.epochs,
                          log=lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
    rep.update({"frames": args.frames, "epochs": args.epochs,
                "wall_s": round(time.perf_counter() - t0, 1),
                "met": not rep["mismatches"] and not rep["leftovers"]
                and not rep["lock_held_after_kill"],
                "goal": "0 mismatches, 0 leftovers, lock free after every kill",
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "date": time.strftime("%Y-%m-%d")})
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
