"""Teacher stages end to end on a synthetic VoD world: train, label, filter, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.models import create_model
from kdpipe.models.batch import EMPTY, Targets, TrainFrame
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.checkpoints import load_model, read_checkpoint
from kdpipe.runtime.train_loop import OptimConfig, fit
from kdpipe.schemas.tables import check_table
from kdpipe.testing import TINY_DETECTOR

TINY = TINY_DETECTOR


def _workflow(tmp: Path, world: Path, sigma: float = 0.1) -> Path:
    p = tmp / "teacher.toml"
    p.write_text(f"""[workflow]
name = "teacher-test"
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "evaluate"]
seed = 1
[ingest]
format = "vod"
roots = ["{world}"]
[teacher-train]
max_frames = 8
detector = {toml_value(TINY)}
[teacher-train.optim]
epochs = 4
batch_size = 4
lr_max = 0.003
[teacher-label]
batch_size = 4
[pseudo-label]
sigma = {sigma}
""")
    return p


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory, vod_world: Path
                ) -> tuple[Path, str, dict[str, dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("teacher")
    wf = _workflow(tmp, vod_world)
    ws = str(tmp / "ws")
    rep = run_workflow(wf, ws, scheduler="sync")
    return wf, ws, {s["stage"]: s for s in rep["stages"]}


def test_teacher_loss_falls_and_checkpoint_loads_weights_only(teacher_run) -> None:  # type: ignore[no-untyped-def]
    _, _, st = teacher_run
    log = pl.read_parquet(st["teacher-train"]["outputs"]["train_log"])
    assert log.height == 4
    assert log["loss"][-1] < 0.8 * log["loss"][0], log["loss"].to_list()
    ckpt = Path(st["teacher-train"]["outputs"]["teacher"])
    blob = torch.load(ckpt, weights_only=True)  # plain tensors and builtins only
    assert blob["name"] == "sckd-teacher" and blob["meta"]["key"] == st["teacher-train"]["key"]
    model, meta = load_model(ckpt)
    assert not model.training and meta["train_frames"] == 8
    assert model.config.pillar_size_m == TINY["pillar_size_m"]


def test_teacher_label_keeps_every_frame_and_scores(teacher_run, vod_world: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, st = teacher_run
    dets = pl.read_parquet(st["teacher-label"]["outputs"]["detections"])
    frames = pl.read_parquet(st["teacher-label"]["outputs"]["detection_frames"])
    check_table(dets, "detections/1")
    check_table(frames, "detection_frames/1")
    ingest = Path(st["ingest"]["path"])
    want = pl.read_parquet(ingest / "frames.parquet").filter(
        pl.col("split").is_in(["unlabeled", "val"]))
    assert sorted(frames["frame_id"]) == sorted(want["frame_id"])
    assert frames["n_detections"].sum() == dets.height
    assert dets["score"].min() >= 0.01 and dets["score"].max() <= 1.0
    assert dets.group_by("frame_id").len()["len"].max() <= 100
    pseudo = pl.read_parquet(st["pseudo-label"]["outputs"]["pseudo_labels"])
    assert pseudo.height == dets.filter(pl.col("score") >= 0.1).height
    pframes = pl.read_parquet(st["pseudo-label"]["outputs"]["pseudo_label_frames"])
    assert pframes.height == frames.height  # frames with zero pseudo-labels are kept


def test_threshold_change_reruns_only_the_filter(teacher_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wf, ws, _ = teacher_run
    rep = run_workflow(wf, ws, scheduler="sync", overrides=["pseudo-label.sigma=0.3"])
    status = {s["stage"]: s["status"] for s in rep["stages"]}
    assert status == {"ingest": "cached", "teacher-train": "cached", "teacher-label": "cached",
                      "pseudo-label": "ran", "evaluate": "cached"}


def test_evaluate_reports_official_vod_metrics(teacher_run) -> None:  # type: ignore[no-untyped-def]
    _, _, st = teacher_run
    metrics = json.loads(Path(st["evaluate"]["outputs"]["metrics"]).read_text())
    assert metrics["benchmark"] == "vod" and metrics["split"] == "val"
    table = pl.read_parquet(st["evaluate"]["outputs"]["metrics_table"])
    assert table.height > 0 and table["value"].is_finite().all()
    lin = json.loads((Path(st["evaluate"]["path"]) / "_lineage.json").read_text())
    assert lin["inputs"]["checkpoint"]["stage"] == "teacher-train"


def _frames(n: int) -> list[TrainFrame]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        xyz = torch.rand(400, 3, generator=g) * torch.tensor([40.0, 40.0, 2.0]) \
            + torch.tensor([5.0, -20.0, -1.5])
        lidar = torch.cat([xyz, torch.rand(400, 1, generator=g)], 1).numpy()
        radar = torch.cat([xyz[:30], torch.zeros(30, 3)], 1).numpy()
        boxes = torch.tensor([[10.0 + i, 2.0, -0.5, 4.0, 1.8, 1.5, 0.3]]).numpy()
        out.append(TrainFrame(f"f{i}", {"lidar": lidar, "radar": radar},
                              Targets(boxes, torch.tensor([0]).numpy(), EMPTY.ignore)))
    return out


def test_training_resumed_after_a_kill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = OptimConfig(epochs=3, batch_size=2)
    frames = _frames(4)

    def train(workdir: Path, stop_after: int | None = None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = create_model("sckd-teacher", **TINY)

        def progress(desc: str, done: int, total: int) -> None:
            if stop_after is not None and done == stop_after:
                raise KeyboardInterrupt  # as if killed right after the epoch's checkpoint

        workdir.mkdir(exist_ok=True)
        fit(model, frames, cfg, workdir=workdir, seed=5, device=torch.device("cpu"),
            progress=progress)
        return model

    ref = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", stop_after=1)
    resumed = train(tmp_path / "b")
    for (k, v), v2 in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k


def test_bad_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        read_checkpoint(bad)
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ConfigError, match="not a kdpipe checkpoint"):
        read_checkpoint(bad)
