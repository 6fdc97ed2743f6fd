"""Where a training stage trains: in this process, or on K ranks through torchrun's machinery.

A training stage describes its work as a `TrainJob` (which module builds the model and data,
with what config and inputs) and calls `train(job)`. With `launch.nproc = 1` (the default) the
job runs here. Otherwise `torch.distributed.launcher` (the engine behind `torchrun`) starts
`nproc` processes on this machine, or joins a multi-node rendezvous (`launch.nnodes`,
`launch.rdzv_endpoint`; the other nodes run `python -m kdpipe.runtime.distributed JOB_FILE`, see
docs/CLUSTER.md); every rank builds the same job, `fit` trains it under
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), and rank 0 writes the per-epoch state and
the final weights. A rank that dies fails the stage with one line (the launcher stops the
others; collectives time out after `launch.timeout_s`, so nothing hangs), and a re-run resumes
from the last finished epoch.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from kdpipe.pipeline.errors import StageError
from kdpipe.pipeline.threads import limit_threads, process_cores
from kdpipe.runtime.config import LaunchConfig  # defined torch-free there; re-exported here


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs to build and train the same model on the same data."""

    builder: str                  # "module:function" returning a `TrainSetup` for this job
    stage: str
    key: str
    config: Any                   # the stage's config (has .optim and .launch)
    inputs: dict[str, Path]
    workdir: Path
    seed: int


@dataclass
class TrainSetup:
    """What `fit` trains: built identically by every rank from the job."""

    model: torch.nn.Module
    frames: Any                   # a runtime.train_data.FrameSource
    options: dict[str, Any] = field(default_factory=dict)   # fit's FitOptions
    device: torch.device = torch.device("cpu")


@dataclass
class TrainResult:
    model: torch.nn.Module
    log: list[dict[str, Any]]
    world: dict[str, Any]         # world size, backend, devices: for lineage


def build(job: TrainJob, device: torch.device) -> TrainSetup:
    module, _, fn = job.builder.partition(":")
    builder: Callable[[TrainJob, torch.device], TrainSetup] = getattr(
        importlib.import_module(module), fn)
    return builder(job, device)


def build_to_train(job: TrainJob, device: torch.device, rank: int = 0) -> TrainSetup:
    """`build`, plus the validator `fit` calls on rank 0 when `optim.val_split` is set."""
    setup = build(job, device)
    if rank == 0:
        from kdpipe.runtime.validation import attach

        attach(setup, job, device)
    return setup


