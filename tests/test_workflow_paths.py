"""Relative raw-input paths in a workflow resolve against the workflow file's folder, so
`kdpipe status` (and `run`) mean the same data from any current directory."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kdpipe.config import load_workflow

KDPIPE = [sys.executable, "-m", "kdpipe"]


def kd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KDPIPE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def test_status_from_another_folder_finds_the_ingested_roots(tmp_path: Path,
                                                             vod_world: Path) -> None:
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (proj / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (proj / "data" / "world").symlink_to(vod_world, target_is_directory=True)
    wf = proj / "wf.toml"
    wf.write_text('[workflow]\nstages = ["ingest"]\n[ingest]\nformat = "vod"\n'
                  'roots = ["data/world"]\n')
    ws = tmp_path / "ws"
    ran = kd("run", "-w", "wf.toml", "--workspace", str(ws), "--scheduler", "sync", "--json",
             cwd=proj)
    assert ran.returncode == 0, ran.stderr
    key = json.loads(ran.stdout)["stages"][0]["key"]
    for cwd, wf_arg in ((elsewhere, str(wf)), (proj / "data", "../wf.toml")):
        st = kd("status", "-w", wf_arg, "--workspace", str(ws), "--json", cwd=cwd)
        assert st.returncode == 0, st.stderr
        assert [(r["key"], r["state"]) for r in json.loads(st.stdout)] == [(key, "up-to-date")]
    noop = kd("run", "-w", str(wf), "--workspace", str(ws), "--scheduler", "sync", cwd=elsewhere)
    assert noop.returncode == 0 and "nothing to do" in noop.stdout, noop.stderr


def test_file_paths_are_absolute_against_the_file_and_set_against_here(
        tmp_path: Path, monkeypatch: object) -> None:
    wf = tmp_path / "sub" / "wf.toml"
    wf.parent.mkdir()
    wf.write_text('[workflow]\nstages = []\nplugins = ["kdpipe.testing:SOURCE", '
                  '"kdpipe.testing:SCALE"]\n[toy-source]\nroot = "../raw"\n[toy-scale]\n'
                  'root = "not-a-raw-input-stage"\n')
    deltas = load_workflow(wf).deltas
    assert deltas["toy-source"]["root"] == str(tmp_path / "raw")
    assert deltas["toy-scale"]["root"] == "not-a-raw-input-stage"  # only stages with sources
    over = load_workflow(wf, ["toy-source.root=here"]).deltas
    assert over["toy-source"]["root"] == str(Path.cwd() / "here")
    url = load_workflow(wf, ["toy-source.root=s3://bucket/raw"]).deltas
    assert url["toy-source"]["root"] == "s3://bucket/raw"
