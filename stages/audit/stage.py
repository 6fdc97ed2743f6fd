"""`audit`: how good are the teacher's pseudo-labels, measured on ground truth it never saw.

Labeled frames of `splits` (default `val`), which `teacher-label` ran through as if unlabeled,
are matched against their held-out boxes (`stages/audit/metrics.py`), and the figures
(`stages/audit/summary.py`) go out three ways: `audit_json` (every number), `audit_html` (one
self-contained page: PR and F1 curves with the pseudo-label thresholds marked, reliability
diagram, tables by distance band and radar points, bird's-eye views of the worst frames) and
`audit_frames` (per frame TP / FP / FN at the pseudo-label thresholds).

Criteria: `iou_bev` / `iou_3d` with per-class IoU thresholds (VoD's 0.5 / 0.25 / 0.25 by
default), or `center_distance`. On nuScenes stores (`criterion = "auto"`) the devkit's full
protocol applies (`stages/audit/nuscenes.py`): its mAP is DetectionEval's.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import polars as pl
from pydantic import Field

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import (
    HtmlArtifact,
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.pseudo_labels import PseudoLabelConfig
from kdpipe.stages.audit.metrics import ap_nuscenes, candidates, greedy_match
from kdpipe.stages.audit.nuscenes import apply_rules, box_sets, devkit_rules, nuscenes_map
from kdpipe.stages.audit.summary import SummarySpec, frame_counts, summarise

_PSEUDO = PseudoLabelConfig()  # the thresholds marked on the curves default to pseudo-label's
VOD_IOU = {"Car": 0.5, "Pedestrian": 0.25, "Cyclist": 0.25}


class AuditConfig(StageConfig):
    splits: list[str] = Field(default_factory=lambda: ["val"])
    classes: list[str] | None = None    # default: nuScenes' 10 / the labels the teacher emits
    criterion: Literal["auto", "iou_bev", "iou_3d", "center_distance"] = "auto"
    iou_thresholds: dict[str, float] = Field(default_factory=lambda: dict(VOD_IOU))
    default_iou: float = Field(0.5, gt=0.0, le=1.0)    # classes not in iou_thresholds
    distance_m: float = Field(2.0, gt=0.0)  # centre distance for F1/bands (nuScenes dist_th_tp)
    nuscenes_rules: bool | None = None      # default: on for nuScenes stores + center_distance
    distance_bands_m: list[float] = Field(default_factory=lambda: [0.0, 20.0, 40.0])
    radar_bins: list[int] = Field(default_factory=lambda: [0, 1, 3, 6])
    radar_sensor: str = "radar"
    sigma: float = Field(_PSEUDO.sigma, ge=0.0, le=1.0)
    class_thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(_PSEUDO.class_thresholds))
    precision_target: float | None = Field(None, gt=0.0, le=1.0)
    calibration_bins: int = Field(10, ge=2)
    n_worst: int = Field(6, ge=0)
    bev_range_m: list[float] | None = None  # x0, y0, x1, y1; default by dataset
    workflow: str | None = None  # named in the report only (the loader sets it)


def audit_frames(frames: pl.DataFrame, det_frames: pl.DataFrame, splits: list[str]
                 ) -> pl.DataFrame:
    """Labeled frames of `splits` that the teacher labeled, in store order."""
    sel = frames.filter(pl.col("split").is_in(splits) & pl.col("labeled")
                        & pl.col("frame_id").is_in(det_frames["frame_id"].implode()))
    if sel.is_empty():
        have = sorted(set(det_frames["split"].to_list()))
        raise ConfigError(f"audit: no labeled frames of split(s) {splits} among the frames "
                          f"teacher-label ran on (its splits: {have}); add them to "
                          f"teacher-label.splits")
    return sel.sort("source", "scene", "frame_index")


def radar_counts(ingest: IngestStore | Path, frames: pl.DataFrame, dets: pl.DataFrame,
                 sensor: str) -> np.ndarray:
    """Radar points inside each detection box (the rule ingest uses for `num_radar_pts`);
    -1 where the store has no such radar sensor for the frame."""
    from kdpipe.datasets.store_dataset import StoreDataset
    from kdpipe.models.batch import BOX_COLUMNS
    from kdpipe.schemas.boxes import points_in_boxes

    store = ingest if isinstance(ingest, IngestStore) else IngestStore.from_artifact(ingest)
    out = np.full(dets.height, -1, dtype=np.int64)
    rows = dets.with_row_index("_i").join(frames.select("frame_id", "source", "scene"),
                                          on="frame_id")
    groups = rows.select("source", "scene").unique()
    have = groups.filter(pl.Series([(store.group(s, g) / sensor).is_dir()
                                    for s, g in groups.iter_rows()], dtype=pl.Boolean))
    rows = rows.join(have, on=["source", "scene"])
    if rows.is_empty():
        return out
    by_frame = {k[0]: g for k, g in rows.group_by("frame_id")}
    ds = StoreDataset(store, sensors=(sensor,), with_boxes=False,
                      where=pl.col("frame_id").is_in(list(by_frame)))
    for i in range(len(ds)):  # one contiguous slice per frame (x, y, z are the first fields)
        item = ds[i]
        g = by_frame[item["frame_id"]]
        out[g["_i"].to_numpy()] = points_in_boxes(np.asarray(item[sensor])[:, :3],
                                                  g.select(BOX_COLUMNS).to_numpy())
    return out


def _protocol(cfg: AuditConfig, frames: pl.DataFrame, dets: pl.DataFrame) -> dict[str, Any]:
    nus = set(frames["dataset"].unique().to_list()) == {"nuscenes"}
    crit = cfg.criterion if cfg.criterion != "auto" else ("center_distance" if nus else "iou_3d")
    rules = cfg.nuscenes_rules if cfg.nuscenes_rules is not None else \
        (nus and crit == "center_distance")
    if rules and crit != "center_distance":
        raise ConfigError("audit: nuscenes_rules needs criterion = \"center_distance\"")
    classes = cfg.classes or (list(devkit_rules().class_names) if rules else
                              sorted(dets["label"].unique().to_list()))
    if not classes:
        raise ConfigError("audit: no classes (the teacher emitted no detection; set "
                          "audit.classes)")
    bev = cfg.bev_range_m or ([-51.2, -51.2, 51.2, 51.2] if nus else [0.0, -25.6, 51.2, 25.6])
    return {"criterion": crit, "nuscenes_rules": rules, "classes": classes, "bev_range_m": bev}


def compute(cfg: AuditConfig, frames: pl.DataFrame, dets: pl.DataFrame, boxes: pl.DataFrame,
            det_radar_fn: Any = None) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    """The audit's figures, its per-frame table and the kept detections (with `tp`)."""
    from kdpipe.evaluation.nuscenes_eval import DEFAULT_NAMES

    proto = _protocol(cfg, frames, dets)
    classes = tuple(proto["classes"])
    report: dict[str, Any] = {"protocol": proto}
    if proto["nuscenes_rules"]:
        rules = devkit_rules()
        dets = dets.with_columns(label=pl.col("label").replace(DEFAULT_NAMES))
        report["nuscenes"] = nuscenes_map(dets, boxes, frames, rules)
        dets, boxes = apply_rules(dets, boxes, frames, rules)
        xy, ap = ("x_world_m", "y_world_m"), partial(ap_nuscenes, min_recall=rules.min_recall,
                                                     min_precision=rules.min_precision)
    else:
        xy, ap = ("x_ego_m", "y_ego_m"), None
    dets = dets.filter(pl.col("label").is_in(classes))
    boxes = boxes.filter(pl.col("label").is_in(classes))
    frame_ids = frames["frame_id"].to_list()
    det, gt = box_sets(dets, boxes, frame_ids, classes, xy)
    crit = proto["criterion"]
    per_class = np.array([cfg.distance_m if crit == "center_distance"
                          else cfg.iou_thresholds.get(c, cfg.default_iou) for c in classes])
    cand = candidates(det, gt, crit, cfg.distance_m)
    matched = greedy_match(det, cand, len(gt), per_class[det.cls], crit)
    proto["match_threshold"] = dict(zip(classes, per_class.tolist(), strict=True))
    det_radar = det_radar_fn(dets) if det_radar_fn is not None else np.full(len(det), -1)
    spec = SummarySpec(classes, cfg.sigma, dict(cfg.class_thresholds), cfg.precision_target,
                       tuple(cfg.distance_bands_m), tuple(cfg.radar_bins), cfg.calibration_bins,
                       **({"ap": ap} if ap else {}))
    report.update(summarise(
        det, gt, matched, det_range_m=np.hypot(det.boxes[:, 0], det.boxes[:, 1]),
        gt_range_m=np.hypot(gt.boxes[:, 0], gt.boxes[:, 1]), det_radar=det_radar,
        gt_radar=boxes["num_radar_pts"].fill_null(-1).to_numpy(), spec=spec))
    if proto["nuscenes_rules"]:
        report["mean_ap"] = report["nuscenes"]["mean_ap"]  # the devkit's number is the headline
    ops = [spec.operating(c) for c in classes]
    counts = frame_counts(det, gt, matched, len(frame_ids), ops)
    table = frames.select("frame_id", "split", "scene").with_columns(
        **{k: pl.Series(v.astype(np.int32)) for k, v in counts.items()})
    kept = dets.with_columns(tp=pl.Series(matched >= 0)).filter(
        pl.col("score") >= pl.col("label").replace_strict(dict(zip(classes, ops, strict=True)),
                                                          return_dtype=pl.Float64))
    return report, table, kept


