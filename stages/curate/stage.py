"""`curate`: pick the N unlabeled frames most worth labeling (strategies: `strategies.py`).

Candidates are the frames of `splits` that pass every `where` filter. Filters are SQL
expressions over the frame table (`n_radar > 150`, `scene IN ('a', 'b')`,
`split = 'unlabeled' AND n_lidar > 1000`), parsed by polars' `pl.sql_expr` into a polars
expression: no Python is evaluated, and a bad one is one ConfigError line.

Ports have no "optional" flag (every input must have a producer when the plan is built), so the
stage comes twice, sharing this `run`:
- `curate` reads the teacher's `detections` (+ `detection_frames`, + the labeled `boxes` for class
  frequencies): every strategy;
- `curate-frames` reads the frame table only: `radar-density` and `diversity` (no teacher needed).
Output: `selection` (schema selection/1, rank 1 first, raw file paths included) and
`selection_summary` (JSON: how many candidates, how many picked, per scene).
"""
from __future__ import annotations

import json
from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import (
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
)
from kdpipe.schemas.tables import SELECTION, check_table
from kdpipe.stages.curate import strategies as cs

Strategy = Literal["uncertainty", "rare-class", "radar-density", "diversity", "mix"]


def parse_where(text: str) -> pl.Expr:
    """A filter string -> polars expression (SQL syntax; never Python `eval`)."""
    try:
        return pl.sql_expr(text)
    except Exception as e:  # polars raises SQLSyntaxError, SQLInterfaceError, ...
        raise ConfigError(f"curate.where {text!r}: {_first_line(e)}") from None


