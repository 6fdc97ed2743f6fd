"""`teacher-label`: run the frozen teacher over the frames the workflow names, keep every box.

The default splits are the unlabeled frames (the pseudo-label targets) plus the labeled
validation frames run as if unlabeled, so the pseudo-labels can be audited against ground truth
they never saw. Every decoded box above a low floor (top-K per frame) is stored with its score:
thresholds are applied downstream by `pseudo-label`, so changing one never re-runs the teacher.
"""
from __future__ import annotations

from pydantic import Field

from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.stage import (
    CheckpointArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.config import AmpMode, TtaMode


class TeacherLabelConfig(StageConfig):
    splits: list[str] = Field(default_factory=lambda: ["unlabeled", "val"])
    radar_sensor: str = "radar"
    batch_size: int = Field(8, ge=1)
    top_k: int = Field(100, ge=1)         # boxes kept per frame after peak extraction
    score_floor: float = Field(0.01, ge=0.0, lt=1.0)  # below every threshold anyone would use
    device: str = "auto"
    amp: AmpMode = "fp32"  # forward precision; "bf16": autocast (decode stays fp32)
    # "flip": head maps averaged with the mirrored scene's before decoding (models/tta.py);
    # twice the forward cost; point-only teachers on a grid symmetric in y
    tta: TtaMode = "none"


def run(ctx: StageContext[TeacherLabelConfig]) -> None:
    from kdpipe.runtime.inference import cleanup_parts, infer  # torch: not needed to plan

    cfg = ctx.config
    store = IngestStore.from_inputs(ctx.inputs, ctx.stage)
    frames = store.select_frames(cfg.splits)
    dets, frame_list = infer(ctx, store, ctx.inputs["teacher"], frames, cfg, tta=cfg.tta)
    dets.write_parquet(ctx.outputs["detections"], metadata=ctx.file_metadata())
    frame_list.write_parquet(ctx.outputs["detection_frames"], metadata=ctx.file_metadata())
    cleanup_parts(ctx)


STAGE = Stage(
    name="teacher-label", config=TeacherLabelConfig, run=run, version=1,
    inputs=(Port("teacher", CheckpointArtifact, "checkpoint/1"),
            Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1")),
    outputs=(Port("detections", ParquetArtifact, "detections/1"),
             Port("detection_frames", ParquetArtifact, "detection_frames/1")),
    description="teacher checkpoint + store -> every detection with its score (top-K per frame)",
)
