"""nuScenes ingest vs nuscenes-devkit on a synthetic world and on the real nuScenes point files.

The synthetic world (2 scenes x 3 keyframes, five radars with sweeps, cameras) goes through the
whole stage; every stored value is compared with what the devkit reads from the same files. The
real LIDAR_TOP scan and the three real radar PCDs go through a tiny nuScenes-schema dataroot built
in tmp_path around copies of them. Bad input: one corrupted copy per kind -> one reject.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import zarr
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud
from nuscenes.utils.geometry_utils import transform_matrix
from pyquaternion import Quaternion

from kdpipe.datasets import nuscenes as nus
from kdpipe.datasets import nuscenes_io as nio
from kdpipe.datasets import shard_writer as sw
from kdpipe.datasets.common import Storage
from kdpipe.datasets.nuscenes import NuscenesIngestConfig as IngestConfig
from kdpipe.datasets.store_dataset import StoreDataset
from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.pipeline.errors import KdpipeError
from kdpipe.schemas.tables import check_table
from kdpipe.testing import ingest_store

V = "v1.0-mini"
RADARS = nio.RADARS
COL = {n: i for i, n in enumerate(nio.RADAR_FIELDS)}
NATIVE = ("dyn_prop", "id", "rcs", "is_quality_valid", "ambig_state", "x_rms", "y_rms",
          "invalid_state", "pdh0", "vx_rms", "vy_rms")
# RadarPointCloud row of each native field (the PCD field order)
DEVKIT_ROW = {n: i for i, n in enumerate(
    ("x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
     "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms"))}


def ingest(tmp: Path, root: Path, ws: str = "ws", **extra: Any) -> Path:
    return ingest_store(tmp, root, "nuscenes", ws, **extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nus") / "nus_synth"
    write_nuscenes(root, 2, seed=3, cfg=SynthConfig(nus_samples_per_scene=3, image_scale=0.25,
                                                    nus_lidar_azimuths=256, nus_radar_sweeps=3))
    return root


def _chain(nusc: NuScenes, sd: dict[str, Any], ref_pose: dict[str, Any]) -> np.ndarray:
    """ego(reference pose) <- sensor(sd), composed from the devkit's transform_matrix."""
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    ego_from_global = transform_matrix(ref_pose["translation"], Quaternion(ref_pose["rotation"]),
                                       inverse=True)
    return (ego_from_global @ transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
            @ transform_matrix(cs["translation"], Quaternion(cs["rotation"])))


def _sweep_index(nusc: NuScenes, sd: dict[str, Any], ref_us: int, sweeps: int,
                 lags: np.ndarray) -> np.ndarray:
    """Sweep index (0, 1, ...) of each point from its devkit time lag, walking the prev chain."""
    chain = []
    while len(chain) < sweeps:
        chain.append((ref_us - sd["timestamp"]) * 1e-6)
        if not sd["prev"]:
            break
        sd = nusc.get("sample_data", sd["prev"])
    return np.abs(lags[:, None] - np.array(chain)[None]).argmin(1)


def _check_radar(nusc: NuScenes, sample: dict[str, Any], radar: np.ndarray, sweeps: int,
                 t_ego_lidar: np.ndarray, calib: pl.DataFrame) -> None:
    """Each channel: all 18 fields, sweep by sweep, vs the devkit's multisweep reading."""
    lsd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    for ch_i, ch in enumerate(RADARS):
        mine = radar[radar[:, COL["channel"]] == ch_i]
        if ch not in sample["data"]:  # a channel the dataset lacks: no points
            assert len(mine) == 0
            continue
        # the devkit's multisweep ends in the LiDAR frame: one more step to ego
        ref, times = RadarPointCloud.from_file_multisweep(nusc, sample, ch, "LIDAR_TOP",
                                                          nsweeps=sweeps, min_distance=-1.0)
        ref.transform(t_ego_lidar)
        d = ref.points  # (18, M)
        assert len(mine) == d.shape[1]
        np.testing.assert_allclose(mine[:, :3], d[:3].T, atol=2e-4)
        for name in NATIVE:
            np.testing.assert_array_equal(mine[:, COL[name]], np.float32(d[DEVKIT_ROW[name]]))
        np.testing.assert_allclose(mine[:, COL["time_lag"]], times[0], atol=1e-6)
        k = _sweep_index(nusc, nusc.get("sample_data", sample["data"][ch]), lsd["timestamp"],
                         sweeps, times[0])
        np.testing.assert_array_equal(mine[:, COL["time"]], -k)
        for a, b in (("vx", "vy"), ("vx_comp", "vy_comp")):  # rotations keep the speed
            np.testing.assert_allclose(np.hypot(mine[:, COL[a]], mine[:, COL[b]]),
                                       np.hypot(d[DEVKIT_ROW[a]], d[DEVKIT_ROW[b]]), atol=1e-4)
        # the keyframe sweep back to raw sensor coordinates with the calibration table
        t = np.reshape(calib.filter(pl.col("sensor") == ch)["t_ego_from_sensor"][0], (4, 4))
        raw = RadarPointCloud.from_file(nusc.get_sample_data_path(sample["data"][ch])).points
        key = mine[mine[:, COL["time"]] == 0]
        back = (key[:, :3].astype(np.float64) - t[:3, 3]) @ t[:3, :3]
        np.testing.assert_allclose(back, raw[:3].T, atol=2e-4)
        v_comp = key[:, [COL["vx_comp"], COL["vy_comp"]]]
        np.testing.assert_allclose(v_comp @ t[:2, :2], raw[8:10].T, atol=1e-4)  # ego -> sensor
        los = key[:, :2] / np.hypot(key[:, 0], key[:, 1])[:, None]  # BEV line of sight
        np.testing.assert_allclose(key[:, COL["v_r_comp"]], (los * v_comp).sum(1), atol=1e-4)


