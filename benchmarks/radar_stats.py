"""Radar statistics of the real View-of-Delft fixture frames vs a synthetic VoD world (issue 15).

    python benchmarks/radar_stats.py --frames 160 --seed 0 --out docs/bench/radar_stats.json

Both datasets go through the same code: kdpipe's VoD readers (``VodLayout``, ``read_vod_radar``,
``read_kitti_calib``, ``read_kitti_labels``), the canonical label conversion
``kitti_camera_to_ego`` and ``points_in_boxes``, exactly as ingest places radar points and boxes
(radar -> LiDAR frame via ``inv(T_cam_lidar) @ T_cam_radar``). Per frame, the single-scan radar
(``radar/training/velodyne``) and every labeled box (``DontCare`` dropped) are read; each box is
enlarged by ``MARGIN_M`` on every face (radar points scatter around the surface; the devkit boxes
are tight around the LiDAR points).

Statistics (``measure``):

* ``objects``: radar points per labeled object by class (Car, Pedestrian, Cyclist; every other
  VoD class -- rider, bicycle, bicycle_rack, moped_scooter, ... -- is pooled into ``other``) and by
  range band (horizontal distance from the radar to the box centre), as n, mean, median and the
  share of objects with 0 points;
* ``rcs_dbsm`` / ``v_r_comp_mps``: percentiles 5/25/50/75/95 of points inside any labeled box
  (``on``) vs outside all of them (``off``); for the velocity also the share of
  ``|v_r_compensated| < 0.5 m/s`` (static);
* ``frame``: radar points per frame, clutter share (points outside every box, pooled over all
  frames and as a per-frame mean), point range and azimuth percentiles.

The synthetic world is written by ``kdpipe.datasets.synth.write_vod(path, frames, seed)`` into a
temporary folder (or ``--world`` reuses one); the real root is ``$KDPIPE_FIXTURES/vod`` (default
``../shared/fixtures/real/vod`` next to the checkout), read in place.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats import VodLayout, read_kitti_calib, read_kitti_labels, read_vod_radar
from kdpipe.datasets.formats.kitti import DONT_CARE
from kdpipe.schemas.boxes import kitti_camera_to_ego, points_in_boxes, transform_points

MARGIN_M = 0.25                      # added to every face of a label box (l, w, h grow 0.5 m)
CLASSES = ("Car", "Pedestrian", "Cyclist")
OTHER = "other"
BANDS_M = ((0.0, 10.0), (10.0, 20.0), (20.0, 35.0), (35.0, 50.0))
PCTS = (5, 25, 50, 75, 95)
STATIC_MPS = 0.5

FloatArray = npt.NDArray[np.float64]


def real_vod_root() -> Path:
    """The real VoD fixture root: ``$KDPIPE_FIXTURES/vod``, else ``shared/fixtures/real/vod``."""
    if "KDPIPE_FIXTURES" in os.environ:
        return Path(os.environ["KDPIPE_FIXTURES"]) / "vod"
    here = Path(__file__).resolve().parents[1]
    for parent in here.parents:
        cand = parent / "shared" / "fixtures" / "real" / "vod"
        if cand.is_dir():
            return cand
    return Path("/work/shared/fixtures/real/vod")


def _inside_any(xyz: FloatArray, boxes: FloatArray) -> npt.NDArray[np.bool_]:
    """``(M,)`` True where a point lies in at least one box (``points_in_boxes`` per candidate)."""
    mask = np.zeros(len(xyz), dtype=bool)
    if len(boxes) == 0 or len(xyz) == 0:
        return mask
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    near = np.hypot(xyz[:, None, 0] - boxes[None, :, 0],
                    xyz[:, None, 1] - boxes[None, :, 1]) <= radius[None]   # (M, B) prefilter
    for j in np.flatnonzero(near.any(axis=1)):
        mask[j] = points_in_boxes(xyz[j:j + 1], boxes[near[j]]).any()
    return mask


def read_frame(layout: VodLayout, frame_id: str) -> dict[str, Any]:
    """One frame's radar points (ego = LiDAR frame) and enlarged labeled boxes with classes."""
    p = layout.frame(frame_id)
    radar = read_vod_radar(p.radar_bin).astype(np.float64)                      # (M, 7)
    t_cam_lidar = read_kitti_calib(p.lidar_calib)["T_rect_from_velo"]
    t_cam_radar = read_kitti_calib(p.radar_calib)["T_rect_from_velo"]
    t_ego_radar = np.linalg.inv(t_cam_lidar) @ t_cam_radar
    radar[:, :3] = transform_points(t_ego_radar, radar[:, :3])
    lab = read_kitti_labels(p.label)
    keep = lab.class_name != DONT_CARE
    boxes = kitti_camera_to_ego(lab.loc_cam[keep], lab.dims_hwl[keep], lab.rot_y[keep],
                                t_cam_lidar)                                     # (B, 7)
    boxes[:, 3:6] += 2.0 * MARGIN_M
    rng_m = np.hypot(boxes[:, 0] - t_ego_radar[0, 3], boxes[:, 1] - t_ego_radar[1, 3])
    return {"radar": radar, "boxes": boxes, "cls": lab.class_name[keep].astype(str),
            "range_m": rng_m, "sensor_xy": t_ego_radar[:2, 3]}


