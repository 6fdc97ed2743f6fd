"""Boxes of the evaluated samples as nuscenes-devkit's `DetectionEval` sees them, as arrays, and
the devkit's box filters on them (`filter_eval_boxes`: class range, bike racks; the
ground truth's point filter is applied where it is read).

The submission audit's path: one lazy query reads the ground truth and puts it in the global
frame (while the submission is parsed), everything after it is numpy (the table form,
`kdpipe.stages.audit.nuscenes.apply_rules`, keeps tables for its report and applies the same
`devkit_keep` to their columns). The rules are those listed in `kdpipe.stages.audit.nuscenes`;
the bike-rack geometry is `centres_in_boxes` here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kdpipe.evaluation.nuscenes_devkit import detection_constants

BIKE_RACK = "static_object.bicycle_rack"
BIKE_CLASSES = ("bicycle", "motorcycle")  # the classes a rack hides
_EGO_BOX = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]


@dataclass(frozen=True)
class NusBoxes:
    """Boxes of many samples in the devkit's terms (world = the global frame)."""

    frame: np.ndarray       # (N,) int64 index of the evaluated sample
    cls: np.ndarray         # (N,) int64 index into the class names; -1: not a detection class
    xyz_ego_m: np.ndarray   # (N, 3) centre in the ego frame (the bike-rack test)
    world: np.ndarray       # (N, 8) world x, y, length, width, height, yaw, vx, vy (v NaN: unknown)
    ego_dist_m: np.ndarray  # (N,) xy distance from the ego, world frame (the range filter)
    attribute: np.ndarray   # (N,) int64 `attribute_codes` code; -1: none
    score: np.ndarray | None = None  # (N,) detections only

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def take(self, rows: np.ndarray) -> NusBoxes:
        """The boxes `rows` (indices), order kept."""
        return NusBoxes(self.frame[rows], self.cls[rows], self.xyz_ego_m[rows],
                        self.world[rows], self.ego_dist_m[rows], self.attribute[rows],
                        None if self.score is None else self.score[rows])


def attribute_codes() -> dict[str, int]:
    """Attribute name -> integer code (compared as integers, not strings): the devkit's names
    0, 1, ...; "" (none) -1. A name it does not know (ground truth only: submissions are
    checked) gets `len(codes) - 1`, which no detection has."""
    names = detection_constants()["ATTRIBUTE_NAMES"]
    return {"": -1, **{n: i for i, n in enumerate(names)}}


