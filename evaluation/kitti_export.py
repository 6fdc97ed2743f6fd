"""KITTI label files (the VoD evaluator's input) from detection, pseudo-label and box tables.

One ``<stem>.txt`` per listed frame, in the frame's rectified camera frame, 16 columns with the
score last; frames without boxes get an EMPTY file because the VoD evaluator takes its frame list
from the prediction folder (a missing file silently drops that frame's ground truth). The 2D
``bbox`` columns are projected with the frame's camera so the evaluator's hidden 40 px height
rule sees real boxes; boxes that miss the image get ``0 0 0 0`` (height 0: ignored, as the
evaluator ignores anything it cannot see).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import polars as pl

from kdpipe.datasets.formats.kitti import KittiLabels, alpha_from_rot_y, write_kitti_labels
from kdpipe.pipeline.errors import KdpipeError
from kdpipe.schemas.boxes import ego_to_kitti_camera, project_to_image_bbox

BOX_COLUMNS = ("x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad")
BBOX_COLUMNS = ("bbox_left_px", "bbox_top_px", "bbox_right_px", "bbox_bottom_px")
FRAME_MAP = "frame_map.csv"
TableKind = Literal["detections", "pseudo_labels", "boxes"]


class ExportError(KdpipeError):
    """Input an export cannot use (missing columns or calibration, unknown frames, bad values)."""


class LabelNames(TypedDict, total=False):
    """names: table label -> the format's class string (each writer documents its default)."""

    names: dict[str, str] | None


class BoxOptions(LabelNames, total=False):
    """Which rows of a box table are written, and as what class; every key optional.

    all_states: pseudo-labels, write the ``ignore`` rows too (default: ``positive`` only).
    """

    all_states: bool


class KittiOptions(BoxOptions, total=False):
    """`write_kitti_predictions`'s options: a `BoxOptions` plus ``camera``, the calibration
    sensor whose frame the labels are in (default ``"camera"``)."""

    camera: str


class TruthOptions(LabelNames, total=False):
    """`write_kitti_ground_truth`'s options: ``names``, ``camera`` (as in `KittiOptions`) and
    ``frame_ids``, the frames to write (default: every frame of ``frames``)."""

    frame_ids: list[str] | None
    camera: str


@dataclass(frozen=True)
class _LabelStyle:
    """How rows become KITTI lines: class names (label -> KITTI class) and the camera."""

    names: dict[str, str]
    camera: str


def table_kind(table: pl.DataFrame) -> TableKind:
    """Which kind of box table this is, from its columns (checks the box columns exist)."""
    missing = [c for c in (*BOX_COLUMNS, "frame_id", "label") if c not in table.columns]
    if missing:
        raise ExportError(f"table has no box columns {missing} (need a detections, "
                          "pseudo-labels or boxes table)")
    if "state" in table.columns:
        return "pseudo_labels"
    if "score" in table.columns:
        return "detections"
    if "class_name" in table.columns:
        return "boxes"
    raise ExportError("table has neither 'score' (detections), 'state' (pseudo-labels) nor "
                      "'class_name' (ground-truth boxes)")


def select_boxes(table: pl.DataFrame, *, all_states: bool = False) -> pl.DataFrame:
    """The rows to export with a float ``score`` column and a string ``name`` column.

    Pseudo-labels: only ``positive`` rows unless ``all_states`` ("ignore" boxes are loss masks,
    not detections). Ground-truth boxes: score 1.0; ``name`` is ``label``, else ``class_name``
    (nuScenes categories without a detection class have a null label).
    """
    kind = table_kind(table)
    if kind == "pseudo_labels" and not all_states:
        table = table.filter(pl.col("state") == "positive")
    if kind == "boxes":
        table = table.with_columns(score=pl.lit(1.0),
                                   name=pl.coalesce(pl.col("label"), pl.col("class_name")))
    else:
        table = table.with_columns(pl.col("score").cast(pl.Float64), name=pl.col("label"))
    if table["name"].null_count():
        raise ExportError(f"{table['name'].null_count()} row(s) have no label")
    box = table.select(BOX_COLUMNS).to_numpy().astype(np.float64)
    bad = ~np.isfinite(box).all(axis=1) | (box[:, 3:6] <= 0).any(axis=1)
    bad |= ~np.isfinite(table["score"].fill_null(np.nan).to_numpy())
    if bad.any():
        row = table.row(int(np.flatnonzero(bad)[0]), named=True)
        raise ExportError(f"{int(bad.sum())} row(s) with a non-finite value or a size <= 0, "
                          f"first in frame {row['frame_id']}")
    return table


