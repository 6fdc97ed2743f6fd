"""A real `dask scheduler` + two `dask worker` processes on 127.0.0.1, started and stopped here."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdpipe.testing import toy_workflow, write_raw

pytestmark = pytest.mark.cluster
KDPIPE = [sys.executable, "-m", "kdpipe"]


def artifact_digests(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ws / "artifacts").rglob("*"))
            if p.is_file() and p.name != "_lineage.json"}


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=log, stderr=log)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            # no nanny: killing a worker must not be undone by a restart in the test below
            procs.append(subprocess.Popen(
                ["dask", "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                 "--local-directory", str(tmp_path / f"w{i}")], stdout=log, stderr=log))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        yield address, procs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_cluster_run_matches_local_run_even_when_a_worker_dies(
        tmp_path: Path, cluster: tuple[str, list[subprocess.Popen[bytes]]]) -> None:
    address, procs = cluster
    raw = tmp_path / "raw"
    write_raw(raw, 48)
    wf = toy_workflow(tmp_path / "wf.toml", raw, delay_s=0.3)
    local = subprocess.run([*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(tmp_path / "local"),
                            "--scheduler", "sync"], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    ws = tmp_path / "remote"
    proc = subprocess.Popen([*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(ws),
                             "--scheduler", address, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(ws.glob("artifacts/toy-source/*.partial/_units/*.json"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(procs[1].pid, signal.SIGKILL)  # one worker dies mid-stage
    out, errs = proc.communicate(timeout=180)
    assert proc.returncode == 0, errs
    assert {r["status"] for r in json.loads(out)["stages"]} == {"ran"}
    assert artifact_digests(ws) == artifact_digests(tmp_path / "local")