def centres_in_boxes(centres: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 3) points, (N, 7) boxes, row by row -> (N,) point i inside box i, faces included
    (the devkit's `points_in_box`)."""
    d = centres - boxes[:, :3]                                       # (N, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = c * d[:, 0] + s * d[:, 1]
    ly = -s * d[:, 0] + c * d[:, 1]
    return (np.abs(lx) <= boxes[:, 3] / 2) & (np.abs(ly) <= boxes[:, 4] / 2) \
        & (np.abs(d[:, 2]) <= boxes[:, 5] / 2)


def in_racks(frame: np.ndarray, xyz_ego_m: np.ndarray, racks: tuple[np.ndarray, np.ndarray]
             ) -> np.ndarray:
    """(N,) centre i inside a rack of its own sample; racks = ((R,) sample index, (R, 7) ego
    boxes)."""
    rack_frame, rack_boxes = racks
    order = np.argsort(rack_frame, kind="stable")
    lo = np.searchsorted(rack_frame[order], frame, side="left")
    n = np.searchsorted(rack_frame[order], frame, side="right") - lo     # racks of each box
    p = np.repeat(np.arange(frame.size), n)
    r = order[np.repeat(lo, n) + np.arange(p.size) - np.repeat(np.cumsum(n) - n, n)]
    out = np.zeros(frame.size, dtype=bool)
    out[p[centres_in_boxes(xyz_ego_m[p], rack_boxes[r])]] = True
    return out


def devkit_keep(frame: np.ndarray, cls: np.ndarray, ego_dist_m: np.ndarray,  # noqa: PLR0913, PLR0917 -- 4 box arrays (a table's columns or NusBoxes fields) + the rules
                xyz_ego_m: np.ndarray, class_names: tuple[str, ...],
                class_range_m: dict[str, float], racks: tuple[np.ndarray, np.ndarray]
                ) -> np.ndarray:
    """(N,) the devkit's `filter_eval_boxes` on arrays: a detection class (`cls` >= 0) within
    its class range (strict, as the devkit), bicycles and motorcycles out of the bike racks of
    their sample. Shared by the submission audit (`devkit_filter`) and the audit stage's table
    path (`kdpipe.stages.audit.nuscenes.apply_rules`)."""
    rng = np.array([class_range_m[c] for c in class_names] + [-np.inf])  # -1 -> never kept
    keep = ego_dist_m < rng[cls]
    bikes = np.flatnonzero(keep & np.isin(cls, [class_names.index(c)
                                                for c in BIKE_CLASSES if c in class_names]))
    if bikes.size and racks[0].size:
        keep[bikes[in_racks(frame[bikes], xyz_ego_m[bikes], racks)]] = False
    return keep


def devkit_filter(boxes: NusBoxes, class_names: tuple[str, ...],
                  class_range_m: dict[str, float], racks: tuple[np.ndarray, np.ndarray]
                  ) -> NusBoxes:
    """`devkit_keep` on NusBoxes."""
    return boxes.take(np.flatnonzero(devkit_keep(
        boxes.frame, boxes.cls, boxes.ego_dist_m, boxes.xyz_ego_m, class_names, class_range_m,
        racks)))


_T = [pl.col(f"_T{k}") for k in range(8)]  # rows 0 and 1 of the 4 x 4 world-from-ego pose


def pose_rows(frames: pl.LazyFrame) -> pl.LazyFrame:
    """`frame_id` and rows 0 and 1 of each frame's FRAMES `t_world_from_ego`, as `_T0`..`_T7`
    (joined onto boxes for `world_xy`)."""
    return frames.select("frame_id", *[pl.col("t_world_from_ego").arr.get(k).cast(pl.Float64)
                                       .alias(f"_T{k}") for k in range(8)])


def world_xy() -> list[pl.Expr]:
    """`x_world_m`, `y_world_m` (the global centre) and `ego_dist_m` (xy norm of R p_ego: the
    devkit's `ego_dist`, box minus ego translation in the global frame) of boxes joined with
    `pose_rows`."""
    x, y, z = (pl.col(c) for c in ("x_ego_m", "y_ego_m", "z_ego_m"))
    rx, ry = _T[0] * x + _T[1] * y + _T[2] * z, _T[4] * x + _T[5] * y + _T[6] * z  # R p_ego
    return [(rx + _T[3]).alias("x_world_m"), (ry + _T[7]).alias("y_world_m"),
            (rx * rx + ry * ry).sqrt().alias("ego_dist_m")]


def store_boxes_query(boxes: Path, frames: Path, class_names: tuple[str, ...]) -> pl.LazyFrame:
    """What the scoring reads of a store's BOXES table: the ground truth of the detection
    classes with at least one LiDAR or radar point, and the bike racks; classes and
    attributes as codes; the devkit's global terms from the ego box and its frame's pose
    (FRAMES `t_world_from_ego`): centre, yaw (`quaternion_yaw` of pose x box rotation, the
    heading of R (cos, sin, 0)), velocity (the store keeps no vertical velocity: v_ego = (vx,
    vy, 0), as `write_submission` writes it) and the xy distance from the ego. Every sample's
    rows, all in polars: it runs without the GIL while the submission, which names the
    samples, is still being parsed."""
    c_idx = {c: i for i, c in enumerate(class_names)}
    codes = attribute_codes()
    T, yaw = _T, pl.col("yaw_ego_rad")
    vx, vy = pl.col("vx_ego_mps"), pl.col("vy_ego_mps")
    return pl.scan_parquet(boxes).select(
        "frame_id",
        pl.col("label").replace_strict(c_idx, default=-1, return_dtype=pl.Int64).alias("c"),
        (pl.col("class_name") == BIKE_RACK).fill_null(False).alias("rack"),
        ((pl.col("num_lidar_pts").fill_null(0) + pl.col("num_radar_pts").fill_null(0)) != 0)
        .alias("pts"),
        *[pl.col(c).cast(pl.Float64) for c in _EGO_BOX],
        pl.col("vx_ego_mps", "vy_ego_mps").cast(pl.Float64).fill_null(np.nan),
        pl.col("attribute").fill_null("").replace_strict(
            codes, default=len(codes) - 1, return_dtype=pl.Int64),
    ).filter(pl.col("rack") | ((pl.col("c") >= 0) & pl.col("pts"))
             ).join(pose_rows(pl.scan_parquet(frames)), on="frame_id", how="left",
                    maintain_order="left").select(
        "frame_id", "c", "rack", "attribute", *_EGO_BOX, *world_xy(),
        pl.arctan2(T[4] * yaw.cos() + T[5] * yaw.sin(), T[0] * yaw.cos() + T[1] * yaw.sin())
        .alias("yaw_world_rad"),
        (T[0] * vx + T[1] * vy).alias("vx_world_mps"),
        (T[4] * vx + T[5] * vy).alias("vy_world_mps"))


_WORLD = ["x_world_m", "y_world_m", "length_m", "width_m", "height_m", "yaw_world_rad",
          "vx_world_mps", "vy_world_mps"]


def store_boxes(table: pl.DataFrame, frame_ids: list[str]
                ) -> tuple[NusBoxes, tuple[np.ndarray, np.ndarray]]:
    """The ground truth of the samples `frame_ids` in `store_boxes_query`'s table: (its
    boxes, its bike racks as (sample index, (R, 7) ego boxes))."""
    pos = {f: i for i, f in enumerate(frame_ids)}
    frame = table["frame_id"].replace_strict(pos, default=-1, return_dtype=pl.Int64).to_numpy()
    is_rack, listed = table["rack"].to_numpy(), frame >= 0
    rack, gt = is_rack & listed, np.flatnonzero(~is_rack & listed)
    ego = table.select(_EGO_BOX).to_numpy()                                   # (N, 7)
    return NusBoxes(frame[gt], table["c"].to_numpy()[gt], ego[gt, :3],
                    table.select(_WORLD).to_numpy()[gt], table["ego_dist_m"].to_numpy()[gt],
                    table["attribute"].to_numpy()[gt]), (frame[rack], ego[rack])
