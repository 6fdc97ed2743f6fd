"""`kdpipe show FRAME_ID`: a non-blank bird's-eye PNG of a synthetic VoD frame, detections drawn
when given, the no-display line for --open3d, and one error line with near matches."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from kdpipe.cli import app
from kdpipe.schemas.tables import DETECTIONS, frame_table
from kdpipe.stages.audit.bev import GT_COLOR, PRED_COLOR, RADAR_COLOR
from kdpipe.testing import ingest_store


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> Path:
    tmp = tmp_path_factory.mktemp("show")
    ingest_store(tmp, vod_world)
    return tmp / "ws"


def _pixels(png: Path, hex_color: str, tol: int = 40) -> int:
    """Pixels within `tol` (per channel) of a colour: radar dots, GT fills, prediction lines."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)  # (H, W, 3)
    want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).max(axis=-1) <= tol).sum())


def test_show_writes_a_bev_png(ws: Path, tmp_path: Path) -> None:
    png = tmp_path / "f.png"
    res = CliRunner().invoke(app, ["show", "vod_synth/00011", "--workspace", str(ws), "--out",
                                   str(png), "--open3d", "--json"], env={"DISPLAY": ""})
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["open3d"] == "no display" and rep["n_radar"] > 0 and rep["n_gt"] > 0
    rgb = np.asarray(Image.open(png).convert("RGB"))
    assert rgb.shape[0] > 300 and (rgb.min(axis=-1) < 200).mean() > 0.02  # not blank
    assert _pixels(png, RADAR_COLOR) > 50 and _pixels(png, GT_COLOR, tol=90) > 50
    assert _pixels(png, PRED_COLOR) == 0


def test_show_draws_detections_and_says_no_display(ws: Path, tmp_path: Path) -> None:
    dets = frame_table([{"frame_id": "vod_synth/00011", "det_index": i, "label": "Car",
                         "score": s, "x_ego_m": 20.0 + 8 * i, "y_ego_m": -5.0, "z_ego_m": -0.5,
                         "length_m": 4.0, "width_m": 1.8, "height_m": 1.5, "yaw_ego_rad": 0.3}
                        for i, s in enumerate([0.9, 0.6, 0.02])], DETECTIONS)
    dets.write_parquet(tmp_path / "dets.parquet")
    res = CliRunner().invoke(app, ["show", "00011", "--workspace", str(ws), "--out",
                                   str(tmp_path / "d.png"), "--detections",
                                   str(tmp_path / "dets.parquet"), "--open3d"],
                             env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert res.exit_code == 0, res.output
    assert "2 detections" in res.stdout  # the 0.02 box is under --min-score 0.1
    assert "no display" in res.stdout
    assert _pixels(tmp_path / "d.png", PRED_COLOR) > 30


def test_unknown_frame_is_one_error_line_with_near_matches(ws: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "kdpipe", "show", "vod_synth/0011",
                          "--workspace", str(ws)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "near matches" in lines[0] and "vod_synth/00011" in lines[0]


def test_open3d_geometries_without_a_window(ws: Path) -> None:
    from kdpipe.show import o3d_geometries, render_frame

    rep = render_frame(str(ws), "vod_synth/00003", ws.parent / "g.png")
    lidar, radar, gt, pred = rep["_arrays"]
    geoms = o3d_geometries(lidar, radar, gt, gt[:2])
    assert len(geoms) == 2 + len(gt) + 2
    assert len(geoms[0].points) == len(lidar) and len(geoms[1].points) == len(radar)
    assert all(len(g.lines) == 12 for g in geoms[2:])
    frames = pl.read_parquet(Path(rep["ingest"]) / "frames.parquet")
    assert frames.filter(pl.col("frame_id") == "vod_synth/00003")["n_lidar"].item() == len(lidar)
