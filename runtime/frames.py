"""Training frames from an ingested store: which frames, which targets, read group by group.

Shared by `teacher-train` (labeled frames + ground truth), `distill` and `imkd-distill` (SSOD
frames + pseudo-labels, then optional GT frames), so stages never import each other for it.
Every path comes from the stage's ports (an `IngestStore` plus the pseudo-label / selection /
weight-map tables).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.datasets.store import IngestStore
from kdpipe.models.batch import Targets, TrainFrame, empty_targets
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.model_data import read_group_frames, sensor_map, targets_from_table


@dataclass(frozen=True)
class FrameSpec:
    """What a model needs read for each training frame."""

    modalities: tuple[str, ...]          # what goes into the batch (may add the teacher's LiDAR)
    radar_sensor: str                    # store sensor behind "radar" (radar, radar_3, ...)
    pc_range: tuple[float, ...]          # crop, the model's point_cloud_range_m
    box_width: int = 7                   # 9 when the model regresses velocity
    cameras: tuple[str, ...] = ()        # store camera channels (camera models)


def load_train_frames(store: IngestStore, frames: pl.DataFrame, spec: FrameSpec,
                      targets: Mapping[str, Targets]) -> list[TrainFrame]:
    """Cropped per-frame arrays for `frames` (rows of frames/1), read group by group."""
    empty = empty_targets(spec.box_width)
    sensors = sensor_map(spec.radar_sensor, spec.modalities)
    out = []
    for (source, scene), g in frames.group_by("source", "scene", maintain_order=True):
        arrays = read_group_frames(store, str(source), str(scene), g["frame_index"].to_list(),
                                   sensors, spec.pc_range, cameras=spec.cameras)
        out += [TrainFrame(str(fid), pts, targets.get(str(fid), empty), cams)
                for fid, (pts, cams) in zip(g["frame_id"], arrays, strict=True)]
    return out


def point_counts(frames: Sequence[TrainFrame]) -> dict[str, int]:
    """Points per modality over `frames` (after cropping): what a model was trained on."""
    out: dict[str, int] = {}
    for f in frames:
        for m, p in f.points.items():
            out[m] = out.get(m, 0) + len(p)
    return dict(sorted(out.items()))


def restrict_to_selection(listed: pl.DataFrame, selection: Path) -> pl.DataFrame:
    """`listed` (a frame list with `frame_id`) cut to a `curate` selection's frames.

    Every selected frame must be in `listed`: a selection the student cannot train on in full
    is an error, not a silent shrink.
    """
    sel = pl.read_parquet(selection, columns=["frame_id"])
    missing = sel.join(listed, on="frame_id", how="anti")
    if missing.height:
        raise ConfigError(f"distill: {missing.height} selected frame(s) have no pseudo-labels "
                          f"in distill.unlabeled_splits (e.g. {missing['frame_id'][0]}); "
                          f"curate.splits and teacher-label.splits must cover them")
    return listed.join(sel, on="frame_id", how="semi")


def student_config(teacher: Any, deltas: Mapping[str, Any]) -> dict[str, Any]:
    """The student sees the teacher's grid and classes, so BEV maps align cell for cell."""
    t = teacher.config
    return {"point_cloud_range_m": t.point_cloud_range_m, "pillar_size_m": t.pillar_size_m,
            "encoder_channels": t.encoder_channels, "classes": t.classes, "size": t.size,
            **deltas}


def training_frames(stage: str, cfg: Any, inputs: Mapping[str, Path], classes: Sequence[str],
                    spec: FrameSpec) -> list[TrainFrame]:
    """SSOD frames (pseudo-labels, cut to a `selection` input when there is one), then GT
    frames; `cfg` carries `ssod`, `gt`, `unlabeled_splits`, `gt_splits`,
    `max_unlabeled_frames` (`distill` and `imkd-distill` configs)."""
    store = IngestStore.from_inputs(inputs, stage)
    vel = spec.box_width == 9
    out: list[TrainFrame] = []
    if cfg.ssod:
        listed = pl.read_parquet(inputs["pseudo_label_frames"]).filter(
            pl.col("split").is_in(cfg.unlabeled_splits)).sort("frame_id")
        if "selection" in inputs:  # `distill-selected`: a curate selection's frames only
            listed = restrict_to_selection(listed, inputs["selection"])
        if cfg.max_unlabeled_frames:
            listed = listed.head(cfg.max_unlabeled_frames)
        frames = store.read_frames().join(
            listed.select("frame_id"), on="frame_id").sort("source", "scene", "frame_index")
        targets = targets_from_table(pl.read_parquet(inputs["pseudo_labels"]), classes,
                                     with_velocity=vel)
        out += load_train_frames(store, frames, spec, targets)
    if cfg.gt:
        frames = store.select_frames(cfg.gt_splits, labeled_only=True)
        targets = targets_from_table(store.read_boxes(), classes, with_velocity=vel)
        out += load_train_frames(store, frames, spec, targets)
    if not out:
        gt = cfg.gt_splits if cfg.gt else "off"
        raise ConfigError(f"{stage}: no training frames (ssod splits "
                          f"{cfg.unlabeled_splits}, gt splits {gt})")
    return out
