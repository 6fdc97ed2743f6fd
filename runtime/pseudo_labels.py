"""The pseudo-label policy: which stored detections become training targets (METHODS.md C).

Shared by the `pseudo-label` stage (which applies it) and `audit` (which marks its thresholds on
the precision/recall curves), so neither stage imports the other.
"""
from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from kdpipe.pipeline.stage import StageConfig
from kdpipe.schemas.tables import PSEUDO_LABELS


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
