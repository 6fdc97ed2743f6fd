"""`kdpipe curate` as users call it, and every export read back: the KITTI/VoD skeleton by
kdpipe's own VoD ingest (labels and calib through the project's KITTI reader), the nuScenes
tokens by nuscenes-devkit, the CSV by polars."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kdpipe.api import run_workflow
from kdpipe.cli import app
from kdpipe.curate_export import export_selection
from kdpipe.datasets.formats.kitti import read_kitti_calib, read_kitti_labels
from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.pipeline.errors import KdpipeError
from kdpipe.testing import ingest_store, ingest_workflow


class Out:
    def __init__(self, code: int, stdout: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, ""


def kd(*args: str | Path) -> Out:
    """The CLI in-process (typer's runner); input errors propagate as exceptions."""
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Out(res.exit_code, res.stdout)


@pytest.fixture(scope="module")
def vod_ws(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> tuple[Path, Path, Path]:
    """(workflow with ingest only, workspace, ingest artifact) on the synthetic VoD world."""
    tmp = tmp_path_factory.mktemp("curate_cli")
    wf = ingest_workflow(tmp / "ingest.toml", vod_world, block_frames=10)
    rep = run_workflow(wf, str(tmp / "ws"), scheduler="sync")
    return wf, tmp / "ws", Path(rep["stages"][0]["path"])


def test_curate_cli_budget_where_and_json(vod_ws: tuple[Path, Path, Path]) -> None:
    wf, ws, art = vod_ws
    frames = pl.read_parquet(art / "frames.parquet")
    cut = 240
    res = kd("curate", "-w", wf, "--workspace", ws, "--strategy", "radar-density",
             "--budget", 4, "--where", f"n_radar > {cut}", "--where", "frame_index >= 2",
             "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["stage"] == "curate-frames" and rep["added_to_workflow"]
    want = frames.filter((pl.col("split") == "unlabeled") & (pl.col("n_radar") > cut)
                         & (pl.col("frame_index") >= 2))
    assert rep["summary"]["candidates"] == want.height > 4
    got = pl.read_parquet(rep["selection"])
    assert got.height == 4 and set(got["frame_id"]) <= set(want["frame_id"])
    assert got["score"].to_list() == sorted(want["n_radar"].to_list(), reverse=True)[:4]
    again = json.loads(kd("curate", "-w", wf, "--workspace", ws, "--strategy",
                          "radar-density", "--budget", 4, "--where", f"n_radar > {cut}",
                          "--where", "frame_index >= 2", "--json").stdout)
    assert again["status"] == "cached" and again["frames"] == rep["frames"]


def test_curate_cli_reports_a_short_budget_in_words(vod_ws: tuple[Path, Path, Path]) -> None:
    wf, ws, _ = vod_ws
    res = kd("curate", "-w", wf, "--workspace", ws, "--budget", 500, "--seed", 3)
    assert res.returncode == 0, res.stderr
    assert "selected 24 of budget 500 from 24 candidate frame(s)" in res.stdout
    assert "476 short of the budget" in res.stdout


@pytest.mark.parametrize("args, msg", [
    (["--where", "n_radar >"], "unable to parse"),
    (["--where", "n_radar_pts > 3"], "unknown column"),
    (["--strategy", "uncertainty"], "needs teacher detections"),
    (["--export", "kitti"], "--export and --out go together"),
])
def test_curate_cli_input_errors(vod_ws: tuple[Path, Path, Path], args: list[str],
                                 msg: str) -> None:
    wf, ws, _ = vod_ws
    with pytest.raises(KdpipeError, match=msg) as e:
        kd("curate", "-w", wf, "--workspace", ws, *args)
    assert "\n" not in str(e.value)


def test_curate_cli_error_is_one_line_and_exit_2(vod_ws: tuple[Path, Path, Path]) -> None:
    wf, ws, _ = vod_ws
    res = subprocess.run([sys.executable, "-m", "kdpipe", "curate", "-w", str(wf),
                          "--workspace", str(ws), "--where", "n_radar >"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("running")]
    assert len(lines) == 1 and "unable to parse" in lines[0], res.stderr


def test_kitti_skeleton_reads_back_through_vod_ingest(vod_ws: tuple[Path, Path, Path],
                                                      tmp_path: Path) -> None:
    wf, ws, art = vod_ws
    out = tmp_path / "skeleton"
    res = kd("curate", "-w", wf, "--workspace", ws, "--strategy", "diversity", "--budget", 6,
             "--export", "kitti", "--out", out, "--split-name", "train", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    sel = pl.read_parquet(rep["selection"])
    stems = sel["frame"].to_list()
    assert (out / "lidar/ImageSets/train.txt").read_text().split() == stems  # rank order
    for stem in stems:
        assert len(read_kitti_labels(out / "lidar/training/label_2" / f"{stem}.txt")) == 0
        ours = read_kitti_calib(out / "lidar/training/calib" / f"{stem}.txt")
        raw = read_kitti_calib(Path(sel.filter(pl.col("frame") == stem)["lidar_path"][0])
                               .parents[1] / "calib" / f"{stem}.txt")
        np.testing.assert_array_equal(ours["T_rect_from_velo"], raw["T_rect_from_velo"])
    # the skeleton is a VoD release: kdpipe's VoD ingest reads it, nothing rejected
    again = ingest_store(tmp_path, out, block_frames=10)
    assert pl.read_parquet(again / "rejects.parquet").is_empty()
    back = pl.read_parquet(again / "frames.parquet")
    assert sorted(back["frame"]) == sorted(stems)
    assert set(back["split"]) == {"train"} and back["n_boxes"].sum() == 0
    orig = pl.read_parquet(art / "frames.parquet").filter(pl.col("frame").is_in(stems))
    cols = ["frame", "n_lidar", "n_radar", "image_sha256"]
    assert back.select(cols).sort("frame").equals(orig.select(cols).sort("frame"))
    np.testing.assert_allclose(np.stack(back.sort("frame")["t_world_from_ego"].to_numpy()),
                               np.stack(orig.sort("frame")["t_world_from_ego"].to_numpy()))
    manifest = pl.read_csv(out / "manifest.csv")
    assert manifest["frame_id"].to_list() == sel["frame_id"].to_list()
    assert manifest["lidar_bin"].to_list() == sel["lidar_path"].to_list()
    assert (out / "lidar/training/velodyne" / f"{stems[0]}.bin").stat().st_nlink >= 2


def test_symlink_skeleton_points_at_the_raw_files(vod_ws: tuple[Path, Path, Path],
                                                  tmp_path: Path) -> None:
    wf, ws, _ = vod_ws
    rep = json.loads(kd("curate", "-w", wf, "--workspace", ws, "--budget", 3, "--json").stdout)
    export_selection(rep["selection"], "kitti", tmp_path / "k", files="symlink")
    sel = pl.read_parquet(rep["selection"])
    for row in sel.iter_rows(named=True):
        link = tmp_path / "k/radar/training/velodyne" / f"{row['frame']}.bin"
        assert link.is_symlink() and os.readlink(link) == str(Path(row["radar_path"]).resolve())
    with pytest.raises(KdpipeError, match="not empty"):
        export_selection(rep["selection"], "kitti", tmp_path / "k")
    with pytest.raises(KdpipeError, match="need nuScenes frames"):
        export_selection(rep["selection"], "nuscenes", tmp_path / "n")


def test_csv_export_reads_back(vod_ws: tuple[Path, Path, Path], tmp_path: Path) -> None:
    wf, ws, _ = vod_ws
    res = kd("curate", "-w", wf, "--workspace", ws, "--strategy", "radar-density", "--budget",
             5, "--export", "csv", "--out", tmp_path / "c", "--json")
    assert res.returncode == 0, res.stderr
    sel = pl.read_parquet(json.loads(res.stdout)["selection"])
    back = pl.read_csv(tmp_path / "c/selection.csv", schema_overrides={"frame": pl.String})
    assert back.columns[:2] == ["rank", "frame_id"]
    for col in ["rank", "frame_id", "scene", "frame", "reason", "lidar_path", "radar_path",
                "image_path"]:
        assert back[col].cast(pl.String).to_list() == sel[col].cast(pl.String).to_list(), col
    np.testing.assert_allclose(back["score"].to_numpy(), sel["score"].to_numpy())


def test_nuscenes_tokens_read_back_with_the_devkit(tmp_path: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    write_nuscenes(tmp_path / "nus", 2, seed=3, cfg=SynthConfig(
        nus_samples_per_scene=3, image_scale=0.25, nus_lidar_azimuths=256, nus_radar_sweeps=1))
    ingest_store(tmp_path, tmp_path / "nus", "nuscenes", camera_channels=[])
    wf = tmp_path / "wf_ingest_nuscenes_ws.toml"  # written by ingest_store
    res = kd("curate", "-w", wf, "--workspace", tmp_path / "ws", "--set",
             "curate-frames.splits=[]", "--budget", 4, "--export", "nuscenes", "--out",
             tmp_path / "t", "--json")
    assert res.returncode == 0, res.stderr
    sel = pl.read_parquet(json.loads(res.stdout)["selection"])
    doc = json.loads((tmp_path / "t/sample_tokens.json").read_text())
    assert doc["sample_tokens"] == sel["frame"].to_list() and len(doc["sample_tokens"]) == 4
    assert sel["scene"].n_unique() == 2  # diversity: both scenes
    nusc = NuScenes(version="v1.0-mini", dataroot=str(tmp_path / "nus"), verbose=False)
    for s in doc["samples"]:
        sample = nusc.get("sample", s["sample_token"])
        assert nusc.get("scene", sample["scene_token"])["name"] == s["scene"]
