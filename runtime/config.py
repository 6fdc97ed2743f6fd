"""The runtime's config models, importable without torch.

Stage configs nest these (`optim`, `launch`, `amp`), and a plan validates every stage config
before anything runs, so they must not pull in torch: `kdpipe status` and the planning part of
`kdpipe run` never import it (tests/test_cli_imports.py). The modules that use them re-export
them under their old names (`runtime.train_loop.OptimConfig`, `runtime.distributed.LaunchConfig`,
`runtime.inference.AmpMode`). Field names, defaults and order are part of every cache key.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdpipe.pipeline.stage import StageConfig

AmpMode = Literal["fp32", "bf16"]  # the model forward's precision; decoding is always fp32
TtaMode = Literal["none", "flip"]  # teacher-label's test-time augmentation (models/tta.py)


# No class docstrings: pydantic would put them into the JSON schema.
class OptimConfig(StageConfig):  # the training loop's settings (runtime/train_loop.py)
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
    # Batches are read, augmented and collated in this many DataLoader worker processes
    # (0: in the training process; each worker keeps one thread, see pipeline/threads.py).
    loader_workers: int = Field(0, ge=0)
    amp: Literal["fp32", "bf16"] = "fp32"   # bf16 autocast of forward + loss (CUDA, or asked)
    # A labeled split scored after every `val_every_epochs` epochs (and the last) into the log
    # and TensorBoard (`val_map`): a quick BEV mAP for the curves, runtime/validation.py.
    val_split: str | None = None
    val_every_epochs: int = Field(1, ge=1)
    val_max_frames: int | None = Field(None, ge=1)


class LaunchConfig(StageConfig):  # one process or K DDP ranks (runtime/distributed.py)
    nproc: int = Field(1, ge=1)                 # training processes on this node
    nnodes: int = Field(1, ge=1)                # nodes taking part (all run the same job)
    rdzv_endpoint: str | None = None            # host:port of the rendezvous; None: local
    backend: Literal["auto", "gloo", "nccl"] = "auto"   # auto: NCCL on CUDA, else gloo
    timeout_s: float = Field(300.0, gt=0)       # a lost rank fails collectives after this
    threads_per_rank: int | None = Field(None, ge=1)    # None: this node's cores / nproc
