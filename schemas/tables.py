"""Parquet table schemas written by `ingest` (polars dtypes; units and frames in the names).

One row per frame / box / sensor calibration / rejected input. Boxes are in the canonical ego
convention of `kdpipe.schemas.boxes` (centre, l/w/h, yaw about +z). Frames with zero boxes are
present in FRAMES with `n_boxes = 0`, so downstream never "cannot find" a frame.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from kdpipe.schemas.base import TableSchema

MAT4 = pl.Array(pl.Float64, 16)   # row-major 4x4 transform
MAT34 = pl.Array(pl.Float64, 12)  # row-major 3x4 projection

FRAMES: dict[str, Any] = {
    "frame_id": pl.String,        # "<source>/<native id>", unique in a store
    "dataset": pl.String,         # vod | nuscenes | kitti-radar
    "source": pl.String,          # name of the dataset root it came from
    "scene": pl.String,           # Zarr group holding its points (scene or frame block)
    "frame": pl.String,           # native id: VoD/KITTI frame number, nuScenes sample token
    "frame_index": pl.Int32,      # position in the group's offsets arrays
    "split": pl.String,           # train | val | unlabeled | test | "" (unknown)
    "labeled": pl.Boolean,        # labels exist and may be trained on
    "timestamp_us": pl.Int64,     # null where the format has none (VoD KITTI layout)
    "n_lidar": pl.Int32,
    "n_radar": pl.Int32,
    "n_boxes": pl.Int32,
    "t_world_from_ego": MAT4,     # VoD: odometry frame; nuScenes: global frame
    "lidar_path": pl.String,
    "radar_path": pl.String,
    "image_path": pl.String,      # original camera file (by reference), null if none
    "image_sha256": pl.String,
}

BOXES: dict[str, Any] = {
    "frame_id": pl.String,
    "box_index": pl.Int32,
    "class_name": pl.String,      # native class string
    "label": pl.String,           # Car | Pedestrian | Cyclist | other classes verbatim
    "x_ego_m": pl.Float64, "y_ego_m": pl.Float64, "z_ego_m": pl.Float64,
    "length_m": pl.Float64, "width_m": pl.Float64, "height_m": pl.Float64,
    "yaw_ego_rad": pl.Float64,
    "vx_ego_mps": pl.Float64, "vy_ego_mps": pl.Float64,     # null where unknown
    "occluded": pl.Int8,
    "bbox_left_px": pl.Float64, "bbox_top_px": pl.Float64,
    "bbox_right_px": pl.Float64, "bbox_bottom_px": pl.Float64,
    "num_lidar_pts": pl.Int32, "num_radar_pts": pl.Int32,
    "instance": pl.String,        # nuScenes instance token, else null
    "attribute": pl.String,       # nuScenes attribute name, else null
}

CALIBRATION: dict[str, Any] = {
    "frame_id": pl.String,
    "sensor": pl.String,          # lidar | radar | RADAR_FRONT | CAM_FRONT | camera ...
    "t_ego_from_sensor": MAT4,    # raw sensor coordinates = inverse(this) @ ego coordinates
    "intrinsics": MAT34,          # camera projection P (3x4), null for non-cameras
    "image_width_px": pl.Int32,
    "image_height_px": pl.Int32,
}

REJECTS: dict[str, Any] = {
    "source": pl.String,
    "frame": pl.String,
    "file": pl.String,
    "check": pl.String,           # size | header | payload | finite | empty | label | calib | ...
    "reason": pl.String,
}

# Model output, one row per decoded box (top-K per frame, before any score filter). Frames with
# no detection have no rows here; the frame list of a run is `DETECTION_FRAMES`.
DETECTIONS: dict[str, Any] = {
    "frame_id": pl.String,
    "det_index": pl.Int32,        # rank within the frame, by descending score
    "label": pl.String,           # the model's class name (Car | Pedestrian | Cyclist | ...)
    "score": pl.Float64,
    "x_ego_m": pl.Float64, "y_ego_m": pl.Float64, "z_ego_m": pl.Float64,
    "length_m": pl.Float64, "width_m": pl.Float64, "height_m": pl.Float64,
    "yaw_ego_rad": pl.Float64,
    "vx_ego_mps": pl.Float64, "vy_ego_mps": pl.Float64,     # null when the model has no velocity
}

# Frames a detector ran on (with zero or more detections): exports need the empty ones too.
DETECTION_FRAMES: dict[str, Any] = {
    "frame_id": pl.String,
    "split": pl.String,
    "n_detections": pl.Int32,
}

# Filtered detections used as training targets: "positive" boxes are targets, "ignore" boxes
# (ST3D's band between the negative and positive thresholds) mask the loss around them.
PSEUDO_LABELS: dict[str, Any] = {**DETECTIONS, "state": pl.String}

# Frames picked by `curate` from unlabeled logs, best first (rank 1), with why and where the raw
# files are, so a labeling export needs nothing else.
SELECTION: dict[str, Any] = {
    "frame_id": pl.String,
    "dataset": pl.String,
    "source": pl.String,
    "scene": pl.String,
    "frame": pl.String,           # native id (VoD frame number, nuScenes sample token)
    "split": pl.String,
    "timestamp_us": pl.Int64,
    "rank": pl.Int32,             # 1 = picked first
    "score": pl.Float64,          # the strategy's score, higher = more wanted
    "strategy": pl.String,
    "reason": pl.String,          # human-readable: what made this frame score
    "lidar_path": pl.String,
    "radar_path": pl.String,
    "image_path": pl.String,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "frames/1": FRAMES, "boxes/1": BOXES, "calibration/1": CALIBRATION, "rejects/1": REJECTS,
    "detections/1": DETECTIONS, "detection_frames/1": DETECTION_FRAMES,
    "pseudo_labels/1": PSEUDO_LABELS, "selection/1": SELECTION,
}


# The records table of `kdpipe.testing`'s toy source (tests and the re-run benchmark): one row
# per raw file. It is registered here because kdpipe.testing ships with the package and its
# stages declare it; it is no dataset table, so it stays out of SCHEMAS above.
TOY_RECORDS: dict[str, Any] = {
    "name": pl.String,            # file name inside the toy root
    "bytes": pl.Int64,
    "sha256": pl.String,
    "byte_sum": pl.Int64,         # sum of the file's bytes
}

# The tables as schema objects: what `Port.schema` names resolve to (see kdpipe.schemas).
TABLE_SCHEMAS: tuple[TableSchema, ...] = (
    TableSchema("frames", 1, "One row per ingested frame, zero-box frames included; "
                "frame_index is the frame's position in its Zarr group's offsets.", FRAMES),
    TableSchema("boxes", 1, "One row per labeled 3D box, canonical ego convention "
                "(kdpipe.schemas.boxes): centre, length/width/height in m, yaw about +z.", BOXES),
    TableSchema("calibration", 1, "One row per frame and sensor: ego <- sensor transform, "
                "camera projection and image size for cameras.", CALIBRATION),
    TableSchema("rejects", 1, "One row per raw input that failed a check, with the check "
                "and why; input frames = ingested + rejected.", REJECTS),
    TableSchema("detections", 1, "One row per decoded box of a detector (top-K per frame, "
                "before score filtering), ego frame.", DETECTIONS),
    TableSchema("detection_frames", 1, "Every frame a detector ran on, zero-detection frames "
                "included.", DETECTION_FRAMES),
    TableSchema("pseudo_labels", 1, "Detections kept as training targets; state is positive "
                "(a target) or ignore (masks the loss around it).", PSEUDO_LABELS),
    TableSchema("selection", 1, "Frames picked by curate, best first, with score, reason and "
                "raw file paths.", SELECTION),
    TableSchema("toy_records", 1, "kdpipe.testing's toy source: one row per raw file.",
                TOY_RECORDS),
)


def frame_table(rows: list[Mapping[str, Any]], schema: Mapping[str, Any]) -> pl.DataFrame:
    """A typed frame from row dicts; missing keys become nulls, unknown keys are an error."""
    extra = {k for r in rows for k in r} - set(schema)
    if extra:
        raise KeyError(f"columns not in schema: {sorted(extra)}")
    # column lists, not row dicts: polars builds a typed column from a list 2-3x faster
    return pl.DataFrame({k: [r.get(k) for r in rows] for k in schema}, schema=dict(schema))


def check_table(df: pl.DataFrame, name: str) -> None:
    """Validate a table against its registered schema (on write and on read)."""
    want = SCHEMAS[name]
    got = dict(df.schema)
    missing = [c for c in want if c not in got]
    wrong = [f"{c}: {got[c]} != {want[c]}" for c in want if c in got and got[c] != want[c]]
    if missing or wrong:
        raise ValueError(f"table {name} does not match its schema: missing={missing} wrong={wrong}")