def _check_boxes(nusc: NuScenes, lsd: dict[str, Any], fb: pl.DataFrame) -> None:
    """Boxes vs `nusc.get_boxes` moved into the ego frame of the LiDAR keyframe."""
    pose = nusc.get("ego_pose", lsd["ego_pose_token"])
    ref_boxes = nusc.get_boxes(lsd["token"])
    assert fb.height == len(ref_boxes)
    r_world_ego = Quaternion(pose["rotation"]).rotation_matrix
    for row, box in zip(fb.iter_rows(named=True), ref_boxes, strict=True):
        v_ego = np.nan_to_num(nusc.box_velocity(box.token)) @ r_world_ego
        box.translate(-np.array(pose["translation"]))
        box.rotate(Quaternion(pose["rotation"]).inverse)
        np.testing.assert_allclose([row["x_ego_m"], row["y_ego_m"], row["z_ego_m"]], box.center,
                                   atol=1e-6)
        np.testing.assert_allclose([row["width_m"], row["length_m"], row["height_m"]], box.wlh)
        dyaw = row["yaw_ego_rad"] - quaternion_yaw(box.orientation)
        assert abs((dyaw + np.pi) % (2 * np.pi) - np.pi) < 1e-6
        assert row["class_name"] == box.name
        assert row["label"] == category_to_detection_name(box.name)
        np.testing.assert_allclose([row["vx_ego_mps"] or 0.0, row["vy_ego_mps"] or 0.0],
                                   v_ego[:2], atol=1e-6)


def check_against_devkit(art: Path, nusc: NuScenes, sweeps: int) -> None:
    """Every frame's LiDAR, radar (all fields, every sweep) and boxes equal the devkit's reading."""
    frames = pl.read_parquet(art / "frames.parquet")
    boxes = pl.read_parquet(art / "boxes.parquet")
    calib = pl.read_parquet(art / "calibration.parquet")
    ds = StoreDataset(art, with_boxes=False)
    RadarPointCloud.disable_filters()
    try:
        for i in range(len(ds)):
            item, f = ds[i], frames.row(i, named=True)
            sample = nusc.get("sample", f["frame"])
            lsd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            t_ego_lidar = _chain(nusc, lsd, nusc.get("ego_pose", lsd["ego_pose_token"]))
            pc = LidarPointCloud.from_file(nusc.get_sample_data_path(lsd["token"]))
            pc.transform(t_ego_lidar)
            assert f["timestamp_us"] == lsd["timestamp"] and len(item["lidar"]) == pc.nbr_points()
            np.testing.assert_allclose(item["lidar"], pc.points.T, atol=2e-4)
            _check_radar(nusc, sample, item["radar"], sweeps, t_ego_lidar,
                         calib.filter(pl.col("frame_id") == f["frame_id"]))
            fb = boxes.filter(pl.col("frame_id") == f["frame_id"]).sort("box_index")
            assert fb.height == f["n_boxes"]
            _check_boxes(nusc, lsd, fb)
    finally:
        RadarPointCloud.default_filters()


