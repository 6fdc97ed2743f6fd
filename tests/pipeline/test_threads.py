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
