"""Frames -> one Rerun recording (`.rrd`): points, boxes, the audit's or curate's numbers, camera.

Why Rerun and not FiftyOne: a `.rrd` is one self-contained file, written here with no server and
opened with `rerun FILE.rrd` (the viewer ships in the same pip package) or in the browser viewer;
it is read back in Python with `rerun.dataframe`, which is how the tests check it. FiftyOne's 3D
scenes need its MongoDB service running for every read and write, which kdpipe's machines (and
CI) do not start. rerun-sdk is pinned to 0.23.1: the newest release whose wheel accepts numpy<2
(nuscenes-devkit pins numpy<2); 0.23.2 and later require numpy>=2.

Layout of the recording (ego frame: x forward, y left, z up, metres; `ViewCoordinates.FLU`):

    ego/lidar        Points3D, grey
    ego/radar        Points3D coloured by RCS (dBsm, viridis over RCS_RANGE_DBSM), else by v_r
                     (m/s, blue away .. red towards); the raw values ride along as AnyValues
    ego/boxes/gt     Boxes3D of the store's ground truth, label = class
    ego/boxes/det    Boxes3D of detections, label "<class> <score>" (+ " TP" / " FP" where the
                     audit matched them); FP red, TP orange, unmatched-unknown red
    camera/image     the frame's camera image, as its encoded file (when it exists)
    frame/info       TextDocument: frame id, where it comes from and why
    audit/<n>, curate/<n>   Scalars: per-frame numbers (TP / FP / FN / n_gt; rank / score)

Timelines: `frame` (0, 1, ... in export order) and `timestamp` (from `timestamp_us`, where the
format has one; VoD has none). Every entity is logged at every frame, empty when the frame has
nothing, so scrubbing never shows one frame's boxes over another frame's points.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.errors import KdpipeError

RCS_RANGE_DBSM = (-20.0, 30.0)   # colour scale of radar RCS; fixed so frames compare
V_R_RANGE_MPS = 10.0             # |v_r| that saturates the radial-velocity colour scale
LIDAR_RGB = (150, 150, 150)
GT_RGB = (44, 160, 44)
DET_FP_RGB = (214, 39, 40)
DET_TP_RGB = (255, 150, 0)
BOX_COLUMNS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]


@dataclass(frozen=True)
class ExportFrame:
    """One frame to export and what to draw over its points.

    store: where its points are (a FRAMES row of it is `row`).
    gt: its ground-truth rows (boxes/1; `label` null falls back to `class_name`).
    det: detection rows (detections/1 + optional bool `tp` from the audit's matching), or None.
    origin: where the frame comes from, in words ("audit audit/KEY worst 1 of 3").
    facts: per-frame numbers logged as scalars under `<group>/<name>`, e.g. {"audit/tp": 3}.
    note: a longer reason (curate's), shown in frame/info.
    """

    store: IngestStore
    row: dict[str, Any]
    gt: pl.DataFrame
    det: pl.DataFrame | None
    origin: str
    facts: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def frame_id(self) -> str:
        return str(self.row["frame_id"])


def radar_colors(radar: np.ndarray, fields: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """(M, 3) uint8 colours of radar points and the per-point values they encode (AnyValues).

    RCS when the store has it (VoD, nuScenes), else radial velocity, else one blue."""
    from matplotlib import colormaps

    values: dict[str, Any] = {}
    if "rcs" in fields:
        rcs_dbsm = radar[:, fields.index("rcs")].astype(np.float64)   # (M,)
        lo, hi = RCS_RANGE_DBSM
        rgba = colormaps["viridis"](np.clip((rcs_dbsm - lo) / (hi - lo), 0.0, 1.0))
        values["rcs_dbsm"] = rcs_dbsm
    elif "v_r" in fields:
        v_r_mps = radar[:, fields.index("v_r")].astype(np.float64)
        rgba = colormaps["coolwarm"](np.clip(0.5 - v_r_mps / (2 * V_R_RANGE_MPS), 0.0, 1.0))
    else:
        rgba = np.tile([0.12, 0.37, 0.84, 1.0], (len(radar), 1))
    if "v_r" in fields:
        values["v_r_mps"] = radar[:, fields.index("v_r")].astype(np.float64)
    return (np.asarray(rgba)[:, :3] * 255).round().astype(np.uint8), values


def boxes3d(rows: pl.DataFrame, labels: list[str], rgb: np.ndarray) -> Any:
    """Canonical boxes (x, y, z centre, l along the heading, w, h, yaw about +z) as Boxes3D:
    half sizes (l/2, w/2, h/2) in the box frame, rotated by the yaw quaternion (x, y, z, w)."""
    import rerun as rr

    b = rows.select(BOX_COLUMNS).to_numpy().astype(np.float64).reshape(-1, 7)   # (K, 7)
    half_yaw = b[:, 6] / 2.0
    zeros = np.zeros(len(b))
    quat_xyzw = np.stack([zeros, zeros, np.sin(half_yaw), np.cos(half_yaw)], axis=1)  # (K, 4)
    return rr.Boxes3D(centers=b[:, :3], half_sizes=b[:, 3:6] / 2.0, quaternions=quat_xyzw,
                      labels=labels, colors=rgb.reshape(-1, 3))


def _det_layer(det: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """Labels ("Car 0.43 TP") and (P, 3) colours of detections (TP orange, else red)."""
    tp = det["tp"].to_list() if "tp" in det.columns else [None] * det.height
    labels = [f"{lab} {s:.2f}" + ("" if t is None else (" TP" if t else " FP"))
              for lab, s, t in zip(det["label"].to_list(), det["score"].to_list(), tp,
                                   strict=True)]
    rgb = np.array([DET_TP_RGB if t else DET_FP_RGB for t in tp], dtype=np.uint8)
    return labels, rgb.reshape(-1, 3)


def _info(f: ExportFrame, n_lidar: int, n_radar: int) -> str:
    r = f.row
    lines = [f"# {f.frame_id}", "", f"- from: {f.origin}",
             f"- split {r.get('split') or '-'}, scene {r['scene']}, native id {r['frame']}",
             f"- {n_lidar} LiDAR, {n_radar} radar points, {f.gt.height} ground-truth boxes, "
             f"{0 if f.det is None else f.det.height} detections"]
    lines += [f"- {k}: {v:g}" for k, v in f.facts.items()]
    if f.note:
        lines.append(f"- reason: {f.note}")
    return "\n".join(lines)


def _log_frame(rec: Any, f: ExportFrame, radar_sensor: str, images: bool) -> dict[str, int]:
    import rerun as rr

    from kdpipe.datasets.points_reader import PointsReader

    group = f.store.group(f.row["source"], f.row["scene"])
    if not (group / radar_sensor).is_dir():
        have = sorted(p.name for p in group.iterdir() if p.is_dir())
        raise KdpipeError(f"{f.frame_id}: the store has no radar sensor {radar_sensor!r} "
                          f"(it has {', '.join(have)})")
    # the store's own direct reader: no torch (StoreDataset) for a few frames
    reader = PointsReader(f.store.points)
    where = (f.row["source"], f.row["scene"])
    lidar = reader.frame(*where, "lidar", int(f.row["frame_index"]))         # (N, C)
    radar = reader.frame(*where, radar_sensor, int(f.row["frame_index"]))    # (M, C')
    radar_fields = reader.fields(*where, radar_sensor)
    reader.close()
    rec.log("ego/lidar", rr.Points3D(lidar[:, :3], colors=LIDAR_RGB, radii=0.03))
    rgb, values = radar_colors(radar, radar_fields)
    rec.log("ego/radar", rr.Points3D(radar[:, :3], colors=rgb, radii=0.15),
            *([rr.AnyValues(**values)] if values else []))
    gt = f.gt.with_columns(label=pl.coalesce("label", "class_name"))
    rec.log("ego/boxes/gt", boxes3d(gt, gt["label"].to_list(),
                                    np.tile(np.array(GT_RGB, np.uint8), (gt.height, 1))))
    det = f.det if f.det is not None else pl.DataFrame(schema={c: pl.Float64 for c in
                                                               [*BOX_COLUMNS, "score"]}
                                                       | {"label": pl.String})
    labels, det_rgb = _det_layer(det)
    rec.log("ego/boxes/det", boxes3d(det, labels, det_rgb))
    image = f.row.get("image_path")
    if images and image and Path(image).is_file():
        rec.log("camera/image", rr.EncodedImage(path=image))
    elif images:  # else the previous frame's image would stay on screen
        rec.log("camera/image", rr.Clear(recursive=False))
    rec.log("frame/info", rr.TextDocument(_info(f, len(lidar), len(radar)),
                                          media_type=rr.MediaType.MARKDOWN))
    for name, value in f.facts.items():
        rec.log(name, rr.Scalars(float(value)))
    return {"n_lidar": len(lidar), "n_radar": len(radar), "n_gt": gt.height,
            "n_det": det.height}


def blueprint() -> Any:
    """The layout the viewer opens with: the ego 3D view large, beside it the frame's text,
    camera and the per-frame numbers over the `frame` timeline."""
    import rerun.blueprint as rrb

    side = rrb.Vertical(rrb.TextDocumentView(origin="frame/info", name="frame"),
                        rrb.Spatial2DView(origin="camera", name="camera"),
                        rrb.TimeSeriesView(origin="audit", name="audit"),
                        rrb.TimeSeriesView(origin="curate", name="curate"))
    return rrb.Blueprint(rrb.Horizontal(rrb.Spatial3DView(origin="ego", name="ego (x fwd, y "
                                                          "left, z up)"), side,
                                        column_shares=[3, 1]), collapse_panels=False)


def write_recording(frames: Sequence[ExportFrame], out_rrd: Path, *,
                    radar_sensor: str = "radar", images: bool = True) -> dict[str, Any]:
    """Write `frames` as one `.rrd` (through a temporary file renamed into place, so a killed
    export leaves no half recording); a summary with counts, bytes and seconds."""
    import rerun as rr

    t0 = time.perf_counter()
    out_rrd = Path(out_rrd)
    out_rrd.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_rrd.with_name(f".{out_rrd.name}.{os.getpid()}.partial")
    rec = rr.RecordingStream("kdpipe", recording_id=f"kdpipe-{out_rrd.stem}",
                             send_properties=False)
    totals = {"n_lidar": 0, "n_radar": 0, "n_gt": 0, "n_det": 0}
    try:
        rec.save(tmp, default_blueprint=blueprint())
        rec.send_recording_name(out_rrd.stem)  # the viewer's recordings list shows it
        rec.log("ego", rr.ViewCoordinates.FLU, static=True)
        for i, f in enumerate(frames):
            rec.reset_time()  # a frame without a timestamp must not inherit the previous one
            rec.set_time("frame", sequence=i)
            if f.row.get("timestamp_us") is not None:
                # integer microseconds: a float in seconds would round the microseconds away
                rec.set_time("timestamp",
                             timestamp=np.datetime64(int(f.row["timestamp_us"]), "us"))
            for k, v in _log_frame(rec, f, radar_sensor, images).items():
                totals[k] += v
        rec.flush(blocking=True)
        rec.disconnect()
        os.replace(tmp, out_rrd)
    finally:
        tmp.unlink(missing_ok=True)
    return {"out": str(out_rrd), "frames": len(frames), **totals,
            "frame_ids": [f.frame_id for f in frames], "bytes": out_rrd.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 3)}
