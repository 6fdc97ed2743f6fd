"""kitti-radar ingest: the real KITTI frames (LiDAR-only), a kitti-radar root built from the real
VoD frames with a shuffled radar column map (checked against the VoD ingest of the same frames),
and one reject per kind of bad input."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import zarr

from kdpipe.datasets.formats.kitti import read_kitti_calib
from kdpipe.datasets.store_dataset import StoreDataset
from kdpipe.schemas.tables import check_table
from kdpipe.testing import ingest_store

KITTI = ("000000", "000001", "000002")
VOD = ("00549", "01047", "01201")
# the VoD radar columns written in another order, plus a column the map leaves out and one it adds
FILE_COLS = ("time", "v_r", "pad", "x", "rcs", "y", "snr", "z", "v_r_comp")
COLUMN_MAP = {"x": 3, "y": 5, "z": 7, "rcs": 4, "v_r": 1, "v_r_comp": 8, "time": 0, "snr": 6}
VOD_RADAR = ("x", "y", "z", "rcs", "v_r", "v_r_comp", "time")


def ingest(tmp: Path, root: Path, fmt: str = "kitti-radar", ws: str = "ws", **extra: Any) -> Path:
    return ingest_store(tmp, root, fmt, ws, **extra)


def test_real_kitti_frames_lidar_only(tmp_path: Path, real: Path) -> None:
    art = ingest(tmp_path, real / "kitti", block_frames=2)
    frames = pl.read_parquet(art / "frames.parquet")
    boxes = pl.read_parquet(art / "boxes.parquet")
    calib = pl.read_parquet(art / "calibration.parquet")
    for name, df in (("frames", frames), ("boxes", boxes), ("calibration", calib)):
        check_table(df, f"{name}/1")
    assert pl.read_parquet(art / "rejects.parquet").height == 0
    assert frames["frame"].to_list() == list(KITTI)
    assert frames["scene"].to_list() == ["block_00000", "block_00000", "block_00001"]
    ds = StoreDataset(art)
    train = real / "kitti/training"
    for i, fid in enumerate(KITTI):
        item, f = ds[i], frames.row(i, named=True)
        lidar_bin = train / "velodyne" / f"{fid}.bin"
        assert f["n_lidar"] == len(item["lidar"]) == lidar_bin.stat().st_size // 16
        raw = np.fromfile(lidar_bin, np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(item["lidar"], raw)  # LiDAR = ego frame: the file's bytes
        assert item["radar"].shape == (0, 7) and f["n_radar"] == 0 and f["radar_path"] is None
        lines = [ln.split() for ln in (train / "label_2" / f"{fid}.txt").read_text().splitlines()]
        kept = [ln[0] for ln in lines if ln[0] != "DontCare"]  # DontCare regions are not boxes
        assert f["n_boxes"] == len(kept) and list(item["labels"]) == kept
        cal = read_kitti_calib(train / "calib" / f"{fid}.txt")
        cam = calib.filter((pl.col("frame_id") == f["frame_id"])
                           & (pl.col("sensor") == "camera")).row(0, named=True)
        np.testing.assert_allclose(np.reshape(cam["intrinsics"], (3, 4)), cal["P2"])
        np.testing.assert_allclose(np.reshape(cam["t_ego_from_sensor"], (4, 4)),
                                   np.linalg.inv(cal["R0_rect_4x4"] @ cal["Tr_velo_to_cam_4x4"]))
        # bottom centres (ego z - h/2) back in the camera frame are the label locations
        b = boxes.filter(pl.col("frame_id") == f["frame_id"]).sort("box_index")
        keep = [ln for ln in lines if ln[0] != "DontCare"]
        bottom = np.column_stack([b["x_ego_m"], b["y_ego_m"], b["z_ego_m"] - b["height_m"] / 2,
                                  np.ones(b.height)])
        cam_xyz = (cal["T_rect_from_velo"] @ bottom.T).T[:, :3]
        want = [[float(v) for v in ln[11:14]] for ln in keep]
        np.testing.assert_allclose(cam_xyz, want, atol=1e-6)
        np.testing.assert_allclose(b.select("height_m", "width_m", "length_m").to_numpy(),
                                   [[float(v) for v in ln[8:11]] for ln in keep])
    assert boxes["num_radar_pts"].is_null().all() and boxes["num_lidar_pts"].max() > 100
    assert boxes["label"].to_list() == ["Pedestrian", "Truck", "Car", "Cyclist", "Misc", "Car"]


def kitti_from_vod(real: Path, dst: Path, training: bool = False) -> Path:
    """A kitti-radar root from the real VoD frames: `lidar/` folder name, radar columns shuffled
    (FILE_COLS), radar->camera as Tr_radar_to_cam in the one calib file, ImageSets."""
    base = dst / "training" if training else dst
    vod = real / "vod"
    for sub in ("lidar", "radar", "label_2", "calib", "image_2"):
        (base / sub).mkdir(parents=True)
    for fid in VOD:
        for sub, dst_sub, ext in (("velodyne", "lidar", "bin"), ("label_2", "label_2", "txt"),
                                  ("image_2", "image_2", "jpg")):
            shutil.copyfile(vod / "lidar/training" / sub / f"{fid}.{ext}",
                            base / dst_sub / f"{fid}.{ext}")
        raw = np.fromfile(vod / "radar/training/velodyne" / f"{fid}.bin", np.float32).reshape(-1, 7)
        cols = dict(zip(VOD_RADAR, raw.T, strict=True))
        cols |= {"pad": np.full(len(raw), -7.0), "snr": np.arange(len(raw)) * 0.5}
        radar = np.column_stack([cols[c] for c in FILE_COLS]).astype(np.float32)
        radar.tofile(base / "radar" / f"{fid}.bin")
        radar_calib = (vod / "radar/training/calib" / f"{fid}.txt").read_text().splitlines()
        tr = next(ln for ln in radar_calib if ln.startswith("Tr_velo_to_cam"))
        text = (vod / "lidar/training/calib" / f"{fid}.txt").read_text().rstrip("\n")
        tr = tr.replace("Tr_velo_to_cam", "Tr_radar_to_cam")
        (base / "calib" / f"{fid}.txt").write_text(f"{text}\n{tr}\n")
    (dst / "ImageSets").mkdir()
    (dst / "ImageSets/train.txt").write_text("00549\n01047\n")
    (dst / "ImageSets/val.txt").write_text("01201\n")
    return dst


@pytest.mark.parametrize("training", [False, True])
def test_radar_column_map_matches_the_vod_ingest(tmp_path: Path, real: Path,
                                                 training: bool) -> None:
    root = kitti_from_vod(real, tmp_path / "zju", training)
    art = ingest(tmp_path, root, radar_columns=COLUMN_MAP, radar_n_fields=len(FILE_COLS))
    ref = ingest(tmp_path, real / "vod", fmt="vod", ws="ws_vod")
    frames = pl.read_parquet(art / "frames.parquet")
    assert pl.read_parquet(art / "rejects.parquet").height == 0
    assert frames["split"].to_list() == ["train", "train", "val"] and frames["labeled"].all()
    group = art / "points.zarr/zju" / frames["scene"][0]
    attrs = zarr.open_array(str(group / "radar/points"), mode="r").attrs
    assert attrs["fields"] == [*VOD_RADAR, "snr"]  # x, y, z first, then the map's order
    assert attrs["units"] == ["m", "m", "m", "dBsm", "m/s", "m/s", "scan", "unknown"]
    mine, theirs = StoreDataset(art), StoreDataset(ref)
    for i in range(len(VOD)):
        a, b = mine[i], theirs[i]
        np.testing.assert_array_equal(a["lidar"], b["lidar"])
        np.testing.assert_allclose(a["radar"][:, :7], b["radar"], atol=1e-5)  # same ego radar
        np.testing.assert_array_equal(a["radar"][:, 7], np.arange(len(a["radar"])) * 0.5)  # snr
        np.testing.assert_allclose(a["boxes_ego"], b["boxes_ego"], atol=1e-6)
        assert list(a["labels"]) == list(b["labels"])
    for name in ("boxes", "calibration"):
        x = pl.read_parquet(art / f"{name}.parquet").drop("frame_id")
        y = pl.read_parquet(ref / f"{name}.parquet").drop("frame_id")
        assert x.sort(x.columns[:2]).equals(y.sort(y.columns[:2])), name


# ----------------------------------------------------------------------------- bad input

def _drop_line(prefix: str) -> Any:
    return lambda p: p.write_text("".join(ln for ln in p.read_text().splitlines(True)
                                          if not ln.startswith(prefix)))


def _cut(n: int) -> Any:
    return lambda p: p.write_bytes(p.read_bytes()[:-n])


CORRUPTIONS = {  # kind: (root kind, file, corruption, check)
    "truncated_lidar": ("kitti", "velodyne/{f}.bin", _cut(6), "size"),
    "missing_lidar": ("kitti", "velodyne/{f}.bin", lambda p: p.unlink(), "missing"),
    "missing_calib": ("kitti", "calib/{f}.txt", lambda p: p.unlink(), "missing"),
    "calib_without_p2": ("kitti", "calib/{f}.txt", _drop_line("P2"), "calib"),
    "bad_label_line": ("kitti", "label_2/{f}.txt", lambda p: p.write_text("Car 0 0\n"), "label"),
    "negative_size": ("kitti", "label_2/{f}.txt",
                      lambda p: p.write_text("Car 0 0 0 10 10 50 90 -1.5 1.6 3.9 1 1 10 0\n"),
                      "box_size"),
    "radar_nan": ("radar", "radar/{f}.bin",
                  lambda p: p.write_bytes(np.full((2, 9), np.nan, np.float32).tobytes()), "finite"),
    "radar_truncated": ("radar", "radar/{f}.bin", _cut(4), "size"),
    "missing_radar": ("radar", "radar/{f}.bin", lambda p: p.unlink(), "missing"),
    "bad_radar_calib": ("radar", "calib/{f}.txt",
                        lambda p: p.write_text(p.read_text() + "Tr_radar_to_cam: 1 0 0\n"),
                        "calib"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_input_becomes_one_reject(tmp_path: Path, real: Path, kind: str) -> None:
    root_kind, rel, corrupt, check = CORRUPTIONS[kind]
    if root_kind == "kitti":
        root, ids, extra = tmp_path / "kitti", KITTI, {}
        shutil.copytree(real / "kitti/training", root / "training")
        base = root / "training"
    else:
        root, ids = kitti_from_vod(real, tmp_path / "zju"), VOD
        extra = {"radar_columns": COLUMN_MAP, "radar_n_fields": len(FILE_COLS)}
        base = root
    victim = ids[1]
    if kind == "bad_radar_calib":  # a second Tr_radar_to_cam line replaces the good one
        _drop_line("Tr_radar_to_cam")(base / rel.format(f=victim))
    corrupt(base / rel.format(f=victim))
    art = ingest(tmp_path, root, **extra)
    frames = pl.read_parquet(art / "frames.parquet")
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert rejects.height == 1, rejects
    r = rejects.row(0, named=True)
    assert (r["frame"], r["check"]) == (victim, check), r
    assert r["reason"] and victim in r["file"]
    assert frames["frame"].to_list() == [ids[0], ids[2]]  # the others are ingested
