"""`kdpipe export kitti|nuscenes` as users call it: files that read back, one-line errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kdpipe.datasets.formats.kitti import read_kitti_labels
from kdpipe.datasets.synth import SynthConfig, write_nuscenes, write_vod
from kdpipe.schemas.tables import PSEUDO_LABELS
from kdpipe.testing import ingest_store as ingest

KDPIPE = [sys.executable, "-m", "kdpipe"]


def kd(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KDPIPE, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def vod(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("vod")
    write_vod(tmp / "synth", 4, seed=3)
    return tmp / "synth", ingest(tmp, tmp / "synth", "vod")


@pytest.fixture(scope="module")
def nus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("nus")
    write_nuscenes(tmp / "nus", 2, seed=3, cfg=SynthConfig(
        nus_samples_per_scene=3, image_scale=0.25, nus_lidar_azimuths=256, nus_radar_sweeps=1))
    return tmp / "nus", ingest(tmp, tmp / "nus", "nuscenes", camera_channels=[])


def test_kitti_export_of_ground_truth_reads_back(tmp_path: Path, vod: tuple[Path, Path]) -> None:
    root, art = vod
    res = kd("export", "kitti", art / "boxes.parquet", "--ingest", art, "--out", tmp_path / "k",
             "--split", "val", "--json")
    assert res.returncode == 0, res.stderr
    frames = pl.read_parquet(art / "frames.parquet")
    val = frames.filter(pl.col("split") == "val")["frame"].to_list()
    summary = json.loads(res.stdout)
    assert summary["n_files"] == len(val) > 0
    with (tmp_path / "k" / "frame_map.csv").open() as f:
        assert [r["stem"] for r in csv.DictReader(f)] == val
    assert sorted(p.stem for p in (tmp_path / "k").glob("*.txt")) == sorted(val)
    for stem in val:  # the exported file is the original label file, value for value
        ours = read_kitti_labels(tmp_path / "k" / f"{stem}.txt")
        orig = read_kitti_labels(root / "lidar/training/label_2" / f"{stem}.txt")
        assert list(ours.class_name) == list(orig.class_name) and ours.has_score
        np.testing.assert_allclose(ours.rows(), orig.rows(), atol=1e-9)


def test_kitti_export_of_pseudo_labels(tmp_path: Path, vod: tuple[Path, Path]) -> None:
    _, art = vod
    boxes = pl.read_parquet(art / "boxes.parquet")
    one = boxes["frame_id"][0]
    pseudo = (boxes.filter(pl.col("frame_id") == one)
              .with_columns(det_index=pl.col("box_index"), score=pl.lit(0.5),
                            state=pl.when(pl.col("box_index") % 2 == 0).then(pl.lit("positive"))
                            .otherwise(pl.lit("ignore")))
              .select(list(PSEUDO_LABELS)))
    pseudo.write_parquet(tmp_path / "pl.parquet")
    n_pos = (pseudo["state"] == "positive").sum()
    for flags, n in (([], n_pos), (["--all-states"], pseudo.height)):
        out = tmp_path / f"k{len(flags)}"
        res = kd("export", "kitti", tmp_path / "pl.parquet", "--ingest", art, "--out", out,
                 "--table-frames", *flags)
        assert res.returncode == 0, res.stderr
        files = sorted(out.glob("*.txt"))
        assert [p.stem for p in files] == [one.split("/")[1]]
        lab = read_kitti_labels(files[0])
        assert len(lab) == n and np.allclose(lab.score, 0.5)
        assert (lab.bbox_ltrb[:, 3] > lab.bbox_ltrb[:, 1]).all()  # projected 2D boxes
    # all frames of the ingest by default: empty files for the others
    res = kd("export", "kitti", tmp_path / "pl.parquet", "--ingest", art, "--out", tmp_path / "all")
    assert res.returncode == 0, res.stderr
    sizes = {p.stem: p.stat().st_size for p in (tmp_path / "all").glob("*.txt")}
    assert len(sizes) == 4 and sum(s == 0 for s in sizes.values()) == 3


def test_nuscenes_export_loads_in_the_devkit(tmp_path: Path, nus: tuple[Path, Path]) -> None:
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    _, art = nus
    out = tmp_path / "sub.json"
    res = kd("export", "nuscenes", art / "boxes.parquet", "--ingest", art, "--out", out,
             "--split", "val")
    assert res.returncode == 0, res.stderr
    preds, meta = load_prediction(str(out), 500, DetectionBox)
    frames = pl.read_parquet(art / "frames.parquet").filter(pl.col("split") == "val")
    assert set(preds.sample_tokens) == set(frames["frame"]) and meta["use_radar"]
    boxes = pl.read_parquet(art / "boxes.parquet").filter(
        pl.col("frame_id").is_in(frames["frame_id"].implode()) & pl.col("label").is_not_null()
        & ((pl.col("num_lidar_pts") + pl.col("num_radar_pts")) > 0))
    assert len(preds.all) == boxes.height > 0


def assert_one_line_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], res.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, vod: tuple[Path, Path],
                                          nus: tuple[Path, Path]) -> None:
    _, art = vod
    boxes = pl.read_parquet(art / "boxes.parquet")
    boxes.with_columns(frame_id=pl.lit("synth/99999")).write_parquet(tmp_path / "alien.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    out = tmp_path / "o"
    cases = [
        (["kitti", tmp_path / "none.parquet", "--ingest", art, "--out", out], "table not found"),
        (["kitti", art / "frames.parquet", "--ingest", art, "--out", out], "no box columns"),
        (["kitti", tmp_path / "alien.parquet", "--ingest", art, "--out", out],
         "not in the ingest"),
        (["kitti", tmp_path / "junk.parquet", "--ingest", art, "--out", out], "not a readable"),
        (["kitti", art / "boxes.parquet", "--ingest", tmp_path / "nope", "--out", out],
         "ingest artifact directory not found"),
        (["kitti", art / "boxes.parquet", "--ingest", art, "--out", out, "--split", "tset"],
         "no frames of split 'tset'"),
        (["nuscenes", art / "boxes.parquet", "--ingest", art, "--out", out / "s.json"],
         "needs a nuScenes ingest"),
    ]
    for args, text in cases:
        assert_one_line_error(kd("export", *args), text)
    assert not any(out.glob("*.txt"))
