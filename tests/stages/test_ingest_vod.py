"""VoD ingest on the real fixture frames, every bad-input kind, and a SIGKILL mid-ingest."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.datasets.formats.kitti import read_kitti_calib
from kdpipe.datasets.store_dataset import StoreDataset
from kdpipe.schemas import boxes as bx
from kdpipe.schemas.tables import check_table
from kdpipe.testing import ingest_store, ingest_workflow

FRAMES = ("00549", "01047", "01201")


def workflow(tmp: Path, *roots: Path, **extra: object) -> Path:
    return ingest_workflow(tmp / "wf.toml", roots, "vod", **extra)


def ingest(tmp: Path, *roots: Path, **extra: object) -> Path:
    return ingest_store(tmp, roots, "vod", **extra)


def copy_vod(real: Path, dst: Path, frames: dict[str, str] | None = None) -> Path:
    """A writable VoD root: {new id: fixture id}."""
    frames = frames or {f: f for f in FRAMES}
    for new, old in frames.items():
        for sensor, sub, ext in [("lidar", "velodyne", "bin"), ("radar", "velodyne", "bin"),
                                 ("lidar", "label_2", "txt"), ("lidar", "calib", "txt"),
                                 ("radar", "calib", "txt"), ("lidar", "pose", "json"),
                                 ("lidar", "image_2", "jpg")]:
            d = dst / sensor / "training" / sub
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real / "vod" / sensor / "training" / sub / f"{old}.{ext}",
                            d / f"{new}.{ext}")
    return dst


def test_real_vod_frames(tmp_path: Path, real: Path) -> None:
    art = ingest(tmp_path, real / "vod")
    frames = pl.read_parquet(art / "frames.parquet")
    boxes = pl.read_parquet(art / "boxes.parquet")
    check_table(frames, "frames/1")
    check_table(boxes, "boxes/1")
    assert frames["frame_id"].to_list() == [f"vod/{f}" for f in FRAMES]
    assert pl.read_parquet(art / "rejects.parquet").height == 0
    ds = StoreDataset(art)
    for i, fid in enumerate(FRAMES):
        lidar_bin = real / "vod/lidar/training/velodyne" / f"{fid}.bin"
        radar_bin = real / "vod/radar/training/velodyne" / f"{fid}.bin"
        item = ds[i]
        assert len(item["lidar"]) == lidar_bin.stat().st_size // 16
        assert len(item["radar"]) == radar_bin.stat().st_size // 28
        # LiDAR is the ego frame: stored bytes equal the file's
        np.testing.assert_array_equal(item["lidar"],
                                      np.fromfile(lidar_bin, np.float32).reshape(-1, 4))
        # radar back to its own frame with the calibration table: the raw coordinates
        raw = np.fromfile(radar_bin, np.float32).reshape(-1, 7)
        t_cam_l = read_kitti_calib(real / "vod/lidar/training/calib" / f"{fid}.txt")[
            "T_rect_from_velo"]
        t_cam_r = read_kitti_calib(real / "vod/radar/training/calib" / f"{fid}.txt")[
            "T_rect_from_velo"]
        back = bx.transform_points(np.linalg.inv(t_cam_r) @ t_cam_l, item["radar"][:, :3])
        np.testing.assert_allclose(back, raw[:, :3], atol=2e-4)
        np.testing.assert_array_equal(item["radar"][:, 3:], raw[:, 3:])
        n_lines = len((real / "vod/lidar/training/label_2" / f"{fid}.txt").read_text().splitlines())
        assert len(item["boxes_ego"]) == n_lines
    assert frames["n_boxes"].sum() == boxes.height == 62
    assert set(boxes["label"]) == {"Car", "Cyclist", "Pedestrian", "bicycle", "bicycle_rack",
                                   "moped_scooter", "rider"}
    # labelled objects hold LiDAR points: the box conversion puts them where the points are
    assert (boxes.filter(pl.col("label") == "Car")["num_lidar_pts"] > 50).all()
    calib = pl.read_parquet(art / "calibration.parquet")
    cam = calib.filter(pl.col("sensor") == "camera").row(0, named=True)
    assert (cam["image_width_px"], cam["image_height_px"]) == (1936, 1216)


def test_dataloader_with_workers_reads_the_same(tmp_path: Path, real: Path) -> None:
    art = ingest(tmp_path, real / "vod")
    ds = StoreDataset(art, sensors=("radar",))
    direct = {ds[i]["frame_id"]: ds[i]["radar"] for i in range(len(ds))}
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    seen = {item["frame_id"]: item["radar"] for item in loader}
    assert seen.keys() == direct.keys()
    for k, v in seen.items():
        np.testing.assert_array_equal(np.asarray(v), direct[k])


CORRUPTIONS = {
    # kind: (file to corrupt, how, expected check)
    "truncated_bin": ("lidar/training/velodyne/{f}.bin",
                      lambda p: p.write_bytes(p.read_bytes()[:-5]), "size"),
    "nan_coords": ("radar/training/velodyne/{f}.bin",
                   lambda p: p.write_bytes(np.full((3, 7), np.nan, np.float32).tobytes()),
                   "finite"),
    "empty_cloud": ("radar/training/velodyne/{f}.bin", lambda p: p.write_bytes(b""), "empty"),
    "missing_calib": ("radar/training/calib/{f}.txt", lambda p: p.unlink(), "missing"),
    "calib_without_p2": ("lidar/training/calib/{f}.txt",
                         lambda p: p.write_text("\n".join(x for x in p.read_text().splitlines()
                                                          if not x.startswith("P2"))), "calib"),
    "missing_pose": ("lidar/training/pose/{f}.json", lambda p: p.unlink(), "missing"),
    "corrupt_pose": ("lidar/training/pose/{f}.json", lambda p: p.write_text("{not json"), "pose"),
    "unknown_class": ("lidar/training/label_2/{f}.txt",
                      lambda p: p.write_text(p.read_text().replace("Pedestrian", "Dinosaur", 1)),
                      "class"),
    "negative_size": ("lidar/training/label_2/{f}.txt",
                      lambda p: p.write_text("Car 0 0 0 10 10 50 90 -1.5 1.6 3.9 1 1 10 0 1\n"),
                      "box_size"),
    "bad_label_line": ("lidar/training/label_2/{f}.txt", lambda p: p.write_text("Car 0 0\n"),
                       "label"),
    "missing_lidar": ("lidar/training/velodyne/{f}.bin", lambda p: p.unlink(), "missing"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_input_becomes_one_reject_and_the_rest_goes_on(tmp_path: Path, real: Path,
                                                           kind: str) -> None:
    root = copy_vod(real, tmp_path / "vod")
    rel, corrupt, check = CORRUPTIONS[kind]
    corrupt(root / rel.format(f="01047"))
    art = ingest(tmp_path, root)
    frames = pl.read_parquet(art / "frames.parquet")
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert frames["frame"].to_list() == ["00549", "01201"]
    assert rejects.height == 1, rejects
    r = rejects.row(0, named=True)
    assert (r["frame"], r["check"]) == ("01047", check), r
    assert r["reason"] and "01047" in r["file"]
    assert frames.height + rejects.height == len(FRAMES)  # input = ingested + rejected


def test_accumulated_radar_both_spellings(tmp_path: Path, real: Path) -> None:
    root = copy_vod(real, tmp_path / "vod")
    for n, spelling in ((3, "radar_3frames"), (5, "radar_5_scans")):
        d = root / spelling / "training" / "velodyne"
        d.mkdir(parents=True)
        for f in FRAMES:
            one = np.fromfile(root / "radar/training/velodyne" / f"{f}.bin",
                              np.float32).reshape(-1, 7)
            scans = [one.copy() for _ in range(n)]
            for t, s in enumerate(scans):
                s[:, 6] = -t
            np.concatenate(scans).tofile(d / f"{f}.bin")
    art = ingest(tmp_path, root)
    ds = StoreDataset(art, sensors=("radar", "radar_3", "radar_5"))
    item = ds[0]
    assert len(item["radar_3"]) == 3 * len(item["radar"]) \
        and len(item["radar_5"]) == 5 * len(item["radar"])
    assert sorted(set(item["radar_5"][:, 6].tolist())) == [-4, -3, -2, -1, 0]


def test_sigkill_mid_ingest_redoes_only_unfinished_groups(tmp_path: Path, real: Path) -> None:
    ids = {f"{i:05d}": FRAMES[i % 3] for i in range(10)}
    root = copy_vod(real, tmp_path / "vod", ids)
    wf = workflow(tmp_path, root, block_frames=1)
    clean = run_workflow(wf, str(tmp_path / "clean"), scheduler="sync")
    ws = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "kdpipe", "run", "--workflow", str(wf),
                             "--workspace", str(ws), "--scheduler", "sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(ws.glob("artifacts/ingest/*.partial/_parts/*/*/_done"))) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = next(ws.glob("artifacts/ingest/*.partial"))
    done = sorted(p.parent.name for p in partial.glob("_parts/*/*/_done"))
    assert 3 <= len(done) < 10
    before = {s: (partial / "points.zarr/vod" / s / "lidar/points/zarr.json").stat().st_mtime_ns
              for s in done}
    rep = run_workflow(wf, str(ws), scheduler="sync")
    art = Path(rep["stages"][0]["path"])
    after = {s: (art / "points.zarr/vod" / s / "lidar/points/zarr.json").stat().st_mtime_ns
             for s in done}
    assert after == before  # finished groups were not rewritten
    clean_art = Path(clean["stages"][0]["path"])
    for name in ("frames", "boxes", "calibration", "rejects", "_sources"):
        assert (art / f"{name}.parquet").read_bytes() \
            == (clean_art / f"{name}.parquet").read_bytes()
    from kdpipe.pipeline.hashing import digest_path

    assert digest_path(art / "points.zarr") == digest_path(clean_art / "points.zarr")
    lin = [json.loads((x / "_lineage.json").read_text()) for x in (art, clean_art)]
    assert lin[0]["outputs"] == lin[1]["outputs"]  # digests recorded while writing agree too
    # every raw file (7 a frame), resumed groups included
    assert lin[0]["sources"]["files"] == 10 * 7


def test_synthetic_vod_world_matches_the_official_devkit(tmp_path: Path) -> None:
    """`kdpipe synth vod` output through ingest agrees with what vod-tudelft reads."""
    from vod.configuration import KittiLocations
    from vod.frame import FrameDataLoader

    from kdpipe.datasets.synth import write_vod

    root = tmp_path / "synth"
    write_vod(root, 6, seed=3)
    art = ingest(tmp_path, root)
    frames = pl.read_parquet(art / "frames.parquet")
    assert frames.height == 6 and pl.read_parquet(art / "rejects.parquet").height == 0
    assert set(frames["split"]) <= {"train", "val", "unlabeled"}
    boxes = pl.read_parquet(art / "boxes.parquet")
    ds = StoreDataset(art)
    loc = KittiLocations(root_dir=str(root))
    for i, row in enumerate(frames.iter_rows(named=True)):
        fd = FrameDataLoader(kitti_locations=loc, frame_number=row["frame"])
        item = ds[i]
        np.testing.assert_array_equal(item["lidar"], fd.lidar_data)
        assert len(item["radar"]) == len(fd.radar_data)
        np.testing.assert_array_equal(item["radar"][:, 3:], fd.radar_data[:, 3:])
        assert len(item["boxes_ego"]) == len(fd.raw_labels) == row["n_boxes"]
    assert (boxes["num_lidar_pts"] >= 3).all()  # the synthetic annotation rule, seen through ingest
