"""Inference tasks: the prefetching `run_task` writes the same Parquet part, byte for byte, as
the sequential read -> forward -> per-frame decode loop it replaced; bf16 autocast runs on the
CPU and gives finite boxes close to fp32's; the prefetcher keeps order and passes errors on."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from kdpipe.models import create_model
from kdpipe.models._reference import decode_boxes_reference
from kdpipe.models.batch import collate
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime import inference
from kdpipe.runtime.checkpoints import save_checkpoint
from kdpipe.runtime.inference import (
    InferTask,
    Prefetcher,
    detection_frame,
    forward_precision,
    run_task,
)
from kdpipe.runtime.model_data import frame_arrays, read_group_frames, sensor_map
from kdpipe.schemas.tables import check_table
from kdpipe.stages.evaluate import EvaluateConfig
from kdpipe.stages.teacher_label import TeacherLabelConfig
from kdpipe.testing import TINY_DETECTOR, ingest_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, vod_world: Path):  # type: ignore[no-untyped-def]
    from kdpipe.datasets.store import IngestStore

    return IngestStore.from_artifact(ingest_store(tmp_path_factory.mktemp("ingest"), vod_world))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained SCKD teacher with rotated NMS on, shaped so that NMS removes boxes."""
    torch.manual_seed(0)
    model = create_model("sckd-teacher", **TINY_DETECTOR, nms_iou_bev=0.1)
    with torch.no_grad():  # untrained heads give flat scores and 1 m boxes: spread and grow them
        model.head.heatmap[3].weight.mul_(30.0)
        model.head.box[3].bias[3:5].add_(1.2)  # l, w ~ 3.3 m: neighbouring peaks overlap
    path = tmp_path_factory.mktemp("ckpt") / "teacher.pt"
    save_checkpoint(path, model, {"stage": "test"})
    return path


def _task(store, checkpoint: Path, part: Path, **kw: object) -> InferTask:  # type: ignore[no-untyped-def]
    frames = store.read_frames().filter(pl.col("split").is_in(["val", "unlabeled"]))
    (source, scene), g = next(iter(frames.group_by("source", "scene", maintain_order=True)))
    args = {"store": store, "checkpoint": str(checkpoint), "source": str(source),
            "scene": str(scene), "frame_ids": tuple(g["frame_id"].to_list()),
            "frame_indices": tuple(int(i) for i in g["frame_index"]), "radar_sensor": "radar",
            "batch_size": 3, "top_k": 50, "score_floor": 0.01, "device": "cpu",
            "part": str(part)} | kw
    return InferTask(**args)  # type: ignore[arg-type]


def _sequential(task: InferTask, detect: Callable[[Any, dict[str, Any]], list[Any]]
                ) -> pl.DataFrame:
    """Read everything, then batch by batch `detect(model, batch)` (per-frame dicts)."""
    model = inference.cached_model(task.checkpoint, task.device)
    arrays = [frame_arrays(p, c) for p, c in read_group_frames(
        task.store, task.source, task.scene, task.frame_indices,
        sensor_map(task.radar_sensor, model.modalities), model.config.point_cloud_range_m)]
    out = []
    with torch.inference_mode():
        for start in range(0, len(arrays), task.batch_size):
            end = start + task.batch_size
            dets = detect(model, collate(arrays[start:end], model.modalities))
            out.append(detection_frame(list(task.frame_ids[start:end]), dets, model.classes))
    return pl.concat(out)


def _sequential_part(task: InferTask, path: Path) -> None:
    """The previous run_task: the sequential loop with the per-frame decode + host-loop NMS."""
    def detect(model: Any, batch: dict[str, Any]) -> list[Any]:
        o = model(batch)
        return decode_boxes_reference(o["heatmap"], o["box"], model.config, task.score_floor,
                                      task.top_k)
    _sequential(task, detect).write_parquet(path)


