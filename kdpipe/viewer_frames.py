"""Which frames `kdpipe export-rerun` exports, read from a workspace's committed artifacts.

- an audit artifact (`audit`, an instance of it, `STAGE/KEY` or a path in it): its worst frames
  (`worst_frames` of the audit JSON, most FP + FN first), with the detections the audit kept
  (score at or above the class threshold it audited) marked TP / FP by the audit's own
  matching, re-run on those frames only (`stages/audit/stage.compute`: matching is per frame,
  so the marks are the audit's);
- a curate artifact (`curate` / `curate-frames` or an instance): its selection in rank order,
  with the teacher detections curate read (score >= `min_score`), none for `curate-frames`;
- frame ids (`vod/00549`), found in the newest ingest artifact as `kdpipe show` does, with the
  boxes of `--detections` (a stage name or Parquet path) when given.

Every frame's points and ground truth come from the store the artifact itself read (its
lineage `inputs`, matched by digest), never from a newer ingest.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.errors import KdpipeError
from kdpipe.schemas.tables import BOXES
from kdpipe.viewer_export import ExportFrame, write_recording


def _ref_file(ws: Any, ref: dict[str, Any], want: Callable[[str, dict[str, Any]], bool]
              ) -> Path | None:
    """The first output file `want(port, out)` accepts of the artifact `ref` ({stage, key,
    digest}) points to, else of the producers of its `frames` input, walking up (a
    radar-filter's frames -> the ingest that holds the boxes); None if none has one."""
    stage, key = ref["stage"], ws.canonical_key(ref["stage"], ref["key"])
    rec = ws.read_lineage(stage, key)
    for port, out in rec["outputs"].items():
        if want(port, out):
            return Path(ws.artifact_dir(stage, key)) / out["file"]
    up = rec.get("inputs", {}).get("frames")
    return _ref_file(ws, up, want) if up else None


def _input(ws: Any, rec: dict[str, Any], port: str) -> Path | None:
    """The file an artifact read on its input `port` (the producer's output of that digest)."""
    ref = rec.get("inputs", {}).get(port)
    if ref is None:
        return None
    return _ref_file(ws, ref, lambda _, out: out["digest"] == ref["digest"])


def store_of(ws: Any, rec: dict[str, Any]) -> IngestStore:
    """The store an artifact read: its points / frames / boxes inputs, or, for inputs it does
    not have (curate reads no points), the matching outputs of its frames' producers."""
    frames_ref = rec["inputs"]["frames"]
    points = _input(ws, rec, "points") or _ref_file(
        ws, frames_ref, lambda _, out: str(out["file"]).endswith(".zarr"))
    boxes = _input(ws, rec, "boxes") or _ref_file(ws, frames_ref, lambda p, _: p == "boxes")
    frames = _input(ws, rec, "frames")
    if points is None or frames is None:
        raise KdpipeError(f"{rec['stage']}/{rec['key']}: cannot find the points store it read")
    return IngestStore(points, frames, boxes)


def _artifact(ws: Any, target: str, port: str, what: str) -> dict[str, Any]:
    """The lineage record of `target` (stage, instance, STAGE/KEY or a path in it), which
    must have output `port`."""
    from kdpipe.pipeline import ancestry

    stage, key = ancestry.resolve(ws, target)
    rec = ws.read_lineage(stage, key)
    if port not in rec["outputs"]:
        raise KdpipeError(f"{target}: {stage}/{key} is not {what} (it has no '{port}' output)")
    return rec


def _frames_of(store: IngestStore, ids: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """FRAMES rows of `ids` (in that order) and their ground truth."""
    frames = store.read_frames().filter(pl.col("frame_id").is_in(list(ids)))
    order = {f: i for i, f in enumerate(ids)}
    frames = frames.sort(pl.col("frame_id").replace_strict(order, return_dtype=pl.Int64))
    if store.boxes is None or not store.boxes.is_file():  # a store without labels at all
        return frames, pl.DataFrame(schema=BOXES)
    return frames, store.read_boxes().filter(pl.col("frame_id").is_in(list(ids)))


def _gt(gt: pl.DataFrame, fid: str) -> pl.DataFrame:
    return gt.filter(pl.col("frame_id") == fid)


def audit_frames(ws: Any, target: str) -> list[ExportFrame]:
    """The worst frames of an audit artifact, with its kept detections marked TP / FP."""
    from kdpipe.stages.audit.stage import AuditConfig, compute

    rec = _artifact(ws, target, "audit_json", "an audit")
    art = Path(ws.artifact_dir(rec["stage"], rec["key"]))
    report = json.loads((art / rec["outputs"]["audit_json"]["file"]).read_text())
    worst = report["worst_frames"]
    store = store_of(ws, rec)
    ids = [w["frame_id"] for w in worst]
    frames, gt = _frames_of(store, ids)
    det_path = _input(ws, rec, "detections")
    dets = pl.read_parquet(det_path).filter(pl.col("frame_id").is_in(ids)) if det_path \
        else pl.DataFrame()
    kept = pl.DataFrame()
    if ids:  # the audit's classes, not those of these frames' detections alone
        cfg = AuditConfig(**{**report["config"], "classes": report["protocol"]["classes"]})
        _, _, kept = compute(cfg, frames, dets, gt)
    rows = {r["frame_id"]: r for r in frames.to_dicts()}
    where = f"audit {rec['stage']}/{rec['key']}"
    return [ExportFrame(store, rows[w["frame_id"]], _gt(gt, w["frame_id"]),
                        kept.filter(pl.col("frame_id") == w["frame_id"]),
                        f"{where} worst {i + 1} of {len(worst)}",
                        {f"audit/{k}": float(w[k]) for k in ("tp", "fp", "fn", "n_gt")})
            for i, w in enumerate(worst)]


def _scored(table: pl.DataFrame | None, fid: str, min_score: float) -> pl.DataFrame | None:
    if table is None:
        return None
    rows = table.filter((pl.col("frame_id") == fid) & (pl.col("score") >= min_score))
    return rows.filter(pl.col("state") == "positive") if "state" in rows.columns else rows


def selection_frames(ws: Any, target: str, min_score: float) -> list[ExportFrame]:
    """A curate artifact's selection in rank order, with the detections curate read."""
    rec = _artifact(ws, target, "selection", "a curate selection")
    art = Path(ws.artifact_dir(rec["stage"], rec["key"]))
    sel = pl.read_parquet(art / rec["outputs"]["selection"]["file"]).sort("rank")
    store = store_of(ws, rec)
    frames, gt = _frames_of(store, sel["frame_id"].to_list())
    det_path = _input(ws, rec, "detections")
    dets = pl.read_parquet(det_path) if det_path else None
    rows = {r["frame_id"]: r for r in frames.to_dicts()}
    where = f"curate {rec['stage']}/{rec['key']}"
    return [ExportFrame(store, rows[s["frame_id"]], _gt(gt, s["frame_id"]),
                        _scored(dets, s["frame_id"], min_score),
                        f"{where} rank {s['rank']} of {sel.height} ({s['strategy']})",
                        {"curate/rank": float(s["rank"]), "curate/score": float(s["score"])},
                        note=s["reason"])
            for s in sel.iter_rows(named=True)]


def named_frames(ws: Any, ids: Sequence[str], detections: str | None, min_score: float
                 ) -> list[ExportFrame]:
    """Frames by id from the newest ingest holding them (as `kdpipe show` finds them)."""
    from kdpipe.show import detection_table, find_frame

    table = detection_table(ws, detections)[1] if detections else None
    out = []
    for query in ids:
        art, row = find_frame(ws, query)
        store = IngestStore.from_artifact(art)
        gt = store.read_boxes().filter(pl.col("frame_id") == row["frame_id"])
        out.append(ExportFrame(store, row, gt, _scored(table, row["frame_id"], min_score),
                               f"frame {query} of ingest {art.name}"))
    return out


@dataclass(frozen=True)
class RerunExport:
    """`kdpipe export-rerun`'s options (see its --help)."""

    out: Path
    workspace: str = "workspace"
    audits: list[str] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    detections: str | None = None
    min_score: float = 0.1
    radar_sensor: str = "radar"
    images: bool = True


def export_rerun(cmd: RerunExport) -> dict[str, Any]:
    """Collect the frames of every source (audits, selections, frame ids, in that order) and
    write them as one recording; the summary of `write_recording` plus the sources."""
    from kdpipe.pipeline.store import Workspace

    if not (cmd.audits or cmd.selections or cmd.frames):
        raise KdpipeError("export-rerun: nothing to export; give --audit, --selection or --frame")
    if cmd.out.suffix != ".rrd":
        raise KdpipeError(f"export-rerun: --out {cmd.out} must end in .rrd")
    ws = Workspace(cmd.workspace, create=False).require()
    frames: list[ExportFrame] = []
    for target in cmd.audits:
        frames += audit_frames(ws, target)
    for target in cmd.selections:
        frames += selection_frames(ws, target, cmd.min_score)
    frames += named_frames(ws, cmd.frames, cmd.detections, cmd.min_score)
    if not frames:
        raise KdpipeError("export-rerun: the sources hold no frame (an audit without worst "
                          "frames, an empty selection)")
    summary = write_recording(frames, cmd.out, radar_sensor=cmd.radar_sensor, images=cmd.images)
    return {**summary, "origins": [f.origin for f in frames]}
