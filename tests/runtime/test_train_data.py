"""The streaming training data path yields exactly the batches of an in-memory reader."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from kdpipe.datasets.store import IngestStore
from kdpipe.models import create_model
from kdpipe.models.batch import TrainFrame
from kdpipe.runtime.frames import FrameSpec, load_train_frames
from kdpipe.runtime.model_data import read_group_frames, sensor_map, targets_from_table
from kdpipe.runtime.train_data import (
    BatchDataset,
    BatchPlan,
    EpochSampler,
    MemoryFrames,
    Shard,
    make_loader,
)
from kdpipe.runtime.train_loop import OptimConfig, augment
from kdpipe.testing import TINY_DETECTOR, ingest_store


@pytest.fixture(scope="module")
def store_frames(tmp_path_factory: pytest.TempPathFactory, vod_world: Path):  # type: ignore[no-untyped-def]
    art = ingest_store(tmp_path_factory.mktemp("stream"), vod_world)
    store = IngestStore.from_artifact(art)
    model = create_model("sckd-teacher", **TINY_DETECTOR)
    frames = store.select_frames(["train", "unlabeled"])
    targets = targets_from_table(store.read_boxes(), model.classes)
    spec = FrameSpec(model.modalities, "radar", model.config.point_cloud_range_m)
    return store, frames, targets, spec, load_train_frames(store, frames, spec, targets)


def _reference(store: IngestStore, frames, targets, spec: FrameSpec) -> MemoryFrames:  # type: ignore[no-untyped-def]
    """Every frame read up front, group by group (the old in-memory path)."""
    out = []
    for (src, scene), g in frames.group_by("source", "scene", maintain_order=True):
        arrays = read_group_frames(store, str(src), str(scene), g["frame_index"].to_list(),
                                   sensor_map(spec.radar_sensor, spec.modalities), spec.pc_range)
        out += [TrainFrame(str(f), pts, targets[str(f)]) for f, (pts, _) in
                zip(g["frame_id"], arrays, strict=True)]
    return MemoryFrames(out)


def _batches(source, plan: BatchPlan, epochs: int, workers: int) -> list:  # type: ignore[no-untyped-def]
    ds = BatchDataset(source, plan, functools.partial(augment, cfg=OptimConfig()),
                      ("lidar", "radar"))
    sampler = EpochSampler(plan)
    loader = make_loader(ds, sampler, workers=workers, pin_memory=False)
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out += list(loader)
    return out


def _same(a: list, b: list) -> None:  # type: ignore[type-arg]
    assert len(a) == len(b)
    for (ba, ta, ia), (bb, tb, ib) in zip(a, b, strict=True):
        assert ia == ib
        for k in ("lidar", "radar"):
            torch.testing.assert_close(ba[k], bb[k], rtol=0, atol=0)
        for x, y in zip(ta, tb, strict=True):
            np.testing.assert_array_equal(x.boxes, y.boxes)
            np.testing.assert_array_equal(x.labels, y.labels)


def test_store_frames_equal_the_in_memory_reader(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, frames, targets, spec, streamed = store_frames
    plan = BatchPlan(len(streamed), 4, seed=7)
    _same(_batches(streamed, plan, 2, 0), _batches(_reference(store, frames, targets, spec),
                                                   plan, 2, 0))


def test_loader_workers_change_nothing(store_frames) -> None:  # type: ignore[no-untyped-def]
    streamed = store_frames[4]
    plan = BatchPlan(len(streamed), 4, seed=7)
    _same(_batches(streamed, plan, 2, 0), _batches(streamed, plan, 2, 2))


def test_an_epoch_is_the_same_whatever_came_before() -> None:
    plan = BatchPlan(10, 4, seed=3)
    assert (plan.order(2) == BatchPlan(10, 4, seed=3).order(2)).all()  # no hidden state
    assert not (plan.order(1) == plan.order(2)).all()


def test_ranks_split_each_global_batch() -> None:
    for n, batch, world in ((10, 4, 2), (9, 4, 2), (7, 6, 3), (5, 4, 2)):
        one = BatchPlan(n, batch, 1)
        order = one.order(0)
        for step in range(one.steps):
            parts = [BatchPlan(n, batch, 1, Shard(r, world)).indices(order, step)
                     for r in range(world)]
            assert all(parts)                               # every rank gets work
            whole = one.indices(order, step)
            assert set(whole) <= {i for p in parts for i in p}
            if len(whole) >= world:
                assert sorted(i for p in parts for i in p) == sorted(whole)


def test_fit_gives_the_same_weights_with_or_without_loader_workers(store_frames, tmp_path: Path
                                                                   ) -> None:  # type: ignore[no-untyped-def]
    """The SCKD teacher draws modality dropout from torch's generator: the loader must not."""
    from kdpipe.runtime.train_loop import fit

    data = store_frames[4]
    weights = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = create_model("sckd-teacher", **TINY_DETECTOR)
        cfg = OptimConfig(epochs=2, batch_size=4, loader_workers=workers, device="cpu")
        (tmp_path / str(workers)).mkdir()
        fit(model, data, cfg, workdir=tmp_path / str(workers), seed=1,
            device=torch.device("cpu"))
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_bf16_autocast_trains_on_the_cpu_when_asked(store_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kdpipe.runtime.train_loop import fit

    torch.manual_seed(0)
    model = create_model("radar-only", **TINY_DETECTOR)
    cfg = OptimConfig(epochs=2, batch_size=4, amp="bf16", device="cpu")
    log = fit(model, store_frames[4], cfg, workdir=tmp_path, seed=1, device=torch.device("cpu"))
    assert all(np.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_fit_tells_a_loss_the_fraction_of_training_done_before_every_step(
        store_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What a decaying KD weight reads (models/kd/loss.py), counted over all epochs."""
    from kdpipe.runtime.train_loop import default_loss, fit

    seen: list[float] = []

    class Loss:
        def set_progress(self, fraction: float) -> None:
            seen.append(fraction)

        def __call__(self, *args):  # type: ignore[no-untyped-def]
            return default_loss(*args)

    torch.manual_seed(0)
    model = create_model("radar-only", **TINY_DETECTOR)
    cfg = OptimConfig(epochs=2, batch_size=4, device="cpu")
    fit(model, store_frames[4], cfg, workdir=tmp_path, seed=1, device=torch.device("cpu"),
        loss_fn=Loss())
    steps = len(seen)  # both epochs' steps
    assert steps >= 4 and seen == [i / steps for i in range(steps)]
