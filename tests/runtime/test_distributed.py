"""Data-parallel training through the real stage: 2 gloo ranks on this machine (CPU).

Two ranks at the same global batch train like one (within noise); a rank SIGKILLed mid-epoch
fails the run with one line and a non-zero exit, and the re-run resumes from the saved epoch
and ends with the very checkpoint an uninterrupted 2-rank run makes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.testing import TINY_DETECTOR

pytestmark = pytest.mark.slow


def _workflow(tmp: Path, world: Path) -> Path:
    wf = tmp / "ddp.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]  # no evaluate: the train logs and checkpoints tell
seed = 1
[ingest]
format = "vod"
roots = ["{world}"]
[teacher-train]
max_frames = 12
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 4
batch_size = 4
lr_max = 0.003
[teacher-train.launch]
timeout_s = 60
""")
    return wf


def _run(wf: Path, ws: Path, nproc: int, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kdpipe", "run", "--workflow", str(wf), "--workspace",
           str(ws), "--scheduler", "sync", "--set", f"teacher-train.launch.nproc={nproc}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, **(env or {})})


def _artifact(ws: Path, stage: str) -> Path:
    return next(p for p in (ws / "artifacts" / stage).iterdir() if (p / "_lineage.json").exists())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    wf = _workflow(tmp, vod_world)
    run_workflow(wf, str(tmp / "one"), scheduler="sync")
    run_workflow(wf, str(tmp / "two"), scheduler="sync", overrides=["teacher-train.launch.nproc=2"])
    return {"wf": wf, "one": tmp / "one", "two": tmp / "two", "tmp": tmp}


def test_two_ranks_train_like_one_at_the_same_global_batch(runs: dict[str, Path]) -> None:
    one, two = (_artifact(runs[k], "teacher-train") for k in ("one", "two"))
    lin = json.loads((two / "_lineage.json").read_text())
    assert lin["facts"]["world"]["world_size"] == 2 and lin["facts"]["world"]["backend"] == "gloo"
    l1, l2 = (pl.read_parquet(a / "train_log.parquet") for a in (one, two))
    assert l1["steps"].to_list() == l2["steps"].to_list()           # same global batches
    assert l2["loss"][-1] < 0.7 * l2["loss"][0]                      # it learns
    assert abs(l2["loss"][-1] - l1["loss"][-1]) < 0.15 * l1["loss"][-1]


def test_a_killed_rank_fails_in_one_line_and_the_rerun_resumes(runs: dict[str, Path]) -> None:
    ws = runs["tmp"] / "killed"
    bad = _run(runs["wf"], ws, 2, {"KDPIPE_DRILL_KILL_RANK": "1:1"})
    assert bad.returncode == 2
    err = [ln for ln in bad.stderr.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "rank 1 of 2 died (signal SIGKILL)" in err[0]
    assert "Traceback" not in bad.stderr
    assert not (ws / "artifacts" / "teacher-train").exists() or not any(
        (p / "_lineage.json").exists() for p in (ws / "artifacts" / "teacher-train").iterdir())
    good = _run(runs["wf"], ws, 2)
    assert good.returncode == 0, good.stderr
    # rank 0's progress reaches the launching process: plain epoch lines off a terminal
    epochs = [ln for ln in good.stderr.splitlines() if ln.startswith("teacher-train epoch ")]
    assert epochs and epochs[-1].startswith("teacher-train epoch 4/4 loss "), good.stderr
    resumed = (_artifact(ws, "teacher-train") / "teacher.pt").read_bytes()
    assert resumed == (_artifact(runs["two"], "teacher-train") / "teacher.pt").read_bytes()
