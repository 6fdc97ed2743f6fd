"""Thread budgets: every process kdpipe starts uses the cores it was given, no more.

Torch's intra-op pool defaults to every core, OpenBLAS starts its own pool, and OpenMP threads
spin while they wait; with several such processes on one machine (Dask workers, training
ranks, DataLoader workers) the spinning threads fight for the same cores and a loaded machine
slows kdpipe by an order of magnitude instead of by its share (measured: a 4x4 `inv` takes
2 us with one BLAS thread and ~4 ms with two when both cores are busy). So a process that is
given `n` cores calls `limit_threads(n)` where it starts, and a child it spawns inherits
`thread_env(n)` before it imports numpy or torch.
"""
from __future__ import annotations

import os
import sys
from typing import Any

# Read by OpenMP, OpenBLAS, MKL, numexpr and Accelerate when their pools start.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def thread_env(n: int) -> dict[str, str]:
    """Environment for a child process given `n` cores: pools of `n`, OpenMP threads that
    sleep instead of spinning while they wait (OMP_WAIT_POLICY, KMP_BLOCKTIME)."""
    k = str(max(1, int(n)))
    return {**dict.fromkeys(THREAD_VARS, k), "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def sleep_while_waiting() -> None:
    """Make this process's OpenMP threads sleep, not spin, while they wait (unless the user set
    OMP_WAIT_POLICY / KMP_BLOCKTIME). Takes effect only before torch (libgomp) is loaded, so
    `import kdpipe` calls it. Measured on 2 cores beside other CPU-bound jobs (load ~6): a
    training step took 4.5 s with GNU OpenMP's default spin-wait and 0.45 s passive; the
    spinning threads burn the time slices the working ones need."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def limit_threads(n: int) -> dict[str, Any]:
    """Size this process's thread pools to `n` cores, now: torch's intra-op pool (when torch
    is imported) and every BLAS / OpenMP pool threadpoolctl finds. Returns what was set, for
    lineage."""
    n = max(1, int(n))
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(n)
    out: dict[str, Any] = {"cores": n, "pools": sorted({f"{p['internal_api']}={p['num_threads']}"
                                                        for p in threadpool_info()}),
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    return out


def process_cores() -> int:
    """Cores this process may use: its CPU affinity (cgroups, taskset), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_report(_: object = None) -> dict[str, Any]:
    """This process's thread pools as they are now: BLAS/OpenMP pools (threadpoolctl), torch's
    intra-op threads when torch is loaded, and the OpenMP wait policy (a Dask task: the
    argument is ignored)."""
    from threadpoolctl import threadpool_info

    torch = sys.modules.get("torch")
    return {"pools": sorted((str(p["internal_api"]), int(p["num_threads"]))
                            for p in threadpool_info()),
            "torch": torch.get_num_threads() if torch is not None else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
