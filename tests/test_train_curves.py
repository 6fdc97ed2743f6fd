"""Training curves: TensorBoard scalars inside the training stage's artifact (read back with
TensorBoard's EventAccumulator, equal to the train log) and a loss PNG beside the log; the
per-step log behind them is the same after a kill and resume as without one."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.models import create_model
from kdpipe.models.batch import EMPTY, Targets, TrainFrame
from kdpipe.runtime.train_curves import EVENTS, TB_DIR
from kdpipe.runtime.train_loop import STEPS_FILE, OptimConfig, fit
from kdpipe.testing import TINY_DETECTOR


def _train(tmp: Path, world: Path, ws: str) -> Path:
    wf = tmp / "wf.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]
[ingest]
format = "vod"
roots = [{toml_value(str(world))}]
[teacher-train]
max_frames = 8
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 3
batch_size = 2
val_split = "val"
val_every_epochs = 2
""")
    rep = run_workflow(wf, str(tmp / ws), scheduler="sync")
    return Path(rep["stages"][-1]["path"])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> Path:
    return _train(tmp_path_factory.mktemp("curves"), vod_world, "ws")


def test_tensorboard_scalars_match_the_train_log(artifact: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = pl.read_parquet(artifact / "train_log.parquet")
    acc = EventAccumulator(str(artifact / TB_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"step/loss", "step/lr", "epoch/loss", "epoch/lr_end"} <= tags
    steps = acc.Scalars("step/loss")
    per_epoch = log["steps"].to_list()
    assert [e.step for e in steps] == list(range(1, sum(per_epoch) + 1))
    # each epoch's row is the mean of its steps (TensorBoard keeps float32)
    bounds = np.cumsum([0, *per_epoch])
    means = [np.mean([e.value for e in steps[a:b]])
             for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert means == pytest.approx(log["loss"].to_list(), rel=1e-5)
    for col in [c for c in log.columns if c.startswith("loss")] + ["lr_end"]:
        got = [e.value for e in acc.Scalars(f"epoch/{col}")]
        assert got == pytest.approx(log[col].to_list(), rel=1e-6), col
    assert [e.step for e in acc.Scalars("epoch/loss")] == bounds[1:].tolist()
    lr = [e.value for e in acc.Scalars("step/lr")]
    assert len(lr) == len(steps) and len(set(lr)) > 1  # one-cycle: the LR moves every step
    # validated at epoch 2 (every 2) and 3 (the last): those rows and those steps only
    val = [e for e in acc.Scalars("epoch/val_map")]
    assert [e.step for e in val] == bounds[2:].tolist()
    assert [e.value for e in val] == pytest.approx(log["val_map"].drop_nulls().to_list())
    assert log["val_map"].null_count() == 1 and log["val_frames"].drop_nulls()[0] > 0
    png = artifact / "train_log.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert not (artifact / STEPS_FILE).exists()  # not an output


@pytest.mark.slow
def test_curves_are_byte_identical_between_runs(artifact: Path, tmp_path: Path,
                                                vod_world: Path) -> None:
    again = _train(tmp_path, vod_world, "ws2")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    for rel in (f"{TB_DIR}/{EVENTS}", "train_log.png"):
        assert digest(again / rel) == digest(artifact / rel), rel


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


def test_step_log_after_kill_and_resume_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg = OptimConfig(epochs=3, batch_size=2)

    def train(workdir: Path, stop_in_epoch: int | None = None) -> str:
        torch.manual_seed(0)
        model = create_model("sckd-teacher", **TINY_DETECTOR)

        class Stop:  # killed mid-epoch: that epoch's first steps are logged, not saved
            def __call__(self, desc: str, done: int, total: int) -> None:
                return None

            def train_step(self, epoch: int, epochs: int, step: int, steps: int,
                           loss: float) -> None:
                if epoch == stop_in_epoch and step == 1:
                    raise KeyboardInterrupt

        workdir.mkdir(exist_ok=True)
        fit(model, _frames(4), cfg, workdir=workdir, seed=5, device=torch.device("cpu"),
            progress=Stop())
        return (workdir / STEPS_FILE).read_text()

    ref = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", stop_in_epoch=2)
    assert (tmp_path / "b" / STEPS_FILE).read_text().count("\n") == 3  # 2 + 1 step of epoch 2
    assert train(tmp_path / "b") == ref
    assert ref.count("\n") == 6
