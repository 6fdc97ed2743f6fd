"""What every training stage does around its model: device, threads, launch, checkpoint, log.

A training stage supplies a builder (`build(job, device) -> TrainSetup`: the model, its frames
and fit's options, built from the stage's config and input ports) and calls `run_training`,
which trains it here or on `launch.nproc` ranks (`runtime/distributed.py`), then writes the
checkpoint (with the config and input refs inside), the per-epoch log, the training curves
(TensorBoard scalars in `tb/`, a loss PNG beside the log) and the lineage facts.
"""
from __future__ import annotations

from typing import Any

import polars as pl

from kdpipe.pipeline.stage import StageContext
from kdpipe.pipeline.threads import limit_threads
from kdpipe.runtime.checkpoints import input_refs, save_checkpoint
from kdpipe.runtime.distributed import TrainJob, train
from kdpipe.runtime.frames import train_points
from kdpipe.runtime.model_data import resolve_device, tune_allocator, worker_threads
from kdpipe.runtime.train_curves import write_curves


def run_training(ctx: StageContext[Any], builder: str, model_port: str, log_port: str) -> None:
    """Train what `builder` ("module:function") builds and write `model_port` / `log_port`."""
    cfg = ctx.config
    # torch, BLAS and OpenMP pools sized to this process's cores (recorded in lineage)
    ctx.facts["threads"] = limit_threads(worker_threads())
    tune_allocator()
    device = resolve_device(cfg.optim.device)
    job = TrainJob(builder, ctx.stage, ctx.key, cfg, dict(ctx.inputs), ctx.workdir, ctx.seed)
    res = train(job, device, ctx.progress)
    frames = int(res.log[-1]["frames"]) if res.log else 0
    ctx.facts.update(train_frames=frames, train_points=train_points(res.log), world=res.world)
    meta = {"stage": ctx.stage, "key": ctx.key, "config": cfg.model_dump(mode="json"),
            "inputs": input_refs(ctx.inputs), "train_frames": frames,
            "final": res.log[-1] if res.log else {}}
    save_checkpoint(ctx.outputs[model_port], res.model, meta)
    # validation columns exist only in validated epochs: null elsewhere
    pl.from_dicts(res.log, infer_schema_length=None).write_parquet(
        ctx.outputs[log_port], metadata=ctx.file_metadata())
    # TensorBoard scalars in <artifact>/tb/ and <log>.png beside the log (runtime/train_curves)
    write_curves(ctx.workdir, ctx.outputs[log_port], res.log, f"{ctx.stage} {ctx.key}")
    (ctx.workdir / "train_state.pt").unlink(missing_ok=True)  # resume state, not an output
