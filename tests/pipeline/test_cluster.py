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
from kdpipe.testing.local_dask import LocalDask, local_dask

pytestmark = pytest.mark.cluster
KDPIPE = [sys.executable, "-m", "kdpipe"]


def artifact_digests(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ws / "artifacts").rglob("*"))
            if p.is_file() and p.name != "_lineage.json"}


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalDask]:
    with local_dask(tmp_path / "dask") as c:
        assert c.address.startswith("tcp://127.0.0.1:")
        yield c


def test_cluster_run_matches_local_run_even_when_a_worker_dies(
        tmp_path: Path, cluster: LocalDask) -> None:
    address = cluster.address
    raw = tmp_path / "raw"
    write_raw(raw, 48)
    wf = toy_workflow(tmp_path / "wf.toml", raw, delay_s=0.3)
    local = subprocess.run([*KDPIPE, "run", "--workflow", str(wf),
                            "--workspace", str(tmp_path / "local"), "--scheduler", "sync"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert local.returncode == 0, local.stderr
    ws = tmp_path / "remote"
    proc = subprocess.Popen([*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(ws),
                             "--scheduler", address, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(ws.glob("artifacts/toy-source/*.partial/_units/*.json"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(cluster.workers["w0"].pid, signal.SIGKILL)  # one worker dies mid-stage
    out, errs = proc.communicate(timeout=180)
    assert proc.returncode == 0, errs
    assert {r["status"] for r in json.loads(out)["stages"]} == {"ran"}
    assert artifact_digests(ws) == artifact_digests(tmp_path / "local")
