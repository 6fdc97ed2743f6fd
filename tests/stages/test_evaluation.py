"""Official evaluation on tables: KITTI export + vod-tudelft, nuScenes submission + DetectionEval.

Ground truth fed back as predictions must score 100 in the official tools, a hand-built case
must score the AP computed by hand, and boxes must survive the trip through the files.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kdpipe.datasets.formats.kitti import read_kitti_labels
from kdpipe.datasets.synth import SynthConfig, write_nuscenes, write_vod
from kdpipe.evaluation.kitti_export import (
    ExportError,
    kitti_stems,
    read_frame_map,
    write_kitti_ground_truth,
    write_kitti_predictions,
)
from kdpipe.evaluation.nuscenes_eval import (
    default_attribute,
    score_nuscenes,
    write_submission,
)
from kdpipe.evaluation.vod_eval import CLASSES, evaluate_tables, score_vod
from kdpipe.schemas import boxes as bx
from kdpipe.schemas.tables import BOXES, CALIBRATION, DETECTIONS, FRAMES, PSEUDO_LABELS, frame_table
from kdpipe.testing import ingest_store as ingest

BOX_COLS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]
AREAS = ("entire_area", "roi")
# A KITTI-like camera 1.5 m above the ego origin (ego x forward = camera z, y left = -x, z up = -y)
T_CAM_FROM_EGO = np.array([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])
P2 = np.array([[1495.0, 0, 968, 0], [0, 1495, 608, 0], [0, 0, 1, 0]])
IMAGE_WH = (1936, 1216)


def read_ingest(art: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return tuple(pl.read_parquet(art / f"{n}.parquet") for n in ("frames", "boxes", "calibration"))


def tile(tables: tuple[pl.DataFrame, ...], k: int) -> tuple[pl.DataFrame, ...]:
    """k copies of every frame under new frame_ids (native frame numbers repeat)."""
    return tuple(pl.concat([t.with_columns(frame_id=pl.col("frame_id") + f"#{i}")
                            for i in range(k)]) for t in tables)


def as_detections(boxes: pl.DataFrame) -> pl.DataFrame:
    """GT boxes as a model's DETECTIONS table (no 2D boxes: the export projects them)."""
    return (boxes.with_columns(det_index=pl.col("box_index"), score=pl.lit(1.0))
            .select(list(DETECTIONS)))


def assert_ground_truth_scores_100(tmp: Path, frames: pl.DataFrame, boxes: pl.DataFrame,
                                   calib: pl.DataFrame) -> dict[str, float]:
    # 1. As is: the evaluator's 41 recall positions are counted in true positives, so a class
    #    with n < 41 valid boxes scores ceil(n / 4) / 11 (AP11) and (n - 1) / 40 (AP40).
    few = evaluate_tables(boxes, boxes, frames, calib, None, tmp / "few")
    n_gt = {(a, c): few[f"{a}/{c}_n_gt"] for a in AREAS for c in CLASSES}
    assert any(0 < n < 41 for n in n_gt.values()), n_gt
    for (a, c), n in n_gt.items():
        assert few[f"{a}/{c}_3d_ap11"] == pytest.approx(100 * min(math.ceil(n / 4), 11) / 11)
        assert few[f"{a}/{c}_3d_ap40"] == pytest.approx(100 * min(max(n - 1, 0), 40) / 40)
    # 2. The same boxes as detections (2D boxes projected by the export) pass the 40 px rule
    #    alike, and our AP11 is the tool's own number.
    proj = evaluate_tables(as_detections(boxes), boxes, frames, calib, None, tmp / "proj")
    assert {k: v for k, v in proj.items() if "aos" not in k} == pytest.approx(
        {k: v for k, v in few.items() if "aos" not in k})
    from vod.evaluation import Evaluation

    official = Evaluation(str(tmp / "few" / "gt")).evaluate(str(tmp / "few" / "pred"), [0, 1, 2])
    for a in AREAS:
        for key, value in official[a].items():
            assert few[f"{a}/{key.replace('_all', '_ap11')}"] == pytest.approx(value, abs=1e-9)
    # 3. Tiled until every present class has >= 41 valid boxes: 100 in both areas. The frame
    #    count is a multiple of 50: the evaluator computes IoUs pairwise within blocks of
    #    n_frames // 50 frames (one block for < 50 frames), in pure Python.
    need = math.ceil(41 / min(n for n in n_gt.values() if n))
    k = next(k for k in itertools.count(need) if frames.height * k % 50 == 0)
    frames_k, boxes_k, calib_k = tile((frames, boxes, calib), k)
    res = evaluate_tables(boxes_k, boxes_k, frames_k, calib_k, None, tmp / "tiled")
    present = [(a, c) for (a, c), n in n_gt.items() if n]
    assert {(a, c) for a in AREAS for c in CLASSES if res[f"{a}/{c}_n_gt"]} == set(present)
    for a, c in present:
        for key in (f"{a}/{c}_3d_ap11", f"{a}/{c}_bev_ap11", f"{a}/{c}_3d_ap40"):
            assert res[key] == pytest.approx(100.0), (key, res[key])
    return res


