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


def test_prestart_starts_in_the_background_and_map_waits_for_it() -> None:
    """`prestart` returns at once (the cluster starts in a thread); `map` and `close` wait for
    it, a second `prestart` is a no-op, and a cluster started but never used closes cleanly."""
    ex = DaskExecutor(n_workers=1)
    try:
        ex.prestart()
        ex.prestart()
        assert ex.map(os.getenv, ["OMP_NUM_THREADS"], name="omp") == ["1"]
    finally:
        ex.close()
    unused = DaskExecutor(n_workers=1)
    unused.prestart()
    unused.close()
    assert unused._client is None and unused._cluster is None
