"""Read a nuScenes detection submission (mmdetection3d, OpenPCDet or `kdpipe export nuscenes`
output) into a kdpipe detections table, mapped onto an ingest's frames by sample token.

The format (nuscenes.org/object-detection): ``{"meta": {...}, "results": {sample_token:
[{sample_token, translation, size, rotation, velocity, detection_name, detection_score,
attribute_name}, ...]}}``, boxes in the global frame, ``size`` = (width, length, height),
``rotation`` a (w, x, y, z) quaternion, ``velocity`` global (vx, vy). The checks are the
devkit's (`load_prediction`, `DetectionBox`): at most `max_boxes_per_sample` boxes a sample,
known detection and attribute names, a float score that is not NaN; every problem is one
`SubmissionError` line.

The table keeps the global values the devkit scores (`x_world_m`, `y_world_m`,
`yaw_world_rad`: `quaternion_yaw`, the heading of the box x axis in the xy plane,
`vx_world_mps`, `vy_world_mps`) next to the canonical ego boxes that kdpipe tables speak.
"""
from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.evaluation.nuscenes_devkit import detection_constants
from kdpipe.pipeline.errors import KdpipeError

FIELDS = ("sample_token", "translation", "size", "rotation", "velocity", "detection_name",
          "detection_score", "attribute_name")


class SubmissionError(KdpipeError):
    """A submission file that cannot be audited (one line, exit 2)."""


def _parse(raw: bytes) -> Any:
    """orjson when installed (a few times faster on large files), else the standard library;
    the standard library also reads what orjson refuses (NaN, as Python's json writes it)."""
    try:
        import orjson

        return orjson.loads(raw)
    except ImportError:
        pass
    except ValueError:  # orjson.JSONDecodeError: let the standard library decide
        pass
    return json.loads(raw)


