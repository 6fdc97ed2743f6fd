"""Dask worker plugins kdpipe registers on every cluster it uses (imported only with Dask)."""
from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class PinThreads(WorkerPlugin):
    """The worker's BLAS / OpenMP / torch pools get the worker's threads (1 for kdpipe's
    workers): a nanny's environment arrives after numpy started OpenBLAS with a thread per
    core, so the pools are resized in the worker itself (pipeline/threads.py)."""

    name = "kdpipe-pin-threads"

    def setup(self, worker: Any) -> None:
        from kdpipe.pipeline.threads import limit_threads

        limit_threads(int(getattr(worker.state, "nthreads", 1) or 1))


class IgnoreInterrupt(WorkerPlugin):
    """Workers of kdpipe's own local cluster ignore SIGINT: Ctrl-C reaches the terminal's whole
    process group, and the driver shuts its workers down itself (a worker that took it printed
    ~30 lines of asyncio traceback). Never registered on a cluster someone else started."""

    name = "kdpipe-ignore-interrupt"

    def setup(self, worker: Any) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
