"""Executors: where a stage's tasks run.

`sync` runs tasks inline (debugging, pdb works). The default starts an in-process Dask
LocalCluster sized to the machine, lazily, so a no-op re-run never pays for it.
`tcp://HOST:PORT` or a scheduler file connects to an existing `dask scheduler` + `dask worker`
cluster. Tasks receive small items (paths, ids), never arrays, and every submission gets a fresh
key with `pure=False`: writer tasks are side effects and must never be deduplicated by Dask.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.threads import thread_env

# Dask's periodic housekeeping in every process of kdpipe's own local cluster, made rarer: the
# workers' statistical profiler (a stack sample of the running task every 10 ms, a GIL hand-off
# each), the event-loop health tick (20 ms) and the psutil system monitor (500 ms) cost ~3 % of
# a core per idle worker and as much in the driver (measured: 0.34 -> 0.08 s of worker CPU per
# 10 s idle, driver 0.4 -> 0.17 s). The memory monitors that pause or restart a worker near its
# limit keep their 100 ms.
QUIET = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "500ms",
         "distributed.admin.system-monitor.interval": "2s"}


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, name: str,
            resources: Mapping[str, float] | None, progress: Callable[[int], None]) -> list[Any]:
        ...

    def has_resource(self, name: str) -> bool:
        ...

    def describe(self) -> str:
        ...

    def close(self) -> None:
        ...


class SyncExecutor:
    """Tasks inline, one at a time: like one Dask worker thread, so BLAS gets one thread
    while they run (as a worker's, `dask_plugins.PinThreads`): small matrix calls in ingest
    cost microseconds instead of milliseconds when another job keeps the cores busy. Torch's
    pool is left alone: a sync run's inference tasks may use every core of the driver."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, name: str,
            resources: Mapping[str, float] | None = None,
            progress: Callable[[int], None] = lambda n: None) -> list[Any]:
        from threadpoolctl import threadpool_limits

        out = []
        with threadpool_limits(1, user_api="blas"):  # restored when the tasks are done
            for i, item in enumerate(items):
                out.append(fn(item))
                progress(i + 1)
        return out

    def has_resource(self, name: str) -> bool:
        return False

    def describe(self) -> str:
        return "sync"

    def close(self) -> None:
        return None


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DaskExecutor:
    """Dask futures; the client (and a local cluster, if needed) starts on first use."""

    def __init__(self, address: str | None = None, scheduler_file: str | None = None,
                 n_workers: int | None = None) -> None:
        self.address, self.scheduler_file, self.n_workers = address, scheduler_file, n_workers
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address or self.scheduler_file:
                try:
                    self._client = Client(self.address, scheduler_file=self.scheduler_file,
                                          timeout="20s")
                except (OSError, TimeoutError) as e:
                    where = self.address or self.scheduler_file
                    raise ConfigError(f"cannot reach dask scheduler {where}: {e}") from None
            else:
                import dask

                # Dask's nannies write `pre-spawn-environ` (OMP_NUM_THREADS=1, ...) into *this*
                # process's os.environ before every spawn, so torch in the driver would train
                # with 1 thread after a cluster started and with all cores when none did: a
                # resumed run (ingest cached, no cluster) gave other teacher weights than an
                # uninterrupted one (crash drill, issue 8). Hand the same variables to the
                # workers through `env` instead, which is applied inside the child only.
                spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ") or {}
                with dask.config.set({"distributed.nanny.pre-spawn-environ": {}, **QUIET}):
                    # Logs at CRITICAL: a failed task is re-raised here and reported as one
                    # line; the workers' "Compute Failed" tracebacks would only repeat it. A
                    # random HTTP port: a busy :8787 (another cluster) printed a warning.
                    self._cluster = LocalCluster(
                        n_workers=self.n_workers or machine_cores(), threads_per_worker=1,
                        processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL,
                        env={**{k: str(v) for k, v in spawn_env.items() if v is not None},
                             # one core each: BLAS/OpenMP pools of 1 that sleep, not spin
                             **thread_env(1)})
                self._client = Client(self._cluster)
            # Workers import numpy before a nanny's environment reaches them (OpenBLAS had
            # started with a thread per core): size every pool in each worker, now and on
            # workers that join later.
            from kdpipe.pipeline.dask_plugins import IgnoreInterrupt, PinThreads

            self._client.register_plugin(PinThreads(), name="kdpipe-pin-threads")
            if self._cluster is not None:
                self._client.register_plugin(IgnoreInterrupt(), name="kdpipe-ignore-interrupt")
        return self._client

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, name: str,
            resources: Mapping[str, float] | None = None,
            progress: Callable[[int], None] = lambda n: None) -> list[Any]:
        from distributed import as_completed

        if not items:
            return []
        client = self.client()
        run = uuid.uuid4().hex[:8]
        futures = [client.submit(fn, item, key=f"{name}-{i}-{run}", pure=False,
                                 resources=dict(resources) if resources else None)
                   for i, item in enumerate(items)]
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                if fut.status == "error":
                    fut.result()  # re-raise the task's exception here, in the driver
                progress(done)
            return [f.result() for f in futures]
        finally:
            client.cancel([f for f in futures if not f.done()])

    def has_resource(self, name: str) -> bool:
        info = self.client().scheduler_info()
        return any(name in w.get("resources", {}) for w in info.get("workers", {}).values())

    def describe(self) -> str:
        if self.address or self.scheduler_file:
            return f"dask {self.address or self.scheduler_file}"
        return f"dask local ({self.n_workers or machine_cores()} workers)"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


def make_executor(spec: str | None) -> Executor:
    """`None`/"local" -> local cluster, "sync", "tcp://host:port", or a scheduler-file path."""
    if spec is None or spec in ("", "local"):
        return DaskExecutor()
    if spec == "sync":
        return SyncExecutor()
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return DaskExecutor(address=spec)
    if spec.startswith("local:"):
        return DaskExecutor(n_workers=int(spec.split(":", 1)[1]))
    if Path(spec).is_file():
        return DaskExecutor(scheduler_file=spec)
    raise ConfigError(f"--scheduler {spec!r}: expected sync, local[:N], tcp://HOST:PORT or a "
                      f"scheduler file that exists")