@pytest.fixture(scope="module")
def synth_vod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("synth_vod")
    write_vod(tmp / "synth", 4, seed=3)
    return ingest(tmp, tmp / "synth", "vod")


def test_synthetic_vod_ground_truth_scores_100(tmp_path: Path, synth_vod: Path) -> None:
    frames, boxes, calib = read_ingest(synth_vod)
    res = assert_ground_truth_scores_100(tmp_path, frames, boxes, calib)
    assert res["entire_area/mAP_3d_ap11"] == pytest.approx(100.0)


def test_real_vod_ground_truth_scores_100(tmp_path: Path, real: Path) -> None:
    frames, boxes, calib = read_ingest(ingest(tmp_path, real / "vod", "vod"))
    assert frames.height == 3
    assert_ground_truth_scores_100(tmp_path, frames, boxes, calib)
    # the exported ground truth is the original file, line by line (up to float round-off)
    write_kitti_ground_truth(boxes, frames, calib, tmp_path / "gt")
    for stem in ("00549", "01047", "01201"):
        ours = read_kitti_labels(tmp_path / "gt" / f"{stem}.txt")
        orig = read_kitti_labels(real / "vod/lidar/training/label_2" / f"{stem}.txt")
        assert list(ours.class_name) == list(orig.class_name)
        np.testing.assert_array_equal(ours.occluded, orig.occluded)
        np.testing.assert_array_equal(ours.bbox_ltrb, orig.bbox_ltrb)
        np.testing.assert_allclose(ours.loc_cam, orig.loc_cam, atol=1e-9)
        np.testing.assert_allclose(ours.dims_hwl, orig.dims_hwl, atol=1e-9)
        # VoD writes some rotations beyond [-pi, pi); ours are wrapped
        np.testing.assert_allclose(np.sin(ours.rot_y), np.sin(orig.rot_y), atol=1e-9)
        np.testing.assert_allclose(np.cos(ours.rot_y), np.cos(orig.rot_y), atol=1e-9)


# ----------------------------------------------------------------------------- hand-built case


