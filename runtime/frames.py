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
from kdpipe.models.batch import Targets, empty_targets
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.model_data import targets_from_table
from kdpipe.runtime.train_data import FrameRef, StoreFrames

_REF_COLUMNS = {"frame_id": pl.String, "source": pl.String, "scene": pl.String,
                "frame_index": pl.Int32}


@dataclass(frozen=True)
class FrameSpec:
    """What a model needs read for each training frame."""

    modalities: tuple[str, ...]          # what goes into the batch (may add the teacher's LiDAR)
    radar_sensor: str                    # store sensor behind "radar" (radar, radar_3, ...)
    pc_range: tuple[float, ...]          # crop, the model's point_cloud_range_m
    box_width: int = 7                   # 9 when the model regresses velocity
    cameras: tuple[str, ...] = ()        # store camera channels (camera models)


def load_train_frames(store: IngestStore, frames: pl.DataFrame, spec: FrameSpec,
                      targets: Mapping[str, Targets]) -> StoreFrames:
    """Training frames for `frames` (rows of frames/1, in that order), read when a batch asks."""
    empty = empty_targets(spec.box_width)
    refs = [FrameRef(str(f), str(s), str(g), int(i)) for f, s, g, i in frames.select(
        "frame_id", "source", "scene", "frame_index").iter_rows()]
    return StoreFrames(store, refs, [targets.get(r.frame_id, empty) for r in refs],
                       spec.modalities, spec.radar_sensor, tuple(spec.pc_range),
                       spec.box_width, spec.cameras)


def train_points(log: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Points per modality a training run read in its last epoch (every frame once, cropped),
    from its log rows (`points_<modality>`): what the model was trained on."""
    last = log[-1] if log else {}
    return {k.removeprefix("points_"): int(v) for k, v in sorted(last.items())
            if k.startswith("points_")}


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
                    spec: FrameSpec) -> StoreFrames:
    """SSOD frames (pseudo-labels, cut to a `selection` input when there is one), then GT
    frames; `cfg` carries `ssod`, `gt`, `unlabeled_splits`, `gt_splits`,
    `max_unlabeled_frames`, `max_gt_frames` (`distill` and `imkd-distill` configs)."""
    store = IngestStore.from_inputs(inputs, stage)
    vel = spec.box_width == 9
    out = load_train_frames(store, pl.DataFrame(schema=_REF_COLUMNS), spec, {})
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
        out = out + load_train_frames(store, frames, spec, targets)
    if cfg.gt:
        frames = store.select_frames(cfg.gt_splits, labeled_only=True,
                                     max_frames=cfg.max_gt_frames)
        targets = targets_from_table(store.read_boxes(), classes, with_velocity=vel)
        out = out + load_train_frames(store, frames, spec, targets)
    if not len(out):
        gt = cfg.gt_splits if cfg.gt else "off"
        raise ConfigError(f"{stage}: no training frames (ssod splits "
                          f"{cfg.unlabeled_splits}, gt splits {gt})")
    return out
