"""`distill`: train SCKD's radar-only student from the frozen teacher (METHODS.md A1.3).

L_total = alpha * L_LRFD + beta * L_FRFD + L_SSOD (+ L_GT, off in SCKD's best run):
- SSOD: the teacher's pseudo-labels on unlabeled frames (`pseudo-label` output) as detection
  targets (focal heatmap + L1 box), the ignore band honoured (no loss around ignored boxes);
- LRFD / FRFD: feature distillation at the BEV maps before the 2D backbone (`models/distill.py`);
- GT: labeled frames with their ground truth, when `gt = true`.
Each term can be switched off, which is how the ablation table is made.

The teacher is loaded from its checkpoint artifact, frozen (eval mode: no modality dropout) and
run on every training batch. Its features are not cached: augmentation (flip, scale) changes
every epoch's input, and a cache would either pin the augmentation or be wrong; the teacher's
forward is measured at about a third of the student's forward+backward (docs/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl
import torch
from pydantic import Field, model_validator

from kdpipe.pipeline.stage import (
    CheckpointArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.checkpoints import input_refs, load_model, save_checkpoint
from kdpipe.runtime.frames import FrameSpec, point_counts, student_config, training_frames
from kdpipe.runtime.model_data import resolve_device, tune_allocator, worker_threads
from kdpipe.runtime.train_loop import OptimConfig, fit


class DistillConfig(StageConfig):
    student: str = "radar-only"
    detector: dict[str, Any] = Field(default_factory=dict)  # deltas over the teacher's grid
    ssod: bool = True                     # pseudo-label targets on unlabeled frames
    gt: bool = False                      # ground-truth term on labeled frames
    lrfd_weight: float = Field(3e-4, ge=0.0)   # alpha; 0 switches LRFD off
    frfd_weight: float = Field(3e-4, ge=0.0)   # beta; 0 switches FRFD off
    frfd_adapters: int = Field(2, ge=1, le=2)  # 1 = the paper's FRFD* ablation
    adapter_kernel: int = Field(3, ge=1)
    unlabeled_splits: list[str] = Field(default_factory=lambda: ["unlabeled"])
    gt_splits: list[str] = Field(default_factory=lambda: ["train"])
    max_unlabeled_frames: int | None = None
    radar_sensor: str = "radar"
    optim: OptimConfig = OptimConfig()

    @model_validator(mode="after")
    def _some_target(self) -> DistillConfig:
        if not (self.ssod or self.gt):
            raise ValueError("distill needs detection targets: set ssod and/or gt")
        return self


def run(ctx: StageContext[DistillConfig]) -> None:
    from kdpipe.models import create_model
    from kdpipe.models.distill import SCKDAdapters, SCKDLoss

    cfg = ctx.config
    torch.set_num_threads(worker_threads())
    tune_allocator()
    device = resolve_device(cfg.optim.device)
    teacher, _ = load_model(ctx.inputs["teacher"], device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(ctx.seed)
    student = create_model(cfg.student, **student_config(teacher, cfg.detector)).to(device)
    feature_kd = cfg.lrfd_weight > 0 or cfg.frfd_weight > 0
    # The teacher's LiDAR is read and batched only when a feature term needs the teacher.
    modalities = ("lidar", "radar") if feature_kd else tuple(student.modalities)
    spec = FrameSpec(modalities, cfg.radar_sensor, student.config.point_cloud_range_m,
                     9 if student.config.with_velocity else 7)
    data = training_frames(ctx.stage, cfg, ctx.inputs, student.classes, spec)
    c_s = student.config.encoder_channels
    c_l = teacher.config.encoder_channels
    adapters = SCKDAdapters(c_s, c_l, 2 * c_l, lrfd=cfg.lrfd_weight > 0,
                            frfd=cfg.frfd_weight > 0, frfd_adapters=cfg.frfd_adapters,
                            kernel=cfg.adapter_kernel).to(device)
    loss_fn = SCKDLoss(teacher, adapters, cfg.lrfd_weight, cfg.frfd_weight)
    ctx.facts.update(train_frames=len(data), train_points=point_counts(data))
    log = fit(student, data, cfg.optim, workdir=ctx.workdir, seed=ctx.seed, device=device,
              loss_fn=loss_fn, progress=ctx.progress, trainable=[adapters],
              modalities=modalities)
    meta = {"stage": ctx.stage, "key": ctx.key, "config": cfg.model_dump(mode="json"),
            "inputs": input_refs(ctx.inputs), "train_frames": len(data),
            "final": log[-1] if log else {}}
    save_checkpoint(ctx.outputs["student"], student, meta)
    pl.DataFrame(log).write_parquet(ctx.outputs["distill_log"], metadata=ctx.file_metadata())
    (ctx.workdir / "train_state.pt").unlink(missing_ok=True)


STAGE = Stage(
    name="distill", config=DistillConfig, run=run, version=1,
    inputs=(Port("teacher", CheckpointArtifact, "checkpoint/1"),
            Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
            Port("boxes", ParquetArtifact, "boxes/1"),
            Port("pseudo_labels", ParquetArtifact, "pseudo_labels/1"),
            Port("pseudo_label_frames", ParquetArtifact, "detection_frames/1")),
    outputs=(Port("student", CheckpointArtifact, "checkpoint/1"),
             Port("distill_log", ParquetArtifact)),
    description="frozen teacher + pseudo-labels -> SCKD radar-only student (SSOD, LRFD, FRFD)",
)


# `distill-selected`: the same stage with one more input, a `curate` selection; its SSOD frames
# are the selected unlabeled frames only (each must have pseudo-labels). Ports cannot be optional
# (an unbound port would silently change what trains), so the variant is a second stage:
#     [workflow] stages = [..., "pseudo-label", "curate", "distill-selected"]
SELECTED_STAGE = replace(
    STAGE, name="distill-selected",
    inputs=(*STAGE.inputs, Port("selection", ParquetArtifact, "selection/1")),
    description="distill on the frames of a curate selection (SSOD term) only",
)
