"""`imkd-distill`: train the IMKD camera+radar student from a frozen LiDAR teacher (METHODS.md A2).

L_total = L_det (SSOD on the teacher's pseudo-labels and/or GT, as in `distill`)
        + lambda_1 * L1  LiDAR -> radar:  weighted MSE(Adapter_1(F_R^S), F_L^T)
        + lambda_2 * L2  LiDAR -> fused:  weighted MSE(Adapter_2(F_fused^S), F_L^T)
        + lambda_3 * L3  intensity-guided fusion: the student's fusion gate is built
                         (`intensity_gate`) and supervised by the LiDAR weight map (Bernoulli KL)
        + lambda_d * L_depth  LiDAR -> camera depth: cross-entropy of the camera branch's depth
                         distribution at the nearest LiDAR return's bin (BEVDepth's loss)
Levels 1 and 2 weight every BEV cell by the `imkd-weights` map of the frame, warped by the
frame's flip/scale augmentation so it stays on the augmented LiDAR. A weight of 0 switches a
level off (level 3 off also removes the gate, so "no distillation" is a plain fusion student).
The three levels follow the paper's description; the formulas are our reading (docs/IMKD.md).

The teacher (any detector with a "lidar" feature tap: `lidar-only`, `sckd-teacher`) is frozen
in eval mode and run on each augmented batch only when level 1 or 2 needs its features.
Training data, the loop and the checkpoint are `distill`'s (`runtime.frames.training_frames`,
`fit`, `save_checkpoint`) with camera channels added; the cameras' geometry comes from the
`calibration` port. The loss is `models.imkd.IMKDLoss`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import (
    CheckpointArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.runtime.config import LaunchConfig, OptimConfig
from kdpipe.runtime.weight_maps import weight_map_reader
from kdpipe.schemas.model_names import check_model_name

if TYPE_CHECKING:  # torch and the modules that import it load when the stage runs, not to plan
    import torch

    from kdpipe.runtime.distributed import TrainJob, TrainSetup


class IMKDDistillConfig(StageConfig):
    student: str = "imkd-student"
    detector: dict[str, Any] = Field(default_factory=dict)  # IMKDConfig deltas (teacher grid)
    ssod: bool = True                     # pseudo-label targets
    gt: bool = True                       # ground truth ("LL<>2M": LiDAR *and labels* teach)
    # lambda_1, lambda_2: the summed-over-channels feature error of a small LiDAR encoder is
    # ~100x the detection loss at the start (measured), so 0.01 puts both on one scale.
    level1_weight: float = Field(0.01, ge=0.0)  # LiDAR -> radar BEV, intensity-weighted
    level2_weight: float = Field(0.01, ge=0.0)  # LiDAR -> fused camera+radar BEV, weighted
    level3_weight: float = Field(1.0, ge=0.0)  # intensity-guided fusion gate (0: no gate)
    # lambda_d: LiDAR depth supervises the camera branch's depth distribution (BEVDepth, on
    # which IMKD builds; models/camera_depth.py). Off by default: a key change retrains.
    depth_weight: float = Field(0.0, ge=0.0)
    adapter_kernel: int = Field(3, ge=1)
    unlabeled_splits: list[str] = Field(default_factory=lambda: ["train"])
    gt_splits: list[str] = Field(default_factory=lambda: ["train"])
    max_unlabeled_frames: int | None = None
    # GT on the first N labeled frames of gt_splits, in store order: the frames teacher-train's
    # `max_frames` picks (a label-scarce run: teacher and student share the same few labels)
    max_gt_frames: int | None = Field(None, ge=1)
    radar_sensor: str = "radar"
    optim: OptimConfig = OptimConfig()
    launch: LaunchConfig = LaunchConfig()  # nproc > 1: data-parallel ranks (runtime/distributed.py)

    _student_name = field_validator("student")(check_model_name)  # at plan time

    @model_validator(mode="after")
    def _some_target(self) -> IMKDDistillConfig:
        if not (self.ssod or self.gt):
            raise ValueError("imkd-distill needs detection targets: set ssod and/or gt")
        return self


def build(job: TrainJob, device: torch.device) -> TrainSetup:
    """Camera+radar student, adapters and IMKD loss around the frozen LiDAR teacher."""
    import torch

    from kdpipe.models import create_model
    from kdpipe.models.imkd import IMKDAdapters, IMKDLoss
    from kdpipe.runtime.camera_data import camera_channels
    from kdpipe.runtime.checkpoints import load_model
    from kdpipe.runtime.distributed import TrainSetup
    from kdpipe.runtime.frames import FrameSpec, student_config, training_frames

    cfg = job.config
    teacher, _ = load_model(job.inputs["teacher"], device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(job.seed)
    deltas = {"with_velocity": teacher.config.with_velocity,
              "intensity_gate": cfg.level3_weight > 0, **cfg.detector}
    student = create_model(cfg.student, **student_config(teacher, deltas)).to(device)
    l1, l2, l3 = cfg.level1_weight > 0, cfg.level2_weight > 0, cfg.level3_weight > 0
    if l3 and not getattr(student.config, "intensity_gate", False):
        raise ConfigError("imkd-distill: level3_weight > 0 needs a student with intensity_gate")
    depth_bins = getattr(student.config, "depth_bins", None)
    if cfg.depth_weight > 0 and depth_bins is None:
        raise ConfigError("imkd-distill: depth_weight > 0 needs a student with a camera branch")
    lidar = l1 or l2 or cfg.depth_weight > 0  # the teacher's input, or the depth targets
    modalities = tuple(dict.fromkeys((*(("lidar",) if lidar else ()), *student.modalities)))
    spec = FrameSpec(modalities, cfg.radar_sensor, student.config.point_cloud_range_m,
                     9 if student.config.with_velocity else 7, camera_channels(student))
    data = training_frames(job.stage, cfg, job.inputs, student.classes, spec)
    if l1 or l2 or l3:
        data = replace(data, weight_maps=weight_map_reader(
            job.stage, job.inputs["weight_maps"], job.inputs["weight_frames"],
            [r.frame_id for r in data.refs], student.config))
    c_s, c_t = student.config.encoder_channels, teacher.config.encoder_channels
    adapters = IMKDAdapters(c_s, c_t, level1=l1, level2=l2, kernel=cfg.adapter_kernel).to(device)
    loss_fn = IMKDLoss(teacher, adapters, (cfg.level1_weight, cfg.level2_weight,
                                           cfg.level3_weight), student.config.point_cloud_range_m,
                       (cfg.depth_weight, (student.config.depth_range_m, depth_bins))
                       if cfg.depth_weight > 0 else None)
    return TrainSetup(student, data, {"loss_fn": loss_fn, "trainable": [adapters],
                                      "modalities": modalities})


def run(ctx: StageContext[IMKDDistillConfig]) -> None:
    from kdpipe.runtime.training import run_training

    run_training(ctx, f"{__name__}:build", "student", "distill_log")


STAGE = Stage(
    name="imkd-distill", config=IMKDDistillConfig, run=run, version=2, seeded=True,
    inputs=(Port("teacher", CheckpointArtifact, "checkpoint/1"),
            Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
            Port("boxes", ParquetArtifact, "boxes/1"),
            Port("calibration", ParquetArtifact, "calibration/1"),
            Port("pseudo_labels", ParquetArtifact, "pseudo_labels/1"),
            Port("pseudo_label_frames", ParquetArtifact, "detection_frames/1"),
            Port("weight_maps", ZarrArtifact, "imkd_weight_maps/1"),
            Port("weight_frames", ParquetArtifact)),
    outputs=(Port("student", CheckpointArtifact, "checkpoint/1"),
             Port("distill_log", ParquetArtifact)),
    description="frozen LiDAR teacher + pseudo-labels + weight maps -> IMKD camera+radar student",
)
