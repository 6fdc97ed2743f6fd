"""What a run produced: the results block of `kdpipe run`, its warnings, and `kdpipe metrics`.

One tiny teacher workflow on the synthetic VoD world (ingest, teacher-train, teacher-label,
pseudo-label, evaluate) is run once through the real command; the other cases re-use its
workspace (cached stages, or only pseudo-label / evaluate re-run).
"""
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
from kdpipe.testing import TINY_DETECTOR

KDPIPE = [sys.executable, "-m", "kdpipe"]
HEADLINE = ("entire_area/mAP_3d_ap11", "roi/mAP_3d_ap11", "entire_area/mAP_bev_ap11",
            "roi/mAP_bev_ap11")


def kd(*args: str) -> subprocess.CompletedProcess[str]:
    # check=False: the tests assert on the exit code themselves.
    return subprocess.run([*KDPIPE, *args], capture_output=True, text=True, timeout=600,
                          check=False)


def _workflow(path: Path, world: Path, stages: str, sigma: float = 0.05) -> Path:
    head = f"""[workflow]
name = "results-test"
stages = [{stages}]
seed = 1
[ingest]
format = "vod"
roots = ["{world}"]
"""
    if stages == '"ingest"':
        path.write_text(head)
        return path
    body = f"""[teacher-train]
max_frames = 8
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 4
batch_size = 4
lr_max = 0.003
"""
    if '"teacher-label"' in stages:
        body += f"""[teacher-label]
batch_size = 4
[pseudo-label]
sigma = {sigma}
"""
    path.write_text(head + body)
    return path


TEACHER = '"ingest", "teacher-train", "teacher-label", "pseudo-label", "evaluate"'


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, vod_world: Path
            ) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("results")
    wf = _workflow(tmp / "wf.toml", vod_world, TEACHER)
    ws = tmp / "ws"
    res = kd("run", "--workflow", str(wf), "--workspace", str(ws), "--scheduler", "sync")
    assert res.returncode == 0, res.stderr
    return wf, ws, res


def _metrics(ws: Path, stage: str = "evaluate") -> list[dict[str, object]]:
    return [json.loads(p.read_text())
            for p in sorted((ws / "artifacts" / stage).glob("*/metrics.json"))]


def test_run_prints_results_block_after_the_stage_table(teacher) -> None:  # type: ignore[no-untyped-def]
    _, ws, res = teacher
    lines = res.stdout.splitlines()
    # the stage table comes first, unchanged; the results block after it
    assert lines[0].startswith("ingest ") and " ran " in lines[0], res.stdout
    assert lines[4].startswith("evaluate ") and lines[5].strip() == "results", res.stdout
    out = res.stdout
    (m,) = _metrics(ws)
    ckpt = next((ws / "artifacts" / "teacher-train").glob("*/teacher.pt"))
    # the model column names the stage instance and the checkpoint it evaluated
    assert "evaluate" in lines[7] and f"teacher-train/{ckpt.parent.name[:8]} teacher.pt" in out
    row = next(x for x in lines if "3D mAP entire area (AP11)" in x)
    assert f"{m['entire_area/mAP_3d_ap11']:.2f}" in row
    row = next(x for x in lines if "BEV mAP entire area (AP11)" in x)
    assert f"{m['entire_area/mAP_bev_ap11']:.2f}" in row
    for cls in ("Car", "Cyclist", "Pedestrian"):
        row = next(x for x in lines if f"{cls} 3D AP11 entire area" in x)
        assert f"{m[f'entire_area/{cls}_3d_ap11']:.2f}" in row
    pseudo = pl.read_parquet(next((ws / "artifacts" / "pseudo-label").glob("*/"
                                                                         "pseudo_labels.parquet")))
    n_car = pseudo.filter((pl.col("state") == "positive") & (pl.col("label") == "Car")).height
    assert f" {n_car} " in next(x for x in lines if "pseudo-labels Car" in x)
    assert " 40 " in next(x for x in lines if "frames ingested" in x)
    assert " 0 " in next(x for x in lines if "frames rejected" in x)


