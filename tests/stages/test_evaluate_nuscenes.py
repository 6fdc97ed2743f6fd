"""`evaluate` on nuScenes-format data: a model trained through kdpipe, scored by DetectionEval."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.datasets.synth import SynthConfig, write_nuscenes

NUS_CLASSES = ["car", "pedestrian", "bicycle"]


@pytest.mark.slow
def test_evaluate_scores_a_trained_radar_model_with_detection_eval(tmp_path: Path) -> None:
    root = tmp_path / "nus"
    write_nuscenes(root, 2, seed=4, cfg=SynthConfig(
        nus_samples_per_scene=3, image_scale=0.25, nus_lidar_azimuths=256, nus_radar_sweeps=1))
    det = {"point_cloud_range_m": [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0], "pillar_size_m": 1.6,
           "encoder_channels": 16, "backbone_filters": [16, 32], "upsample_filters": [16, 16],
           "head_channels": 16, "classes": NUS_CLASSES, "with_velocity": True}
    wf = tmp_path / "nus.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train", "evaluate"]
[ingest]
format = "nuscenes"
roots = ["{root}"]
camera_channels = []
[teacher-train]
model = "radar-only"
detector = {toml_value(det)}
[teacher-train.optim]
epochs = 2
[evaluate]
split = "val"
""")
    rep = run_workflow(wf, str(tmp_path / "ws"), scheduler="sync")
    st = {s["stage"]: s for s in rep["stages"]}
    m = json.loads(Path(st["evaluate"]["outputs"]["metrics"]).read_text())
    assert m["benchmark"] == "nuscenes" and m["eval_set"] == "mini_val"
    assert 0.0 <= m["mean_ap"] <= 1.0 and 0.0 <= m["nd_score"] <= 1.0
    assert set(NUS_CLASSES) <= set(m["class_ap"])
    assert m["frames"] == 3 and "eval_time" not in m