def audited_from_lineage(detections: Path) -> dict[str, Any]:
    """What an audit of `detections` audits, from the lineage records beside its artifact:
    the detections' stage/key, the checkpoint they came from (stage/key) and its model name.
    What the records do not say (a submission file, a remote copy without the checkpoint's
    record) is None."""
    from kdpipe.pipeline.store import LINEAGE

    out: dict[str, Any] = {"detections": None, "checkpoint": None, "model": None}
    rec_path = Path(detections).parent / LINEAGE
    if not rec_path.is_file():
        return out
    rec = json.loads(rec_path.read_text())
    out["detections"] = {"stage": rec["stage"], "key": rec["key"]}
    inputs = rec.get("inputs", {})
    port = next((p for p in ("teacher", "checkpoint", "student") if p in inputs), None)
    if port is None:
        return out
    ck = inputs[port]
    out["checkpoint"] = {"stage": ck["stage"], "key": ck["key"]}
    # stores (and remote copies under inputs/) keep artifacts as <root>/<stage>/<key>/
    ck_rec = rec_path.parent.parent.parent / ck["stage"] / ck["key"] / LINEAGE
    if ck_rec.is_file():
        cfg = json.loads(ck_rec.read_text()).get("config", {})
        model = cfg.get("model") or cfg.get("student")
        out["model"] = model if isinstance(model, str) else None
    return out


