"""`kdpipe curate --export`: a selection -> what a labeling team opens.

- `kitti`: a dataset skeleton in the layout the frames came from, so the labeling tool (and later
  `kdpipe ingest`, unchanged) opens it like the original release. View-of-Delft:
  `lidar/ImageSets/<name>.txt` (+ `radar/ImageSets`), `lidar/training/{velodyne,image_2,calib,
  pose,label_2}`, `radar/training/{velodyne,calib}` and the accumulated radar folders;
  KITTI-radar: `ImageSets/<name>.txt`, `training/{velodyne,radar,calib,image_2,label_2}`.
  Sensor, calib and pose files are hard links to the raw files by default: no bytes copied,
  and unlike symlinks they survive being shipped or uploaded and do not point outside the
  folder, which kdpipe's own ingest refuses by design (`files="symlink"` for tools that want
  links, `"copy"` for real copies; a hard link across file systems falls back to a copy).
  `label_2/<id>.txt` are empty files for the labelers to fill; the
  split file lists the frames in rank order (labeling priority). `manifest.csv` maps each file
  name back to its frame id, rank, reason and raw paths. Default split name `train`: once
  labeled, ingesting the folder gives a train split directly.
- `nuscenes`: `sample_tokens.json`, the sample tokens in rank order (plus scene, rank, score
  and reason per sample), for tools that take a token list.
- `csv`: `selection.csv`, one row per frame with its raw file paths.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.evaluation.kitti_export import ExportError
from kdpipe.schemas.tables import check_table

FORMATS = ("kitti", "nuscenes", "csv")
LINK_MODES = ("hardlink", "symlink", "copy")
CSV_COLUMNS = ["rank", "frame_id", "dataset", "source", "scene", "frame", "split",
               "timestamp_us", "score", "strategy", "reason", "lidar_path", "radar_path",
               "image_path"]
_VOD_FILES = ("lidar_bin", "radar_bin", "lidar_calib", "radar_calib", "pose", "image",
              "radar_3scans_bin", "radar_5scans_bin")


def read_selection(path: str | Path) -> pl.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"selection not found: {p}")
    try:
        sel = pl.read_parquet(p)
    except Exception as e:  # polars raises several types for a corrupt or non-Parquet file
        raise ExportError(f"{p} is not a readable Parquet file ({type(e).__name__})") from e
    try:
        check_table(sel, "selection/1")
    except ValueError as e:
        raise ExportError(f"{p}: {e}") from None
    return sel.sort("rank")


def _fresh(out_dir: Path) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty; export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def export_csv(sel: pl.DataFrame, out_dir: Path) -> dict[str, Any]:
    path = _fresh(out_dir) / "selection.csv"
    sel.select(CSV_COLUMNS).write_csv(path)
    return {"format": "csv", "out": str(path), "frames": sel.height}


def export_nuscenes(sel: pl.DataFrame, out_dir: Path) -> dict[str, Any]:
    kinds = sorted(set(sel["dataset"].to_list()))
    if kinds != ["nuscenes"]:
        raise ExportError(f"nuScenes tokens need nuScenes frames; this selection holds "
                          f"{', '.join(kinds) or 'no frames'} (use --export kitti or csv)")
    samples = [{"sample_token": r["frame"], "scene": r["scene"], "rank": r["rank"],
                "score": r["score"], "reason": r["reason"], "frame_id": r["frame_id"]}
               for r in sel.iter_rows(named=True)]
    path = _fresh(out_dir) / "sample_tokens.json"
    path.write_text(json.dumps({"strategy": sel["strategy"][0] if sel.height else None,
                                "sample_tokens": [s["sample_token"] for s in samples],
                                "samples": samples}, indent=1))
    return {"format": "nuscenes", "out": str(path), "frames": sel.height}


def _stems(sel: pl.DataFrame) -> list[str]:
    """Native frame numbers when they are digits and unique in the selection, else ranks."""
    native = sel["frame"].to_list()
    if all(f and f.isdigit() for f in native) and len(set(native)) == len(native):
        return native
    return [f"{r - 1:05d}" for r in sel["rank"].to_list()]


def _place(src: Path, dst: Path, files: str) -> str:
    """Put `src` at `dst` as a hard link (copy across file systems), a symlink or a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if files == "symlink":
        os.symlink(src.resolve(), dst)
        return "symlink"
    if files == "hardlink":
        try:
            os.link(src.resolve(), dst)
            return "hardlink"
        except OSError:  # another file system, or links not allowed: fall back to a copy
            pass
    shutil.copy2(src, dst)
    return "copy"


