"""`distill`: train SCKD's radar-only student from the frozen teacher (METHODS.md A1.3).

L_total = alpha * L_LRFD + beta * L_FRFD + L_SSOD (+ L_GT, off in SCKD's best run):
- SSOD: the teacher's pseudo-labels on unlabeled frames (`pseudo-label` output) as detection
  targets (focal heatmap + L1 box), the ignore band honoured (no loss around ignored boxes);
- LRFD / FRFD: feature distillation at the BEV maps before the 2D backbone (`models/distill.py`);
- more feature-distillation methods by name (`kd`, models/kd/: fg-gaussian, activation,
  occupied, proposal, response, radardistill), each with its weight and options, e.g.
      [distill.kd.fg-gaussian]
      weight = 1.0
      decay = "cosine"   # optional: the weight falls to 0 over training ("linear", "none")
      tap = "bev"
- GT: labeled frames with their ground truth, when `gt = true`.
Each term can be switched off, which is how the ablation table is made.

The teacher is loaded from its checkpoint artifact, frozen (eval mode: no modality dropout) and
run on every training batch. Its features are not cached: augmentation (flip, scale) changes
every epoch's input, and a cache would either pin the augmentation or be wrong; the teacher's
forward is measured at about a third of the student's forward+backward (docs/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

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
from kdpipe.schemas.model_names import KD_LOSS_OPTIONS, check_kd_terms, check_model_name

if TYPE_CHECKING:  # torch and the modules that import it load when the stage runs, not to plan
    import torch

    from kdpipe.runtime.distributed import TrainJob, TrainSetup


class DistillConfig(StageConfig):
    student: str = "radar-only"
    detector: dict[str, Any] = Field(default_factory=dict)  # deltas over the teacher's grid
    ssod: bool = True                     # pseudo-label targets on unlabeled frames
    gt: bool = False                      # ground-truth term on labeled frames
    lrfd_weight: float = Field(3e-4, ge=0.0)   # alpha; 0 switches LRFD off
    frfd_weight: float = Field(3e-4, ge=0.0)   # beta; 0 switches FRFD off
    frfd_adapters: int = Field(2, ge=1, le=2)  # 1 = the paper's FRFD* ablation
    adapter_kernel: int = Field(3, ge=1)
    kd: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {method: {weight, options}}
    unlabeled_splits: list[str] = Field(default_factory=lambda: ["unlabeled"])
    gt_splits: list[str] = Field(default_factory=lambda: ["train"])
    max_unlabeled_frames: int | None = None
    # GT on the first N labeled frames of gt_splits, in store order: the frames teacher-train's
    # `max_frames` picks (a label-scarce run: teacher and student share the same few labels)
    max_gt_frames: int | None = Field(None, ge=1)
    radar_sensor: str = "radar"
    optim: OptimConfig = OptimConfig()
    launch: LaunchConfig = LaunchConfig()  # nproc > 1: data-parallel ranks (runtime/distributed.py)

    _student_name = field_validator("student")(check_model_name)  # at plan time
    _kd_terms = field_validator("kd")(check_kd_terms)

    @property
    def feature_kd(self) -> bool:
        return self.lrfd_weight > 0 or self.frfd_weight > 0 or bool(self.kd)

    @model_validator(mode="after")
    def _some_target(self) -> DistillConfig:
        if not (self.ssod or self.gt):
            raise ValueError("distill needs detection targets: set ssod and/or gt")
        twice = {"lrfd": self.lrfd_weight, "frfd": self.frfd_weight}
        for name in sorted(k for k, w in twice.items() if w > 0 and k in self.kd):
            raise ValueError(f"{name} is set twice: by {name}_weight and by kd.{name}")
        return self


def build(job: TrainJob, device: torch.device) -> TrainSetup:
    """Student, KD terms and loss around the frozen teacher (every rank the same)."""
    import torch

    from kdpipe.models import create_model
    from kdpipe.models.kd import KDLoss, KDShapes, create_kd, get_kd
    from kdpipe.runtime.checkpoints import load_model
    from kdpipe.runtime.distributed import TrainSetup
    from kdpipe.runtime.frames import FrameSpec, student_config, training_frames

    cfg = job.config
    teacher, _ = load_model(job.inputs["teacher"], device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(job.seed)
    deltas = dict(cfg.detector)
    for name, table in cfg.kd.items():  # e.g. radardistill's alignment module in the student
        deltas.update(get_kd(name).student_overrides(table))
    student = create_model(cfg.student, **student_config(teacher, deltas)).to(device)
    # The teacher's LiDAR is read and batched only when a feature term needs the teacher.
    modalities = ("lidar", "radar") if cfg.feature_kd else tuple(student.modalities)
    spec = FrameSpec(modalities, cfg.radar_sensor, student.config.point_cloud_range_m,
                     9 if student.config.with_velocity else 7)
    data = training_frames(job.stage, cfg, job.inputs, student.classes, spec)
    c_l = teacher.config.encoder_channels
    shapes = KDShapes(student.config.encoder_channels, c_l,
                      2 * c_l if "lidar" in teacher.modalities and "radar" in teacher.modalities
                      else c_l, student.backbone.out_channels, teacher.backbone.out_channels,
                      len(student.classes), student.config.box_code_size)
    methods: dict[str, tuple[float, dict[str, Any]]] = {}
    if cfg.lrfd_weight > 0:
        methods["lrfd"] = (cfg.lrfd_weight, {"kernel": cfg.adapter_kernel})
    if cfg.frfd_weight > 0:
        methods["frfd"] = (cfg.frfd_weight, {"kernel": cfg.adapter_kernel,
                                             "adapters": cfg.frfd_adapters})
    for name, table in cfg.kd.items():
        methods[name] = (float(table.get("weight", 1.0)),
                         {k: v for k, v in table.items() if k not in KD_LOSS_OPTIONS})
    terms = {name: (w, create_kd(name, shapes, **opts).to(device))
             for name, (w, opts) in methods.items()}
    decay = {name: table["decay"] for name, table in cfg.kd.items() if "decay" in table}
    loss_fn = KDLoss(teacher, terms, decay)
    return TrainSetup(student, data, {"loss_fn": loss_fn, "trainable": [loss_fn.trainable],
                                      "modalities": modalities})


def run(ctx: StageContext[DistillConfig]) -> None:
    from kdpipe.runtime.training import run_training

    run_training(ctx, f"{__name__}:build", "student", "distill_log")


STAGE = Stage(
    name="distill", config=DistillConfig, run=run, version=2, seeded=True,
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
