"""Read a nuScenes detection submission (mmdetection3d, OpenPCDet or `kdpipe export nuscenes`
output) into arrays of boxes (`NusBoxes`), mapped onto an ingest's frames by sample token.

The format (nuscenes.org/object-detection): ``{"meta": {...}, "results": {sample_token:
[{sample_token, translation, size, rotation, velocity, detection_name, detection_score,
attribute_name}, ...]}}``, boxes in the global frame, ``size`` = (width, length, height),
``rotation`` a (w, x, y, z) quaternion, ``velocity`` global (vx, vy). The checks are the
devkit's (`load_prediction`, `DetectionBox`): at most `max_boxes_per_sample` boxes a sample,
known detection and attribute names, a float score that is not NaN; every problem is one
`SubmissionError` line.

The boxes keep the global values the devkit scores (centre, size, `quaternion_yaw`: the
heading of the box x axis in the xy plane, velocity) and the ego-frame centre of the
bike-rack test.
"""
from __future__ import annotations

import json
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.evaluation.nuscenes_boxes import NusBoxes, attribute_codes
from kdpipe.evaluation.nuscenes_devkit import detection_constants
from kdpipe.pipeline.errors import KdpipeError

FIELDS = ("sample_token", "translation", "size", "rotation", "velocity", "detection_name",
          "detection_score", "attribute_name")
_VECTORS = ("translation", "size", "rotation", "velocity")
_WIDTHS = np.array([3, 3, 4, 2])  # their lengths
_NAMED = [f for f in FIELDS if f not in _VECTORS]


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
    """(each box's results key, {field: values} for the fields that are not vectors and
    "vectors": each box's (translation, size, rotation, velocity)) over every box, in file
    order; a missing field or a sample token that disagrees with its key is an error.
    C-level passes per field (itemgetter), not a loop per box: this part grows with the file."""
    for token, boxes in results.items():
        if len(boxes) > max_boxes:
            raise SubmissionError(f"{path}: sample {token!r} has {len(boxes)} boxes; "
                                  f"DetectionEval allows at most {max_boxes} a sample")
    keys = [t for t, boxes in results.items() for _ in boxes]
    every = [b for boxes in results.values() for b in boxes]
    try:
        cols: dict[str, Any] = {f: list(map(itemgetter(f), every)) for f in _NAMED}
        cols["vectors"] = list(map(itemgetter(*_VECTORS), every))  # (N,) 4-tuples of lists
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


def _vectors(path: Path, rows: list[tuple[Any, ...]]) -> np.ndarray:
    """(N, 12) translation, size, rotation, velocity from each box's 4-tuple of lists: one
    pass for the lengths, one for the numbers (not four of each); any problem is named by
    the per-field check."""
    n = len(rows)
    try:
        lengths = np.fromiter(map(len, chain.from_iterable(rows)), dtype=np.int64,
                              count=len(_VECTORS) * n).reshape(n, len(_VECTORS))
        if (lengths == _WIDTHS).all():
            return np.fromiter(chain.from_iterable(chain.from_iterable(rows)),
                               dtype=np.float64, count=int(_WIDTHS.sum()) * n).reshape(n, -1)
    except (TypeError, ValueError):
        pass
    return np.hstack([_numbers(path, [r[k] for r in rows], w, f)
                      for k, (f, w) in enumerate(zip(_VECTORS, _WIDTHS, strict=True))])


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


def _codes(path: Path, values: list[Any], tokens: list[str], field: str,
           codes: dict[str, int]) -> np.ndarray:
    """(N,) codes of the names `values` (the keys of `codes`); any other value, the devkit's
    own check, is an error naming them."""
    try:  # one C-level pass; a name that is no key stops it
        return np.fromiter(map(codes.__getitem__, values), dtype=np.int64, count=len(values))
    except (KeyError, TypeError):
        pass
    bad = [(v, t) for v, t in zip(values, tokens, strict=True)
           if not isinstance(v, str) or v not in codes]
    names = sorted({repr(v) for v, _ in bad})
    known = [n for n in codes if n]
    raise SubmissionError(
        f"{path}: unknown {field}(s) {', '.join(names)} in {len(bad)} box(es), e.g. in "
        f"sample {bad[0][1]!r}; nuScenes names: {', '.join(known)}")