def test_run_json_has_results_equal_to_metrics_json(teacher) -> None:  # type: ignore[no-untyped-def]
    wf, ws, _ = teacher
    res = kd("run", "--workflow", str(wf), "--workspace", str(ws), "--scheduler", "sync",
             "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert [s["status"] for s in rep["stages"]] == ["cached"] * 5  # cached still reports
    (model,) = rep["results"]["models"]
    metrics = json.loads(Path(model["metrics_json"]).read_text())
    assert model["stage"] == "evaluate" and model["benchmark"] == "vod"
    assert model["headline"] == {k: metrics[k] for k in HEADLINE}
    assert model["class_ap"] == {c: metrics[f"entire_area/{c}_3d_ap11"]
                                 for c in ("Car", "Cyclist", "Pedestrian")}
    ck = model["checkpoint"]
    assert (ck["stage"], ck["artifact"], ck["file"]) == ("teacher-train", "teacher",
                                                         "teacher.pt")
    (pseudo,) = rep["results"]["pseudo_labels"]
    assert pseudo["sigma"] == 0.05 and min(pseudo["positive"].values()) > 0
    (ingest,) = rep["results"]["ingest"]
    assert (ingest["frames"], ingest["rejected_frames"]) == (40, 0)
    # nothing evaluated: no results block
    only = kd("run", "ingest", "--workflow", str(wf), "--workspace", str(ws), "--json")
    assert json.loads(only.stdout)["results"] is None
    plain = kd("run", "ingest", "--workflow", str(wf), "--workspace", str(ws))
    assert "results" not in [x.strip() for x in plain.stdout.splitlines()]
    assert "warning" not in plain.stdout


def test_metrics_shows_two_evaluate_artifacts_side_by_side(teacher) -> None:  # type: ignore[no-untyped-def]
    wf, ws, _ = teacher
    rep = run_workflow(wf, str(ws), ["evaluate"], scheduler="sync",
                       overrides=["evaluate.top_k=5"])
    assert {s["stage"]: s["status"] for s in rep["stages"]}["evaluate"] == "ran"
    keys = sorted(p.name for p in (ws / "artifacts" / "evaluate").iterdir())
    assert len(keys) == 2
    res = kd("metrics", "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    assert all(f"evaluate/{k[:8]}" in res.stdout for k in keys), res.stdout
    assert "diff" in "".join(res.stdout.splitlines()[:3]), res.stdout
    row = next(x for x in res.stdout.splitlines() if "entire_area/mAP_bev_ap11" in x)
    assert row.count("│") == 5  # metric, two artifacts, diff
    js = json.loads(kd("metrics", "--workspace", str(ws), "--json").stdout)
    assert len(js["columns"]) == 2 and js["diff"] is not None
    by_key = {c["key"]: c["metrics"] for c in js["columns"]}
    for k in keys:
        m = json.loads((ws / "artifacts" / "evaluate" / k / "metrics.json").read_text())
        assert by_key[k]["detections"] == m["detections"]
    first, last = js["columns"][0]["metrics"], js["columns"][-1]["metrics"]
    assert js["diff"]["detections"] == last["detections"] - first["detections"] != 0
    # --workflow: only its current key; a name picks by stage or key prefix
    cur = json.loads(kd("metrics", "--workspace", str(ws), "--workflow", str(wf), "--json").stdout)
    assert len(cur["columns"]) == 1 and cur["diff"] is None
    one = json.loads(kd("metrics", keys[0][:8], "--workspace", str(ws), "--json").stdout)
    assert [c["key"] for c in one["columns"]] == [keys[0]]
    bad = kd("metrics", "nope", "--workspace", str(ws))
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_warning_sigma_above_every_score_and_classes_without_pseudo_labels(teacher) -> None:  # type: ignore[no-untyped-def]
    wf, ws, res = teacher
    assert "below the pseudo-label threshold" not in res.stdout  # clean: sigma 0.05
    assert "0 pseudo-labels" not in res.stdout
    rep = run_workflow(wf, str(ws), scheduler="sync", overrides=["pseudo-label.sigma=0.9"])
    top = rep["results"]["models"][0]["max_score"]
    assert top < 0.9
    assert (f"evaluate: highest detection score {top:.4f} is below the pseudo-label threshold "
            f"sigma 0.9 of pseudo-label") in rep["warnings"]
    for cls in ("Car", "Cyclist", "Pedestrian"):
        assert f"pseudo-label: class {cls} has 0 pseudo-labels (sigma 0.9)" in rep["warnings"]
    clean = run_workflow(wf, str(ws), scheduler="sync")
    assert not [w for w in clean["warnings"] if "pseudo-label" in w], clean["warnings"]


def _set_scores(ws: Path, lo: float, hi: float) -> None:
    p = next((ws / "artifacts" / "teacher-label").glob("*/detections.parquet"))
    t = pl.read_parquet(p)
    t.with_columns(score=pl.Series([lo + (hi - lo) * i / max(t.height - 1, 1)
                                    for i in range(t.height)])).write_parquet(p)


def test_warning_teacher_scores_in_a_narrow_band(teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wf, ws, _ = teacher
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    _set_scores(copy, 0.60, 0.62)
    res = kd("run", "--workflow", str(wf), "--workspace", str(copy), "--scheduler", "sync")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if "teacher scores lie in" in x)
    assert line.startswith("warning: teacher-label: all ") and "[0.6000, 0.6200]" in line
    _set_scores(copy, 0.05, 0.95)
    rep = run_workflow(wf, str(copy), scheduler="sync")
    assert not [w for w in rep["warnings"] if "teacher scores" in w], rep["warnings"]


def test_warning_most_frames_rejected(tmp_path: Path, vod_world: Path) -> None:
    bad = tmp_path / "world"
    shutil.copytree(vod_world, bad)
    bins = sorted((bad / "lidar/training/velodyne").glob("*.bin"))
    for p in bins[:30]:
        p.write_bytes(p.read_bytes()[:-5])  # truncated: rejected by ingest's size check
    wf = _workflow(tmp_path / "wf.toml", bad, '"ingest"')
    res = kd("run", "--workflow", str(wf), "--workspace", str(tmp_path / "ws"), "--scheduler",
             "sync")
    assert res.returncode == 0, res.stderr
    warn = [x for x in res.stdout.splitlines() if x.startswith("warning:")]
    assert warn == ["warning: ingest: 30 of 40 frames rejected, 10 ingested (see its "
                    "rejects table)"], res.stdout
    clean = run_workflow(_workflow(tmp_path / "ok.toml", vod_world, '"ingest"'),
                         str(tmp_path / "ws_ok"), scheduler="sync")
    assert clean["warnings"] == [] and clean["results"] is None


def test_every_frame_rejected_then_training_says_the_store_is_empty(tmp_path: Path,
                                                                    vod_world: Path) -> None:
    bad = tmp_path / "world"
    shutil.copytree(vod_world, bad)
    for p in (bad / "lidar/training/velodyne").glob("*.bin"):
        p.write_bytes(p.read_bytes()[:-5])  # every frame fails ingest's size check
    wf = _workflow(tmp_path / "wf.toml", bad, '"ingest", "teacher-train"')
    res = kd("run", "--workflow", str(wf), "--workspace", str(tmp_path / "ws"), "--scheduler",
             "sync")
    assert res.returncode == 2, res.stderr
    err = [x for x in res.stderr.splitlines() if x.startswith("error")]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "the ingested store holds no frames at all" in err[0], err[0]
    assert "splits []" not in err[0]