class OutputOptions(TypedDict, total=False):
    """metadata: Parquet key-value metadata of the frames table (a stage's lineage facts);
    audited: what is audited (`audited_from_lineage` + `audit` stage/key), named in the report;
    the config's `workflow` is added to it."""

    metadata: dict[str, str] | None
    audited: dict[str, Any] | None


def write_outputs(cfg: AuditConfig, ingest: IngestStore | Path, frames: pl.DataFrame,
                  dets: pl.DataFrame, boxes: pl.DataFrame, outputs: dict[str, Path],
                  **options: Unpack[OutputOptions]) -> dict[str, Any]:
    """Audit `dets` against `boxes` on `frames` and write the JSON, Parquet and HTML outputs
    (paths under `outputs` by port name); returns the report. `ingest`: the store (a stage's
    ports) or an `ingest` artifact directory (`kdpipe audit --submission`)."""
    from kdpipe.stages.audit.report import WorstFrames, write_html

    ingest = ingest if isinstance(ingest, IngestStore) else IngestStore.from_artifact(ingest)
    report, table, kept = compute(cfg, frames, dets, boxes, det_radar_fn=lambda d: radar_counts(
        ingest, frames, d, cfg.radar_sensor))
    worst = table.with_columns(errors=pl.col("fp") + pl.col("fn")).filter(pl.col("errors") > 0) \
        .sort("errors", descending=True, maintain_order=True).head(cfg.n_worst)
    audited = {"detections": None, "checkpoint": None, "model": None,
               **(options.get("audited") or {}), "workflow": cfg.workflow}
    report.update(splits=cfg.splits, n_frames=frames.height, n_detections=dets.height,
                  worst_frames=worst.drop("errors").to_dicts(), config=cfg.model_dump(mode="json"),
                  audited=audited)
    outputs["audit_json"].write_text(json.dumps(report, indent=1, sort_keys=True))
    table.write_parquet(outputs["audit_frames"], metadata=options.get("metadata"))
    gt = boxes.filter(pl.col("label").is_in(report["protocol"]["classes"]))
    write_html(outputs["audit_html"], report, WorstFrames(
        ingest, frames.filter(pl.col("frame_id").is_in(worst["frame_id"].implode())), gt, kept,
        cfg.radar_sensor))
    return report


def run(ctx: StageContext[AuditConfig]) -> None:
    cfg = ctx.config
    store = IngestStore.from_inputs(ctx.inputs, ctx.stage)
    frames = audit_frames(store.read_frames(),
                          pl.read_parquet(ctx.inputs["detection_frames"]), cfg.splits)
    ids = frames["frame_id"].implode()
    dets = pl.read_parquet(ctx.inputs["detections"]).filter(pl.col("frame_id").is_in(ids))
    boxes = store.read_boxes().filter(pl.col("frame_id").is_in(ids))
    audited = {**audited_from_lineage(ctx.inputs["detections"]),
               "audit": {"stage": ctx.stage, "key": ctx.key}}
    write_outputs(cfg, store, frames, dets, boxes, dict(ctx.outputs),
                  metadata=ctx.file_metadata(), audited=audited)


STAGE = Stage(
    name="audit", config=AuditConfig, run=run, version=1,
    inputs=(Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
            Port("boxes", ParquetArtifact, "boxes/1"),
            Port("detections", ParquetArtifact, "detections/1"),
            Port("detection_frames", ParquetArtifact, "detection_frames/1")),
    outputs=(Port("audit_json", JsonArtifact), Port("audit_html", HtmlArtifact),
             Port("audit_frames", ParquetArtifact)),
    description="teacher detections vs held-out ground truth -> PR/F1/AP, calibration, "
                "thresholds, worst frames (JSON + HTML + per-frame Parquet)",
)
