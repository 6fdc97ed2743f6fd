"""Every process kdpipe starts runs its BLAS / OpenMP / torch pools at its share of the cores."""
from __future__ import annotations

import pytest

from kdpipe.pipeline.executor import DaskExecutor
from kdpipe.pipeline.threads import pool_report

pytestmark = pytest.mark.cluster


def test_local_cluster_workers_run_one_thread_per_pool() -> None:
    ex = DaskExecutor(n_workers=2)
    try:  # numpy is imported by every worker (dask needs it): its BLAS pool is listed
        out = ex.map(pool_report, [0, 1, 2, 3], name="threads")
    finally:
        ex.close()
    for r in out:
        assert r["pools"] and all(n == 1 for _, n in r["pools"]), r
        assert r["omp_wait_policy"] == "PASSIVE"


def test_limit_threads_sizes_every_pool_and_reports_it() -> None:
    import torch
    from threadpoolctl import threadpool_info

    from kdpipe.pipeline.threads import limit_threads

    before = torch.get_num_threads()
    try:
        rec = limit_threads(1)
        assert rec["torch"] == 1 and rec["cores"] == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    finally:
        torch.set_num_threads(before)


def test_importing_kdpipe_makes_openmp_threads_sleep_unless_the_user_chose() -> None:
    """The driver (CLI, API, training) gets a passive OpenMP wait policy before torch loads;
    a user's own setting wins."""
    import os
    import subprocess
    import sys

    code = ("import kdpipe, torch, os; "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["PASSIVE", "0"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "ACTIVE"


def test_sync_tasks_run_blas_with_one_thread_and_the_driver_gets_its_pools_back() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from kdpipe.pipeline.executor import SyncExecutor

    def blas() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):  # the driver as a 2-core machine starts it
        before = blas()  # (a single-threaded BLAS build stays at 1)
        assert any(n == 2 for n in before), before
        out = SyncExecutor().map(lambda _: blas(), [0, 1], name="threads")
        assert out == [[1] * len(before)] * 2
        assert blas() == before
