"""Per-epoch validation inside a training stage: a quick mAP on a labeled split, for the curves.

`optim.val_split = "val"` makes `fit` score the model on that split's labeled frames after every
`optim.val_every_epochs` epochs (and after the last one), on rank 0 only; the numbers go into
the epoch's log row (`val_map`, `val_ap_<class>`, `val_frames`, `val_gt`) and from there into
TensorBoard (`epoch/val_map`, ...) and the loss PNG. It is a training curve, not the benchmark:

- VoD-style models (no velocity head): BEV rotated IoU, matched greedily by score (the audit's
  matcher, `stages/audit/metrics.py`), thresholds 0.5 for cars and 0.25 for the other classes
  (VoD's second overlap set), all-point interpolated AP;
- nuScenes-style models (velocity head): centre distance, AP as nuscenes-devkit computes it,
  mean over the 0.5 / 1 / 2 / 4 m thresholds;
- ground truth: boxes of the model's classes whose centre lies inside the model's xy range
  (the rest cannot be detected from the cropped input); no class ranges, no point-count
  filter, no ignore regions, no field-of-view cut. `evaluate` runs the official tools.

The frames are read once and kept (a val split is small next to training data); decoding uses
the evaluate stage's defaults (score floor 0.01, 100 boxes a frame).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from kdpipe.models.batch import TrainFrame, collate, to_device
from kdpipe.stages.audit.metrics import (
    BoxSet,
    ap_all_points,
    ap_nuscenes,
    candidates,
    curve,
    greedy_match,
)

NUS_DIST_THS_M = (0.5, 1.0, 2.0, 4.0)  # nuscenes-devkit detection_cvpr_2019 dist_ths


def iou_threshold(name: str) -> float:
    return 0.5 if name.lower() == "car" else 0.25


class Validator:
    """Scores a model on fixed, already-read frames: `validator(model) -> log columns`."""

    def __init__(self, frames: Sequence[TrainFrame], classes: Sequence[str],
                 pc_range: Sequence[float], modalities: Sequence[str], device: torch.device,
                 batch_size: int = 8) -> None:
        self.frames, self.classes = list(frames), tuple(classes)
        self.modalities, self.device, self.batch_size = tuple(modalities), device, batch_size
        x0, y0, _, x1, y1, _ = pc_range
        gts = []
        for i, f in enumerate(self.frames):
            b = f.targets.boxes
            inside = (b[:, 0] >= x0) & (b[:, 0] < x1) & (b[:, 1] >= y0) & (b[:, 1] < y1)
            gts.append((i, b[inside], f.targets.labels[inside]))
        self.gt = _boxset([g[0] for g in gts], [g[1] for g in gts], [g[2] for g in gts])

    @torch.inference_mode()
    def __call__(self, model: Any) -> dict[str, float]:
        was_training = model.training
        model.eval()
        idx, boxes, labels, scores = [], [], [], []
        for start in range(0, len(self.frames), self.batch_size):
            chunk = self.frames[start:start + self.batch_size]
            batch = collate([f.arrays() for f in chunk], self.modalities)
            out = model(to_device(batch, self.device))
            for j, d in enumerate(model.decode(out, score_threshold=0.01, top_k=100)):
                idx.append(start + j)
                boxes.append(d["boxes"].float().cpu().numpy())
                labels.append(d["labels"].cpu().numpy())
                scores.append(d["scores"].float().cpu().numpy())
        model.train(was_training)
        det = _boxset(idx, boxes, labels, scores)
        return self.score(det)

    def score(self, det: BoxSet) -> dict[str, float]:
        """AP per class and their mean, as log columns."""
        nuscenes_style = det.boxes.shape[1] > 7 or self.gt.boxes.shape[1] > 7
        row: dict[str, float] = {}
        for c, name in enumerate(self.classes):
            d, g = _select(det, c), _select(self.gt, c)
            if nuscenes_style:
                cand = candidates(d, g, "center_distance", max(NUS_DIST_THS_M))
                aps = [ap_nuscenes(curve(d.score, greedy_match(  # type: ignore[arg-type]
                    d, cand, len(g), np.full(len(d), th), "center_distance") >= 0, len(g)))
                    for th in NUS_DIST_THS_M]
                ap = float(np.mean(aps))
            else:
                cand = candidates(d, g, "iou_bev")
                hit = greedy_match(d, cand, len(g), np.full(len(d), iou_threshold(name)),
                                   "iou_bev") >= 0
                ap = ap_all_points(curve(d.score, hit, len(g)))  # type: ignore[arg-type]
            row[f"val_ap_{name}"] = round(100.0 * ap, 4)
        row["val_map"] = round(float(np.mean([row[f"val_ap_{n}"] for n in self.classes])), 4)
        row["val_frames"] = float(len(self.frames))
        row["val_gt"] = float(len(self.gt))
        return row


def _boxset(frame_idx: Sequence[int], boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
            scores: Sequence[np.ndarray] | None = None) -> BoxSet:
    counts = [len(b) for b in boxes]
    width = boxes[0].shape[1] if boxes else 7
    b = np.concatenate(boxes).astype(np.float64) if boxes else np.zeros((0, width))  # (N, 7|9)
    return BoxSet(frame=np.repeat(np.asarray(frame_idx, np.int64), counts),
                  cls=np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
                  boxes=b[:, :7], xy=b[:, :2],
                  score=None if scores is None else (
                      np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)))


def _select(s: BoxSet, cls: int) -> BoxSet:
    m = s.cls == cls
    return BoxSet(s.frame[m], np.zeros(int(m.sum()), np.int64), s.boxes[m], s.xy[m],
                  None if s.score is None else s.score[m])


def attach(setup: Any, job: Any, device: torch.device) -> None:
    """Give `fit` a validator when the job's `optim.val_split` names a split (every rank builds
    the same setup; only rank 0 calls it). A split without labeled frames is a config error."""
    optim = job.config.optim
    if optim.val_split is None:
        return
    from kdpipe.datasets.store import IngestStore
    from kdpipe.pipeline.errors import ConfigError
    from kdpipe.runtime.camera_data import camera_channels
    from kdpipe.runtime.frames import FrameSpec, load_train_frames
    from kdpipe.runtime.model_data import targets_from_table

    model = setup.model
    store = IngestStore.from_inputs(job.inputs, job.stage)
    try:
        frames = store.select_frames([optim.val_split], labeled_only=True,
                                     max_frames=optim.val_max_frames)
    except ConfigError as e:  # names the split and what the store has: prefix the setting
        raise ConfigError(f"{job.stage}: optim.val_split = '{optim.val_split}': {e}") from None
    vel = model.config.with_velocity
    boxes = store.read_boxes().filter(pl.col("frame_id").is_in(frames["frame_id"].implode()))
    targets = targets_from_table(boxes, model.classes, with_velocity=vel)
    pc_range = model.config.point_cloud_range_m
    spec = FrameSpec(tuple(model.modalities), getattr(job.config, "radar_sensor", "radar"),
                     tuple(pc_range), 9 if vel else 7, camera_channels(model))
    source = load_train_frames(store, frames, spec, targets)
    setup.options["validate"] = Validator(list(source), model.classes, pc_range,
                                          model.modalities, device,
                                          batch_size=optim.batch_size)
