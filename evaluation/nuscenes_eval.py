"""nuScenes detection submission JSON from box tables, and scores from the official DetectionEval.

Boxes leave the ego frame through ``frames.t_world_from_ego`` (nuScenes: the global frame of the
LIDAR_TOP keyframe's ego pose), so they land where ``sample_annotation`` boxes live. Every sample
of the frame list is written, with an empty list when it has no boxes: DetectionEval asserts
that the submission's samples equal the split's.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import polars as pl

from kdpipe.evaluation.kitti_export import (
    BOX_COLUMNS,
    BoxOptions,
    ExportError,
    resolve_frames,
    select_boxes,
    table_kind,
)
from kdpipe.schemas.boxes import ego_to_nuscenes_global

DETECTION_NAMES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                   "motorcycle", "bicycle", "traffic_cone", "barrier")
# kdpipe's VoD-style class names -> nuScenes detection classes (a VoD "Cyclist" is a ridden bike)
DEFAULT_NAMES = {"Car": "car", "Pedestrian": "pedestrian", "Cyclist": "bicycle"}
DEFAULT_META = {"use_camera": False, "use_lidar": False, "use_radar": True, "use_map": False,
                "use_external": False}
MAX_BOXES_PER_SAMPLE = 500  # detection_cvpr_2019 max_boxes_per_sample; more fails the load
_MOVING_MPS = 0.2  # speed above which a box is "moving" (mmdetection3d's nuScenes export)
_VEHICLES = {"car", "truck", "bus", "trailer", "construction_vehicle"}
# Attribute when nothing better is known (mmdetection3d NuScenesDataset.DefaultAttribute); an
# empty attribute counts as wrong in AAE for every class except cones and barriers.
_DEFAULT_ATTRIBUTE = {"car": "vehicle.parked", "pedestrian": "pedestrian.moving",
                      "trailer": "vehicle.parked", "truck": "vehicle.parked",
                      "bus": "vehicle.moving", "motorcycle": "cycle.without_rider",
                      "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider",
                      "barrier": "", "traffic_cone": ""}


def default_attribute(name: str, speed_mps: float) -> str:
    """The attribute mmdetection3d writes for a box of class ``name`` moving at ``speed_mps``."""
    if speed_mps > _MOVING_MPS:
        if name in _VEHICLES:
            return "vehicle.moving"
        if name in ("bicycle", "motorcycle"):
            return "cycle.with_rider"
    elif name == "pedestrian":
        return "pedestrian.standing"
    elif name == "bus":
        return "vehicle.stopped"
    return _DEFAULT_ATTRIBUTE[name]


def _ego_pose(t_world_from_ego: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(translation (3,), quaternion wxyz (4,), rotation (3, 3)) of a row-major 4x4 pose."""
    from pyquaternion import Quaternion

    T = np.asarray(t_world_from_ego, dtype=np.float64).reshape(4, 4)
    q = Quaternion(matrix=T[:3, :3], rtol=1e-6, atol=1e-6)
    return T[:3, 3], np.asarray(q.elements), T[:3, :3]


def _records(rows: pl.DataFrame, token: str, pose: Any, kind: str) -> list[dict[str, Any]]:
    """One sample's boxes as submission records, highest score first, at most 500."""
    rows = rows.sort("score", descending=True, maintain_order=True).head(MAX_BOXES_PER_SAMPLE)
    t_ego, q_ego, R_world_from_ego = _ego_pose(pose)
    boxes_ego = rows.select(BOX_COLUMNS).to_numpy().astype(np.float64)
    translation, size_wlh, rotation = ego_to_nuscenes_global(boxes_ego, t_ego, q_ego)
    v_ego = np.zeros((rows.height, 3))
    for i, c in enumerate(("vx_ego_mps", "vy_ego_mps")):
        if c in rows.columns:
            v_ego[:, i] = rows[c].fill_null(0.0).fill_nan(0.0).to_numpy()
    v_world = v_ego @ R_world_from_ego.T
    attrs = (rows["attribute"].to_list() if kind == "boxes" and "attribute" in rows.columns
             else [None] * rows.height)
    out = []
    for i, (name, score) in enumerate(zip(rows["name"].to_list(), rows["score"].to_list(),
                                          strict=True)):
        # ingest joins several attributes with ","; nuScenes boxes carry at most one
        attr = (attrs[i] or "").split(",")[0] or default_attribute(
            name, float(np.hypot(*v_world[i, :2])))
        out.append({"sample_token": token, "translation": translation[i].tolist(),
                    "size": size_wlh[i].tolist(), "rotation": rotation[i].tolist(),
                    "velocity": v_world[i, :2].tolist(), "detection_name": name,
                    "detection_score": float(score), "attribute_name": attr})
    return out


class SubmissionOptions(BoxOptions, total=False):
    """`write_submission`'s options: a `BoxOptions` plus ``meta``, the submission's ``meta``
    (default: radar only)."""

    meta: dict[str, bool] | None


