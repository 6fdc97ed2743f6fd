"""Per-epoch validation's score: AP per class from hand-made detections with known answers,
and a val split without labeled frames is one config error at the start of training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdpipe.models.batch import Targets, TrainFrame
from kdpipe.runtime.validation import Validator, _boxset

CLASSES = ("Car", "Pedestrian")
RANGE = (0.0, -25.6, -3.0, 51.2, 25.6, 2.0)


def _frame(i: int, boxes: np.ndarray, labels: list[int]) -> TrainFrame:
    pts = {"radar": np.zeros((1, 6), np.float32)}  # x, y, z, rcs, v_r_comp, time
    return TrainFrame(f"f{i}", pts, Targets(boxes.astype(np.float32), np.asarray(labels),
                                            np.zeros((0, 7), np.float32)))


def _validator() -> Validator:
    car = np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    ped = np.array([[20.0, 5.0, 0.0, 0.8, 0.8, 1.7, 0.0]])
    outside = np.array([[60.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])  # beyond x range: not counted
    return Validator([_frame(0, np.concatenate([car, outside]), [0, 0]),
                      _frame(1, ped, [1])], CLASSES, RANGE, ("radar",), torch.device("cpu"))


def test_perfect_detections_score_100_and_boxes_outside_the_range_do_not_count() -> None:
    v = _validator()
    assert len(v.gt) == 2
    det = _boxset([0, 1], [v.gt.boxes[:1], v.gt.boxes[1:]], [np.array([0]), np.array([1])],
                  [np.array([0.9]), np.array([0.8])])
    row = v.score(det)
    assert row["val_ap_Car"] == 100.0 and row["val_ap_Pedestrian"] == 100.0
    assert row["val_map"] == 100.0 and row["val_gt"] == 2.0 and row["val_frames"] == 2.0


def test_class_thresholds_and_false_positives_lower_the_ap() -> None:
    v = _validator()
    car = v.gt.boxes[:1].copy()
    car[0, 0] += 2.0        # BEV IoU (2 x 2) / (12 + 4) = 0.33 < 0.5: a car miss
    ped = v.gt.boxes[1:].copy()
    ped[0, 0] += 0.3        # IoU 0.5 x 0.8 / (2 x 0.64 - 0.4) = 0.45 >= 0.25: a hit
    fp = ped.copy()
    fp[0, 1] += 10.0        # far away, scored above the hit: precision 1/2 at recall 1
    det = _boxset([0, 1], [car, np.concatenate([fp, ped])],
                  [np.array([0]), np.array([1, 1])], [np.array([0.9]), np.array([0.9, 0.5])])
    row = v.score(det)
    assert row["val_ap_Car"] == 0.0
    assert row["val_ap_Pedestrian"] == pytest.approx(50.0)
    assert row["val_map"] == pytest.approx(25.0)


def test_model_call_decodes_every_frame(tmp_path: Path) -> None:
    from kdpipe.models import create_model
    from kdpipe.testing import TINY_DETECTOR

    model = create_model("radar-only", **TINY_DETECTOR)
    v = Validator([_frame(0, np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]), [0])],
                  model.classes, model.config.point_cloud_range_m, model.modalities,
                  torch.device("cpu"))
    model.train()
    row = v(model)
    assert model.training  # put back as it was
    assert set(row) == {"val_map", "val_frames", "val_gt", *(f"val_ap_{c}" for c in model.classes)}
    assert 0.0 <= row["val_map"] <= 100.0


def test_a_val_split_without_labeled_frames_is_one_error(tmp_path: Path, vod_world: Path) -> None:
    from kdpipe.api import run_workflow
    from kdpipe.config import toml_value
    from kdpipe.testing import TINY_DETECTOR

    wf = tmp_path / "wf.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]
[ingest]
format = "vod"
roots = [{toml_value(str(vod_world))}]
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
val_split = "unlabeled"
""")
    with pytest.raises(Exception, match="val_split = 'unlabeled': no labeled frames in split") as e:
        run_workflow(wf, str(tmp_path / "ws"), scheduler="sync")
    assert "\n" not in str(e.value)
