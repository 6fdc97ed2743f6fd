"""The audit stage end to end on the synthetic VoD world (tiny teacher), its numbers on the same
store with known detections, the HTML page in headless Chromium, and `kdpipe audit`."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kdpipe.api import run_workflow
from kdpipe.config import load_workflow, toml_value
from kdpipe.stages.audit.bev import frame_points
from kdpipe.stages.audit.stage import AuditConfig, compute, radar_counts
from kdpipe.testing import TINY_DETECTOR


def _workflow(tmp: Path, world: Path) -> Path:
    p = tmp / "audit.toml"
    p.write_text(f"""[workflow]
name = "audit-test"
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "audit"]
seed = 1
[ingest]
format = "vod"
roots = ["{world}"]
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
batch_size = 4
[teacher-label]
batch_size = 4
splits = ["val"]
[pseudo-label]  # student targets
sigma = 0.1      # SCKD
[audit]
n_worst = 2
""")
    return p


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory: pytest.TempPathFactory, vod_world: Path
              ) -> tuple[Path, str, dict[str, dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("audit")
    wf = _workflow(tmp, vod_world)
    ws = str(tmp / "ws")
    rep = run_workflow(wf, ws, ["audit"], scheduler="sync")
    return wf, ws, {s["stage"]: s for s in rep["stages"]}


def test_audit_stage_writes_json_html_frames_with_lineage(audit_run) -> None:  # type: ignore[no-untyped-def]
    _, _, st = audit_run
    out = st["audit"]["outputs"]
    rep = json.loads(Path(out["audit_json"]).read_text())
    assert rep["protocol"]["criterion"] == "iou_3d" and not rep["protocol"]["nuscenes_rules"]
    assert rep["protocol"]["match_threshold"]["Car"] == 0.5
    assert rep["splits"] == ["val"] and rep["n_frames"] > 0
    for c in rep["classes"].values():
        assert {"ap", "pr_curve", "f1_curve", "marked", "recommended", "calibration"} <= set(c)
        assert 0.0 <= c["calibration"]["ece"] <= 1.0
    assert rep["by_distance"]["bins"] == ["0-20 m", "20-40 m", "40+ m"]
    frames = pl.read_parquet(out["audit_frames"])
    assert frames.height == rep["n_frames"]
    assert (frames["tp"] + frames["fn"] == frames["n_gt"]).all()
    assert (frames["tp"] + frames["fp"] == frames["n_det"]).all()
    n_gt = sum(c["n_gt"] for c in rep["classes"].values())
    assert frames["n_gt"].sum() == n_gt
    assert frames["n_det"].sum() == sum(c["operating"]["tp"] + c["operating"]["fp"]
                                         for c in rep["classes"].values())
    page = Path(out["audit_html"]).read_text()
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing external
    assert page.count("data:image/png;base64,") == 3 + len(rep["worst_frames"])
    assert len(rep["worst_frames"]) == 2
    lin = json.loads((Path(st["audit"]["path"]) / "_lineage.json").read_text())
    assert lin["inputs"]["detections"]["stage"] == "teacher-label"
    assert lin["inputs"]["boxes"]["stage"] == "ingest"


def test_audit_numbers_with_known_detections(audit_run) -> None:  # type: ignore[no-untyped-def]
    """Ground truth as detections: every class AP 1; moved 3 m: every box a FP and a miss."""
    _, _, st = audit_run
    ingest = Path(st["ingest"]["path"])
    frames = pl.read_parquet(ingest / "frames.parquet").filter(pl.col("split") == "val")
    gt = pl.read_parquet(ingest / "boxes.parquet").filter(
        pl.col("frame_id").is_in(frames["frame_id"].implode())
        & pl.col("label").is_in(["Car", "Pedestrian", "Cyclist"]))
    dets = gt.with_columns(score=pl.lit(0.8), det_index=pl.lit(0, pl.Int32))
    cfg = AuditConfig(class_thresholds={"Car": 0.9})
    rep, table, kept = compute(cfg, frames, dets, gt)
    for name, c in rep["classes"].items():
        assert c["ap"] == pytest.approx(1.0) and c["n_gt"] == c["n_det"] > 0, name
        assert c["recommended"]["best_f1"]["threshold"] == 0.8
    assert rep["classes"]["Car"]["operating"]["tp"] == 0  # 0.8 < Car's 0.9
    assert rep["classes"]["Pedestrian"]["operating"]["recall"] == 1.0
    assert rep["calibration"]["ece"] == pytest.approx(0.2)  # all matched at score 0.8
    n_car = int((gt["label"] == "Car").sum())
    assert table["fn"].sum() == n_car and kept.height == gt.height - n_car
    moved = dets.with_columns(x_ego_m=pl.col("x_ego_m") + 3.0)
    rep2, table2, _ = compute(AuditConfig(), frames, moved, gt)
    assert all(c["ap"] == 0.0 for c in rep2["classes"].values())
    assert table2["fp"].sum() == table2["fn"].sum() == gt.height
    # false positives' radar points are counted from the store by ingest's own rule: on the
    # ground-truth boxes the counts are exactly `num_radar_pts`
    counts = radar_counts(ingest, frames, dets, "radar")
    assert counts.tolist() == gt["num_radar_pts"].to_list() and counts.max() > 0
    rep3, _, _ = compute(AuditConfig(), frames, moved, gt,
                         det_radar_fn=lambda d: radar_counts(ingest, frames, d, "radar"))
    car = rep3["by_radar_points"]["Car"]
    assert all(r["precision"] == 0.0 for r in car if r["n_det"])  # known, all FP
    assert sum(r["n_det"] for r in car) == int((gt["label"] == "Car").sum())


def test_frame_points_reads_one_frame(audit_run) -> None:  # type: ignore[no-untyped-def]
    _, _, st = audit_run
    ingest = Path(st["ingest"]["path"])
    row = pl.read_parquet(ingest / "frames.parquet").row(3, named=True)
    lidar, radar = frame_points(ingest / "points.zarr", row)
    assert lidar.shape == (row["n_lidar"], 4) and radar.shape[0] == row["n_radar"]
    assert np.isfinite(lidar).all()


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian `chromium` is not installed (scripts/setup.sh installs it)")
    return exe


def _render(html_path: Path, tmp: Path) -> tuple[list[list[float]], np.ndarray]:
    """Open a page in headless Chromium: each image's page rectangle (all must have decoded)
    and a screenshot of the whole page (H, W, 3)."""
    exe = _chromium()
    # a copy with a probe: after load, which images decoded and where they are on the page
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
             "document.body.setAttribute('data-broken',im.filter(i=>!(i.complete&&"
             "i.naturalWidth>0)).length);document.body.setAttribute('data-rects',JSON.stringify("
             "im.map(i=>{const r=i.getBoundingClientRect();return [r.x,r.y+window.scrollY,"
             "r.width,r.height]})));document.body.setAttribute('data-height',"
             "document.documentElement.scrollHeight);});</script>")
    page = html_path.read_text()
    html = tmp / f"probe_{html_path.stem}.html"
    html.write_text(page.replace("</body>", probe + "</body>"))
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*args, "--window-size=1200,900", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r'data-broken="0"', dom), "an image did not decode"
    rects = json.loads(re.search(r'data-rects="([^"]*)"', dom).group(1)  # type: ignore[union-attr]
                       .replace("&quot;", '"'))
    assert len(rects) == page.count("<img")
    height = int(re.search(r'data-height="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    shot = tmp / f"{html_path.stem}.png"
    subprocess.run([*args, f"--window-size=1200,{height}", f"--screenshot={shot}",
                    html.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (height, 1200)
    return rects, img


def _crops(rects: list[list[float]], img: np.ndarray) -> list[np.ndarray]:
    out = []
    for x, y, w, h in rects:
        assert w > 100 and h > 100
        out.append(img[int(y) + 2:int(y + h) - 2, int(x) + 2:int(x + w) - 2])
    return out


def test_stage_report_renders_in_headless_chromium(audit_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, st = audit_run
    rects, img = _render(Path(st["audit"]["outputs"]["audit_html"]), tmp_path)
    assert len(rects) == 5  # PR, F1, reliability, 2 worst frames
    for crop in _crops(rects, img):  # drawn (axes, text, points), not blank
        assert crop.std() > 10


def test_report_with_true_positives_renders_its_curves(audit_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The one-epoch teacher finds nothing, so its curves are single points; noisy ground
    truth plus clutter as detections gives every plot coloured curves to find on the page."""
    from kdpipe.stages.audit.stage import write_outputs

    _, _, st = audit_run
    ingest = Path(st["ingest"]["path"])
    frames = pl.read_parquet(ingest / "frames.parquet").filter(pl.col("split") == "val")
    gt = pl.read_parquet(ingest / "boxes.parquet").filter(
        pl.col("frame_id").is_in(frames["frame_id"].implode()))
    rng = np.random.default_rng(0)
    good = gt.filter(pl.col("label").is_in(["Car", "Pedestrian", "Cyclist"]))
    dets = pl.concat([
        good.with_columns(x_ego_m=pl.col("x_ego_m") + rng.normal(0, 0.2, good.height),
                          score=pl.Series(rng.uniform(0.3, 1.0, good.height))),
        good.with_columns(x_ego_m=pl.col("x_ego_m") + 8.0,
                          score=pl.Series(rng.uniform(0.0, 0.7, good.height)))],
    ).with_columns(det_index=pl.lit(0, pl.Int32))
    out = {k: tmp_path / f"{k}{ext}" for k, ext in
           (("audit_json", ".json"), ("audit_html", ".html"), ("audit_frames", ".parquet"))}
    rep = write_outputs(AuditConfig(n_worst=2), ingest, frames, dets, gt, out)
    assert all(0.3 < c["ap"] < 1.0 for c in rep["classes"].values())
    rects, img = _render(out["audit_html"], tmp_path)
    for crop in _crops(rects, img):  # class curves, GT/pseudo-label boxes, radar points
        coloured = (crop.max(axis=2) - crop.min(axis=2)) > 60
        assert coloured.sum() > 200, coloured.sum()


