"""The local Dask cluster must not change the driver's environment (found by the crash drill)."""
from __future__ import annotations

import os

import pytest

from kdpipe.pipeline.executor import DaskExecutor


def test_local_cluster_pins_worker_threads_but_leaves_the_driver_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nannies used to write OMP_NUM_THREADS=1 into the driver's os.environ, so torch in
    the driver trained with 1 thread after a cluster had started and with every core when none
    had: a run resumed after a kill (ingest cached, no cluster) made other teacher weights."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    ex = DaskExecutor(n_workers=1)
    try:
        # os.getenv pickles by reference (a test-module function would not import in a worker)
        assert ex.map(os.getenv, ["OMP_NUM_THREADS"], name="omp") == ["1"]  # workers: 1 thread
        assert "OMP_NUM_THREADS" not in os.environ                # driver: untouched
    finally:
        ex.close()


def test_local_cluster_workers_run_with_quiet_housekeeping() -> None:
    """kdpipe's own workers get `QUIET` (no per-task statistical profiler, rarer ticks): the
    settings travel with the nanny's config into the worker processes."""
    import dask

    from kdpipe.pipeline.executor import QUIET

    ex = DaskExecutor(n_workers=1)
    try:
        got = ex.map(dask.config.get, list(QUIET), name="cfg")
        assert got == list(QUIET.values())
    finally:
        ex.close()