def kitti_stems(frames: pl.DataFrame) -> dict[str, str]:
    """File stem of every frame of an ingest: its native frame number when those are digits and
    unique across all sources, else the frame's 6-digit row position.

    Decided over the whole frames table, not the exported subset, so ground truth and
    predictions written for different frame lists still agree file by file.
    """
    native = frames["frame"].to_list()
    if all(f is not None and f.isdigit() for f in native) and len(set(native)) == len(native):
        return dict(zip(frames["frame_id"].to_list(), native, strict=True))
    return {fid: f"{i:06d}" for i, fid in enumerate(frames["frame_id"].to_list())}


def _cameras(calibration: pl.DataFrame, frame_ids: list[str], camera: str
             ) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """frame_id -> (T_cam_from_ego 4x4, P 3x4, (width, height) px) of the named camera."""
    rows = calibration.filter((pl.col("sensor") == camera) & pl.col("frame_id").is_in(frame_ids))
    out = {}
    for r in rows.iter_rows(named=True):
        if r["intrinsics"] is None:
            continue
        P = np.asarray(r["intrinsics"], dtype=np.float64).reshape(3, 4)
        T_cam_from_ego = np.linalg.inv(np.asarray(r["t_ego_from_sensor"], np.float64).reshape(4, 4))
        if r["image_width_px"] and r["image_height_px"]:
            wh = (int(r["image_width_px"]), int(r["image_height_px"]))
        else:  # no image on disk: the principal point sits at the image centre in VoD/KITTI
            wh = (round(2 * P[0, 2]), round(2 * P[1, 2]))
        out[r["frame_id"]] = (T_cam_from_ego, P, wh)
    return out


def _labels(rows: pl.DataFrame, cam: tuple[np.ndarray, np.ndarray, tuple[int, int]],
            names: dict[str, str]) -> KittiLabels:
    """One frame's rows as KITTI labels (stored 2D boxes kept where present, else projected)."""
    T_cam_from_ego, P, wh = cam
    boxes_ego = rows.select(BOX_COLUMNS).to_numpy().astype(np.float64)
    loc_cam, dims_hwl, rot_y = ego_to_kitti_camera(boxes_ego, T_cam_from_ego)
    bbox = project_to_image_bbox(boxes_ego, T_cam_from_ego, P, wh)
    if all(c in rows.columns for c in BBOX_COLUMNS):
        stored = rows.select(BBOX_COLUMNS).to_numpy().astype(np.float64)  # nulls -> NaN
        keep = np.isfinite(stored).all(axis=1)
        bbox[keep] = stored[keep]
    bbox = np.nan_to_num(bbox, nan=0.0)  # off-image: zero height, below the 40 px rule
    occluded = (rows["occluded"].fill_null(0).to_numpy() if "occluded" in rows.columns
                else np.zeros(rows.height))
    class_name = [names.get(n, n) for n in rows["name"].to_list()]
    spaced = [n for n in class_name if not n or any(ch.isspace() for ch in n)]
    if spaced:
        raise ExportError(f"class name {spaced[0]!r} cannot be a KITTI label (blank or spaces)")
    return KittiLabels(
        class_name=np.asarray(class_name, dtype=np.str_), truncated=np.zeros(rows.height),
        occluded=np.asarray(occluded, dtype=np.int64), alpha=alpha_from_rot_y(rot_y, loc_cam),
        bbox_ltrb=bbox, dims_hwl=dims_hwl, loc_cam=loc_cam, rot_y=rot_y,
        score=rows["score"].to_numpy().astype(np.float64))


def resolve_frames(table: pl.DataFrame, frames: pl.DataFrame,
                   frame_ids: list[str] | None) -> list[str]:
    """The frame list to export: ``frame_ids`` (each must be in ``frames``; table rows of other
    frames are left out) or, when None, the table's frames in ``frames`` order (then every
    frame of the table must be in ``frames``)."""
    known = set(frames["frame_id"].to_list())
    ids = table["frame_id"].unique().to_list() if frame_ids is None else frame_ids
    unknown = sorted(set(ids) - known)
    if unknown:
        what = "table" if frame_ids is None else "frame list"
        raise ExportError(f"{len(unknown)} frame(s) of the {what} are not in the frames table, "
                          f"e.g. {unknown[0]!r}")
    if frame_ids is None:
        wanted = set(ids)
        return [f for f in frames["frame_id"].to_list() if f in wanted]
    return list(dict.fromkeys(frame_ids))