def read_results(path: Path) -> dict[str, list[Any]]:
    """The submission's ``results``, its outer shape checked."""
    if not path.is_file():
        raise SubmissionError(f"submission not found: {path}")
    try:
        data = _parse(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubmissionError(f"{path} is not JSON ({e})") from e
    if not isinstance(data, dict) or "results" not in data:
        raise SubmissionError(f"{path} has no 'results' (a nuScenes detection submission is "
                              '{"meta": {...}, "results": {sample_token: [boxes]}})')
    results = data["results"]
    if not isinstance(results, dict):
        raise SubmissionError(f"{path}: 'results' must map sample tokens to lists of boxes, "
                              f"not a {type(results).__name__}")
    for token, boxes in results.items():
        if not isinstance(boxes, list):
            raise SubmissionError(f"{path}: results[{token!r}] is a {type(boxes).__name__}, "
                                  "not a list of boxes")
    return results


def _flatten(path: Path, results: dict[str, list[Any]], max_boxes: int
             ) -> tuple[list[str], dict[str, list[Any]]]:
    """(each box's results key, {field: values}) over every box, in file order; a missing
    field or a sample token that disagrees with its key is an error. Comprehensions per field,
    not a loop per box: this is the part that grows with the file."""
    for token, boxes in results.items():
        if len(boxes) > max_boxes:
            raise SubmissionError(f"{path}: sample {token!r} has {len(boxes)} boxes; "
                                  f"DetectionEval allows at most {max_boxes} a sample")
    keys = [t for t, boxes in results.items() for _ in boxes]
    every = [b for boxes in results.values() for b in boxes]
    try:
        cols = {f: [b[f] for b in every] for f in FIELDS}
    except (KeyError, TypeError):
        i = next(i for i, b in enumerate(every)
                 if not isinstance(b, dict) or not set(FIELDS) <= b.keys())
        miss = sorted(set(FIELDS) - set(every[i])) if isinstance(every[i], dict) else FIELDS
        raise SubmissionError(f"{path}: a box of sample {keys[i]!r} lacks "
                              f"{', '.join(miss)}") from None
    if cols["sample_token"] != keys:
        bad = [t for t, k in zip(cols["sample_token"], keys, strict=True) if t != k]
        raise SubmissionError(f"{path}: {len(bad)} box(es) carry a sample_token other than "
                              f"the results key they are listed under, e.g. {bad[0]!r}")
    return keys, cols


def _numbers(path: Path, values: list[Any], width: int, what: str) -> np.ndarray:
    """(N, width) float64 from a list of lists; a wrong length or a non-number is an error."""
    try:
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        if (lengths != width).any():
            raise SubmissionError(f"{path}: every {what} must be {width} numbers, one has "
                                  f"{int(lengths[lengths != width][0])}")
        flat = np.fromiter(chain.from_iterable(values), dtype=np.float64,
                           count=width * len(values))
    except (TypeError, ValueError) as e:
        raise SubmissionError(f"{path}: every {what} must be {width} numbers ({e})") from e
    return flat.reshape(len(values), width)


def _check_names(path: Path, cols: dict[str, list[Any]], tokens: list[str]) -> np.ndarray:
    """Names checked against the devkit's; returns the (N,) scores."""
    const = detection_constants()
    for field, known, extra in (("detection_name", const["DETECTION_NAMES"], ()),
                                ("attribute_name", const["ATTRIBUTE_NAMES"], ("",))):
        ok = set(known) | set(extra)
        if set(cols[field]) <= ok:
            continue
        bad = [(v, t) for v, t in zip(cols[field], tokens, strict=True) if v not in ok]
        names = sorted({str(v) for v, _ in bad})
        raise SubmissionError(
            f"{path}: unknown {field}(s) {', '.join(map(repr, names))} in {len(bad)} "
            f"box(es), e.g. in sample {bad[0][1]!r}; nuScenes names: {', '.join(known)}")
    try:  # DetectionBox.deserialize takes anything float() takes, then refuses NaN
        score = np.fromiter(map(float, cols["detection_score"]), dtype=np.float64,
                            count=len(tokens))
    except (TypeError, ValueError):
        score = np.full(len(tokens), np.nan)
    if np.isnan(score).any():
        i = int(np.flatnonzero(np.isnan(score))[0])
        raise SubmissionError(f"{path}: a detection_score is not a number (or NaN), e.g. "
                              f"{cols['detection_score'][i]!r} in sample {tokens[i]!r}")
    return score


def submission_frames(results: dict[str, list[Any]], frames: pl.DataFrame, path: Path,
                      where: str) -> pl.DataFrame:
    """The ingest's frames of the submission's samples, in the submission's order."""
    tokens = list(results)
    by_token = frames.filter(pl.col("frame").is_in(tokens))
    dup = by_token.group_by("frame").len().filter(pl.col("len") > 1)
    if dup.height:
        raise SubmissionError(f"sample token {dup['frame'][0]!r} names {dup['len'][0]} frames "
                              f"of {where}; audit one source at a time")
    missing = sorted(set(tokens) - set(by_token["frame"].to_list()))
    if missing:
        raise SubmissionError(f"{len(missing)} of {len(tokens)} sample tokens of {path} are not "
                              f"in {where}, e.g. {missing[0]!r}")
    pos = {t: i for i, t in enumerate(tokens)}
    return by_token.with_columns(_pos=pl.col("frame").replace_strict(pos, return_dtype=pl.Int64)
                                 ).sort("_pos").drop("_pos")


def submission_table(path: Path, results: dict[str, list[Any]], frames: pl.DataFrame,
                     max_boxes: int) -> pl.DataFrame:
    """Every box of the submission as one row: kdpipe's detection columns (canonical ego box,
    ``label`` = detection name, ``score``), ``attribute``, and the global values the devkit
    scores. ``frames``: `submission_frames`' output (one frame per sample token)."""
    tokens, cols = _flatten(path, results, max_boxes)
    score = _check_names(path, cols, tokens)
    t_world = _numbers(path, cols["translation"], 3, "translation")          # (N, 3)
    wlh = _numbers(path, cols["size"], 3, "size")                            # (N, 3)
    q = _numbers(path, cols["rotation"], 4, "rotation")                      # (N, 4) wxyz
    v_world = _numbers(path, cols["velocity"], 2, "velocity")                # (N, 2)
    if not (np.isfinite(t_world).all() and np.isfinite(q).all() and np.isfinite(wlh).all()):
        raise SubmissionError(f"{path}: a translation, size or rotation is not finite")
    if (wlh <= 0).any():
        raise SubmissionError(f"{path}: a size is <= 0 (DetectionEval needs every size > 0)")
    if (np.linalg.norm(q, axis=1) == 0).any():
        raise SubmissionError(f"{path}: a rotation quaternion is all zeros")
    # `frames` is in results order and the boxes are grouped by sample in that order, so a
    # box's frame is its sample's position repeated over the sample's boxes
    n_boxes = np.fromiter(map(len, results.values()), dtype=np.int64, count=len(results))
    frame_idx = np.repeat(np.arange(len(results)), n_boxes)                 # (N,)
    T = frames["t_world_from_ego"].to_numpy().astype(np.float64).reshape(-1, 4, 4)[frame_idx]
    R_t = np.transpose(T[:, :3, :3], (0, 2, 1))                               # ego <- world
    xyz_ego = np.einsum("nij,nj->ni", R_t, t_world - T[:, :3, 3])             # (N, 3)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = qn.T
    x_axis = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], 1)
    yaw_world = np.arctan2(x_axis[:, 1], x_axis[:, 0])   # the devkit's quaternion_yaw
    x_axis_ego = np.einsum("nij,nj->ni", R_t, x_axis)                         # (N, 3)
    v_ego = np.einsum("nij,nj->ni", R_t, np.c_[v_world, np.zeros(len(tokens))])
    rank = np.arange(len(tokens)) - np.repeat(np.cumsum(n_boxes) - n_boxes, n_boxes)
    return pl.DataFrame({
        "frame_id": frames["frame_id"].gather(frame_idx), "det_index": rank.astype(np.int32),
        "label": pl.Series(cols["detection_name"], dtype=pl.String), "score": score,
        "x_ego_m": xyz_ego[:, 0], "y_ego_m": xyz_ego[:, 1], "z_ego_m": xyz_ego[:, 2],
        "length_m": wlh[:, 1], "width_m": wlh[:, 0], "height_m": wlh[:, 2],
        "yaw_ego_rad": np.arctan2(x_axis_ego[:, 1], x_axis_ego[:, 0]),
        "vx_ego_mps": v_ego[:, 0], "vy_ego_mps": v_ego[:, 1],
        "attribute": pl.Series(cols["attribute_name"], dtype=pl.String),
        "x_world_m": t_world[:, 0], "y_world_m": t_world[:, 1], "yaw_world_rad": yaw_world,
        "vx_world_mps": v_world[:, 0], "vy_world_mps": v_world[:, 1],
    })
