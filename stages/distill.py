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

from collections.abc import Sequence
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
from kdpipe.runtime.model_data import (
    resolve_device,
    select_frames,
    targets_from_table,
    tune_allocator,
    worker_threads,
)
from kdpipe.stages.teacher_train import load_train_frames
from kdpipe.runtime.train_loop import OptimConfig, TrainFrame, fit


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


def student_config(teacher: torch.nn.Module, deltas: dict[str, Any]) -> dict[str, Any]:
    """The student sees the teacher's grid and classes, so BEV maps align cell for cell."""
    t = teacher.config
    return {"point_cloud_range_m": t.point_cloud_range_m, "pillar_size_m": t.pillar_size_m,
            "encoder_channels": t.encoder_channels, "classes": t.classes, "size": t.size,
            **deltas}


def training_frames(ctx: StageContext[Any], ingest: Any, classes: Sequence[str],
                    pc_range: Sequence[float], vel: bool, modalities: tuple[str, ...],
                    cameras: tuple[str, ...] = ()) -> list[TrainFrame]:
    """SSOD frames (pseudo-labels), then GT frames; shared by `distill` and `imkd-distill`,
    whose configs carry the same selection fields."""
    cfg = ctx.config
    width = 9 if vel else 7
    out: list[TrainFrame] = []
    if cfg.ssod:
        listed = pl.read_parquet(ctx.inputs["pseudo_label_frames"]).filter(
            pl.col("split").is_in(cfg.unlabeled_splits)).sort("frame_id")
        if "selection" in ctx.inputs:  # `distill-selected`: a curate selection's frames only
            from kdpipe.stages.curate.stage import restrict_to_selection

            listed = restrict_to_selection(listed, ctx.inputs["selection"])
        if cfg.max_unlabeled_frames:
            listed = listed.head(cfg.max_unlabeled_frames)
        frames = pl.read_parquet(ingest / "frames.parquet").join(
            listed.select("frame_id"), on="frame_id").sort("source", "scene", "frame_index")
        targets = targets_from_table(pl.read_parquet(ctx.inputs["pseudo_labels"]), classes,
                                     with_velocity=vel)
        out += load_train_frames(ingest, frames, modalities, cfg.radar_sensor,
                                 tuple(pc_range), targets, width, cameras)
    if cfg.gt:
        frames = select_frames(ingest, cfg.gt_splits, labeled_only=True)
        targets = targets_from_table(pl.read_parquet(ctx.inputs["boxes"]), classes,
                                     with_velocity=vel)
        out += load_train_frames(ingest, frames, modalities, cfg.radar_sensor,
                                 tuple(pc_range), targets, width, cameras)
    if not out:
        from kdpipe.pipeline.errors import ConfigError

        gt = cfg.gt_splits if cfg.gt else "off"
        raise ConfigError(f"{ctx.stage}: no training frames (ssod splits "
                          f"{cfg.unlabeled_splits}, gt splits {gt})")
    return out


def run(ctx: StageContext[DistillConfig]) -> None:
    from kdpipe.models import create_model
    from kdpipe.models.distill import SCKDAdapters

    cfg = ctx.config
    torch.set_num_threads(worker_threads())
    tune_allocator()
    device = resolve_device(cfg.optim.device)
    teacher, _ = load_model(ctx.inputs["teacher"], device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(ctx.seed)
    student = create_model(cfg.student, **student_config(teacher, cfg.detector)).to(device)
    ingest = ctx.inputs["points"].parent
    feature_kd = cfg.lrfd_weight > 0 or cfg.frfd_weight > 0
    # The teacher's LiDAR is read and batched only when a feature term needs the teacher.
    modalities = ("lidar", "radar") if feature_kd else tuple(student.modalities)
    data = training_frames(ctx, ingest, student.classes, student.config.point_cloud_range_m,
                           student.config.with_velocity, modalities)
    c_s = student.config.encoder_channels
    c_l = teacher.config.encoder_channels
    adapters = SCKDAdapters(c_s, c_l, 2 * c_l, lrfd=cfg.lrfd_weight > 0,
                            frfd=cfg.frfd_weight > 0, frfd_adapters=cfg.frfd_adapters,
                            kernel=cfg.adapter_kernel).to(device)

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], targets: list[dict[str, Any]],
                frames: Sequence[TrainFrame]) -> dict[str, torch.Tensor]:
        out = model(batch)
        losses = model.loss(out, targets)   # SSOD and/or GT: the targets say which
        losses = {"loss_det": losses["loss"], **{k: v for k, v in losses.items() if k != "loss"}}
        total = losses["loss_det"]
        if feature_kd:
            with torch.no_grad():                                # teacher: eval mode, frozen
                t_feat = teacher(batch)["features"]
            f_s = out["features"]["radar"]                        # (B, C, H, W)
            if cfg.lrfd_weight > 0:
                losses["loss_lrfd"] = adapters.lrfd(f_s, t_feat["lidar"])
                total = total + cfg.lrfd_weight * losses["loss_lrfd"]
            if cfg.frfd_weight > 0:
                losses["loss_frfd"] = adapters.frfd(f_s, t_feat["fusion"])
                total = total + cfg.frfd_weight * losses["loss_frfd"]
        losses["loss"] = total
        return losses

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