def hand_tables(n_frames: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per frame 4 GT cars and 5 predictions with known outcomes (see test below)."""
    car = (4.0, 1.8, 1.5)  # l, w, h
    gt_xy = [(10.0, -2.0), (15.0, 2.0), (18.0, -1.0), (24.0, 1.0)]
    preds = [  # (x, y, l, w, h, score): outcome
        (10.0, -2.0, *car, 0.9),       # GT0 exactly: TP
        (8.0, 3.5, *car, 0.8),         # overlaps nothing: FP
        (15.3, 2.0, *car, 0.7),        # GT1 moved 0.3 m, 3D IoU ~0.86 > 0.5: TP
        (20.5, -1.0, *car, 0.6),       # GT2 moved 2.5 m, IoU 0.23 < 0.5: FP (and GT2 missed)
        (22.0, -3.5, 0.5, 0.5, 0.3, 0.95),  # < 40 px high: ignored, else the top FP
    ]                                  # GT3: missed
    frames, gts, dets, calib = [], [], [], []
    for f in range(n_frames):
        fid = f"hand/{f:05d}"
        frames.append({"frame_id": fid, "dataset": "vod", "source": "hand", "frame": f"{f:05d}",
                       "split": "val", "t_world_from_ego": np.eye(4).ravel().tolist()})
        calib.append({"frame_id": fid, "sensor": "camera",
                      "t_ego_from_sensor": np.linalg.inv(T_CAM_FROM_EGO).ravel().tolist(),
                      "intrinsics": P2.ravel().tolist(), "image_width_px": IMAGE_WH[0],
                      "image_height_px": IMAGE_WH[1]})
        g = np.array([[x, y, car[2] / 2, *car, 0.0] for x, y in gt_xy])
        bbox = bx.project_to_image_bbox(g, T_CAM_FROM_EGO, P2, IMAGE_WH)
        for i, b in enumerate(g):
            gts.append({"frame_id": fid, "box_index": i, "class_name": "Car", "label": "Car",
                        **dict(zip(BOX_COLS, b.tolist(), strict=True)), "occluded": 0,
                        **dict(zip(("bbox_left_px", "bbox_top_px", "bbox_right_px",
                                    "bbox_bottom_px"), bbox[i].tolist(), strict=True))})
        for i, (x, y, ln, w, h, s) in enumerate(preds):
            dets.append({"frame_id": fid, "det_index": i, "label": "Car", "score": s,
                         **dict(zip(BOX_COLS, (x, y, h / 2, ln, w, h, 0.0), strict=True))})
    return (frame_table(frames, FRAMES), frame_table(gts, BOXES), frame_table(dets, DETECTIONS),
            frame_table(calib, CALIBRATION))


def interpolated_ap(scores: list[float], is_tp: list[bool], n_gt: int,
                    recalls: np.ndarray) -> float:
    """Textbook interpolated AP: PR at every score threshold, precision at recall r = the best
    precision at any recall >= r, averaged over the recall positions."""
    s, tp = np.asarray(scores), np.asarray(is_tp)
    pr = [(tp[s >= t].sum() / n_gt, tp[s >= t].sum() / (s >= t).sum()) for t in np.unique(s)]
    return 100 * float(np.mean([max([p for r_, p in pr if r_ >= r - 1e-12], default=0.0)
                                for r in recalls]))


def test_hand_built_case_scores_the_hand_computed_ap(tmp_path: Path) -> None:
    frames, gt, dets, calib = hand_tables(1)
    small = dets.filter(pl.col("score") == 0.95).select(BOX_COLS).to_numpy()
    l_, t, r, b = bx.project_to_image_bbox(small, T_CAM_FROM_EGO, P2, IMAGE_WH)[0]
    assert b - t < 40 and r - l_ > 0  # visible, but under the evaluator's 40 px
    assert (gt["bbox_bottom_px"] - gt["bbox_top_px"]).min() > 40
    k = 20  # 80 GT cars: then the tool's 41 positions sit exactly at recall 0, 1/40, ..., 1
    frames_k, gt_k, dets_k, calib_k = tile((frames, gt, dets, calib), k)
    res = evaluate_tables(dets_k, gt_k, frames_k, calib_k, None, tmp_path / "k")
    scores = [0.9, 0.8, 0.7, 0.6] * k  # the small box is ignored, not a detection
    is_tp = [True, False, True, False] * k
    ap11 = interpolated_ap(scores, is_tp, 4 * k, np.linspace(0, 1, 11))
    ap40 = interpolated_ap(scores, is_tp, 4 * k, np.arange(1, 41) / 40)
    # written out: recall 0.25 at precision 1, recall 0.5 at precision 2/3, nothing beyond
    assert ap11 == pytest.approx(100 * (3 * 1 + 3 * 2 / 3) / 11)
    assert ap40 == pytest.approx(100 * (10 * 1 + 10 * 2 / 3) / 40)
    for a in AREAS:  # every box is inside the driving corridor
        assert res[f"{a}/Car_n_gt"] == 4 * k
        assert res[f"{a}/Car_3d_ap11"] == pytest.approx(ap11, abs=1e-2)
        assert res[f"{a}/Car_bev_ap11"] == pytest.approx(ap11, abs=1e-2)
        assert res[f"{a}/Car_3d_ap40"] == pytest.approx(ap40, abs=1e-2)
        assert res[f"{a}/Pedestrian_3d_ap11"] == 0.0 and res[f"{a}/Pedestrian_n_gt"] == 0
    # One frame alone: 2 true positives fill positions 0 and 1 only (the positions count TPs,
    # not recall), so the tool reports 1/11 where the textbook says 5/11.
    one = evaluate_tables(dets, gt, frames, calib, None, tmp_path / "one")
    assert one["entire_area/Car_3d_ap11"] == pytest.approx(100 / 11)
    assert one["entire_area/Car_3d_ap40"] == pytest.approx(100 * (2 / 3) / 40)


# ----------------------------------------------------------------------------- files


def test_prediction_round_trip_and_files(tmp_path: Path) -> None:
    frames, _, _, calib = hand_tables(3)
    rng = np.random.default_rng(0)
    n = 25
    ego = np.column_stack([rng.uniform(3, 45, n), rng.uniform(-10, 10, n), rng.uniform(-1, 2, n),
                           rng.uniform(0.5, 5, n), rng.uniform(0.5, 2.5, n),
                           rng.uniform(0.8, 2.5, n), rng.uniform(-np.pi, np.pi, n)])
    rows = [{"frame_id": "hand/00000", "det_index": i, "label": ["Car", "Cyclist"][i % 2],
             "score": float(rng.uniform()), **dict(zip(BOX_COLS, b.tolist(), strict=True)),
             "state": "positive" if i % 3 else "ignore"} for i, b in enumerate(ego)]
    pseudo = frame_table(rows, PSEUDO_LABELS)
    # all states: every box, in the camera frame, back to the same ego box
    out = tmp_path / "all"
    mapping = write_kitti_predictions(pseudo, frames, calib, out, frames["frame_id"].to_list(),
                                      all_states=True)
    assert mapping == {f"hand/{i:05d}": f"{i:05d}" for i in range(3)} == read_frame_map(out)
    assert (out / "00001.txt").read_text() == "" == (out / "00002.txt").read_text()
    lab = read_kitti_labels(out / "00000.txt")
    assert len(lab) == n and lab.has_score
    order = np.argsort(-pseudo["score"].to_numpy(), kind="stable")  # files list by score
    back = bx.kitti_camera_to_ego(lab.loc_cam, lab.dims_hwl, lab.rot_y, T_CAM_FROM_EGO)
    np.testing.assert_allclose(back[:, :6], ego[order, :6], atol=1e-4)
    dyaw = np.mod(back[:, 6] - ego[order, 6] + np.pi, 2 * np.pi) - np.pi
    assert np.abs(dyaw).max() < 1e-4
    np.testing.assert_allclose(lab.score, pseudo["score"].to_numpy()[order])
    np.testing.assert_allclose(lab.alpha, np.mod(lab.rot_y - np.arctan2(lab.loc_cam[:, 0],
                                                 lab.loc_cam[:, 2]) + np.pi, 2 * np.pi) - np.pi)
    proj = np.nan_to_num(bx.project_to_image_bbox(ego[order], T_CAM_FROM_EGO, P2, IMAGE_WH))
    np.testing.assert_allclose(lab.bbox_ltrb, proj)
    assert (lab.bbox_ltrb[:, 2] <= IMAGE_WH[0]).all() and (lab.bbox_ltrb >= 0).all()
    # the devkit's own reader agrees (16 columns -> scores)
    from vod.evaluation.evaluation_common import get_label_annotation

    anno = get_label_annotation(str(out / "00000.txt"))
    np.testing.assert_allclose(anno["score"], lab.score)
    assert len(get_label_annotation(str(out / "00001.txt"))["name"]) == 0
    # default: positive pseudo-labels only
    pos = read_kitti_labels(tmp_path / "pos" / "00000.txt") if write_kitti_predictions(
        pseudo, frames, calib, tmp_path / "pos") else None
    assert pos is not None and len(pos) == sum(r["state"] == "positive" for r in rows)
    assert not (tmp_path / "pos" / "00001.txt").exists()  # default frame list: the table's


def test_stems_and_bad_input(tmp_path: Path) -> None:
    frames, gt, dets, calib = hand_tables(2)
    assert kitti_stems(frames) == {"hand/00000": "00000", "hand/00001": "00001"}
    frames2, gt2 = tile((frames, gt), 2)
    assert kitti_stems(frames2) == {f: f"{i:06d}" for i, f in enumerate(frames2["frame_id"])}
    with pytest.raises(ExportError, match="not in the frames table"):
        write_kitti_predictions(dets.with_columns(frame_id=pl.lit("hand/99999")), frames, calib,
                                tmp_path / "x")
    with pytest.raises(ExportError, match="no box columns"):
        write_kitti_predictions(dets.drop("yaw_ego_rad"), frames, calib, tmp_path / "x")
    with pytest.raises(ExportError, match="calibration"):
        write_kitti_predictions(dets, frames, calib.head(1), tmp_path / "x")
    with pytest.raises(ExportError, match="size <= 0"):
        write_kitti_predictions(dets.with_columns(length_m=pl.lit(0.0)), frames, calib,
                                tmp_path / "x")
    write_kitti_predictions(dets, frames, calib, tmp_path / "p")
    write_kitti_predictions(dets, frames, calib, tmp_path / "p")  # the same files again: fine
    with pytest.raises(ExportError, match="other label file"):  # would be read as frames
        write_kitti_predictions(dets, frames2, calib, tmp_path / "p", frames2["frame_id"].to_list())
    with pytest.raises(ExportError, match="no ground truth"):
        score_vod(tmp_path / "empty_gt", tmp_path / "p")


# ----------------------------------------------------------------------------- nuScenes


@pytest.fixture(scope="module")
def synth_nus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("synth_nus")
    write_nuscenes(tmp / "nus", 2, seed=3, cfg=SynthConfig(
        nus_samples_per_scene=3, image_scale=0.25, nus_lidar_azimuths=256, nus_radar_sweeps=1))
    return tmp / "nus", ingest(tmp, tmp / "nus", "nuscenes", camera_channels=[])


def test_nuscenes_ground_truth_submission_scores_1(tmp_path: Path,
                                                   synth_nus: tuple[Path, Path]) -> None:
    from nuscenes import NuScenes

    root, art = synth_nus
    frames, boxes, _ = read_ingest(art)
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    val = frames.filter(pl.col("split") == "val")["frame_id"].to_list()
    sub = tmp_path / "gt.json"
    summary = write_submission(boxes, frames, sub, val)
    assert summary["n_samples"] == len(val) == 3
    for eval_set, ids in (("mini_val", val), ("synth_val", frames["frame_id"].to_list())):
        write_submission(boxes, frames, sub, ids)  # a custom split takes its samples from more
        res = score_nuscenes(root, "v1.0-mini", eval_set, sub, tmp_path / eval_set, nusc=nusc)
        present = [c for c in ("car", "pedestrian", "bicycle") if res["class_ap"][c] > 0]
        assert present == ["car", "pedestrian", "bicycle"]
        assert all(res["class_ap"][c] > 0.99 for c in present)
        # mAP averages all 10 classes; the synthetic world has 3, each at AP 1
        assert res["mean_ap"] == pytest.approx(len(present) / 10, abs=1e-6)
        assert res["class_tp_errors"]["car"]["trans_err"] < 1e-6
        assert res["class_tp_errors"]["car"]["orient_err"] < 1e-6
        assert res["class_tp_errors"]["car"]["attr_err"] < 1e-6
    # a sample without boxes is an empty list; without it the devkit refuses the file
    gone = val[0]
    token = frames.filter(pl.col("frame_id") == gone)["frame"][0]
    write_submission(boxes.filter(pl.col("frame_id") != gone), frames, sub, val)
    assert json.loads(sub.read_text())["results"][token] == []
    res = score_nuscenes(root, "v1.0-mini", "mini_val", sub, tmp_path / "gone", nusc=nusc)
    assert 0 < res["class_ap"]["car"] < 1  # its boxes are now misses
    data = json.loads(sub.read_text())
    del data["results"][token]
    sub.write_text(json.dumps(data))
    with pytest.raises(ExportError, match="Samples in split"):
        score_nuscenes(root, "v1.0-mini", "mini_val", sub, tmp_path / "bad", nusc=nusc)


def test_nuscenes_submission_records(tmp_path: Path, synth_nus: tuple[Path, Path]) -> None:
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    frames, boxes, _ = read_ingest(synth_nus[1])
    fid = frames["frame_id"][0]
    f = frames.row(0, named=True)
    rng = np.random.default_rng(1)
    n = 600
    ego = np.column_stack([rng.uniform(-40, 40, (n, 3)), rng.uniform(0.5, 4, (n, 3)),
                           rng.uniform(-np.pi, np.pi, n)])
    rows = [{"frame_id": fid, "det_index": i, "label": "Car", "score": float(s),
             **dict(zip(BOX_COLS, b.tolist(), strict=True)), "vx_ego_mps": 3.0, "vy_ego_mps": None}
            for i, (b, s) in enumerate(zip(ego, rng.uniform(size=n), strict=True))]
    dets = frame_table(rows, DETECTIONS)
    summary = write_submission(dets, frames, tmp_path / "s.json")
    assert summary == {"n_samples": frames.height, "n_boxes": 500, "n_truncated": 100}
    preds, meta = load_prediction(str(tmp_path / "s.json"), 500, DetectionBox)
    assert meta["use_radar"] and set(preds.sample_tokens) == set(frames["frame"])
    got = preds[f["frame"]]
    kept = np.sort(dets["score"].to_numpy())[::-1][:500]
    np.testing.assert_allclose(sorted((b.detection_score for b in got), reverse=True), kept)
    # back to ego with the schema's inverse: the same boxes
    T = np.reshape(f["t_world_from_ego"], (4, 4))
    from pyquaternion import Quaternion

    q = Quaternion(matrix=T[:3, :3], atol=1e-6).elements
    back = bx.nuscenes_global_to_ego([b.translation for b in got], [b.size for b in got],
                                     [b.rotation for b in got], T[:3, 3], q)
    order = np.argsort(-dets["score"].to_numpy(), kind="stable")[:500]
    np.testing.assert_allclose(back[:, :6], ego[order, :6], atol=1e-6)
    v = np.array([b.velocity for b in got])
    np.testing.assert_allclose(np.hypot(v[:, 0], v[:, 1]), 3.0, atol=0.05)  # ego roll/pitch
    assert {b.attribute_name for b in got} == {"vehicle.moving"}
    assert default_attribute("pedestrian", 0.0) == "pedestrian.standing"
    assert default_attribute("barrier", 5.0) == ""
    with pytest.raises(ExportError, match="not nuScenes detection classes"):
        write_submission(dets.with_columns(label=pl.lit("Dinosaur")), frames, tmp_path / "x.json")


def test_a_second_process_loads_the_evaluator_compiled(tmp_path: Path) -> None:
    """vod-tudelft's numba functions were compiled again in every process (~12 s per evaluate
    stage); kdpipe imports them with numba's disk cache on, so a second process compiles none
    of them: neither those compiled at import (signatures given) nor those compiled on first
    call (`get_thresholds` here, the cheapest)."""
    import subprocess
    import sys

    probe = """
