"""IMKD stages: weight maps on a hand-made cloud, their warp under augmentation, camera extrinsics
following the point augmentation, and a tiny end-to-end run on a synthetic nuScenes world
(ingest with cameras -> LiDAR teacher -> pseudo-labels -> weight maps -> imkd-distill -> evaluate)
whose lineage reaches the raw files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.models.batch import CameraInputs, Targets, TrainFrame, collate
from kdpipe.models.imkd import warp_maps
from kdpipe.pipeline import ancestry
from kdpipe.pipeline.store import Workspace
from kdpipe.runtime.train_loop import OptimConfig, augment
from kdpipe.runtime.weight_maps import read_maps
from kdpipe.stages.imkd_weights import WeightMapConfig, bev_maps

GRID = WeightMapConfig(point_cloud_range_m=(0.0, -2.0, -3.0, 4.0, 2.0, 2.0), cell_m=1.0,
                       occupancy_ref_points=2.0, floor=0.1, alpha=0.5, intensity_scale=100.0)


def test_weight_maps_of_a_hand_made_cloud() -> None:
    # Cell (iy=2, ix=0): two points, intensities 100 and 50; cell (iy=0, ix=3): one point of 20;
    # one point above z1 and one outside x: both ignored. Everything else is empty.
    cloud = np.array([[0.5, 0.5, 0.0, 100.0], [0.2, 0.9, -1.0, 50.0], [3.5, -1.5, 0.0, 20.0],
                      [0.5, 0.5, 5.0, 255.0], [9.0, 0.0, 0.0, 255.0]], np.float32)
    maps, scale = bev_maps(cloud, GRID)
    assert maps.shape == (4, 4, 4) and scale == 100.0
    i_mean, i_max, occ, w = maps
    occ_a, occ_b = 1 - np.exp(-2 / 2.0), 1 - np.exp(-1 / 2.0)
    np.testing.assert_allclose([i_mean[2, 0], i_max[2, 0], occ[2, 0]], [0.75, 1.0, occ_a],
                               rtol=1e-6)
    np.testing.assert_allclose([i_mean[0, 3], i_max[0, 3], occ[0, 3]], [0.2, 0.2, occ_b],
                               rtol=1e-6)
    np.testing.assert_allclose(w[2, 0], 0.1 + 0.9 * occ_a * (0.5 + 0.5 * 0.875), rtol=1e-6)
    np.testing.assert_allclose(w[0, 3], 0.1 + 0.9 * occ_b * (0.5 + 0.5 * 0.2), rtol=1e-6)
    empty = np.ones((4, 4), bool)
    empty[2, 0] = empty[0, 3] = False
    assert (w[empty] == np.float32(0.1)).all() and (occ[empty] == 0).all()
    # Without a fixed scale the frame's intensity quantile normalises: the brightest is 1.
    auto, s = bev_maps(cloud, GRID.model_copy(update={"intensity_scale": None,
                                                      "intensity_quantile": 1.0}))
    assert s == 100.0 and auto[1].max() == 1.0


def test_warp_follows_the_augmentation() -> None:
    maps = torch.arange(16.0).view(1, 1, 4, 4)  # (B, K, H, W), H indexes y
    rng = (-2.0, -2.0, -3.0, 2.0, 2.0, 2.0)
    torch.testing.assert_close(warp_maps(maps, torch.eye(3)[None], rng), maps)
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0]))[None]  # y -> -y mirrors the rows
    torch.testing.assert_close(warp_maps(maps, flip, rng), maps.flip(2))
    # Scaling by 2 about the ego origin: the cell at (x, y) = (1.5, 1.5) m comes from (0.75,
    # 0.75) m, i.e. from inside original cell (iy=2, ix=2) (bilinear, so compare to neighbours).
    grown = warp_maps(maps, torch.diag(torch.tensor([2.0, 2.0, 1.0]))[None], rng)
    assert 9.0 <= grown[0, 0, 3, 3].item() <= 15.0


def test_camera_extrinsics_follow_the_point_augmentation() -> None:
    # A LiDAR point p and its camera-frame coordinates; after augmentation the augmented
    # extrinsics must map the same camera coordinates onto the augmented point.
    t = np.eye(4, dtype=np.float32)
    t[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    t[:3, 3] = [1.5, 0.2, 1.6]
    p = np.array([[12.0, -3.0, 0.5, 7.0]], np.float32)
    p_cam = np.linalg.inv(t) @ np.append(p[0, :3], 1.0)
    frame = TrainFrame("f", {"lidar": p},
                       Targets(np.zeros((0, 7), np.float32), np.zeros(0, np.int64),
                               np.zeros((0, 7), np.float32)),
                       cameras=CameraInputs(np.zeros((1, 3, 4, 4), np.uint8),
                                            np.eye(3, dtype=np.float32)[None], t[None]),
                       weight_map=np.ones((1, 2, 2)))
    seen_flip = False
    for seed in range(6):
        out, _ = augment(frame, np.random.default_rng(seed), OptimConfig())
        np.testing.assert_allclose((out["camera_to_ego"][0] @ p_cam)[:3], out["lidar"][0, :3],
                                   rtol=1e-5)
        np.testing.assert_allclose(out["aug_matrix"] @ p[0, :3], out["lidar"][0, :3], rtol=1e-5)
        seen_flip |= bool(out["aug_matrix"][1, 1] < 0)
        assert out["lidar"][0, 3] == 7.0 and out["weight_map"].shape == (1, 2, 2)
    assert seen_flip
    batch = collate([out, out], ("lidar", "camera"))
    assert batch["camera"].shape == (2, 1, 3, 4, 4) and batch["aug_matrix"].shape == (2, 3, 3)
    assert batch["weight_map"].shape == (2, 1, 2, 2) and batch["lidar"].shape == (2, 5)


DET = {"point_cloud_range_m": [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0], "pillar_size_m": 3.2,
       "encoder_channels": 8, "backbone_filters": [8, 16], "upsample_filters": [8, 8],
       "head_channels": 8, "classes": ["car", "pedestrian", "bicycle"], "with_velocity": True}


@pytest.fixture(scope="module")
def imkd_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    from kdpipe.datasets.synth import SynthConfig, write_nuscenes

    tmp = tmp_path_factory.mktemp("imkd")
    root = tmp / "nus"
    write_nuscenes(root, 2, seed=5, cfg=SynthConfig(
        nus_samples_per_scene=2, image_scale=0.125, nus_lidar_azimuths=256, nus_radar_sweeps=1,
        nus_cameras=("CAM_FRONT", "CAM_FRONT_LEFT")))
    wf = tmp / "imkd.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "imkd-weights",
          "imkd-distill", "evaluate-student"]
seed = 3
[ingest]
format = "nuscenes"
roots = ["{root}"]
camera_channels = ["CAM_FRONT", "CAM_FRONT_LEFT"]
camera_downscale = 2
[teacher-train]
model = "lidar-only"
detector = {toml_value(DET)}
[teacher-train.optim]
epochs = 1
[teacher-label]
splits = ["train", "val"]
[pseudo-label]
sigma = 0.02
[imkd-weights]
cell_m = 3.2
[imkd-distill]
detector = {{ camera_channels = ["CAM_FRONT", "CAM_FRONT_LEFT"], image_width = 8, depth_bins = 8 }}
depth_weight = 1.0
[imkd-distill.optim]
epochs = 3
lr_max = 0.003
[evaluate-student]
uses = "evaluate"
[evaluate-student.ports]
checkpoint = "student"
metrics = "student_metrics"
metrics_table = "student_metrics_table"
eval_detections = "student_eval_detections"
""")
    ws = str(tmp / "ws")
    rep = run_workflow(wf, ws, scheduler="sync")
    return ws, {s["stage"]: s for s in rep["stages"]}


