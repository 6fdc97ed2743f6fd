"""`evaluate`: score a checkpoint on a split with the official tools.

- View-of-Delft (`benchmark = "vod"`): predictions exported as KITTI label files (real projected
  2D boxes: the evaluator drops boxes under 40 px high; an empty file for frames without
  detections) and scored by `vod-tudelft`: AP11 at IoU 0.5/0.25/0.25 over the entire annotated
  area and the driving corridor, plus KITTI AP40 from the same matching.
- nuScenes (`benchmark = "nuscenes"`): a submission JSON with every sample token of the split,
  scored by nuscenes-devkit `DetectionEval` (mAP, NDS, TP errors).
`auto` picks by the store's dataset. The model runs through the same inference tasks as
`teacher-label`. To evaluate a second model in one workflow, add an instance:
`[evaluate-student] uses = "evaluate"` with `ports = { checkpoint = "student", metrics = ... }`
(the port was called `teacher` before; binding that name fails with a message naming the new one).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import (
    CheckpointArtifact,
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.config import AmpMode


class EvaluateConfig(StageConfig):
    split: str = "val"
    benchmark: Literal["auto", "vod", "nuscenes"] = "auto"
    radar_sensor: str = "radar"
    batch_size: int = Field(8, ge=1)
    top_k: int = Field(100, ge=1)
    score_floor: float = Field(0.01, ge=0.0, lt=1.0)
    device: str = "auto"
    amp: AmpMode = "fp32"  # forward precision; "bf16": autocast (decode stays fp32)
    # nuScenes: where the devkit finds the tables; default: the ingest root and version
    nuscenes_dataroot: str | None = None
    nuscenes_version: str | None = None
    nuscenes_eval_set: str | None = None   # default: the split name


def score(dets: pl.DataFrame, frames: pl.DataFrame, store: IngestStore, cfg: EvaluateConfig,
          workdir: Path) -> dict[str, Any]:
    """Official metrics for `dets` on `frames` (all frames of the split, detections or not)."""
    bench = cfg.benchmark
    if bench == "auto":
        kinds = set(frames["dataset"].unique().to_list())
        bench = "nuscenes" if kinds == {"nuscenes"} else "vod"
    frame_ids = frames["frame_id"].to_list()
    if bench == "vod":
        from kdpipe.evaluation.vod_eval import evaluate_tables

        boxes, calib = store.read_boxes(), store.read_calibration()
        return {"benchmark": "vod", **evaluate_tables(dets, boxes, frames, calib, frame_ids,
                                                      workdir / "vod_eval")}
    from kdpipe.evaluation.nuscenes_eval import score_nuscenes, write_submission

    icfg = store.ingest_config()
    roots = icfg.get("roots") or []
    dataroot = cfg.nuscenes_dataroot or (roots[0] if len(roots) == 1 else None)
    if dataroot is None:
        raise ConfigError("evaluate: set evaluate.nuscenes_dataroot (the ingest had "
                          f"{len(roots)} roots)")
    version = cfg.nuscenes_version or icfg.get("version", "v1.0-mini")
    # the devkit names mini splits mini_train / mini_val; custom splits (splits.json) go as given
    eval_set = cfg.nuscenes_eval_set or (f"mini_{cfg.split}" if version.endswith("mini")
                                         and cfg.split in ("train", "val") else cfg.split)
    sub = workdir / "nuscenes_submission.json"
    write_submission(dets, frames, sub, frame_ids)
    res = score_nuscenes(dataroot, version, eval_set, sub, workdir / "nuscenes_eval")
    res.pop("eval_time", None)  # a wall time: metrics stay byte-identical between runs
    return {"benchmark": "nuscenes", "eval_set": eval_set, **res}


def metrics_rows(metrics: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """Flatten nested metrics into (metric, value) rows for the Parquet table."""
    rows: list[dict[str, Any]] = []
    for k, v in sorted(metrics.items()):
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += metrics_rows(v, name + ".")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            rows.append({"metric": name, "value": float(v)})
    return rows


def run(ctx: StageContext[EvaluateConfig]) -> None:
    from kdpipe.runtime.inference import cleanup_parts, infer  # torch: not needed to plan

    cfg = ctx.config
    store = IngestStore.from_inputs(ctx.inputs, ctx.stage)
    frames = store.select_frames([cfg.split], labeled_only=True)
    dets, _ = infer(ctx, store, ctx.inputs["checkpoint"], frames, cfg)
    cleanup_parts(ctx)
    metrics = score(dets, frames, store, cfg, ctx.workdir / "_scratch")
    metrics.update(split=cfg.split, frames=frames.height, detections=dets.height)
    ctx.outputs["metrics"].write_text(json.dumps(metrics, indent=1, sort_keys=True))
    pl.DataFrame(metrics_rows(metrics), schema={"metric": pl.String, "value": pl.Float64}) \
        .write_parquet(ctx.outputs["metrics_table"], metadata=ctx.file_metadata())
    dets.write_parquet(ctx.outputs["eval_detections"], metadata=ctx.file_metadata())
    import shutil

    shutil.rmtree(ctx.workdir / "_scratch", ignore_errors=True)


STAGE = Stage(
    name="evaluate", config=EvaluateConfig, run=run, version=1,
    # `checkpoint` reads the `teacher` artifact unless the workflow binds it to another model
    inputs=(Port("checkpoint", CheckpointArtifact, "checkpoint/1", artifact="teacher"),
            Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
            Port("boxes", ParquetArtifact, "boxes/1"),
            Port("calibration", ParquetArtifact, "calibration/1")),
    outputs=(Port("metrics", JsonArtifact), Port("metrics_table", ParquetArtifact),
             Port("eval_detections", ParquetArtifact, "detections/1")),
    renamed_ports={"teacher": "checkpoint"},
    description="checkpoint + split -> official VoD (AP11/AP40) or nuScenes (mAP/NDS) metrics",
)
