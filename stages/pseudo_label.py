"""`pseudo-label`: filter the teacher's stored detections into training targets.

Policies (METHODS.md C):
- SCKD: one class-agnostic score threshold sigma = 0.1, hard labels, no ignore band.
- per-class thresholds: `class_thresholds = { Car = 0.3, ... }` override sigma per class.
- ST3D-style ignore band: with `ignore_threshold` (or `class_ignore_thresholds`) below the
  positive threshold, boxes scoring in [ignore, positive) are kept as `state = "ignore"` (the
  student gets no loss around them) and boxes below are dropped.
This stage only reads Parquet, so a threshold change re-runs it alone.
"""
from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from kdpipe.pipeline.stage import ParquetArtifact, Port, Stage, StageConfig, StageContext
from kdpipe.schemas.tables import PSEUDO_LABELS, check_table


class PseudoLabelConfig(StageConfig):
    sigma: float = Field(0.1, ge=0.0, le=1.0)          # SCKD's retention threshold
    class_thresholds: dict[str, float] = Field(default_factory=dict)
    ignore_threshold: float | None = Field(None, ge=0.0, le=1.0)
    class_ignore_thresholds: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _band_below_positive(self) -> PseudoLabelConfig:
        for cls, lo in {**({"*": self.ignore_threshold} if self.ignore_threshold is not None
                           else {}), **self.class_ignore_thresholds}.items():
            hi = self.class_thresholds.get(cls, self.sigma)
            if lo > hi:
                raise ValueError(f"ignore threshold {lo} for {cls} is above its positive "
                                 f"threshold {hi}")
        return self


def _threshold(mapping: dict[str, float], default: float | None) -> pl.Expr:
    expr = pl.lit(default, dtype=pl.Float64)
    for cls, t in sorted(mapping.items()):
        expr = pl.when(pl.col("label") == cls).then(pl.lit(t)).otherwise(expr)
    return expr


def filter_detections(dets: pl.DataFrame, cfg: PseudoLabelConfig) -> pl.DataFrame:
    pos = _threshold(cfg.class_thresholds, cfg.sigma)
    neg = _threshold(cfg.class_ignore_thresholds, cfg.ignore_threshold).fill_null(pos)
    out = dets.with_columns(
        state=pl.when(pl.col("score") >= pos).then(pl.lit("positive"))
        .when(pl.col("score") >= neg).then(pl.lit("ignore")).otherwise(None))
    return out.filter(pl.col("state").is_not_null()).select(list(PSEUDO_LABELS))


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