def write_submission(
    dets: pl.DataFrame, frames: pl.DataFrame, out_json: str | Path,
    frame_ids: list[str] | None = None, **options: Unpack[SubmissionOptions],
) -> dict[str, Any]:
    """Write a nuScenes detection submission.

    Args:
        dets: DETECTIONS, PSEUDO_LABELS (``positive`` rows unless ``all_states``) or BOXES. For
            BOXES (ground truth as a submission) rows without a detection class and rows with
            zero LiDAR and radar points are left out, as DetectionEval drops them from its
            ground truth (they would only be false positives); their attribute is kept.
        frames: the ingest's FRAMES table (``frame`` = sample token, ``t_world_from_ego``).
        out_json: output file.
        frame_ids: frames (samples) to write; default: every frame of ``frames``. Each gets an
            entry, empty when it has no boxes.
        **options: `SubmissionOptions`: ``meta`` (the submission's ``meta``; default: radar
            only), ``names`` (table label -> detection class; default: identity for nuScenes
            classes and Car/Pedestrian/Cyclist -> car/pedestrian/bicycle), ``all_states``
            (pseudo-labels: write ``ignore`` rows too).

    Returns:
        ``{"n_samples", "n_boxes", "n_truncated"}`` (boxes beyond 500 in a sample, lowest
        scores, are dropped and counted).

    Raises:
        ExportError: unknown frames, a label with no detection class in a detections /
            pseudo-labels table, or a frame without a world pose.
    """
    kind = table_kind(dets)
    rows = select_boxes(dets, all_states=options.get("all_states", False))
    mapping = {**DEFAULT_NAMES, **(options.get("names") or {})}
    rows = rows.with_columns(name=pl.col("name").replace(mapping))
    if kind == "boxes":
        keep = pl.col("name").is_in(DETECTION_NAMES)
        if "num_lidar_pts" in rows.columns and "num_radar_pts" in rows.columns:
            n_pts = pl.col("num_lidar_pts").fill_null(0) + pl.col("num_radar_pts").fill_null(0)
            keep &= n_pts > 0
        rows = rows.filter(keep)
    else:
        bad = sorted(set(rows["name"].to_list()) - set(DETECTION_NAMES))
        if bad:
            raise ExportError(f"label(s) {bad} are not nuScenes detection classes (map them "
                              f"with names=...; classes: {', '.join(DETECTION_NAMES)})")
    ids = resolve_frames(rows, frames, frame_ids if frame_ids is not None
                         else frames["frame_id"].to_list())
    info = frames.filter(pl.col("frame_id").is_in(ids)).select(
        "frame_id", "frame", "t_world_from_ego")
    token_of = dict(zip(info["frame_id"].to_list(), info["frame"].to_list(), strict=True))
    pose_of = dict(zip(info["frame_id"].to_list(), info["t_world_from_ego"].to_list(),
                       strict=True))
    by_frame = {k[0]: g for k, g in rows.filter(pl.col("frame_id").is_in(ids))
                .group_by("frame_id")}
    results: dict[str, list[dict[str, Any]]] = {}
    n_boxes = n_truncated = 0
    for fid in ids:
        token, g = token_of[fid], by_frame.get(fid)
        if g is None:
            results[token] = []
            continue
        if pose_of[fid] is None or not all(map(math.isfinite, pose_of[fid])):
            raise ExportError(f"frame {fid} has no finite t_world_from_ego")
        results[token] = _records(g, token, pose_of[fid], kind)
        n_boxes += len(results[token])
        n_truncated += g.height - len(results[token])
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {**DEFAULT_META, **(options.get("meta") or {})}
    out.write_text(json.dumps({"meta": meta, "results": results}))
    return {"n_samples": len(results), "n_boxes": n_boxes, "n_truncated": n_truncated}


def score_nuscenes(dataroot: str | Path, version: str, eval_set: str, result_path: str | Path,
                   out_dir: str | Path, *, nusc: Any = None) -> dict[str, Any]:
    """Run the official ``DetectionEval`` (``detection_cvpr_2019``) on a submission.

    Args:
        dataroot, version: the nuScenes dataroot and table version (``v1.0-mini`` ...).
        eval_set: a devkit split (``val``, ``mini_val``, ... : the submission must hold exactly
            its samples) or a custom split in ``<dataroot>/<version>/splits.json`` (extra
            samples in the submission are ignored).
        result_path: the submission JSON.
        out_dir: where the devkit writes ``metrics_summary.json`` / ``metrics_details.json``.
        nusc: an already loaded ``NuScenes`` to reuse (loading the tables is the slow part).

    Returns:
        ``mean_ap``, ``nd_score``, ``tp_errors`` (trans/scale/orient/vel/attr, mean over
        classes), ``class_ap`` (AP per class, mean over the distance thresholds),
        ``class_tp_errors`` and ``eval_time``.
    """
    from nuscenes import NuScenes
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    if not Path(result_path).is_file():
        raise ExportError(f"submission not found: {result_path}")
    sink = io.StringIO()  # the devkit prints progress even with verbose=False (tqdm)
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        if nusc is None:
            nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        try:
            ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(result_path),
                               eval_set, str(out_dir), verbose=False)
        except (AssertionError, KeyError, ValueError) as e:
            # the devkit's checks are asserts (sample sets, class names, score type) and a
            # missing sample of a custom split is a bare KeyError
            raise ExportError(f"DetectionEval rejected {result_path}: "
                              f"{type(e).__name__}: {e}") from e
        m = ev.main(plot_examples=0, render_curves=False)
    return {"mean_ap": float(m["mean_ap"]), "nd_score": float(m["nd_score"]),
            "tp_errors": {k: float(v) for k, v in m["tp_errors"].items()},
            "class_ap": {k: float(v) for k, v in m["mean_dist_aps"].items()},
            "class_tp_errors": m["label_tp_errors"], "eval_time": float(m["eval_time"])}
