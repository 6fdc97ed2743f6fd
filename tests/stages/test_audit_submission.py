"""`kdpipe audit --submission`: any nuScenes submission scored against a store's ground truth
equals nuscenes-devkit's DetectionEval (run here on the same files): mAP, NDS and the five TP
errors per class, within 1e-3; bad inputs are one line and exit 2."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.evaluation.nuscenes_eval import score_nuscenes, write_submission
from kdpipe.testing import ingest_store
from kdpipe.testing.submissions import (
    add_split_of_every_scene,
    noisy_detections,
    scramble_attributes,
)

SPLIT = "audit_all"  # custom devkit split holding every scene of the world
# categories given to some instances before ingest, so that the world holds the classes whose
# TP rules differ (barrier: yaw period pi, no AVE/AAE; cone: no AOE/AVE/AAE) and a truck
RELABEL = {"vehicle.car": ("vehicle.truck", "movable_object.barrier"),
           "human.pedestrian.adult": ("movable_object.trafficcone",)}


def relabel_instances(root: Path, seed: int) -> None:
    """Give 40% of the cars a truck / barrier category and 40% of the pedestrians a cone's;
    add a split holding every scene."""
    tables = root / "v1.0-mini"
    cats = json.loads((tables / "category.json").read_text())
    tok = {c["name"]: c["token"] for c in cats}
    name = {c["token"]: c["name"] for c in cats}
    inst = json.loads((tables / "instance.json").read_text())
    rng = np.random.default_rng(seed)
    for rec in inst:
        options = RELABEL.get(name[rec["category_token"]])
        if options and rng.random() < 0.4:
            rec["category_token"] = tok[options[int(rng.integers(len(options)))]]
    (tables / "instance.json").write_text(json.dumps(inst))
    # a third of the annotations lose their track links: the devkit's box_velocity is NaN
    # there (the store's velocity null), which AVE must skip, not count as zero
    anns = json.loads((tables / "sample_annotation.json").read_text())
    for a in anns:
        if rng.random() < 0.3:
            a["prev"] = a["next"] = ""
    (tables / "sample_annotation.json").write_text(json.dumps(anns))
    add_split_of_every_scene(tables, SPLIT)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("audit_sub")
    root = tmp / "nus"
    write_nuscenes(root, 3, seed=6, cfg=SynthConfig(
        nus_samples_per_scene=8, image_scale=0.1, nus_lidar_azimuths=128, nus_radar_sweeps=1,
        nus_cameras=()))
    relabel_instances(root, seed=6)
    ingest = ingest_store(tmp, root, "nuscenes", camera_channels=[])
    frames = pl.read_parquet(ingest / "frames.parquet")
    boxes = pl.read_parquet(ingest / "boxes.parquet")
    sub = tmp / "submission.json"
    dets = noisy_detections(boxes, seed=1, fp_extra_labels=("bus", "motorcycle"))  # + absent
    write_submission(dets, frames, sub)
    scramble_attributes(sub, seed=2)
    want = score_nuscenes(root, "v1.0-mini", SPLIT, sub, tmp / "eval")
    return {"tmp": tmp, "root": root, "ingest": ingest, "sub": sub, "want": want,
            "boxes": boxes}


def kdpipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdpipe", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_world_has_the_classes_with_their_own_rules(world: dict[str, Any]) -> None:
    labels = set(world["boxes"]["label"].drop_nulls().to_list())
    assert {"car", "truck", "pedestrian", "bicycle", "traffic_cone", "barrier"} <= labels
    assert world["boxes"]["vx_ego_mps"].null_count() > 0  # GT without velocity: NaN AVE terms


def test_submission_audit_equals_detection_eval(world: dict[str, Any]) -> None:
    out = kdpipe("audit", "--submission", str(world["sub"]), "--ingest", str(world["ingest"]),
                 "--json")
    assert out.returncode == 0, out.stderr
    got, want = json.loads(out.stdout), world["want"]
    assert 0.1 < want["mean_ap"] < 0.9 and 0.1 < want["nd_score"] < 0.9  # something to get right
    assert abs(got["mean_ap"] - want["mean_ap"]) < 1e-3
    assert abs(got["nd_score"] - want["nd_score"]) < 1e-3
    for metric, err in want["tp_errors"].items():
        assert abs(got["tp_errors"][metric] - err) < 1e-3, metric
    n_compared = 0
    for cls, ap in want["class_ap"].items():
        assert abs(got["class_ap"][cls] - ap) < 1e-3, cls
        for metric, err in want["class_tp_errors"][cls].items():
            mine = got["class_tp_errors"][cls][metric]
            if math.isnan(err):
                assert mine is None, (cls, metric)   # NaN in the devkit, null in strict JSON
            else:
                assert mine is not None and abs(mine - err) < 1e-3, (cls, metric, mine, err)
                n_compared += err not in (0.0, 1.0)  # a value computed from matches
    assert n_compared >= 15
    assert got["class_tp_errors"]["traffic_cone"]["orient_err"] is None
    assert got["class_tp_errors"]["barrier"]["vel_err"] is None
    assert got["class_tp_errors"]["barrier"]["orient_err"] is not None


def test_workspace_names_its_ingest_and_table_prints(world: dict[str, Any]) -> None:
    ws = world["ingest"].parents[2]  # <ws>/artifacts/ingest/<key>
    out = kdpipe("audit", "--submission", str(world["sub"]), "--ingest", str(ws))
    assert out.returncode == 0, out.stderr
    assert str(world["ingest"]) in out.stdout
    assert f"NDS {world['want']['nd_score']:.4f}" in out.stdout
    for word in ("mATE", "mASE", "mAOE", "mAVE", "mAAE", "traffic_cone", "barrier"):
        assert word in out.stdout


def _bad(world: dict[str, Any], name: str, text: str) -> subprocess.CompletedProcess[str]:
    path = world["tmp"] / name
    path.write_text(text)
    return kdpipe("audit", "--submission", str(path), "--ingest", str(world["ingest"]))


def _one_error_line(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_bad_submissions_are_one_line_exit_2(world: dict[str, Any]) -> None:
    data = json.loads(world["sub"].read_text())
    _one_error_line(_bad(world, "not.json", "{results: oops"), "is not JSON")
    _one_error_line(_bad(world, "no_results.json", json.dumps({"meta": {}})), "no 'results'")
    foreign = {**data["results"], "tok_a": [], "tok_b": []}
    _one_error_line(_bad(world, "foreign.json", json.dumps({"results": foreign})),
                    "2 of", "sample tokens", "not in", "'tok_a'")
    renamed = json.loads(json.dumps(data))
    first = next(b for boxes in renamed["results"].values() for b in boxes)
    first["detection_name"] = "Car"
    _one_error_line(_bad(world, "names.json", json.dumps(renamed)),
                    "unknown detection_name", "'Car'")
    out = kdpipe("audit", "--submission", str(world["sub"]), "--ingest",
                 str(world["tmp"] / "nowhere"))
    _one_error_line(out, "nowhere")


def test_devkit_settings_read_from_files_equal_the_imported_devkit() -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection import constants

    from kdpipe.evaluation.nuscenes_devkit import detection_constants
    from kdpipe.stages.audit.nuscenes import devkit_rules
    from kdpipe.stages.audit.tp_errors import devkit_tp_rules

    cfg, rules = config_factory("detection_cvpr_2019"), devkit_rules()
    assert rules.class_names == tuple(cfg.class_names)
    assert rules.class_range_m == dict(cfg.class_range)
    assert (rules.dist_ths_m, rules.min_recall, rules.min_precision,
            rules.max_boxes_per_sample) == (tuple(cfg.dist_ths), cfg.min_recall,
                                            cfg.min_precision, cfg.max_boxes_per_sample)
    tpr = devkit_tp_rules()
    assert (tpr.dist_th_tp_m, tpr.min_recall, tpr.mean_ap_weight) == (
        cfg.dist_th_tp, cfg.min_recall, cfg.mean_ap_weight)
    assert tpr.metrics == tuple(constants.TP_METRICS)
    const = detection_constants()
    assert const["DETECTION_NAMES"] == constants.DETECTION_NAMES
    assert const["ATTRIBUTE_NAMES"] == constants.ATTRIBUTE_NAMES


def _box(**over: Any) -> dict[str, Any]:
    box = {"sample_token": "s0", "translation": [1.0, 2.0, 0.5], "size": [2.0, 4.5, 1.6],
           "rotation": [1.0, 0.0, 0.0, 0.0], "velocity": [0.5, 0.0],
           "detection_name": "car", "detection_score": 0.9, "attribute_name": ""}
    return {**box, **over}


@pytest.mark.parametrize(("over", "words"), [
    ({"translation": [1.0, 2.0]}, ("every translation must be 3 numbers", "one has 2")),
    ({"translation": [1.0, 2.0, 3.0, 4.0], "velocity": [0.0]}, ("translation", "one has 4")),
    ({"rotation": [1.0, 0.0, "x", 0.0]}, ("every rotation must be 4 numbers",)),
    ({"size": 3.0}, ("every size must be 3 numbers",)),
    ({"detection_name": ["car"]}, ("unknown detection_name", "['car']")),
    ({"attribute_name": "vehicle.flying"}, ("unknown attribute_name", "'vehicle.flying'")),
    ({"detection_score": "nan"}, ("detection_score is not a number",)),
    ({"sample_token": "s1"}, ("sample_token other than",)),
])
def test_bad_boxes_are_one_error(over: dict[str, Any], words: tuple[str, ...]) -> None:
    from kdpipe.evaluation.nuscenes_submission import SubmissionError, submission_boxes
    from kdpipe.stages.audit.nuscenes import devkit_rules

    results = {"s0": [_box(), _box(**over), _box()]}
    with pytest.raises(SubmissionError) as err:
        submission_boxes(Path("sub.json"), results, np.eye(4)[None], devkit_rules().class_names,
                         500)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_missing_field_is_one_error() -> None:
    from kdpipe.evaluation.nuscenes_submission import SubmissionError, submission_boxes
    from kdpipe.stages.audit.nuscenes import devkit_rules

    box = _box()
    del box["velocity"]
    with pytest.raises(SubmissionError, match="lacks velocity"):
        submission_boxes(Path("sub.json"), {"s0": [_box(), box]}, np.eye(4)[None],
                         devkit_rules().class_names, 500)