import json, numba, numpy as np
from kdpipe.evaluation import vod_eval
koe = vod_eval._koe()
import vod.evaluation.rotate_iou_cpu as rot
thresholds = koe.get_thresholds(np.array([0.9, 0.5, 0.7]), 3)
disp = [f for m in (koe, rot) for f in vars(m).values()
        if isinstance(f, numba.core.dispatcher.Dispatcher)]
print(json.dumps({"thresholds": list(map(float, thresholds)),
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in disp),
                  "misses": sum(sum(d.stats.cache_misses.values()) for d in disp),
                  "lazy_hit": sum(koe.get_thresholds.stats.cache_hits.values())}))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                                      capture_output=True, text=True).stdout)
            for _ in range(2)]
    assert runs[0]["misses"] > 0 and any((tmp_path / "numba").rglob("*.nbi"))
    assert runs[1]["misses"] == 0 and runs[1]["hits"] == runs[0]["misses"]
    assert runs[1]["lazy_hit"] == 1 and runs[0]["thresholds"] == runs[1]["thresholds"]


def test_without_a_writable_numba_cache_the_evaluator_still_compiles() -> None:
    """Where numba finds no cache directory it raises when the decorator is applied; the
    wrapper then compiles without a cache, in both decorator forms vod-tudelft uses."""
    from kdpipe.evaluation.vod_eval import cached_jit

    calls: list[dict[str, object]] = []

    def fake_jit(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        if args and callable(args[0]):           # `@jit` on the function itself
            if kwargs.get("cache"):
                raise RuntimeError("cannot cache function: no locator available")
            return ("compiled", args[0])

        def deco(func: object) -> object:        # `@jit(...)` then applied
            if kwargs.get("cache"):
                raise RuntimeError("cannot cache function: no locator available")
            return ("compiled", func)
        return deco

    def f() -> None:
        pass

    jit = cached_jit(fake_jit)
    assert jit(f) == ("compiled", f)
    assert jit("(float32[:],)", nopython=True)(f) == ("compiled", f)
    assert [c.get("cache") for c in calls] == [True, None, True, None]
    assert jit(f, cache=False) == ("compiled", f) and calls[-1] == {"cache": False}