def _vod_files(row: dict[str, Any], stem: str, out: Path) -> list[tuple[str, Path, Path]]:
    """(kind, raw file, skeleton path) for one VoD frame; raw paths from the VoD layout."""
    from kdpipe.datasets.formats.vod import VodLayout

    lidar = Path(row["lidar_path"])
    src = VodLayout(lidar.parents[3]).frame(row["frame"])
    if src.lidar_bin != lidar:
        raise ExportError(f"{row['frame_id']}: {lidar} is not in a View-of-Delft layout")
    dst = VodLayout(out).frame(stem)
    files = []
    for kind in _VOD_FILES:
        path = getattr(src, kind)
        if path is None or not path.is_file():
            continue
        if kind == "image":
            target = out / "lidar" / "training" / "image_2" / f"{stem}{path.suffix}"
        elif kind.startswith("radar_") and kind.endswith("scans_bin"):
            target = out / path.parents[2].name / "training" / "velodyne" / f"{stem}.bin"
        else:
            target = getattr(dst, kind)
        files.append((kind, path, target))
    return files


def _kitti_files(row: dict[str, Any], stem: str, out: Path) -> list[tuple[str, Path, Path]]:
    lidar = Path(row["lidar_path"])
    base, t = lidar.parents[1], out / "training"
    cands = [("lidar_bin", lidar, t / "velodyne" / f"{stem}.bin"),
             ("calib", base / "calib" / f"{row['frame']}.txt", t / "calib" / f"{stem}.txt")]
    if row["radar_path"]:
        cands.append(("radar_bin", Path(row["radar_path"]), t / "radar" / f"{stem}.bin"))
    if row["image_path"]:
        img = Path(row["image_path"])
        cands.append(("image", img, t / "image_2" / f"{stem}{img.suffix}"))
    return [c for c in cands if c[1].is_file()]


def export_kitti(sel: pl.DataFrame, out_dir: Path, *, name: str = "train",
                 files: str = "hardlink") -> dict[str, Any]:
    kinds = sorted(set(sel["dataset"].to_list()))
    if len(kinds) != 1 or kinds[0] not in ("vod", "kitti-radar"):
        raise ExportError(f"a KITTI/VoD skeleton needs frames of one VoD or KITTI-layout "
                          f"dataset; this selection holds {', '.join(kinds) or 'no frames'} "
                          f"(use --export nuscenes or csv)")
    if files not in LINK_MODES:
        raise ExportError(f"files={files!r}: one of {', '.join(LINK_MODES)}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"split name {name!r}: letters, digits, - and _ only")
    vod = kinds[0] == "vod"
    out = _fresh(out_dir)
    stems = _stems(sel)
    manifest: list[dict[str, Any]] = []
    placed: dict[str, int] = {}
    for row, stem in zip(sel.iter_rows(named=True), stems, strict=True):
        raw = (_vod_files if vod else _kitti_files)(row, stem, out)
        for _, src, dst in raw:
            how = _place(src, dst, files)
            placed[how] = placed.get(how, 0) + 1
        label = out / ("lidar/training" if vod else "training") / "label_2" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.touch()
        manifest.append({"stem": stem, "frame_id": row["frame_id"], "rank": row["rank"],
                         "score": row["score"], "reason": row["reason"],
                         **{kind: str(src) for kind, src, _ in raw}})
    for sets in ([out / "lidar", out / "radar"] if vod else [out]):
        (sets / "ImageSets").mkdir(parents=True, exist_ok=True)
        (sets / "ImageSets" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    keys = list(dict.fromkeys(k for m in manifest for k in m))
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(manifest)
    return {"format": "kitti", "layout": "vod" if vod else "kitti", "out": str(out),
            "frames": sel.height, "split_file": f"ImageSets/{name}.txt",
            "files": placed}


def export_selection(selection: str | Path, fmt: str, out_dir: str | Path, *,
                     name: str = "train", files: str = "hardlink") -> dict[str, Any]:
    """Write `selection` (a selection Parquet) in `fmt` under `out_dir`; a summary dict."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (have: {', '.join(FORMATS)})")
    sel = read_selection(selection)
    if fmt == "csv":
        return export_csv(sel, Path(out_dir))
    if fmt == "nuscenes":
        return export_nuscenes(sel, Path(out_dir))
    return export_kitti(sel, Path(out_dir), name=name, files=files)