def test_synthetic_world_matches_the_devkit(tmp_path: Path, world: Path) -> None:
    art = ingest(tmp_path, world, radar_sweeps=3)
    nusc = NuScenes(V, str(world), verbose=False)
    frames = pl.read_parquet(art / "frames.parquet")
    for name in ("frames", "boxes", "calibration", "rejects"):
        check_table(pl.read_parquet(art / f"{name}.parquet"), f"{name}/1")
    assert pl.read_parquet(art / "rejects.parquet").height == 0
    assert frames.height == len(nusc.sample) == 6
    assert dict(frames.group_by("scene").agg(pl.col("split").first()).iter_rows()) == \
        {"scene-0061": "train", "scene-0103": "val"}  # devkit mini_train / mini_val
    assert frames["labeled"].all() and frames["n_boxes"].sum() > 0
    check_against_devkit(art, nusc, sweeps=3)
    for item in StoreDataset(art, sensors=("radar",), with_boxes=False):
        assert set(item["radar"][:, COL["time"]].tolist()) == {0, -1, -2}  # sweeps 0, -1, -2
    # cameras: originals by reference, downscaled copies in the scene group
    calib = pl.read_parquet(art / "calibration.parquet")
    for f in frames.iter_rows(named=True):
        sample = nusc.get("sample", f["frame"])
        cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        assert f["image_path"] == str(world / cam["filename"])
        assert f["image_sha256"] == hashlib.sha256(Path(f["image_path"]).read_bytes()).hexdigest()
        row = calib.filter((pl.col("frame_id") == f["frame_id"])
                           & (pl.col("sensor") == "CAM_FRONT")).row(0, named=True)
        k = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])["camera_intrinsic"]
        np.testing.assert_allclose(np.reshape(row["intrinsics"], (3, 4)),
                                   np.column_stack([k, [0, 0, 0]]))
        assert (row["image_width_px"], row["image_height_px"]) == (cam["width"], cam["height"])
    for scene, n in frames.group_by("scene").len().iter_rows():
        g = zarr.open_group(str(art / "points.zarr" / "nus_synth" / scene), mode="r")
        for ch in ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"):
            assert g[f"camera/{ch}"].shape == (n, 225 // 4, 400 // 4, 3)
            assert g[f"camera/{ch}"].dtype == np.uint8
        assert g["radar/points"].attrs["fields"] == list(nio.RADAR_FIELDS)


def test_radar_filter_is_a_recorded_choice(tmp_path: Path, world: Path) -> None:
    all_pts = ingest(tmp_path, world, camera_channels=[])
    default = {"invalid_states": [0], "dynprop_states": list(range(7)), "ambig_states": [3]}
    filtered = ingest(tmp_path, world, camera_channels=[], radar_filter=default)
    assert all_pts.name != filtered.name  # a different cache key
    nusc = NuScenes(V, str(world), verbose=False)
    n_all = pl.read_parquet(all_pts / "frames.parquet")["n_radar"]
    n_f = pl.read_parquet(filtered / "frames.parquet")["n_radar"]
    assert (n_f < n_all).all()
    ds = StoreDataset(filtered, sensors=("radar",), with_boxes=False)
    RadarPointCloud.default_filters()  # the devkit's own defaults = the filter above
    for i in range(len(ds)):
        radar = ds[i]["radar"]
        sample = nusc.get("sample", ds.frames[i]["frame_id"].split("/")[1])
        assert (radar[:, COL["time"]] == 0).all()  # one sweep
        for ch_i, ch in enumerate(RADARS):
            ref = RadarPointCloud.from_file(nusc.get_sample_data_path(sample["data"][ch]))
            assert (radar[:, COL["channel"]] == ch_i).sum() == ref.nbr_points()


# ----------------------------------------------------------------------------- real files

# nuScenes-like extrinsics (scene-0061 rig, rounded); the files' own records are not public
_LIDAR_CS = ([0.985793, 0.0, 1.84019], [0.706749, -0.015301, 0.017397, -0.707085])
_RADAR_CS = {"RADAR_FRONT": ([3.412, 0.0, 0.5], [0.999998, 0.0, 0.0, 0.001745]),
             "RADAR_BACK_LEFT": ([-0.562, 0.628, 0.53], [0.019372, 0.0, 0.0, 0.999812]),
             "RADAR_BACK_RIGHT": ([-0.562, -0.618, 0.53], [0.022201, 0.0, 0.0, -0.999754])}


def real_dataroot(real: Path, root: Path) -> Path:
    """One scene, one sample: the real LIDAR_TOP scan and the three real radar PCDs (copies)."""
    lidar = next((real / "nuscenes/lidar").glob("*.pcd.bin"))
    ts = int(lidar.name.split("__")[-1].split(".")[0])
    t: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
        "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    t["log"] = [{"token": "log0", "logfile": "n015", "vehicle": "n015",
                 "date_captured": "2018-07-24", "location": "singapore-onenorth"}]
    t["map"] = [{"token": "map0", "category": "semantic_prior", "filename": "maps/m.png",
                 "log_tokens": ["log0"]}]
    t["scene"] = [{"token": "scene0", "log_token": "log0", "nbr_samples": 1,
                   "first_sample_token": "s0", "last_sample_token": "s0", "name": "scene-0061",
                   "description": "real point files"}]
    t["sample"] = [{"token": "s0", "timestamp": ts, "prev": "", "next": "",
                    "scene_token": "scene0"}]
    t["ego_pose"] = [{"token": "p0", "timestamp": ts, "translation": [411.30, 1180.89, 0.0],
                      "rotation": [0.572032, -0.001698, 0.011798, -0.820145]}]
    files = {"LIDAR_TOP": (lidar, _LIDAR_CS, "lidar")}
    files |= {ch: (next((real / "nuscenes/radar").glob(f"*__{ch}__*.pcd")), cs, "radar")
              for ch, cs in _RADAR_CS.items()}
    for i, (ch, (src, (tr, rot), modality)) in enumerate(files.items()):
        rel = f"samples/{ch}/{src.name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
        t["sensor"].append({"token": f"sensor{i}", "channel": ch, "modality": modality})
        t["calibrated_sensor"].append({"token": f"cs{i}", "sensor_token": f"sensor{i}",
                                       "translation": tr, "rotation": rot, "camera_intrinsic": []})
        t["sample_data"].append({"token": f"sd{i}", "sample_token": "s0", "ego_pose_token": "p0",
                                 "calibrated_sensor_token": f"cs{i}", "timestamp": ts + 5000 * i,
                                 "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
                                 "filename": rel, "prev": "", "next": ""})
    (root / V).mkdir(parents=True)
    for name, rows in t.items():
        (root / V / f"{name}.json").write_text(json.dumps(rows))
    (root / "maps").mkdir()
    (root / "maps/m.png").write_bytes(b"")  # the devkit only checks that it exists
    return root


