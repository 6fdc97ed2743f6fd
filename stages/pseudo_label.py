"""`pseudo-label`: filter the teacher's stored detections into training targets.

Policies (METHODS.md C):
- SCKD: one class-agnostic score threshold sigma = 0.1, hard labels, no ignore band.
- per-class thresholds: `class_thresholds = { Car = 0.3, ... }` override sigma per class.
- ST3D-style ignore band: with `ignore_threshold` (or `class_ignore_thresholds`) below the
  positive threshold, boxes scoring in [ignore, positive) are kept as `state = "ignore"` (the
  student gets no loss around them) and boxes below are dropped.
This stage only reads Parquet, so a threshold change re-runs it alone. The policy itself
(`runtime/pseudo_labels.py`) is shared with `audit`, which marks its thresholds on curves.
"""
from __future__ import annotations

import polars as pl

from kdpipe.pipeline.stage import ParquetArtifact, Port, Stage, StageContext
from kdpipe.runtime.pseudo_labels import PseudoLabelConfig, filter_detections
from kdpipe.schemas.tables import check_table

__all__ = ["STAGE", "PseudoLabelConfig", "filter_detections"]


def run(ctx: StageContext[PseudoLabelConfig]) -> None:
    dets = pl.read_parquet(ctx.inputs["detections"])
    check_table(dets, "detections/1")
    labels = filter_detections(dets, ctx.config)
    check_table(labels, "pseudo_labels/1")
    labels.write_parquet(ctx.outputs["pseudo_labels"], metadata=ctx.file_metadata())
    # Every labeled frame stays listed, zero boxes included: "no object here" is a target too.
    counts = labels.filter(pl.col("state") == "positive").group_by("frame_id").len()
    frames = pl.read_parquet(ctx.inputs["detection_frames"]).drop("n_detections") \
        .join(counts, on="frame_id", how="left") \
        .with_columns(n_detections=pl.col("len").fill_null(0).cast(pl.Int32)).drop("len")
    frames.write_parquet(ctx.outputs["pseudo_label_frames"], metadata=ctx.file_metadata())


STAGE = Stage(
    name="pseudo-label", config=PseudoLabelConfig, run=run, version=1,
    inputs=(Port("detections", ParquetArtifact, "detections/1"),
            Port("detection_frames", ParquetArtifact, "detection_frames/1")),
    outputs=(Port("pseudo_labels", ParquetArtifact, "pseudo_labels/1"),
             Port("pseudo_label_frames", ParquetArtifact, "detection_frames/1")),
    description="stored detections -> positive / ignore pseudo-labels (thresholds only)",
)