def test_kdpipe_audit_cli_writes_thresholds_back(audit_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kdpipe.cli import app

    wf, ws, st = audit_run
    target = tmp_path / "wf.toml"
    target.write_text(wf.read_text())
    res = CliRunner().invoke(app, ["audit", "-w", str(wf), "--workspace", ws,
                                   "--scheduler", "sync", "--json",
                                   "--set", "audit.criterion=iou_bev",
                                   "--set", "audit.iou_thresholds={Car = 0.01, Cyclist = 0.01, "
                                   "Pedestrian = 0.01}", "--write-thresholds", str(target)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["stage"] == "audit" and Path(out["html"]).is_file()
    rec = out["recommended_thresholds"]
    assert rec, "a 0.01 IoU finds true positives even for a one-epoch teacher"
    assert out["thresholds_written"] == rec
    text = target.read_text()
    assert "# student targets" in text and "# SCKD" in text  # comments kept
    loaded = load_workflow(target)
    assert loaded.deltas["pseudo-label"]["class_thresholds"] == rec
    assert loaded.deltas["pseudo-label"]["sigma"] == 0.1
    assert [line for line in text.splitlines() if "class_thresholds" not in line] == \
        wf.read_text().splitlines()  # one line added, nothing else touched
    plain = CliRunner().invoke(app, ["audit", "-w", str(wf), "--workspace", ws,
                                     "--scheduler", "sync"])
    assert plain.exit_code == 0 and "report:" in plain.stdout and "cached" in plain.stdout