def train(job: TrainJob, device: torch.device, progress: Any = None) -> TrainResult:
    """Train `job` here (one process) or on `job.config.launch` ranks; the trained model."""
    from kdpipe.runtime.train_loop import fit

    launch: LaunchConfig = job.config.launch
    if launch.nproc * launch.nnodes == 1:
        setup = build_to_train(job, device)
        seconds: list[float] = []
        log = fit(setup.model, setup.frames, job.config.optim, workdir=job.workdir,
                  seed=job.seed, device=device, progress=progress, epoch_seconds=seconds,
                  **setup.options)
        return TrainResult(setup.model, log, {"world_size": 1, "devices": [str(device)],
                                              "epoch_seconds": seconds})
    job_file = job.workdir / "launch_job.pkl"  # other nodes join with this file
    job_file.write_bytes(pickle.dumps(job))
    from kdpipe.runtime.rank_progress import PROGRESS_FILE, FollowProgress

    with FollowProgress(job.workdir / PROGRESS_FILE, progress):  # rank 0's steps and epochs
        results = _launch(job, launch)
    rank0 = results.get(0)
    if rank0 is None:  # rank 0 lives on another node: its weights are on the shared disk
        rank0 = torch.load(job.workdir / "rank0_world.pt", weights_only=True)
    setup = build(job, device)  # the same model, to receive rank 0's weights
    state = torch.load(job.workdir / "rank0_model.pt", map_location=device, weights_only=True)
    setup.model.load_state_dict(state)
    setup.model.eval()
    for f in ("rank0_model.pt", "rank0_world.pt", "launch_job.pkl"):
        (job.workdir / f).unlink(missing_ok=True)
    return TrainResult(setup.model, rank0["log"], rank0["world"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(job: TrainJob, launch: LaunchConfig) -> dict[int, Any]:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig as Elastic
    from torch.distributed.launcher.api import elastic_launch

    endpoint = launch.rdzv_endpoint or f"127.0.0.1:{_free_port()}"
    cfg = Elastic(min_nodes=launch.nnodes, max_nodes=launch.nnodes,
                  nproc_per_node=launch.nproc, run_id=f"kdpipe-{job.key}",
                  rdzv_backend="c10d", rdzv_endpoint=endpoint, max_restarts=0,
                  monitor_interval=0.5, start_method="spawn",
                  rdzv_configs={"timeout": int(launch.timeout_s)})
    # A failure becomes the one line below: the launcher's own logs would repeat it as a dozen
    # lines, and a SIGKILLed rank's semaphore makes Python's resource tracker (a process started
    # with this interpreter's -W options) warn at exit about a leak it then cleans up itself.
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic",
                                              "torch.multiprocessing")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    try:
        return dict(elastic_launch(cfg, entrypoint=_rank_main)(job))
    except ChildFailedError as e:
        rank, failure = sorted(e.failures.items())[0]
        how = (f"signal {failure.signal_name()}" if failure.exitcode < 0 else
               f"exit code {failure.exitcode}")
        done = _epochs_done(job.workdir)
        raise StageError(f"stage '{job.stage}': training rank {rank} of "
                         f"{launch.nproc * launch.nnodes} died ({how}); {done} epoch(s) are "
                         f"saved, a re-run resumes from there") from None
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _epochs_done(workdir: Path) -> int:
    state = workdir / "train_state.pt"
    if not state.exists():
        return 0
    return int(torch.load(state, map_location="cpu", weights_only=True)["epoch"])


def _rank_main(job: TrainJob) -> dict[str, Any]:
    """One rank: its threads, its process group, the same build, its share of each batch."""
    import torch.distributed as dist

    from kdpipe.runtime.model_data import resolve_device
    from kdpipe.runtime.train_loop import fit

    launch: LaunchConfig = job.config.launch
    local = int(os.environ["LOCAL_RANK"])
    limit_threads(launch.threads_per_rank or max(1, process_cores() // launch.nproc))
    device = resolve_device(job.config.optim.device)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = launch.backend if launch.backend != "auto" else (
        "nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend, timeout=timedelta(seconds=launch.timeout_s))
    try:
        setup = build_to_train(job, device, dist.get_rank())
        _maybe_drill_kill(job)
        seconds: list[float] = []
        from kdpipe.runtime.rank_progress import PROGRESS_FILE, FileProgress

        progress = FileProgress(job.workdir / PROGRESS_FILE) if dist.get_rank() == 0 else None
        log = fit(setup.model, setup.frames, job.config.optim, workdir=job.workdir,
                  seed=job.seed, device=device, progress=progress, epoch_seconds=seconds,
                  **setup.options)
        world = {"world_size": dist.get_world_size(), "backend": backend,
                 "devices": _all_devices(device), "epoch_seconds": seconds}
        if dist.get_rank() == 0:
            torch.save(setup.model.state_dict(), job.workdir / "rank0_model.pt")
            torch.save({"log": log, "world": world}, job.workdir / "rank0_world.pt")
        dist.barrier()
        return {"log": log, "world": world}
    finally:
        dist.destroy_process_group()


def _all_devices(device: torch.device) -> list[str]:
    import torch.distributed as dist

    names: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(names, f"{socket.gethostname()}:{device}")
    return [str(n) for n in names]


def _maybe_drill_kill(job: TrainJob) -> None:
    """Failure drills: `KDPIPE_DRILL_KILL_RANK=<rank>:<epoch>` makes that rank SIGKILL itself
    once epoch <epoch> has started (tests and benchmarks/crash_drill.py; never set by users)."""
    spec = os.environ.get("KDPIPE_DRILL_KILL_RANK")
    if not spec:
        return
    import threading

    import torch.distributed as dist

    rank, epoch = (int(x) for x in spec.split(":"))
    if dist.get_rank() != rank:
        return

    def watch() -> None:  # kill mid-epoch: after `epoch` epochs are saved and a step more
        import signal
        import time

        while _epochs_done(job.workdir) < epoch:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Join a multi-node training job from another node: `python -m kdpipe.runtime.distributed
    <workdir>/launch_job.pkl` (the file node 0 wrote; the workspace is on a shared disk)."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: python -m kdpipe.runtime.distributed JOB_FILE")
    job: TrainJob = pickle.loads(Path(args[0]).read_bytes())  # noqa: S301 -- our own file
    _launch(job, job.config.launch)


if __name__ == "__main__":
    main()