def _scores(path: Path, values: list[Any], tokens: list[str]) -> np.ndarray:
    """(N,) detection scores."""
    try:  # DetectionBox.deserialize takes anything float() takes, then refuses NaN
        score = np.fromiter(map(float, values), dtype=np.float64, count=len(tokens))
    except (TypeError, ValueError):
        score = np.full(len(tokens), np.nan)
    if np.isnan(score).any():
        i = int(np.flatnonzero(np.isnan(score))[0])
        raise SubmissionError(f"{path}: a detection_score is not a number (or NaN), e.g. "
                              f"{values[i]!r} in sample {tokens[i]!r}")
    return score


def submission_frames(results: dict[str, list[Any]], frames: pl.DataFrame, path: Path,
                      where: str) -> pl.DataFrame:
    """The ingest's frames of the submission's samples, in the submission's order (a few
    hundred rows: matched in Python, one gather)."""
    tokens = list(results)
    row_of: dict[str, int] = {}
    for i, t in enumerate(frames["frame"].to_list()):
        if t in results:
            if t in row_of:
                n = int((frames["frame"] == t).sum())
                raise SubmissionError(f"sample token {t!r} names {n} frames of {where}; audit "
                                      "one source at a time")
            row_of[t] = i
    missing = [t for t in tokens if t not in row_of]
    if missing:
        raise SubmissionError(f"{len(missing)} of {len(tokens)} sample tokens of {path} are not "
                              f"in {where}, e.g. {sorted(missing)[0]!r}")
    return frames[[row_of[t] for t in tokens]]


def submission_boxes(path: Path, results: dict[str, list[Any]], poses: np.ndarray,
                     class_names: tuple[str, ...], max_boxes: int) -> NusBoxes:
    """Every box of the submission, in file order, as the devkit scores it (global frame;
    ``size`` = (width, length, height); yaw = `quaternion_yaw`, the heading of the box x axis
    in the xy plane), with its centre in the ego frame for the bike-rack test. ``poses``:
    (F, 4, 4) world-from-ego of the samples in results order (`submission_frames`)."""
    tokens, cols = _flatten(path, results, max_boxes)
    # every devkit name is a key (-1: a name the config does not score)
    c_idx = {n: class_names.index(n) if n in class_names else -1
             for n in detection_constants()["DETECTION_NAMES"]}
    cls = _codes(path, cols["detection_name"], tokens, "detection_name", c_idx)
    attr = _codes(path, cols["attribute_name"], tokens, "attribute_name", attribute_codes())
    score = _scores(path, cols["detection_score"], tokens)
    vec = _vectors(path, cols["vectors"])                                    # (N, 12)
    t_world, wlh, q, v_world = vec[:, :3], vec[:, 3:6], vec[:, 6:10], vec[:, 10:]  # q: wxyz
    if not (np.isfinite(t_world).all() and np.isfinite(q).all() and np.isfinite(wlh).all()):
        raise SubmissionError(f"{path}: a translation, size or rotation is not finite")
    if (wlh <= 0).any():
        raise SubmissionError(f"{path}: a size is <= 0 (DetectionEval needs every size > 0)")
    q_norm = np.sqrt(np.einsum("ni,ni->n", q, q))                           # (N,)
    if (q_norm == 0).any():
        raise SubmissionError(f"{path}: a rotation quaternion is all zeros")
    # the boxes are grouped by sample in results order, so a box's sample is its sample's
    # position repeated over the sample's boxes
    n_boxes = np.fromiter(map(len, results.values()), dtype=np.int64, count=len(results))
    frame = np.repeat(np.arange(len(results)), n_boxes)                     # (N,)
    T = poses[frame]                                                         # (N, 4, 4)
    d_world = t_world - T[:, :3, 3]                                          # box - ego
    xyz_ego = np.einsum("nji,nj->ni", T[:, :3, :3], d_world)                 # R^T (box - ego)
    w, x, y, z = (q / q_norm[:, None]).T
    yaw_world = np.arctan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z))     # quaternion_yaw
    world = np.column_stack([t_world[:, :2], wlh[:, 1], wlh[:, 0], wlh[:, 2], yaw_world,
                             v_world])
    return NusBoxes(frame, cls, xyz_ego, world, np.hypot(d_world[:, 0], d_world[:, 1]),
                    attr, score)