def test_real_lidar_and_radar_files(tmp_path: Path, real: Path) -> None:
    root = real_dataroot(real, tmp_path / "nus_real")
    art = ingest(tmp_path, root, camera_channels=[])
    frames = pl.read_parquet(art / "frames.parquet")
    assert frames["n_lidar"].to_list() == [34688] and frames["n_radar"].to_list() == [3 * 125]
    assert frames["split"].to_list() == ["train"] and not frames["labeled"][0]  # no annotations
    item = StoreDataset(art, with_boxes=False)[0]
    ch_of = item["radar"][:, COL["channel"]]
    assert sorted(set(ch_of.tolist())) == [0, 3, 4]  # FRONT, BACK_LEFT, BACK_RIGHT
    assert (item["radar"][:, COL["id"]].reshape(3, 125) == np.arange(125)).all()  # padding ignored
    check_against_devkit(art, NuScenes(V, str(root), verbose=False), sweeps=1)


# ----------------------------------------------------------------------------- bad input


def _edit_table(root: Path, table: str, fn: Any) -> None:
    p = root / V / f"{table}.json"
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def _sd(root: Path, sample: str, channel: str) -> dict[str, Any]:
    rows = json.loads((root / V / "sample_data.json").read_text())
    return next(r for r in rows if r["sample_token"] == sample and r["is_key_frame"]
                and f"/{channel}/" in r["filename"])


def _set(root: Path, sd: dict[str, Any], **kv: Any) -> None:
    _edit_table(root, "sample_data",
                lambda rows: [{**r, **kv} if r["token"] == sd["token"] else r for r in rows])


def _rewrite(fn: Any) -> Any:
    """A corruption that rewrites the sample_data's file: bytes -> bytes."""
    return lambda root, sd: (root / sd["filename"]).write_bytes(
        fn((root / sd["filename"]).read_bytes()))


def _bigger_header(raw: bytes) -> bytes:  # header promises more points than the payload holds
    return raw.replace(b"POINTS ", b"POINTS 9", 1).replace(b"WIDTH ", b"WIDTH 9", 1)


def _duplicate_sample(root: Path, sd: dict[str, Any]) -> None:
    _edit_table(root, "sample",
                lambda rows: rows + [r for r in rows if r["token"] == sd["sample_token"]])


