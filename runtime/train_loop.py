"""The training loop shared by `teacher-train` and `distill`: AdamW + one-cycle, resumable.

SCKD's recipe (METHODS.md A1.4): AdamW, initial LR 1e-3, weight decay 0.01, a one-cycle
("cyclical decay") schedule peaking at 1e-2 and ending at 1e-7; random flip and global scaling
0.95-1.05. Every epoch ends with an atomic `train_state.pt` in the stage's work directory, and
every epoch's randomness (order, augmentation, modality dropout) is derived from (seed, epoch)
and (seed, epoch, frame), so a run killed after epoch k and resumed produces the same weights as
one that never stopped, whatever the number of loader workers. Data comes from a `FrameSource`
through `runtime/train_data.py`'s loader; under torch.distributed every rank trains on its share
of each global batch inside DistributedDataParallel, and rank 0 writes the state.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch

from kdpipe.models.augment import random_flip_scale
from kdpipe.models.batch import (
    MODEL_FIELDS,
    FrameArrays,
    Targets,
    TrainFrame,
    target_tensors,
    to_device,
)
from kdpipe.runtime.camera_data import augment_geometry
from kdpipe.runtime.checkpoints import atomic_save
from kdpipe.runtime.config import OptimConfig  # defined torch-free there; re-exported here
from kdpipe.runtime.train_data import (
    BatchDataset,
    BatchPlan,
    EpochSampler,
    FrameSource,
    MemoryFrames,
    Shard,
    make_loader,
)

LossFn = Callable[[torch.nn.Module, dict[str, Any], list[dict[str, Any]],
                   Sequence[TrainFrame]], dict[str, torch.Tensor]]


def default_loss(model: torch.nn.Module, batch: dict[str, Any], targets: list[dict[str, Any]],
                 frames: Sequence[TrainFrame]) -> dict[str, torch.Tensor]:
    return model.loss(model(batch), targets)


def augment(frame: TrainFrame, rng: np.random.Generator, cfg: OptimConfig
            ) -> tuple[FrameArrays, Targets]:  # rng: this frame's, drawn from (seed, epoch, i)
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
    progress: called with ("epochs", done, total) after each epoch's state is saved; if it
        has a `train_step(epoch, epochs, step, steps, loss)` method (the runner's
        `StageProgress`), that is called after every step with the epoch's running mean loss.
    epoch_seconds: a list that receives each epoch's wall time (for lineage, never the log:
        artifacts must be byte-identical between runs).
    trainable: extra modules trained with the model, e.g. distillation adapters.
    modalities: what goes into each batch (default: the model's own; distillation adds the
        teacher's LiDAR).
    validate: called with the model on rank 0 after every `cfg.val_every_epochs` epochs (and
        the last); returns columns for that epoch's log row (runtime/validation.py).
    """

    loss_fn: LossFn
    progress: Callable[[str, int, int], None] | None
    epoch_seconds: list[float]
    trainable: Sequence[torch.nn.Module]
    modalities: Sequence[str] | None
    validate: Callable[[torch.nn.Module], dict[str, float]]


class _Step(torch.nn.Module):
    """Model + trained extras + loss as one module, so DistributedDataParallel sees every
    trained parameter in one forward (the loss calls the adapters, not the model's forward)."""

    def __init__(self, model: torch.nn.Module, extras: Sequence[torch.nn.Module],
                 loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.extras = model, torch.nn.ModuleList(extras)
        self.loss_fn = loss_fn  # a plain callable: a frozen teacher inside is not a submodule

    def forward(self, batch: dict[str, Any], targets: list[dict[str, Any]]
                ) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch, targets, ())


def _shard() -> Shard:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def _mean_over_ranks(sums: dict[str, float], shard: Shard, device: torch.device
                     ) -> dict[str, float]:
    if shard.world == 1:
        return sums
    import torch.distributed as dist

    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / shard.world for k, v in zip(keys, t.tolist(), strict=True)}


STEPS_FILE = "train_steps.jsonl"  # per-step losses and LR (runtime/train_curves.py reads it)


class _StepLog:
    """Rank 0's per-step losses and learning rate, one JSON line per step in the work dir
    beside the resume state. A resumed run first drops the steps of epochs the state does not
    hold (they are trained again, to the same values), so the file always equals an
    uninterrupted run's."""

    def __init__(self, workdir: Path, epochs_done: int, opt: torch.optim.Optimizer) -> None:
        self.path, self.opt = workdir / STEPS_FILE, opt
        self.lr = float(opt.param_groups[0]["lr"])  # the LR of the next step
        self.on = _shard().rank == 0
        if self.on and self.path.exists():
            import json

            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln and json.loads(ln)["epoch"] <= epochs_done]
            self.path.write_text("".join(ln + "\n" for ln in keep))

    def add(self, at: tuple[int, int, int, int], losses: dict[str, float]) -> None:
        lr, self.lr = self.lr, float(self.opt.param_groups[0]["lr"])  # scheduler has stepped
        if self.on:
            import json

            epoch, _, step, steps = at
            row = {"epoch": epoch, "step": (epoch - 1) * steps + step, "lr": lr, **losses}
            with self.path.open("a") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")