def _write(table: pl.DataFrame, frames: pl.DataFrame, calibration: pl.DataFrame,
           out_dir: str | Path, frame_ids: list[str] | None, style: _LabelStyle) -> dict[str, str]:
    camera = style.camera
    ids = resolve_frames(table, frames, frame_ids)
    stems = kitti_stems(frames)
    table = table.filter(pl.col("frame_id").is_in(ids))
    cams = _cameras(calibration, table["frame_id"].unique().to_list(), camera)
    out = Path(out_dir)
    # the evaluator reads every *.txt below its folder: a leftover would count as a frame
    ours = {f"{stems[f]}.txt" for f in ids}
    stale = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")
                   if p.parent != out or p.name not in ours) if out.is_dir() else []
    if stale:
        raise ExportError(f"{out} holds {len(stale)} other label file(s), e.g. {stale[0]}; "
                          "export into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    by_frame: dict[Any, pl.DataFrame] = {
        k[0]: g.sort("score", descending=True, maintain_order=True)
        for k, g in table.group_by("frame_id")}
    mapping = {}
    for fid in ids:
        stem = mapping[fid] = stems[fid]
        rows = by_frame.get(fid)
        if rows is None:
            (out / f"{stem}.txt").write_text("", encoding="utf-8")
            continue
        if fid not in cams:
            raise ExportError(f"frame {fid} has boxes but no '{camera}' calibration with "
                              "intrinsics in the ingest")
        write_kitti_labels(out / f"{stem}.txt", _labels(rows, cams[fid], style.names))
    with (out / FRAME_MAP).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["frame_id", "stem"])
        w.writerows(mapping.items())
    return mapping


def write_kitti_predictions(
    dets: pl.DataFrame, frames: pl.DataFrame, calibration: pl.DataFrame, out_dir: str | Path,
    frame_ids: list[str] | None = None, **options: Unpack[KittiOptions],
) -> dict[str, str]:
    """Write a prediction folder for the VoD/KITTI evaluator.

    Args:
        dets: DETECTIONS, PSEUDO_LABELS (``positive`` rows only unless ``all_states``) or BOXES
            (ground truth as predictions: score 1.0, stored ``bbox_*_px``/``occluded`` kept).
        frames: the ingest's FRAMES table (stems, frame check).
        calibration: the ingest's CALIBRATION table (``camera`` extrinsics and intrinsics).
        out_dir: folder for ``<stem>.txt`` and ``frame_map.csv`` (keep other ``.txt`` files and
            sub-folders out of it: the evaluator walks it recursively).
        frame_ids: frames to write (an empty file for each without rows); default: the table's.
        **options: `KittiOptions`: ``names`` (table label -> KITTI class string; unmapped
            labels are written verbatim), ``all_states`` (pseudo-labels: write ``ignore`` rows
            too), ``camera`` (calibration sensor whose frame the labels are in).

    Returns:
        frame_id -> file stem (also written to ``frame_map.csv``).
    """
    style = _LabelStyle(options.get("names") or {}, options.get("camera", "camera"))
    rows = select_boxes(dets, all_states=options.get("all_states", False))
    return _write(rows, frames, calibration, out_dir, frame_ids, style)


def write_kitti_ground_truth(
    boxes: pl.DataFrame, frames: pl.DataFrame, calibration: pl.DataFrame, out_dir: str | Path,
    **options: Unpack[TruthOptions],
) -> dict[str, str]:
    """Write the evaluator's ground-truth folder from an ingested BOXES table.

    Classes as VoD writes them (``label``, else ``class_name``): Car, Pedestrian, Cyclist and the
    other VoD classes verbatim, which the evaluator counts as neither TP nor FP. The stored
    ``bbox_*_px`` and ``occluded`` columns decide the evaluator's 40 px and occlusion rules, as
    in the original files. Default frame list: every frame of ``frames`` (empty files included).
    """
    if "class_name" not in boxes.columns:
        raise ExportError("ground truth needs a BOXES table (with class_name)")
    frame_ids = options.get("frame_ids")
    ids = frames["frame_id"].to_list() if frame_ids is None else frame_ids
    style = _LabelStyle(options.get("names") or {}, options.get("camera", "camera"))
    return _write(select_boxes(boxes), frames, calibration, out_dir, ids, style)


def read_frame_map(folder: str | Path) -> dict[str, str]:
    """frame_id -> stem as written next to the label files."""
    with (Path(folder) / FRAME_MAP).open(newline="", encoding="utf-8") as f:
        return {r["frame_id"]: r["stem"] for r in csv.DictReader(f)}
