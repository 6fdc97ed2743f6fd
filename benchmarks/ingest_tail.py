"""The driver's serial tail of an ingest at many groups: assembly of the groups' Parquet parts
and the points-store schema check, each against the way it was done before, in the same run.

    python benchmarks/ingest_tail.py --groups 2000 [--out FILE]

Both run in the driver after the workers are done, and both grow with the number of groups (a
fleet's 10^6 VoD frames are 15,600 groups of 64). The store and parts here are written by
ingest's own group writer (lidar + 3 radar sensors, 2 small frames a group: the 13 nodes and 5
Parquet parts a VoD group has), so only their sizes differ from a real ingest's.
Baselines: assembly reading each part on its own and concatenating (the code before
2026-12-02); the schema check reading every node through zarr-python.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(root: Path, groups: int) -> None:
    import zarr

    from kdpipe.datasets.common import GroupWriter, Storage
    from kdpipe.schemas import points as P

    top = zarr.open_group(store=str(root), mode="w", zarr_format=3,
                          attributes={"format": "vod", "frame": "ego", "layout": "..."})
    top.require_group("src")
    rng = np.random.default_rng(0)
    radars = ("radar", "radar_3", "radar_5")
    for g in range(groups):
        w = GroupWriter(root.parent / "work", "src", f"block_{g:05d}", Storage(64, 2, 5))
        w.declare("lidar", P.LIDAR.fields, P.LIDAR.units, native_frame="lidar")
        for s in radars:
            w.declare(s, P.VOD_RADAR.fields, P.VOD_RADAR.units, native_frame="radar")
        for i in range(2):
            w.add_frame({"frame": f"{g * 2 + i:05d}"},
                        {"lidar": rng.normal(size=(30, 4)),
                         **{s: rng.normal(size=(5, 7)) for s in radars}}, [], [])
        w.write(root)


def _assemble(tmp: Path, mode: str) -> tuple[float, list[bytes]]:
    """Seconds to assemble a copy of the parts, and the tables' bytes."""
    import polars as pl

    from kdpipe.datasets import common

    work = tmp / f"assemble_{mode.replace(' ', '_')}"
    shutil.copytree(tmp / "work" / "_parts", work / "_parts")
    outs = {k: work / f"{k}.parquet" for k in ("frames", "boxes", "calibration", "rejects")}
    read = pl.read_parquet

    def one_by_one(source: object, *a: object, **k: object) -> pl.DataFrame:
        if isinstance(source, list):
            return pl.concat([read(f) for f in source])
        return read(source, *a, **k)  # type: ignore[arg-type]

    if mode == "one read per part":
        pl.read_parquet = one_by_one  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        common.assemble(work, tmp / "points.zarr", outs, {})
        seconds = time.perf_counter() - t0
    finally:
        pl.read_parquet = read
    return seconds, [outs[k].read_bytes() for k in sorted(outs)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from kdpipe.schemas import zarr_layout
    from kdpipe.schemas.points import POINTS

    tmp = Path(tempfile.mkdtemp(prefix="kdpipe_ingest_tail_"))
    try:
        t0 = time.perf_counter()
        make_store(tmp / "points.zarr", args.groups)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        views = POINTS.validate(tmp / "points.zarr")
        views_s = time.perf_counter() - t0
        real = zarr_layout.open_meta

        def no_views(path: Path) -> None:
            raise OSError("views off: zarr-python reads every node")

        zarr_layout.open_meta = no_views  # type: ignore[assignment]
        t0 = time.perf_counter()
        nodes = POINTS.validate(tmp / "points.zarr")
        nodes_s = time.perf_counter() - t0
        zarr_layout.open_meta = real
        assembly = {mode: _assemble(tmp, mode) for mode in ("one read per part", "multi-file")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"benchmark": "ingest_tail", "date": time.strftime("%Y-%m-%d %H:%M"),
           "groups": args.groups, "nodes_per_group": 13, "store_written_s": round(made, 1),
           "schema_check": {"views_s": round(views_s, 3), "zarr_python_nodes_s": round(nodes_s, 3),
                            "speedup": round(nodes_s / views_s, 1),
                            "same_problems": views == nodes},
           "assembly_s": {k: round(v[0], 3) for k, v in assembly.items()},
           "assembly_same_tables": assembly["multi-file"][1] == assembly["one read per part"][1],
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
