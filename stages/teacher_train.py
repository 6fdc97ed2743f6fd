"""`teacher-train`: train a detector on the labeled frames of an ingested store.

The default is SCKD's LiDAR+radar teacher; the same stage trains the LiDAR-only teacher or the
radar-only baseline by `model = "lidar-only" | "radar-only"` (used twice in one workflow through
`uses` + `ports`). Frames are read through the ports (`IngestStore`) once, cropped to the
model's range and kept in memory: the labeled split is small by construction (the point of the
pipeline), and this keeps the optimiser fed on a CPU. Training resumes from its last finished
epoch after a kill. Camera models need a `calibration` port, which this stage does not have.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
from pydantic import Field, field_validator

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
from kdpipe.runtime.config import LaunchConfig, OptimConfig
from kdpipe.schemas.model_names import check_model_name

if TYPE_CHECKING:  # torch and the modules that import it load when the stage runs, not to plan
    import torch

    from kdpipe.runtime.distributed import TrainJob, TrainSetup


class TeacherTrainConfig(StageConfig):
    model: str = "sckd-teacher"           # registry name: sckd-teacher | lidar-only | radar-only
    detector: dict[str, Any] = Field(default_factory=dict)  # DetectorConfig deltas (size, grid)
    splits: list[str] = Field(default_factory=lambda: ["train"])
    radar_sensor: str = "radar"           # radar | radar_3 | radar_5 (VoD accumulated scans)
    max_frames: int | None = None
    optim: OptimConfig = OptimConfig()
    launch: LaunchConfig = LaunchConfig()  # nproc > 1: data-parallel ranks (runtime/distributed.py)

    _model_name = field_validator("model")(check_model_name)  # at plan time, not in the stage


def build(job: TrainJob, device: torch.device) -> TrainSetup:
    """The model and its labeled frames (every rank builds the same)."""
    import torch

    from kdpipe.models import create_model
    from kdpipe.runtime.camera_data import camera_channels
    from kdpipe.runtime.distributed import TrainSetup
    from kdpipe.runtime.frames import FrameSpec, load_train_frames
    from kdpipe.runtime.model_data import targets_from_table

    cfg = job.config
    torch.manual_seed(job.seed)  # weight init
    model = create_model(cfg.model, **cfg.detector)
    store = IngestStore.from_inputs(job.inputs, job.stage)
    frames = store.select_frames(cfg.splits, labeled_only=True, max_frames=cfg.max_frames)
    boxes = store.read_boxes().filter(pl.col("frame_id").is_in(frames["frame_id"].implode()))
    vel = model.config.with_velocity
    targets = targets_from_table(boxes, model.classes, with_velocity=vel)
    spec = FrameSpec(model.modalities, cfg.radar_sensor, model.config.point_cloud_range_m,
                     9 if vel else 7, camera_channels(model))
    return TrainSetup(model.to(device), load_train_frames(store, frames, spec, targets))


def run(ctx: StageContext[TeacherTrainConfig]) -> None:
    from kdpipe.runtime.training import run_training

    run_training(ctx, f"{__name__}:build", "teacher", "train_log")


STAGE = Stage(
    name="teacher-train", config=TeacherTrainConfig, run=run, version=2, seeded=True,
    inputs=(Port("points", ZarrArtifact, "points/1"), Port("frames", ParquetArtifact, "frames/1"),
            Port("boxes", ParquetArtifact, "boxes/1")),
    outputs=(Port("teacher", CheckpointArtifact, "checkpoint/1"),
             Port("train_log", ParquetArtifact)),
    description="labeled frames -> trained detector checkpoint (SCKD teacher by default)",
)