def _first_line(e: Exception, limit: int = 160) -> str:
    """The message's first line, cut short: polars appends parser debug dumps to some."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


class CurateConfig(StageConfig):
    strategy: Strategy = "mix"
    budget: int = Field(100, ge=1)                # frames to select
    seed: int = 0                                 # tie-breaks and the diversity order
    where: list[str] = Field(default_factory=list)   # SQL filters over the frame table, ANDed
    splits: list[str] = Field(default_factory=lambda: ["unlabeled"])  # [] = every split
    sigma: float = Field(0.1, ge=0.0, le=1.0)     # uncertainty: the pseudo-label threshold
    band: float = Field(0.05, gt=0.0, le=1.0)     # uncertainty: half-width around sigma
    rare_min_score: float = Field(0.1, ge=0.0, le=1.0)   # rare-class: boxes counted
    labeled_splits: list[str] = Field(default_factory=lambda: ["train"])  # class frequencies
    weights: dict[str, float] = Field(default_factory=lambda: {
        "uncertainty": 1.0, "rare-class": 1.0, "diversity": 0.5})   # strategy = "mix"

    @field_validator("where")
    @classmethod
    def _parses(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                pl.sql_expr(text)
            except Exception as e:
                raise ValueError(f"{text!r}: {_first_line(e)}") from None
        return v

    @model_validator(mode="after")
    def _weights(self) -> CurateConfig:
        unknown = sorted(set(self.weights) - set(cs.STRATEGIES))
        if unknown:
            raise ValueError(f"weights: unknown strategy {unknown} (have {list(cs.STRATEGIES)})")
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError("weights must be >= 0 with at least one > 0")
        return self

    def used(self) -> set[str]:
        """The strategies that contribute to the score."""
        if self.strategy != "mix":
            return {self.strategy}
        return {k for k, w in self.weights.items() if w > 0}


class CurateFramesConfig(CurateConfig):
    strategy: Strategy = "diversity"
    weights: dict[str, float] = Field(default_factory=lambda: {
        "radar-density": 1.0, "diversity": 1.0})

    @model_validator(mode="after")
    def _no_teacher(self) -> CurateFramesConfig:
        need = sorted(self.used() & cs.NEEDS_DETECTIONS)
        if need:
            raise ValueError(f"{', '.join(need)} needs teacher detections: use the `curate` "
                             f"stage (after teacher-label), not `curate-frames`")
        return self


def candidates(frames: pl.DataFrame, cfg: CurateConfig) -> pl.DataFrame:
    """Frames of `cfg.splits` passing every `where` filter."""
    out = frames.filter(pl.col("split").is_in(cfg.splits)) if cfg.splits else frames
    for text in cfg.where:
        try:
            out = out.filter(parse_where(text))
        except pl.exceptions.InvalidOperationError:
            raise ConfigError(f"curate.where {text!r}: not a condition (it must be true or "
                              f"false for each frame)") from None
        except pl.exceptions.ColumnNotFoundError:
            raise ConfigError(f"curate.where {text!r}: unknown column (the frame table has "
                              f"{', '.join(frames.columns)})") from None
        except pl.exceptions.PolarsError as e:
            raise ConfigError(f"curate.where {text!r}: {_first_line(e)}") from None
    return out


def class_counts(boxes: pl.DataFrame, frames: pl.DataFrame, splits: list[str]) -> dict[str, int]:
    """Ground-truth boxes per label on the labeled frames of `splits`."""
    labeled = frames.filter(pl.col("labeled") & pl.col("split").is_in(splits))
    rows = boxes.join(labeled.select("frame_id"), on="frame_id", how="semi") \
        .group_by("label").len().iter_rows()
    return {str(k): int(n) for k, n in rows if k is not None}


def score_frames(cands: pl.DataFrame, cfg: CurateConfig, dets: pl.DataFrame | None,
                 counts: dict[str, int]) -> pl.DataFrame:
    """(frame_id, score, reason) for every candidate under `cfg.strategy`."""
    parts: dict[str, pl.DataFrame] = {}
    for name in sorted(cfg.used()):
        if name in cs.NEEDS_DETECTIONS and dets is None:
            raise ConfigError(f"curate: strategy {name} needs teacher detections")
        if name == "uncertainty":
            parts[name] = cs.uncertainty(cands, dets, cfg.sigma, cfg.band)  # type: ignore[arg-type]
        elif name == "rare-class":
            parts[name] = cs.rare_class(cands, dets, counts, cfg.rare_min_score)  # type: ignore[arg-type]
        elif name == "radar-density":
            parts[name] = cs.radar_density(cands)
        else:
            parts[name] = cs.diversity(cands, cfg.seed)
    if cfg.strategy != "mix":
        return parts[cfg.strategy]
    return cs.mix(parts, cfg.weights)


def make_selection(frames: pl.DataFrame, cfg: CurateConfig, dets: pl.DataFrame | None = None,
                   counts: dict[str, int] | None = None
                   ) -> tuple[pl.DataFrame, dict[str, object]]:
    """The selection table and its summary (the whole stage minus file I/O)."""
    cands = candidates(frames, cfg)
    scored = score_frames(cands, cfg, dets, counts or {}) if cands.height else \
        pl.DataFrame(schema=cs.SCORED)
    picked = cs.pick(scored, cfg.budget, cfg.seed)
    sel = picked.join(frames, on="frame_id", how="left").with_columns(
        strategy=pl.lit(cfg.strategy)).select(list(SELECTION)).sort("rank")
    summary: dict[str, object] = {
        "strategy": cfg.strategy, "budget": cfg.budget, "seed": cfg.seed, "where": cfg.where,
        "splits": cfg.splits, "frames_in_splits": candidates(frames, cfg.model_copy(
            update={"where": []})).height,
        "candidates": cands.height, "selected": sel.height,
        "per_scene": dict(sel.group_by("scene").len().sort("scene").iter_rows()),
    }
    if not cands.height:
        summary["note"] = "no frame passed the filters: the selection is empty"
    elif sel.height < cfg.budget:
        summary["note"] = (f"only {cands.height} frame(s) passed the filters; selected all of "
                           f"them, {cfg.budget - sel.height} short of the budget")
    return sel, summary


def _detections(ctx: StageContext[CurateConfig], cands: pl.DataFrame) -> pl.DataFrame:
    dets = pl.read_parquet(ctx.inputs["detections"])
    check_table(dets, "detections/1")
    ran = pl.read_parquet(ctx.inputs["detection_frames"], columns=["frame_id"])
    missing = cands.join(ran, on="frame_id", how="anti")
    if missing.height:
        raise ConfigError(f"curate: {missing.height} candidate frame(s) were not run through "
                          f"the teacher (e.g. {missing['frame_id'][0]}); add their split to "
                          f"teacher-label.splits or narrow curate.splits / where")
    return dets


def run(ctx: StageContext[CurateConfig]) -> None:
    cfg = ctx.config
    frames = pl.read_parquet(ctx.inputs["frames"])
    check_table(frames, "frames/1")
    dets, counts = None, {}
    if cfg.used() & cs.NEEDS_DETECTIONS:
        dets = _detections(ctx, candidates(frames, cfg))
        counts = class_counts(pl.read_parquet(ctx.inputs["boxes"]), frames, cfg.labeled_splits)
    sel, summary = make_selection(frames, cfg, dets, counts)
    check_table(sel, "selection/1")
    sel.write_parquet(ctx.outputs["selection"], metadata=ctx.file_metadata())
    ctx.outputs["selection_summary"].write_text(json.dumps(summary, indent=1, sort_keys=True))


_OUT = (Port("selection", ParquetArtifact, "selection/1"), Port("selection_summary", JsonArtifact))

STAGE = Stage(
    name="curate", config=CurateConfig, run=run, version=1,
    inputs=(Port("frames", ParquetArtifact, "frames/1"), Port("boxes", ParquetArtifact, "boxes/1"),
            Port("detections", ParquetArtifact, "detections/1"),
            Port("detection_frames", ParquetArtifact, "detection_frames/1")),
    outputs=_OUT,
    description="frames + teacher detections -> the N frames most worth labeling",
)

FRAMES_STAGE = Stage(
    name="curate-frames", config=CurateFramesConfig, run=run, version=1,
    inputs=(Port("frames", ParquetArtifact, "frames/1"),), outputs=_OUT,
    description="frame table only -> N frames by radar density and/or scene/time spread",
)