def _add_step(sums: dict[str, float], losses: dict[str, torch.Tensor], progress: Any,
              steps_log: _StepLog, at: tuple[int, int, int, int]) -> None:
    """Add a step's losses to the epoch's sums (the log's columns) and to the step log; report
    the step, with the epoch's running mean loss, to a progress that takes steps (the runner's
    StageProgress). `at`: (epoch, epochs, steps done this epoch, steps per epoch)."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    for k, v in values.items():
        sums[k] = sums.get(k, 0.0) + v
    steps_log.add(at, values)
    on_step = getattr(progress, "train_step", None)
    if on_step is not None:
        on_step(*at, sums["loss"] / max(1, at[2]))


def _restore(state_path: Path, modules: Sequence[torch.nn.Module], optim: tuple[Any, Any],
             device: torch.device) -> tuple[int, list[dict[str, Any]], _StepLog]:
    """Load the last finished epoch's state, if any: (epochs done, log so far, the per-step
    log cut back to those epochs)."""
    if not state_path.exists():
        return 0, [], _StepLog(state_path.parent, 0, optim[0])
    st = torch.load(state_path, map_location=device, weights_only=True)
    for m, sd in zip(modules, st["modules"], strict=True):
        m.load_state_dict(sd)
    optim[0].load_state_dict(st["optimizer"])
    optim[1].load_state_dict(st["scheduler"])
    return int(st["epoch"]), list(st["log"]), _StepLog(state_path.parent, int(st["epoch"]),
                                                       optim[0])


def _validate(model: torch.nn.Module, validate: Callable[[torch.nn.Module], dict[str, float]]
              | None, cfg: OptimConfig, epoch: int, shard: Shard) -> dict[str, float]:
    """The validation columns of epoch `epoch` (1-based): on rank 0 after every
    `val_every_epochs` epochs and the last; the other ranks wait at the epoch's barrier."""
    if validate is None or shard.rank != 0 or (
            epoch % cfg.val_every_epochs and epoch != cfg.epochs):
        return {}
    return validate(model)


def _telling_progress(loader: Iterable[Any], loss_fn: LossFn, epoch: int, epochs: int,
                      steps: int) -> Iterator[Any]:
    """The loader's batches; before each, a loss with `set_progress` (e.g. a KD weight that
    decays, models/kd/loss.py) learns the fraction of training done. It follows from the epoch
    and step alone, so a resumed run and every DDP rank see the same values."""
    set_progress = getattr(loss_fn, "set_progress", None)
    for step, item in enumerate(loader):
        if set_progress is not None:
            set_progress((epoch * steps + step) / max(1, epochs * steps))
        yield item


def fit(model: torch.nn.Module, frames: FrameSource | Sequence[TrainFrame], cfg: OptimConfig, *,
        workdir: Path, seed: int, device: torch.device,
        **options: Unpack[FitOptions]) -> list[dict[str, Any]]:
    """Train `model` (plus the `trainable` modules of `options`) in place, data-parallel over
    the process group when one is initialised (rank 0 writes the state).

    Returns one log row per epoch; resumes from `workdir/train_state.pt`.
    """
    if not hasattr(frames, "frame"):
        frames = MemoryFrames(frames)  # type: ignore[arg-type]
    source: FrameSource = frames  # type: ignore[assignment]
    modalities = tuple(options.get("modalities") or model.modalities)
    loss_fn, progress = options.get("loss_fn", default_loss), options.get("progress")
    modules = [model, *options.get("trainable", ())]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr_start, weight_decay=cfg.weight_decay)
    shard = _shard()
    plan = BatchPlan(len(source), cfg.batch_size, seed, shard)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr_max, total_steps=cfg.epochs * plan.steps,
        div_factor=cfg.lr_max / cfg.lr_start, final_div_factor=cfg.lr_start / cfg.lr_min)
    state_path = workdir / "train_state.pt"
    start, log, steps_log = _restore(state_path, modules, (opt, sched), device)
    step_module: torch.nn.Module = _Step(model, options.get("trainable", ()), loss_fn)
    if shard.world > 1:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = EpochSampler(plan)
    loader = make_loader(BatchDataset(source, plan, functools.partial(augment, cfg=cfg),
                                      modalities),
                         sampler, workers=cfg.loader_workers, pin_memory=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)  # modality dropout: same on every rank
        for m in modules:
            m.train()
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        points = dict.fromkeys((m for m in modalities if m in MODEL_FIELDS), 0.0)
        n_steps = 0
        for batch, targets, _ids in _telling_progress(loader, loss_fn, epoch, cfg.epochs,
                                                      plan.steps):
            for m in points:  # what the model is trained on, for the log and lineage
                points[m] += batch[m].shape[0]
            with amp:
                losses = step_module(to_device(batch, device), target_tensors(targets, device))
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            opt.step()
            sched.step()
            n_steps += 1
            _add_step(sums, losses, progress, steps_log,
                      (epoch + 1, cfg.epochs, n_steps, plan.steps))
        sums = _mean_over_ranks(sums, shard, device)
        points = {k: v * shard.world for k, v in _mean_over_ranks(points, shard, device).items()}
        row = {"epoch": epoch + 1, "steps": n_steps, "frames": len(source),
               "lr_end": float(sched.get_last_lr()[0]),  # no wall times: artifacts must be
               **{k: v / max(1, n_steps) for k, v in sorted(sums.items())},  # reproducible
               **{f"points_{m}": int(round(v)) for m, v in sorted(points.items())}}
        log.append(row | _validate(model, options.get("validate"), cfg, epoch + 1, shard))
        if shard.rank == 0:
            atomic_save({"modules": [m.state_dict() for m in modules],
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "epoch": epoch + 1, "log": log}, state_path)
        if shard.world > 1:  # nobody starts the next epoch before the state is on disk
            import torch.distributed as dist

            dist.barrier()
        options.get("epoch_seconds", []).append(round(time.perf_counter() - t0, 3))
        if progress:
            progress("epochs", epoch + 1, cfg.epochs)
    for m in modules:
        m.eval()
    return log
