"""The training loop shared by `teacher-train` and `distill`: AdamW + one-cycle, resumable.

SCKD's recipe (METHODS.md A1.4): AdamW, initial LR 1e-3, weight decay 0.01, a one-cycle
("cyclical decay") schedule peaking at 1e-2 and ending at 1e-7; random flip and global scaling
0.95-1.05. Every epoch ends with an atomic `train_state.pt` in the stage's work directory, and
every epoch's randomness (order, augmentation, modality dropout) is derived from (seed, epoch),
so a run killed after epoch k and resumed produces the same weights as one that never stopped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
from pydantic import Field

from kdpipe.models.augment import random_flip_scale
from kdpipe.models.batch import (
    FrameArrays,
    Targets,
    TrainFrame,
    collate,
    target_tensors,
    to_device,
)
from kdpipe.pipeline.stage import StageConfig
from kdpipe.runtime.camera_data import augment_geometry
from kdpipe.runtime.checkpoints import atomic_save
from kdpipe.runtime.model_data import batches


class OptimConfig(StageConfig):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)
    lr_start: float = 1e-3
    lr_max: float = 1e-2
    lr_min: float = 1e-7
    weight_decay: float = 0.01
    grad_clip_norm: float = 10.0          # OpenPCDet's GRAD_NORM_CLIP for SECOND
    flip_y: bool = True                   # SCKD "random flip along the x-axis": y -> -y
    scale_range: tuple[float, float] = (0.95, 1.05)
    device: str = "auto"                  # auto | cpu | cuda[:N]


LossFn = Callable[[torch.nn.Module, dict[str, Any], list[dict[str, Any]],
                   Sequence[TrainFrame]], dict[str, torch.Tensor]]


def default_loss(model: torch.nn.Module, batch: dict[str, Any], targets: list[dict[str, Any]],
                 frames: Sequence[TrainFrame]) -> dict[str, torch.Tensor]:
    return model.loss(model(batch), targets)


def augment(frame: TrainFrame, rng: np.random.Generator, cfg: OptimConfig
            ) -> tuple[FrameArrays, Targets]:
    """SCKD's flip (y -> -y; x stays forward, the VoD range is x in [0, 51.2]) and scaling,
    applied to targets and ignore regions alike, and to camera geometry (IMKD)."""
    t = frame.targets
    keys = list(frame.points)                              # point clouds, by modality
    width = t.boxes.shape[1]                               # 7, or 9 with velocity
    pad = np.zeros((len(t.ignore), width - 7), np.float32)
    both = np.concatenate([t.boxes, np.concatenate([t.ignore, pad], 1)])  # (n + m, width)
    # The unit axes ride along as a 3-point cloud: the augmentation is linear about the ego
    # origin, so their images are the columns of its matrix (what camera rays need).
    probe = np.eye(3, dtype=np.float32)
    pts, both = random_flip_scale([frame.points[k] for k in keys] + [probe], both, rng,
                                  flip_prob=0.5 if cfg.flip_y else 0.0,
                                  scale_range=cfg.scale_range)
    aug = pts.pop()[:, :3].T                              # (3, 3): augmented = aug @ original
    n = len(t.boxes)
    out: FrameArrays = dict(zip(keys, pts, strict=True))  # type: ignore[assignment]
    extras = {k: v for k, v in frame.arrays().items() if k not in frame.points}
    if extras:  # camera images/geometry, BEV maps (IMKD)
        out.update(augment_geometry(extras, aug))  # type: ignore[arg-type]
    return out, Targets(both[:n], t.labels, both[n:, :7])


class FitOptions(TypedDict, total=False):
    """What `fit` trains besides the plain detector loop (every key optional).

    loss_fn: the loss (default: the model's own, `default_loss`; distillation adds its terms).
    progress: called with ("epochs", done, total) after each epoch.
    trainable: extra modules trained with the model, e.g. distillation adapters.
    modalities: what goes into each batch (default: the model's own; distillation adds the
        teacher's LiDAR).
    """

    loss_fn: LossFn
    progress: Callable[[str, int, int], None] | None
    trainable: Sequence[torch.nn.Module]
    modalities: Sequence[str] | None


def fit(model: torch.nn.Module, frames: Sequence[TrainFrame], cfg: OptimConfig, *,
        workdir: Path, seed: int, device: torch.device,
        **options: Unpack[FitOptions]) -> list[dict[str, Any]]:
    """Train `model` (plus the `trainable` modules of `options`) in place.

    Returns one log row per epoch; resumes from `workdir/train_state.pt`.
    """
    modalities = tuple(options.get("modalities") or model.modalities)
    loss_fn, progress = options.get("loss_fn", default_loss), options.get("progress")
    modules = [model, *options.get("trainable", ())]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr_start, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-len(frames) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr_max, total_steps=cfg.epochs * steps_per_epoch,
        div_factor=cfg.lr_max / cfg.lr_start, final_div_factor=cfg.lr_start / cfg.lr_min)
    state_path = workdir / "train_state.pt"
    log: list[dict[str, Any]] = []
    start = 0
    if state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=True)
        for m, sd in zip(modules, st["modules"], strict=True):
            m.load_state_dict(sd)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, log = int(st["epoch"]), list(st["log"])
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 1_000_003 + epoch)
        for m in modules:
            m.train()
        order = rng.permutation(len(frames))
        sums: dict[str, float] = {}
        n_steps = 0
        for idx in batches(order, cfg.batch_size):
            chunk = [frames[i] for i in idx]
            aug = [augment(f, rng, cfg) for f in chunk]
            batch = to_device(collate([a[0] for a in aug], modalities), device)
            losses = loss_fn(model, batch, target_tensors([a[1] for a in aug], device), chunk)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            opt.step()
            sched.step()
            n_steps += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch + 1, "steps": n_steps, "frames": len(frames),
               "lr_end": float(sched.get_last_lr()[0]),  # no wall times: artifacts must be
               **{k: v / max(1, n_steps) for k, v in sorted(sums.items())}}  # reproducible
        log.append(row)
        atomic_save({"modules": [m.state_dict() for m in modules], "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch + 1, "log": log},
                    state_path)
        if progress:
            progress("epochs", epoch + 1, cfg.epochs)
    for m in modules:
        m.eval()
    return log
