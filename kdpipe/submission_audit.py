"""`kdpipe audit --submission FILE.json --ingest PATH`: score any nuScenes detection submission
against an ingested store's ground truth (mAP, NDS, the five TP errors, per class), as
nuscenes-devkit's `DetectionEval` does, without loading the nuScenes tables.

`--ingest` names the ground truth as `kdpipe export` does: an ingest artifact directory
(`<workspace>/artifacts/ingest/<key>`, holding `frames.parquet` and `boxes.parquet`), or a
workspace, in which case the newest committed ingest artifact holding every sample token of
the submission is used (and named in the output). The evaluated samples are the submission's
own: each must be a frame of the store; a sample listed with no boxes counts its ground truth
as missed, a store frame absent from the submission is not evaluated (DetectionEval would
instead refuse a submission that does not cover its split).
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.evaluation.nuscenes_submission import (
    SubmissionError,
    read_results,
    submission_boxes,
    submission_frames,
)

_TABLES = ("frames.parquet", "boxes.parquet")
# what the scoring reads of the frames (image paths, ... stay on disk; the boxes: store_boxes)
_FRAME_COLUMNS = ["frame_id", "dataset", "frame", "split", "t_world_from_ego"]


def _is_ingest_artifact(path: Path) -> bool:
    return all((path / t).is_file() for t in _TABLES)


def _tokens_of(path: Path) -> set[str]:
    return set(pl.read_parquet(path / "frames.parquet", columns=["frame"])["frame"].to_list())


def resolve_ingest(path: Path, tokens: list[str]) -> Path:
    """The ingest artifact directory `--ingest` names (see the module docstring)."""
    if _is_ingest_artifact(path):
        return path
    if not path.is_dir():
        raise SubmissionError(f"--ingest {path}: no such directory (give an ingest artifact "
                              "directory or a workspace)")
    from kdpipe.pipeline.store import Workspace

    records = Workspace(path, create=False).committed("ingest")
    if not records:
        raise SubmissionError(f"--ingest {path} is neither an ingest artifact (no "
                              f"{' / '.join(_TABLES)}) nor a workspace with a committed ingest")
    wanted, best = set(tokens), (-1, "")
    for rec in records:  # newest first
        art = path / "artifacts" / "ingest" / str(rec["key"])
        if not _is_ingest_artifact(art):
            continue
        n = len(wanted & _tokens_of(art))
        if n == len(wanted):
            return art
        best = max(best, (n, str(art)))
    raise SubmissionError(f"no ingest artifact of workspace {path} holds every sample token of "
                          f"the submission (best: {best[1] or 'none'}, {max(best[0], 0)} of "
                          f"{len(wanted)})")


def audit_submission(submission: Path, ingest: Path) -> dict[str, Any]:
    """Read, map onto the store, score. The result holds the numbers of `--json`.

    The cyclic garbage collector is paused meanwhile: parsing a large submission allocates
    one dict and several lists a box, and every collection it triggers walks all of them
    again (half the parse time on 18k boxes); nothing here makes reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _audit_submission(submission, ingest)
    finally:
        if enabled:
            gc.enable()


def _store_queries(art: Path, class_names: tuple[str, ...]) -> list[pl.LazyFrame]:
    """[frames, `store_boxes_query`] of the ingest artifact `art`."""
    from kdpipe.evaluation.nuscenes_boxes import store_boxes_query

    return [pl.scan_parquet(art / "frames.parquet").select(_FRAME_COLUMNS),
            store_boxes_query(art / "boxes.parquet", art / "frames.parquet", class_names)]


def _audit_submission(submission: Path, ingest: Path) -> dict[str, Any]:
    from kdpipe.evaluation.nuscenes_boxes import store_boxes
    from kdpipe.stages.audit.nuscenes import devkit_rules
    from kdpipe.stages.audit.tp_errors import nuscenes_scores

    t0 = time.perf_counter()
    rules = devkit_rules()
    # an ingest artifact is known before the submission is read: polars reads it on its own
    # threads, without the GIL, while orjson parses (no Python thread, nothing to wait for)
    early = [q.collect(background=True) for q in _store_queries(ingest, rules.class_names)] \
        if _is_ingest_artifact(ingest) else []
    try:
        results = read_results(submission)
        art = resolve_ingest(ingest, list(results))
    except BaseException:
        # let the reads finish: a background query whose handle is cancelled or dropped
        # before it ends panics in polars (SendError, a backtrace on stderr)
        for q in early:
            with contextlib.suppress(Exception):
                q.fetch_blocking()
        raise
    frames_all, table = [q.fetch_blocking() for q in early] if early \
        else pl.collect_all(_store_queries(art, rules.class_names))
    nus = frames_all.filter(pl.col("dataset") == "nuscenes")  # a mixed store: its nuScenes part
    if nus.is_empty():
        raise SubmissionError(f"{art} holds no nuScenes frames (datasets: "
                              f"{', '.join(sorted(map(str, frames_all['dataset'].unique())))})")
    where = f"the nuScenes frames of the ingest {art}"
    frames = submission_frames(results, nus, submission, where)
    poses = frames["t_world_from_ego"].to_numpy().astype(np.float64).reshape(-1, 4, 4)
    dets = submission_boxes(submission, results, poses, rules.class_names,
                            rules.max_boxes_per_sample)
    gts, racks = store_boxes(table, frames["frame_id"].to_list())
    scores = nuscenes_scores(dets, gts, frames.height, racks, rules)
    splits = Counter(frames["split"].to_list())
    return {"submission": str(submission), "ingest": str(art), "n_samples": frames.height,
            "n_store_frames": nus.height, "n_predictions": len(dets),
            "splits": {s: splits[s] for s in sorted(splits, key=lambda s: (s is not None, s))},
            **scores, "seconds": time.perf_counter() - t0}


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def as_json(rep: dict[str, Any]) -> dict[str, Any]:
    """NaN (errors the devkit does not define, e.g. a cone's AOE) as null: strict JSON."""
    out = dict(rep)
    out["class_tp_errors"] = {c: {k: _num(v) for k, v in e.items()}
                              for c, e in rep["class_tp_errors"].items()}
    return out


def _print(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from kdpipe.stages.audit.tp_errors import SHORT_NAMES

    con = Console(soft_wrap=True)
    splits = ", ".join(f"{n} {s or '(no split)'}" for s, n in rep["splits"].items())
    con.print(f"submission {rep['submission']}: {rep['n_predictions']} boxes on "
              f"{rep['n_samples']} samples ({splits}) of {rep['ingest']}", markup=False)
    err = rep["tp_errors"]
    con.print(f"mAP {rep['mean_ap']:.4f}  NDS {rep['nd_score']:.4f}  " + "  ".join(
        f"m{SHORT_NAMES[k]} {v:.4f}" for k, v in err.items()), markup=False)
    t = Table("class", "GT", "AP", *(SHORT_NAMES[k] for k in err))
    for c, ap in rep["class_ap"].items():
        e = rep["class_tp_errors"][c]
        t.add_row(c, str(rep["n_gt"][c]), f"{ap:.3f}",
                  *("-" if math.isnan(e[k]) else f"{e[k]:.3f}" for k in err))
    con.print(t)
    con.print("(DetectionEval's rules: matches within 2 m for the TP errors; '-': not defined "
              "for the class)")


def audit(submission: Path, ingest: Path, json_out: bool) -> None:
    """The command: print the summary and the per-class table, or the JSON."""
    rep = audit_submission(submission, ingest)
    if json_out:
        sys.stdout.write(json.dumps(as_json(rep), indent=1) + "\n")
        return
    _print(rep)
