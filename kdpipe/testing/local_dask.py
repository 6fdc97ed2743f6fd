"""A real `dask scheduler` + `dask worker` processes on 127.0.0.1, for drills and tests.

The same commands docs/CLUSTER.md gives for a real cluster, started here as subprocesses and
always stopped (SIGTERM, then SIGKILL) when the context exits.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LocalDask:
    address: str
    scheduler_file: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def _worker_cmd(sched_file: Path, name: str, workdir: Path,
                resources: Mapping[str, float]) -> list[str]:
    cmd = ["dask", "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
           "--no-dashboard", "--name", name, "--local-directory", str(workdir),
           # no nanny: a worker killed by a drill must stay dead, not be restarted
           "--no-nanny"]
    if resources:
        cmd += ["--resources", " ".join(f"{k}={v:g}" for k, v in resources.items())]
    return cmd


@contextlib.contextmanager
def local_dask(tmp: Path, workers: Sequence[Mapping[str, float]] = ({}, {}),
               timeout_s: float = 90) -> Iterator[LocalDask]:
    """Scheduler + one single-threaded worker per entry of `workers` (its resources).

    Workers run with OMP_NUM_THREADS=1, as a nanny would set it, so their torch numerics match
    the default local cluster's.
    """
    from distributed import Client

    tmp.mkdir(parents=True, exist_ok=True)
    sched_file = tmp / "scheduler.json"
    log = open(tmp / "dask.log", "wb")  # noqa: SIM115 -- closed in finally
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sched = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                              "--no-dashboard", "--scheduler-file", str(sched_file)],
                             stdout=log, stderr=log)
    cluster = LocalDask("", sched_file, sched)
    try:
        deadline = time.monotonic() + timeout_s
        while not sched_file.exists():
            if time.monotonic() > deadline or sched.poll() is not None:
                raise RuntimeError(f"dask scheduler did not start (see {tmp / 'dask.log'})")
            time.sleep(0.1)
        for i, res in enumerate(workers):
            name = f"w{i}"
            cluster.workers[name] = subprocess.Popen(
                _worker_cmd(sched_file, name, tmp / name, res), stdout=log, stderr=log, env=env)
        with Client(scheduler_file=str(sched_file), timeout="30s") as c:
            c.wait_for_workers(len(workers), timeout=timeout_s)
        cluster.address = json.loads(sched_file.read_text())["address"]
        yield cluster
    finally:
        procs = [*cluster.workers.values(), sched]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def loaded_models() -> list[str]:
    """Checkpoints the calling worker process holds in its inference cache (`client.run`)."""
    from kdpipe.runtime import inference

    return [ckpt for ckpt, _device in inference._MODELS]  # noqa: SLF001 -- a drill looks inside