def test_run_task_part_is_byte_identical_to_the_sequential_loop(store, checkpoint: Path,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    task = _task(store, checkpoint, tmp_path / "part.parquet")
    assert run_task(task) == task.part
    _sequential_part(task, tmp_path / "reference.parquet")
    got = pl.read_parquet(task.part)
    check_table(got, "detections/1")
    assert got.height > 0 and got["frame_id"].n_unique() > 1
    assert Path(task.part).read_bytes() == (tmp_path / "reference.parquet").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_bf16_runs_on_cpu_and_is_close_to_fp32(store, checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp32 = pl.read_parquet(run_task(_task(store, checkpoint, tmp_path / "fp32.parquet")))
    bf16 = pl.read_parquet(run_task(_task(store, checkpoint, tmp_path / "bf16.parquet",
                                          amp="bf16")))
    check_table(bf16, "detections/1")
    cols = ["score", "x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m",
            "yaw_ego_rad"]
    assert bf16.height > 0 and all(bf16[c].is_finite().all() for c in cols)
    # The strongest fp32 boxes come back: same class, within a cell, score within 0.03.
    model = inference.cached_model(str(checkpoint), "cpu")
    cell_m = model.config.out_cell_m
    top = fp32.sort("score", descending=True).head(20)
    for row in top.iter_rows(named=True):
        near = bf16.filter((pl.col("frame_id") == row["frame_id"])
                           & (pl.col("label") == row["label"])
                           & ((pl.col("x_ego_m") - row["x_ego_m"]).abs() <= 1.5 * cell_m)
                           & ((pl.col("y_ego_m") - row["y_ego_m"]).abs() <= 1.5 * cell_m))
        assert near.height > 0, row
        assert (near["score"] - row["score"]).abs().min() < 0.03, (row, near)


def test_bf16_forward_of_tiny_models_is_finite_and_close() -> None:
    g = torch.Generator().manual_seed(1)
    frames = []
    for _ in range(3):
        xyz = torch.rand(500, 3, generator=g) * torch.tensor([50.0, 50.0, 4.0]) \
            + torch.tensor([0.0, -25.0, -2.5])
        frames.append({"lidar": torch.cat([xyz, torch.rand(500, 1, generator=g)], 1).numpy(),
                       "radar": torch.cat([xyz[:60], torch.rand(60, 3, generator=g)], 1).numpy()})
    for name in ("sckd-teacher", "radar-only"):
        torch.manual_seed(0)
        model = create_model(name, **TINY_DETECTOR).eval()
        batch = collate(frames, model.modalities)
        with torch.inference_mode():
            ref = model(batch)
            with forward_precision(torch.device("cpu"), "bf16"):
                out = model(batch)
            dets = model.decode(out, score_threshold=0.0, top_k=100)
        assert out["heatmap"].dtype == torch.bfloat16  # autocast really ran
        torch.testing.assert_close(out["heatmap"].float().sigmoid(), ref["heatmap"].sigmoid(),
                                   atol=0.02, rtol=0)
        torch.testing.assert_close(out["box"].float(), ref["box"], atol=0.1, rtol=0.05)
        for d in dets:  # decoding ran in float32
            assert d["boxes"].dtype == d["scores"].dtype == torch.float32
            assert torch.isfinite(d["boxes"]).all() and len(d["scores"]) == 100


def test_amp_config_fields() -> None:
    assert TeacherLabelConfig().amp == EvaluateConfig().amp == "fp32"
    assert TeacherLabelConfig(amp="bf16").amp == "bf16"
    with pytest.raises(ValueError, match="amp"):
        EvaluateConfig(amp="fp16")  # type: ignore[arg-type]
    with forward_precision(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_prefetcher_order_errors_and_early_exit() -> None:
    with Prefetcher(lambda: iter(range(50))) as p:
        assert list(p) == list(range(50))

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        yield 2
        raise ConfigError("bad store")

    seen = []
    with pytest.raises(ConfigError, match="bad store"), Prefetcher(failing) as p:
        seen.extend(p)
    assert seen == [1, 2]
    # A consumer that stops early (an error in the forward) stops the producer thread too.
    started = threading.Event()

    def endless():  # type: ignore[no-untyped-def]
        started.set()
        i = 0
        while True:
            yield i
            i += 1

    with Prefetcher(endless) as p:
        for i in p:
            if i == 3:
                break
    assert started.is_set() and not p._thread.is_alive()


def test_read_errors_reach_run_task_and_no_part_is_written(store, checkpoint: Path,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    task = _task(store, checkpoint, tmp_path / "part.parquet", radar_sensor="radar_9")
    with pytest.raises(ConfigError, match="radar_9"):
        run_task(task)
    assert not list(tmp_path.iterdir())


def test_flip_tta_part_is_the_decode_of_the_averaged_maps(store, checkpoint: Path,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    """teacher-label's `tta = "flip"`: each batch's detections are the decode of its head maps
    averaged with its mirror's (models/tta.py), in the same part format; without TTA they
    differ (an untrained model is not mirror-symmetric)."""
    from kdpipe.models.tta import flip_averaged

    task = _task(store, checkpoint, tmp_path / "tta.parquet", tta="flip")
    got = pl.read_parquet(run_task(task))
    check_table(got, "detections/1")

    def detect(model: Any, batch: dict[str, Any]) -> list[Any]:
        out = flip_averaged(model, batch, model(batch))
        return model.decode(out, score_threshold=task.score_floor, top_k=task.top_k)
    want = _sequential(task, detect)
    assert got.height > 0
    assert got.equals(want)
    plain = pl.read_parquet(run_task(_task(store, checkpoint, tmp_path / "plain.parquet")))
    assert not plain.equals(got)


def test_flip_tta_refuses_a_camera_model(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model("imkd-student", **TINY_DETECTOR)
    path = tmp_path / "imkd.pt"
    save_checkpoint(path, model, {"stage": "test"})
    with pytest.raises(ConfigError, match="tta = 'flip'.*point clouds only"):
        run_task(_task(store, path, tmp_path / "part.parquet", tta="flip"))
    assert TeacherLabelConfig().tta == "none"
    with pytest.raises(ValueError, match="tta"):
        TeacherLabelConfig(tta="rotate")  # type: ignore[arg-type]