def _pct(values: FloatArray) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{q}": None for q in PCTS}
    return {f"p{q}": round(float(v), 2) for q, v in zip(PCTS, np.percentile(values, PCTS),
                                                        strict=True)}


def _count_stats(counts: npt.NDArray[np.int64]) -> dict[str, float | int | None]:
    if len(counts) == 0:
        return {"n": 0, "mean": None, "median": None, "zero_share": None}
    return {"n": len(counts), "mean": round(float(counts.mean()), 2),
            "median": float(np.median(counts)),
            "zero_share": round(float((counts == 0).mean()), 3)}


def measure(root: Path, frame_ids: list[str] | None = None) -> dict[str, Any]:
    """The statistics of a VoD-layout root (all labeled frames, or ``frame_ids``)."""
    layout = VodLayout(Path(root))
    ids = frame_ids if frame_ids is not None else [
        f for f in layout.frame_ids("radar") if layout.frame(f).label.is_file()]
    obj_cls, obj_rng, obj_n, obj_name = [], [], [], []
    cls_rcs: dict[str, list[FloatArray]] = {c: [] for c in (*CLASSES, OTHER)}
    on_rcs, off_rcs, on_v, off_v, rng_all, az_all = [], [], [], [], [], []
    per_frame_n, per_frame_clutter = [], []
    for fid in ids:
        fr = read_frame(layout, fid)
        radar, boxes = fr["radar"], fr["boxes"]
        counts = points_in_boxes(radar[:, :3], boxes)
        keep = fr["range_m"] < BANDS_M[-1][1]
        obj_cls.append(np.where(np.isin(fr["cls"], CLASSES), fr["cls"], OTHER)[keep])
        obj_rng.append(fr["range_m"][keep])
        obj_n.append(counts[keep])
        obj_name.append(fr["cls"][keep])
        group = np.where(np.isin(fr["cls"], CLASSES), fr["cls"], OTHER)
        for name, parts in cls_rcs.items():
            if (group == name).any():
                parts.append(radar[_inside_any(radar[:, :3], boxes[group == name]), 3])
        on = _inside_any(radar[:, :3], boxes)
        on_rcs.append(radar[on, 3])
        off_rcs.append(radar[~on, 3])
        on_v.append(radar[on, 5])
        off_v.append(radar[~on, 5])
        rel = radar[:, :2] - fr["sensor_xy"]
        rng_all.append(np.hypot(rel[:, 0], rel[:, 1]))
        az_all.append(np.degrees(np.abs(np.arctan2(rel[:, 1], rel[:, 0]))))
        per_frame_n.append(len(radar))
        per_frame_clutter.append(float((~on).mean()) if len(radar) else 0.0)
    cls_a, rng_a, n_a, name_a = (np.concatenate(x) for x in (obj_cls, obj_rng, obj_n, obj_name))
    objects: dict[str, Any] = {}
    for name in (*CLASSES, OTHER):
        m = cls_a == name
        row = {"all": _count_stats(n_a[m])}
        for lo, hi in BANDS_M:
            row[f"{lo:g}-{hi:g}m"] = _count_stats(n_a[m & (rng_a >= lo) & (rng_a < hi)])
        objects[name] = row
    objects["other_by_class"] = {str(c): _count_stats(n_a[name_a == c])
                                 for c in sorted(set(name_a[cls_a == OTHER].tolist()))}
    v_on, v_off = np.concatenate(on_v), np.concatenate(off_v)
    n_on, n_off = len(v_on), len(v_off)
    return {
        "frames": len(ids),
        "objects": objects,
        "rcs_dbsm": {"on": _pct(np.concatenate(on_rcs)), "off": _pct(np.concatenate(off_rcs)),
                     "on_by_class": {c: _pct(np.concatenate(v) if v else np.zeros(0))
                                     for c, v in cls_rcs.items()}},
        "v_r_comp_mps": {
            side: {"static_share": round(float((np.abs(v) < STATIC_MPS).mean()), 3)
                   if len(v) else None, **_pct(v), "abs": _pct(np.abs(v))}
            for side, v in (("on", v_on), ("off", v_off))},
        "frame": {
            "points_mean": round(float(np.mean(per_frame_n)), 1),
            "points_median": float(np.median(per_frame_n)),
            "points_min": int(np.min(per_frame_n)), "points_max": int(np.max(per_frame_n)),
            "points_on_objects_mean": round(n_on / len(ids), 1),
            "clutter_share": round(n_off / max(n_on + n_off, 1), 3),
            "clutter_share_frame_mean": round(float(np.mean(per_frame_clutter)), 3),
            "range_m": _pct(np.concatenate(rng_all)),
            "abs_azimuth_deg": _pct(np.concatenate(az_all)),
        },
    }


