"""Real stages on a real cluster: `dask scheduler` + two `dask worker` processes on 127.0.0.1.

`ingest` and `teacher-label` run against the scheduler address and must produce the same bytes
as the default local cluster, even when a worker is SIGKILLed with tasks in flight; inference
asks for the `GPU` worker resource when a worker offers one (tested with `--resources GPU=1`
on a CPU worker: the scheduling path is the same, the device is `auto`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdpipe.config import toml_value
from kdpipe.testing import TINY_DETECTOR
from kdpipe.testing.drills import artifact_digests, lineage_digests
from kdpipe.testing.local_dask import loaded_models, local_dask

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
KDPIPE = [sys.executable, "-m", "kdpipe"]
STAGES = ["ingest", "teacher-train", "teacher-label"]


def run(wf: Path, ws: Path, scheduler: str, *extra: str) -> dict[str, object]:
    res = subprocess.run([*KDPIPE, "run", *extra, "--workflow", str(wf), "--workspace", str(ws),
                          "--scheduler", scheduler, "--json"], capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def n_label_tasks(ws: Path) -> int:
    """teacher-label's task count: one per group holding val or unlabeled frames."""
    import polars as pl

    frames = pl.read_parquet(next(ws.glob("artifacts/ingest/*/frames.parquet")))
    return frames.filter(pl.col("split").is_in(["val", "unlabeled"]))["scene"].n_unique()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> tuple[Path, Path]:
    """The workflow and its run on the default local cluster (2 worker processes)."""
    tmp = tmp_path_factory.mktemp("cluster_stages")
    wf = tmp / "wf.toml"
    wf.write_text(f"""[workflow]
stages = {toml_value(STAGES)}
seed = 2
[ingest]
roots = [{toml_value(str(vod_world))}]
block_frames = 4
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
[teacher-label]
batch_size = 1
""")
    run(wf, tmp / "local", "local:2")
    return wf, tmp / "local"


def test_cluster_run_equals_local_run_when_a_worker_dies_mid_label(
        tmp_path: Path, local: tuple[Path, Path]) -> None:
    wf, ref = local
    ws = tmp_path / "ws"
    with local_dask(tmp_path / "dask") as cluster:
        proc = subprocess.Popen([*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(ws),
                                 "--scheduler", cluster.address, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        parts = "artifacts/teacher-label/*.partial/_parts/*.parquet"
        deadline = time.monotonic() + 400
        while not list(ws.glob(parts)):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.01)
        n_parts = len(list(ws.glob(parts)))
        os.kill(cluster.workers["w1"].pid, signal.SIGKILL)  # tasks in flight on both workers
        assert proc.poll() is None and n_parts < n_label_tasks(ref)  # mid-stage
        out, errs = proc.communicate(timeout=600)
    assert proc.returncode == 0, errs
    assert [s["status"] for s in json.loads(out)["stages"]] == ["ran"] * 3
    assert artifact_digests(ws) == artifact_digests(ref)
    assert lineage_digests(ws) == lineage_digests(ref)
    assert not list(ws.glob("artifacts/*/*.partial"))


def test_inference_goes_to_the_gpu_resource_worker(tmp_path: Path,
                                                   local: tuple[Path, Path]) -> None:
    wf, ref = local
    ws = tmp_path / "ws"
    shutil.copytree(ref, ws)
    with local_dask(tmp_path / "dask", workers=({}, {"GPU": 1})) as cluster:
        rep = run(wf, ws, cluster.address, "teacher-label", "--only", "teacher-label", "--force")
        from distributed import Client

        with Client(cluster.address, timeout="30s") as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            models = {names[a]: m for a, m in client.run(loaded_models).items()}
    assert [s["stage"] for s in rep["stages"]] == ["teacher-label"]  # type: ignore[index]
    # only the worker with the GPU resource ever loaded the teacher
    assert models["w0"] == [] and len(models["w1"]) == 1, models
    assert artifact_digests(ws) == artifact_digests(ref)