GONE = "no-such-token"
CORRUPTIONS = {  # kind: (channel, corruption(root, sample_data record), expected check)
    "path_escape": ("LIDAR_TOP", lambda root, sd: _set(root, sd, filename="../x.pcd.bin"), "path"),
    "missing_file": ("LIDAR_TOP", lambda root, sd: (root / sd["filename"]).unlink(), "missing"),
    "truncated_lidar": ("LIDAR_TOP", _rewrite(lambda raw: raw[:-7]), "size"),
    "nan_lidar": ("LIDAR_TOP", _rewrite(lambda raw: np.full((4, 5), np.nan, np.float32).tobytes()),
                  "finite"),
    "pcd_payload": ("RADAR_FRONT", _rewrite(_bigger_header), "payload"),
    "radar_time_gap": ("RADAR_BACK_LEFT",
                       lambda root, sd: _set(root, sd, timestamp=sd["timestamp"] + 150_000),
                       "time_gap"),
    "camera_time_gap": ("CAM_FRONT_LEFT",
                        lambda root, sd: _set(root, sd, timestamp=sd["timestamp"] - 150_000),
                        "time_gap"),
    "missing_calib": ("LIDAR_TOP", lambda root, sd: _set(root, sd, calibrated_sensor_token=GONE),
                      "calib"),
    "missing_radar_calib": ("RADAR_FRONT",
                            lambda root, sd: _set(root, sd, calibrated_sensor_token=GONE), "calib"),
    "missing_pose": ("RADAR_FRONT_RIGHT", lambda root, sd: _set(root, sd, ego_pose_token=GONE),
                     "pose"),
    "duplicate_sample": ("LIDAR_TOP", _duplicate_sample, "duplicate"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_input_becomes_one_reject(tmp_path: Path, world: Path, kind: str) -> None:
    root = tmp_path / "nus_synth"
    shutil.copytree(world, root)
    samples = json.loads((root / V / "sample.json").read_text())
    victim = samples[1]["token"]
    channel, corrupt, check = CORRUPTIONS[kind]
    corrupt(root, _sd(root, victim, channel))
    art = ingest(tmp_path, root)
    frames = pl.read_parquet(art / "frames.parquet")
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert rejects.height == 1, rejects
    r = rejects.row(0, named=True)
    assert (r["frame"], r["check"]) == (victim, check), r
    assert r["reason"] and r["file"]
    n_input = len(json.loads((root / V / "sample.json").read_text()))
    assert frames.height + rejects.height == n_input  # input = ingested + rejected
    expect = {s["token"] for s in samples} - ({victim} if check != "duplicate" else set())
    assert set(frames["frame"]) == expect


@pytest.mark.parametrize("how", ["bad_json", "missing_table"])
def test_corrupt_table_is_one_clear_error(tmp_path: Path, world: Path, how: str) -> None:
    root = tmp_path / "nus_synth"
    shutil.copytree(world, root)
    p = root / V / "sample_data.json"
    p.write_text(p.read_text()[:-50]) if how == "bad_json" else p.unlink()
    with pytest.raises(KdpipeError, match="sample_data.json"):
        ingest(tmp_path, root)


def test_scene_is_done_only_once_its_cameras_are_written(
        tmp_path: Path, world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zroot, work = tmp_path / "points.zarr", tmp_path / "work"
    zarr.open_group(store=str(zroot), mode="a", zarr_format=3).require_group("w")
    cfg = IngestConfig(format="nuscenes", roots=[str(world)])
    task = nus.make_tasks(cfg, "w", world, work, zroot, Storage(65536, 8, 1))[0]

    real_write = sw.write_row_array

    def killed(folder: Path, parts: Any, written: Any) -> None:
        if "camera" in folder.parts:  # dies after the points, before the cameras
            raise KeyboardInterrupt
        real_write(folder, parts, written)

    monkeypatch.setattr(sw, "write_row_array", killed)
    with pytest.raises(KeyboardInterrupt):
        nus.run_task(task)
    w = nio.SceneWriter(work, "w", task.scene, task.storage)
    assert (zroot / "w" / task.scene / "lidar" / "points" / "zarr.json").exists() and not w.done()
    monkeypatch.undo()
    assert not nus.run_task(task)["resumed"] and w.done()
    assert nus.run_task(task)["resumed"]
    g = zarr.open_group(str(zroot / "w" / task.scene), mode="r")
    n = g["lidar/offsets"].shape[0] - 1
    assert n == 3 and g["camera/CAM_FRONT"].shape[0] == n