def compare(frames: int, seed: int, world: Path | None = None) -> dict[str, Any]:
    """Real fixture vs synthetic world statistics, side by side (writes a world if needed)."""
    from kdpipe.datasets.synth import SynthConfig, write_vod

    real = measure(real_vod_root())
    with tempfile.TemporaryDirectory(prefix="radar_stats_") as tmp:
        synth_s = None
        if world is None:
            world = Path(tmp) / "vod_synth"
            t0 = time.perf_counter()
            write_vod(world, frames, seed=seed)
            synth_s = round(time.perf_counter() - t0, 2)
        synth = measure(world)
    cfg = SynthConfig().model_dump(mode="json")
    return {
        "what": "radar statistics, real View-of-Delft fixture frames vs a synthetic VoD world "
                "(issue 15)",
        "box_margin_m": MARGIN_M, "static_threshold_mps": STATIC_MPS,
        "range": "horizontal distance radar -> box centre; objects >= 50 m are left out",
        "other_classes": "every labeled class except Car/Pedestrian/Cyclist/DontCare "
                         "(rider, bicycle, bicycle_rack, moped_scooter, ...) is pooled in "
                         "'other'; all labeled boxes count as 'on object' for clutter",
        "real": {"root": "fixtures/real/vod", **real},
        "synthetic": {"seed": seed, "frames_written": frames, "write_s": synth_s,
                      "radar_config": {k: v for k, v in cfg.items() if "radar" in k}, **synth},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=160, help="synthetic frames to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", type=Path, default=None, help="measure this VoD root instead")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    text = json.dumps(compare(args.frames, args.seed, args.world), indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