def test_imkd_run_trains_every_level_and_scores(imkd_run) -> None:  # type: ignore[no-untyped-def]
    _, st = imkd_run
    log = pl.read_parquet(st["imkd-distill"]["outputs"]["distill_log"])
    assert {"loss", "loss_det", "loss_level1", "loss_level2", "loss_level3",
            "loss_depth"} <= set(log.columns)
    assert (log["loss_depth"] > 0).all()  # LiDAR reached the depth targets of the cameras
    assert log["loss"][-1] < log["loss"][0], log["loss"].to_list()
    blob = torch.load(st["imkd-distill"]["outputs"]["student"], weights_only=True)
    assert blob["name"] == "imkd-student" and blob["config"]["intensity_gate"]
    assert blob["config"]["pillar_size_m"] == DET["pillar_size_m"]  # the teacher's grid
    m = json.loads(Path(st["evaluate-student"]["outputs"]["metrics"]).read_text())
    assert m["benchmark"] == "nuscenes" and 0.0 <= m["nd_score"] <= 1.0
    out = st["imkd-weights"]["outputs"]
    frames = pl.read_parquet(out["weight_frames"])
    maps = read_maps(out["weight_maps"], out["weight_frames"])
    assert set(maps) == set(frames["frame_id"]) and len(maps) == 4
    assert all(v.shape == (4, 32, 32) and v[3].max() > v[3].min() for v in maps.values())


def test_imkd_lineage_reaches_raw_files(imkd_run) -> None:  # type: ignore[no-untyped-def]
    ws, st = imkd_run
    node = ancestry.tree(Workspace(ws), "imkd-distill", st["imkd-distill"]["key"])
    paths: dict[str, list[str]] = {}

    def walk(n: dict, trail: tuple[str, ...]) -> None:
        trail = (*trail, n["stage"])
        if n["raw_files"]:
            paths.setdefault(" > ".join(trail), []).extend(r["path"] for r in n["raw_files"])
        for c in n["inputs"]:
            walk(c, trail)

    walk(node, ())
    assert any("imkd-weights > ingest" in k for k in paths)
    assert any("pseudo-label > teacher-label" in k for k in paths)
    assert any(k.startswith("imkd-distill > teacher-train") for k in paths)
    raw = {Path(p).name for v in paths.values() for p in v}
    assert any(p.endswith(".pcd.bin") for p in raw) and any(p.endswith(".jpg") for p in raw)


def test_show_draws_the_weight_map(imkd_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from kdpipe.pipeline.errors import KdpipeError
    from kdpipe.show import render_frame

    ws, st = imkd_run
    fid = pl.read_parquet(st["imkd-weights"]["outputs"]["weight_frames"])["frame_id"][0]
    plain = render_frame(ws, fid, tmp_path / "plain.png")
    shaded = render_frame(ws, fid, tmp_path / "weights.png", weights=True)
    assert plain["frame_id"] == shaded["frame_id"] == fid
    a = np.asarray(Image.open(tmp_path / "plain.png").convert("L"), dtype=np.float64)
    b = np.asarray(Image.open(tmp_path / "weights.png").convert("L"), dtype=np.float64)
    assert a.shape == b.shape and b.mean() < a.mean()  # the map darkens occupied cells
    with pytest.raises(KdpipeError, match="own grid"):
        render_frame(ws, fid, tmp_path / "x.png", weights=True, range_m=(0.0, -10.0, 20.0, 10.0))
