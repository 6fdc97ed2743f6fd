"""The CLI as users meet it: one-line errors, the lock, and a SIGKILL mid-stage."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdpipe.pipeline.store import Workspace
from kdpipe.testing import toy_workflow, write_raw

KDPIPE = [sys.executable, "-m", "kdpipe"]


def kd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # check=False: the tests assert on the exit code and stderr themselves.
    return subprocess.run(
        [*KDPIPE, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def artifact_digests(ws: Path) -> dict[str, str]:
    """Every published file except the lineage record (which holds times and hosts)."""
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ws / "artifacts").rglob("*"))
            if p.is_file() and p.name != "_lineage.json"}


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "raw"
    write_raw(raw, 40)
    return toy_workflow(tmp_path / "wf.toml", raw, delay_s=0.15), tmp_path


def assert_one_line_error(res: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], res.stderr


def test_set_type_error_is_one_line(toy: tuple[Path, Path]) -> None:
    wf, tmp = toy
    run_ws = ("run", "--workflow", str(wf), "--workspace", str(tmp / "ws"))
    res = kd(*run_ws, "--set", "toy-scale.factor=abc")
    assert_one_line_error(res, 2, "toy-scale.factor: Input should be a valid integer")
    res = kd(*run_ws, "--set", "toy-scale.nope=1")
    assert_one_line_error(res, 2, "toy-scale.nope: unknown config key")
    res = kd(*run_ws, "--set", "factor")
    assert_one_line_error(res, 2, "expected STAGE.KEY=VALUE")
    assert not (tmp / "ws" / "artifacts").exists()


def test_bad_workflow_and_unknown_stage_are_one_line(tmp_path: Path) -> None:
    res = kd("run", "--workflow", str(tmp_path / "none.toml"))
    assert_one_line_error(res, 2, "workflow file not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[workflow]\nstages = ['teacher-tran']\n")
    assert_one_line_error(kd("run", "--workflow", str(bad)), 2, "unknown stage 'teacher-tran'")
    bad.write_text("[workflow\n")
    assert_one_line_error(kd("run", "--workflow", str(bad)), 2, "invalid TOML")


def test_second_run_on_a_locked_workspace_fails_at_once(toy: tuple[Path, Path]) -> None:
    wf, tmp = toy
    with Workspace(tmp / "ws").lock():
        t0 = time.monotonic()
        res = kd("run", "--workflow", str(wf), "--workspace", str(tmp / "ws"),
                 "--scheduler", "sync")
        assert time.monotonic() - t0 < 30
    assert_one_line_error(res, 3, "is in use by another kdpipe run (pid")


def test_wait_blocks_until_the_lock_is_free(toy: tuple[Path, Path]) -> None:
    wf, tmp = toy
    ws = Workspace(tmp / "ws")
    with ws.lock():
        proc = subprocess.Popen([*KDPIPE, "run", "--workflow", str(wf),
                                 "--workspace", str(tmp / "ws"), "--scheduler", "sync", "--wait",
                                 "--set", "toy-source.delay_s=0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, errs
    assert "toy-report" in out


def test_sigkill_mid_stage_then_rerun_is_byte_identical(toy: tuple[Path, Path]) -> None:
    wf, tmp = toy
    clean = kd("run", "--workflow", str(wf), "--workspace", str(tmp / "clean"),
               "--scheduler", "sync")
    assert clean.returncode == 0, clean.stderr
    ws = tmp / "ws"
    proc = subprocess.Popen([*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(ws),
                             "--scheduler", "sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(ws.glob("artifacts/toy-source/*.partial/_units/*.json")):  # mid-stage
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_units = list(ws.glob("artifacts/toy-source/*.partial/_units/*.json"))
    assert done_units and not list(ws.glob("artifacts/*/*/_lineage.json"))
    st = kd("status", "--workflow", str(wf), "--workspace", str(ws), "--json")
    assert {r["state"] for r in json.loads(st.stdout)} == {"missing"}
    # the re-run (fresh lock: the kernel released the dead holder's) resumes and completes
    again = kd("run", "--workflow", str(wf), "--workspace", str(ws), "--scheduler", "sync",
               "--json")
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in json.loads(again.stdout)["stages"]} == {"ran"}
    assert artifact_digests(ws) == artifact_digests(tmp / "clean")
    noop = kd("run", "--workflow", str(wf), "--workspace", str(ws))
    assert noop.returncode == 0 and "nothing to do: 3 stage(s) up to date" in noop.stdout


def test_lineage_command_json(toy: tuple[Path, Path]) -> None:
    wf, tmp = toy
    assert kd("run", "--workflow", str(wf), "--workspace", str(tmp / "ws"), "--scheduler", "sync",
              "--set", "toy-source.delay_s=0").returncode == 0
    res = kd("lineage", "toy-report", "--workspace", str(tmp / "ws"), "--json")
    node = json.loads(res.stdout)
    leaf = node["inputs"][0]["inputs"][0]
    assert leaf["stage"] == "toy-source" and len(leaf["raw_files"]) == 40
    txt = kd("lineage", "toy-report", "--workspace", str(tmp / "ws"))
    assert "raw " in txt.stdout and "more raw files" in txt.stdout
    res = kd("lineage", "nope", "--workspace", str(tmp / "ws"))
    assert_one_line_error(res, 2, "no committed artifact")
