"""Early cutoff: a source stage that re-runs and makes the same bytes leaves downstream cached."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.api import collect_garbage, run_workflow, workflow_status
from kdpipe.pipeline.store import Workspace
from kdpipe.testing import toy_workflow, write_raw

KDPIPE = [sys.executable, "-m", "kdpipe"]


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path, Path]:
    raw = tmp_path / "raw"
    write_raw(raw, 8)
    return toy_workflow(tmp_path / "wf.toml", raw), tmp_path / "ws", raw


def _touch(path: Path) -> None:
    """A new mtime, the same bytes (what re-synthesising the same world does)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def _by_stage(report: dict) -> dict[str, dict]:
    return {r["stage"]: r for r in report["stages"]}


def _states(rows: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["state"] for r in rows}


def test_touched_raw_file_reruns_source_and_cuts_off_downstream(
        toy: tuple[Path, Path, Path]) -> None:
    wf, ws, raw = toy
    first = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    _touch(raw / "000003.bin")
    rows = {r["stage"]: r for r in workflow_status(wf, str(ws))}
    assert rows["toy-source"]["state"] == "stale"
    assert rows["toy-source"]["reasons"] == ["raw input files changed"]
    for n in ("toy-scale", "toy-report"):  # decided by the source's outputs
        assert rows[n]["state"] == "stale"
        assert rows[n]["reasons"] == ["upstream 'toy-source' re-runs; cached if its outputs "
                                      "are unchanged (early cutoff)"]
    again = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    assert again["toy-source"]["status"] == "ran"  # the change was noticed ...
    assert again["toy-source"]["note"] == f"same outputs as {first['toy-source']['key']}"
    for n in ("toy-scale", "toy-report"):  # ... and cut off
        assert again[n]["status"] == "cached"
        assert again[n]["note"] == "cut off: upstream outputs unchanged"
        assert again[n]["key"] == first[n]["key"]
    # the source reports the artifact that holds its outputs; its outputs are readable there
    assert again["toy-source"]["key"] == first["toy-source"]["key"]
    assert Path(again["toy-source"]["outputs"]["records"]).is_file()
    assert set(_states(workflow_status(wf, str(ws))).values()) == {"up-to-date"}
    third = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    assert {r["status"] for r in third.values()} == {"cached"}  # the alias is remembered
    # gc with the workflow keeps what the alias points at
    assert collect_garbage(str(ws), wf)["items"] == []


def test_changed_bytes_rerun_everything_downstream(toy: tuple[Path, Path, Path]) -> None:
    wf, ws, raw = toy
    first = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    _touch(raw / "000001.bin")
    run_workflow(wf, str(ws), scheduler="sync")  # a cutoff first: an alias exists now
    data = bytearray((raw / "000002.bin").read_bytes())
    data[0] ^= 0xFF  # same size, other bytes
    (raw / "000002.bin").write_bytes(bytes(data))
    rows = {r["stage"]: r for r in workflow_status(wf, str(ws))}
    assert rows["toy-source"]["reasons"] == ["raw input files changed"]
    again = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    assert {r["status"] for r in again.values()} == {"ran"}
    assert all(r["note"] == "" for r in again.values())
    assert all(again[n]["key"] != first[n]["key"] for n in again)
    summary = json.loads(Path(again["toy-report"]["outputs"]["summary"]).read_text())
    old = json.loads(Path(first["toy-report"]["outputs"]["summary"]).read_text())
    assert summary["scaled_total"] != old["scaled_total"]
    assert set(_states(workflow_status(wf, str(ws))).values()) == {"up-to-date"}
    # the old bytes back, with a new mtime: the newest artifact differs, an older one matches
    data[0] ^= 0xFF
    (raw / "000002.bin").write_bytes(bytes(data))
    back = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    assert back["toy-source"]["note"] == f"same outputs as {first['toy-source']['key']}"
    assert [back[n]["status"] for n in ("toy-scale", "toy-report")] == ["cached", "cached"]
    assert back["toy-report"]["key"] == first["toy-report"]["key"]


def test_alias_to_a_deleted_artifact_is_ignored(toy: tuple[Path, Path, Path]) -> None:
    wf, ws, raw = toy
    first = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    _touch(raw / "000000.bin")
    run_workflow(wf, str(ws), scheduler="sync")
    w = Workspace(ws)
    (Path(w.artifact_dir("toy-source", first["toy-source"]["key"])) / "_lineage.json").unlink()
    rep = _by_stage(run_workflow(wf, str(ws), scheduler="sync"))
    assert rep["toy-source"]["status"] == "ran" and rep["toy-source"]["note"] == ""
    assert w.is_committed("toy-source", rep["toy-source"]["key"])


def test_force_applies_to_the_named_stages_only(toy: tuple[Path, Path, Path]) -> None:
    wf, ws, _ = toy
    run_workflow(wf, str(ws), scheduler="sync")
    rep = _by_stage(run_workflow(wf, str(ws), ["toy-report"], force=True, scheduler="sync"))
    assert {n: r["status"] for n, r in rep.items()} == {
        "toy-source": "cached", "toy-scale": "cached", "toy-report": "ran"}
    rep = _by_stage(run_workflow(wf, str(ws), from_=["toy-scale"], force=True,
                                 scheduler="sync"))
    assert {n: r["status"] for n, r in rep.items()} == {"toy-scale": "ran", "toy-report": "ran"}
    rep = _by_stage(run_workflow(wf, str(ws), force=True, scheduler="sync"))
    assert {r["status"] for r in rep.values()} == {"ran"}


def test_cli_run_and_status_after_a_touch(toy: tuple[Path, Path, Path]) -> None:
    wf, ws, raw = toy
    args = ["--workflow", str(wf), "--workspace", str(ws)]
    subprocess.run([*KDPIPE, "run", *args, "--scheduler", "sync"], check=True,
                   capture_output=True, text=True)
    _touch(raw / "000005.bin")
    st = subprocess.run([*KDPIPE, "status", *args], check=True, capture_output=True,
                        text=True).stdout
    assert "raw input files changed" in st and "early cutoff" in st
    ran = subprocess.run([*KDPIPE, "run", *args, "--scheduler", "sync"], check=True,
                         capture_output=True, text=True).stdout
    lines = {ln.split()[0]: ln for ln in ran.splitlines() if ln.startswith("toy-")}
    assert "ran" in lines["toy-source"] and "same outputs as" in lines["toy-source"]
    assert "cached" in lines["toy-report"] and "cut off" in lines["toy-report"]
    st = json.loads(subprocess.run([*KDPIPE, "status", *args, "--json"], check=True,
                                   capture_output=True, text=True).stdout)
    assert {r["state"] for r in st} == {"up-to-date"}
