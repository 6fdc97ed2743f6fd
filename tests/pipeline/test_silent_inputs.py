"""Inputs that used to pass silently (issue 16, "The silent inputs"), through the real `kdpipe`
command: each is one clear error line and exit 2, and leaves nothing behind."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.pipeline.store import Workspace
from kdpipe.testing import toy_workflow, write_raw

KDPIPE = [sys.executable, "-m", "kdpipe"]
REPO = Path(__file__).resolve().parents[2]
VOD_LAYOUT = "format 'vod' expects lidar/training/{velodyne,calib,pose,label_2,image_2}/"


def kd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KDPIPE, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          check=False)


def one_error_line(res: subprocess.CompletedProcess[str], code: int = 2) -> str:
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def ingest_wf(path: Path, root: Path, fmt: str, *extra: str) -> Path:
    path.write_text("\n".join(['[workflow]', 'stages = ["ingest"]', "[ingest]",
                               f"format = {toml_value(fmt)}", f"roots = {toml_value([str(root)])}",
                               *extra]) + "\n")
    return path


def run_json(wf: Path, ws: Path) -> subprocess.CompletedProcess[str]:
    return kd("run", "--workflow", str(wf), "--workspace", str(ws), "--scheduler", "sync",
              "--json")


def committed(ws: Path) -> list[Path]:
    return list(ws.glob("artifacts/*/*/_lineage.json"))


# ----------------------------------------------------------------- 1. a root with no frame at all


def test_empty_root_is_one_line_with_the_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    wf = ingest_wf(tmp_path / "wf.toml", tmp_path / "empty", "vod")
    line = one_error_line(run_json(wf, tmp_path / "ws"))
    assert f"ingest root {tmp_path / 'empty'}: an empty folder" in line and VOD_LAYOUT in line
    assert not committed(tmp_path / "ws")


def test_nuscenes_root_read_as_vod_is_one_line(tmp_path: Path, real: Path) -> None:
    root = real / "lyft_nuscenes_schema"  # a nuScenes-schema root (tables only), read in place
    line = one_error_line(run_json(ingest_wf(tmp_path / "wf.toml", root, "vod"), tmp_path / "ws"))
    assert "no vod frame found (it holds v1.01-train/)" in line and VOD_LAYOUT in line
    assert "check ingest.roots and ingest.format" in line
    assert not committed(tmp_path / "ws")


def test_vod_root_read_as_nuscenes_is_one_line(tmp_path: Path, real: Path) -> None:
    wf = ingest_wf(tmp_path / "wf.toml", real / "vod", "nuscenes", "camera_channels = []")
    line = one_error_line(run_json(wf, tmp_path / "ws"))
    assert "nuScenes tables not found" in line and "format 'nuscenes' expects" in line
    assert "v1.0-mini/*.json tables" in line


def test_root_whose_frames_are_all_rejected_is_not_the_error(tmp_path: Path, real: Path) -> None:
    """Frames were found (each a rejects row): the rejects table says why, the run goes on."""
    root = tmp_path / "vod"
    shutil.copytree(real / "vod", root)
    for p in (root / "lidar/training/velodyne").glob("*.bin"):
        p.unlink()
    res = run_json(ingest_wf(tmp_path / "wf.toml", root, "vod"), tmp_path / "ws")
    assert res.returncode == 0, res.stderr
    art = Path(json.loads(res.stdout)["stages"][0]["path"])
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert rejects.height == 3 and set(rejects["check"]) == {"missing"}
    assert pl.read_parquet(art / "frames.parquet").height == 0


# ------------------------------------------------------------ 2. a workspace under a regular file


@pytest.mark.parametrize("command", ["run", "status"])
def test_workspace_under_a_file_is_one_line(tmp_path: Path, command: str) -> None:
    wf = toy_workflow(tmp_path / "wf.toml", tmp_path / "raw")
    write_raw(tmp_path / "raw", 3)
    (tmp_path / "some_file").write_text("not a folder\n")
    res = kd(command, "--workflow", str(wf), "--workspace", str(tmp_path / "some_file/ws"))
    line = one_error_line(res)
    assert f"workspace {tmp_path / 'some_file/ws'} is under {tmp_path / 'some_file'}, which is a " \
           "file, not a folder" in line
    line = one_error_line(kd(command, "--workflow", str(wf), "--workspace",
                             str(tmp_path / "some_file")))
    assert "is a file, not a folder" in line


# ------------------------------------------------------------------ 3. unknown model at plan time

KNOWN = "(known: imkd-student, lidar-only, radar-only, sckd-teacher)"


def test_unknown_teacher_model_fails_at_plan_time_leaving_nothing(tmp_path: Path,
                                                                  real: Path) -> None:
    wf = ingest_wf(tmp_path / "wf.toml", real / "vod", "vod")
    wf.write_text(wf.read_text().replace('stages = ["ingest"]',
                                         'stages = ["ingest", "teacher-train"]'))
    ws = tmp_path / "ws"
    res = kd("run", "--workflow", str(wf), "--workspace", str(ws), "--scheduler", "sync",
             "--set", "teacher-train.model=nope")
    assert one_error_line(res) == f"error: teacher-train.model: unknown model 'nope' {KNOWN}"
    assert not (ws / "artifacts").exists()  # no stage ran: no .partial, nothing to clean up


@pytest.mark.parametrize(("workflow", "key"), [("vod_sckd.toml", "distill.student"),
                                               ("nuscenes_imkd.toml", "imkd-distill.student")])
def test_unknown_student_fails_at_plan_time(tmp_path: Path, workflow: str, key: str) -> None:
    res = kd("status", "--workflow", str(REPO / "workflows" / workflow), "--workspace",
             str(tmp_path / "ws"), "--set", f"{key}=nope")
    assert one_error_line(res) == f"error: {key}: unknown model 'nope' {KNOWN}"
    assert not (tmp_path / "ws").exists()


# ---------------------------------------------------------- 5. read-only commands and synth OUT


def test_status_and_lineage_never_create_a_workspace(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_raw(raw, 3)
    wf = toy_workflow(tmp_path / "wf.toml", raw)
    ws = tmp_path / "nowhere"
    line = one_error_line(kd("status", "--workflow", str(wf), "--workspace", str(ws)))
    assert line == f"error: workspace not found: {ws}"
    line = one_error_line(kd("lineage", "toy-source", "--workspace", str(ws)))
    assert line == f"error: workspace not found: {ws}"
    assert not ws.exists()


def test_synth_refuses_a_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "world"
    out.mkdir()
    (out / "old_world.txt").write_text("left by an earlier world\n")
    for fmt, n in (("vod", "--frames"), ("nuscenes", "--scenes")):
        line = one_error_line(kd("synth", fmt, str(out), n, "1"))
        assert f"synth: {out} is not empty" in line and "--overwrite" in line
    assert [p.name for p in out.iterdir()] == ["old_world.txt"]  # nothing written
    res = kd("synth", "vod", str(out), "--frames", "1", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert not (out / "old_world.txt").exists() and (out / "synth_scenes.json").is_file()
    line = one_error_line(kd("synth", "vod", ".", "--frames", "1", "--overwrite", cwd=out))
    assert "refusing to empty ." in line and (out / "synth_scenes.json").is_file()


# ---------------------------------------------------------------------------------- 4. kdpipe gc


@pytest.fixture()
def toy_ws(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "raw"
    write_raw(raw, 6)
    wf = toy_workflow(tmp_path / "wf.toml", raw)
    ws = tmp_path / "ws"
    run_workflow(wf, str(ws), scheduler="sync")
    run_workflow(wf, str(ws), overrides=["toy-scale.factor=5"], scheduler="sync")  # superseded
    (ws / "artifacts/toy-source/0123abcd.partial/_units").mkdir(parents=True)  # a killed run's
    (ws / "artifacts/toy-source/0123abcd.partial/_units/0.json").write_bytes(b"x" * 100)
    (ws / "artifacts/toy-scale/4567cdef.replaced-999").mkdir()
    (ws / "artifacts/toy-scale/4567cdef.replaced-999/old.parquet").write_bytes(b"y" * 30)
    (ws / "artifacts/toy-report/89abcdef").mkdir(parents=True)  # published, never committed
    (ws / "artifacts/toy-report/89abcdef/summary.json").write_bytes(b"{}")
    return wf, ws


def gc_json(*args: str) -> dict:
    res = kd("gc", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_gc_lists_leftovers_and_deletes_only_with_yes(toy_ws: tuple[Path, Path]) -> None:
    wf, ws = toy_ws
    before = sorted(p for p in ws.rglob("*"))
    rep = gc_json("--workspace", str(ws))
    kinds = {Path(i["path"]).name: (i["kind"], i["bytes"]) for i in rep["items"]}
    assert kinds == {"0123abcd.partial": ("partial", 100),
                     "4567cdef.replaced-999": ("replaced", 30), "89abcdef": ("uncommitted", 2)}
    assert rep["bytes"] == 132 and not rep["deleted"]
    assert sorted(p for p in ws.rglob("*")) == before  # a dry run deletes nothing
    text = kd("gc", "--workspace", str(ws))
    assert text.returncode == 0 and "would delete partial" in text.stdout
    assert "would delete 3 item(s), 132 B; pass --yes to delete" in text.stdout
    rep = gc_json("--workspace", str(ws), "--yes")
    assert rep["deleted"] and len(rep["items"]) == 3
    assert not any(Path(i["path"]).exists() for i in rep["items"])
    assert gc_json("--workspace", str(ws))["items"] == []
    assert len(committed(ws)) == 5  # committed artifacts are kept without --workflow


def test_gc_with_workflow_lists_artifacts_of_other_keys(toy_ws: tuple[Path, Path]) -> None:
    wf, ws = toy_ws
    rep = gc_json("--workspace", str(ws), "--workflow", str(wf))
    old = [i for i in rep["items"] if i["kind"] == "unreferenced"]
    assert len(old) == 2  # toy-scale and toy-report made with factor 5
    assert {Path(i["path"]).parent.name for i in old} == {"toy-scale", "toy-report"}
    assert all(Path(i["path"], "_lineage.json").exists() for i in old)  # dry run
    gc_json("--workspace", str(ws), "--workflow", str(wf), "--yes")
    assert not any(Path(i["path"]).exists() for i in old)
    again = run_workflow(wf, str(ws), scheduler="sync")  # the current plan is untouched
    assert {s["status"] for s in again["stages"]} == {"cached"}


def test_gc_refuses_when_busy_missing_or_keys_unknown(toy_ws: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    wf, ws = toy_ws
    with Workspace(ws).lock():
        line = one_error_line(kd("gc", "--workspace", str(ws), "--yes"), code=3)
    assert "is in use by another kdpipe run" in line
    assert (ws / "artifacts/toy-source/0123abcd.partial").exists()
    line = one_error_line(kd("gc", "--workspace", str(tmp_path / "nowhere")))
    assert line == f"error: workspace not found: {tmp_path / 'nowhere'}"
    assert not (tmp_path / "nowhere").exists()
    shutil.rmtree(tmp_path / "raw")  # the current keys cannot be computed: refuse, delete nothing
    line = one_error_line(kd("gc", "--workspace", str(ws), "--workflow", str(wf), "--yes"))
    assert "gc: toy-source input" in line and "nothing was deleted" in line
    assert (ws / "artifacts/toy-source/0123abcd.partial").exists()
