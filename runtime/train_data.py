"""The streaming training data path: frames read on demand, batches built in DataLoader workers.

Nothing is loaded before the first step: a `FrameSource` reads frame i from the store when a
batch needs it (`StoreFrames`; `MemoryFrames` holds already-read frames, the reference in
tests). Each DataLoader item is a whole batch, keyed by (epoch, step), so reading, cropping,
augmentation, collation and target preparation all run in the workers while the model trains.

Determinism does not depend on workers or ranks: epoch e's frame order is a permutation drawn
from (seed, e), and frame i's augmentation in epoch e from (seed, e, i). A run killed after
epoch k and resumed sees exactly the batches an uninterrupted run sees, and K ranks split each
global batch (`frames[rank::K]`), so the union of their batches is the one-rank batch.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from kdpipe.datasets.store import IngestStore
from kdpipe.models.batch import Targets, TrainFrame, collate
from kdpipe.runtime.model_data import crop, frame_columns, sensor_map


class FrameSource(Protocol):
    """Training frames by position; must pickle small (it travels to every worker)."""

    def __len__(self) -> int: ...

    def frame(self, i: int) -> TrainFrame: ...


@dataclass(frozen=True)
class FrameRef:
    frame_id: str
    source: str
    scene: str
    frame_index: int          # position in its group's offsets


class MemoryFrames:
    """Frames already in memory (small datasets, tests: the reference for `StoreFrames`)."""

    def __init__(self, frames: Sequence[TrainFrame]) -> None:
        self.frames = list(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> TrainFrame:
        return self.frames[i]


@dataclass
class StoreFrames:
    """Frames read from the store when asked: memory stays flat as the dataset grows.

    Per process (each DataLoader worker after fork or spawn) it keeps its own reader (file
    maps, parsed shard indexes, a small chunk cache); a frame reads one slice per sensor.
    """

    store: IngestStore
    refs: Sequence[FrameRef]
    targets: Sequence[Targets]    # per ref: a frame may appear twice (SSOD and GT targets)
    modalities: tuple[str, ...]
    radar_sensor: str
    pc_range: tuple[float, ...]
    box_width: int = 7
    cameras: tuple[str, ...] = ()
    weight_maps: Any = None       # runtime.weight_maps.MapReader, when frames carry IMKD maps

    def __post_init__(self) -> None:
        self._pid, self._reader, self._cols = -1, None, {}

    def __getstate__(self) -> dict[str, Any]:  # file maps never cross a process boundary
        return {k: v for k, v in self.__dict__.items() if k not in ("_pid", "_reader", "_cols")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def __len__(self) -> int:
        return len(self.refs)

    def _read(self, ref: FrameRef, sensor: str, modality: str) -> np.ndarray:
        """(N, C) model columns of one frame: shard indexes parsed once, chunks decoded from
        the page cache (`datasets/points_reader.py`: zarr-python's per-read overhead was 30x
        the read itself)."""
        from kdpipe.datasets.points_reader import PointsReader

        if self._pid != os.getpid():  # a new DataLoader worker: its own maps and cache
            self._pid, self._cols = os.getpid(), {}
            self._reader = PointsReader(self.store.points)
        key = (ref.source, ref.scene, sensor)
        if key not in self._cols:
            self._cols[key] = frame_columns(self._reader.fields(*key), modality)
        return self._reader.frame(*key, ref.frame_index)[:, self._cols[key]]

    def frame(self, i: int) -> TrainFrame:
        ref = self.refs[i]
        points = {}
        for modality, sensor in sensor_map(self.radar_sensor, self.modalities).items():
            points[modality] = crop(self._read(ref, sensor, modality), self.pc_range)
        cams = None
        if self.cameras:
            from kdpipe.runtime.camera_data import read_group_cameras

            cams = read_group_cameras(self.store, ref.source, ref.scene, [ref.frame_index],
                                      self.cameras)[0]
        wmap = self.weight_maps.frame(ref.frame_id) if self.weight_maps is not None else None
        return TrainFrame(ref.frame_id, points, self.targets[i], cams, wmap)

    def __iter__(self) -> Iterator[TrainFrame]:  # reads every frame: for tools, not training
        return (self.frame(i) for i in range(len(self)))

    def __add__(self, other: StoreFrames) -> StoreFrames:
        """These frames, then `other`'s (same store and reading spec)."""
        from dataclasses import replace

        return replace(self, refs=[*self.refs, *other.refs],
                       targets=[*self.targets, *other.targets])


@dataclass(frozen=True)
class Shard:
    """This process's share of every global batch (data parallelism)."""

    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class BatchPlan:
    """How an epoch becomes batches: sizes, the seed, and this rank's share."""

    n_frames: int
    batch_size: int           # global batch (all ranks together)
    seed: int
    shard: Shard = Shard()

    @property
    def steps(self) -> int:
        return max(1, -(-self.n_frames // self.batch_size))

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_frames)

    def indices(self, order: np.ndarray, step: int) -> list[int]:
        """This rank's frames of global batch `step` (every rank gets at least one: a short
        last batch wraps around to the epoch's first frames, as DistributedSampler pads)."""
        idx = order[step * self.batch_size:(step + 1) * self.batch_size].tolist()
        world = self.shard.world
        if len(idx) < world:
            idx += order[:world - len(idx)].tolist()
        return idx[self.shard.rank::world]


class EpochSampler:
    """Yields (epoch, step) keys; `set_epoch` runs in the main process, so persistent workers
    need not know the epoch."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan, self.epoch = plan, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.plan.steps

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, s) for s in range(self.plan.steps)])


class BatchDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item (epoch, step) -> (batch, targets, frame ids): read, augment, collate in a worker."""

    def __init__(self, frames: FrameSource, plan: BatchPlan, augment: Any,
                 modalities: Sequence[str]) -> None:
        self.frames, self.plan, self.augment = frames, plan, augment
        self.modalities = tuple(modalities)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.plan.steps

    def __getitem__(self, key: tuple[int, int]) -> tuple[dict[str, Any], list[Targets], list[str]]:
        epoch, step = key
        if epoch not in self._orders:  # one permutation per epoch and worker
            self._orders = {epoch: self.plan.order(epoch)}
        arrays, targets, ids = [], [], []
        for i in self.plan.indices(self._orders[epoch], step):
            f = self.frames.frame(i)
            a, t = self.augment(f, np.random.default_rng([self.plan.seed, epoch, i]))
            arrays.append(a)
            targets.append(t)
            ids.append(f.frame_id)
        return collate(arrays, self.modalities), targets, ids


def _worker_init(_: int) -> None:
    from kdpipe.pipeline.threads import limit_threads

    limit_threads(1)  # a loader worker prepares batches; the cores belong to the model


def make_loader(dataset: BatchDataset, sampler: EpochSampler, *, workers: int,
                pin_memory: bool) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    """Batches from `workers` processes (0: in this process), prefetched two ahead, the same
    workers for every epoch; pinned host memory for asynchronous copies to a GPU."""
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"prefetch_factor": 2, "persistent_workers": True,
                 "worker_init_fn": _worker_init, "multiprocessing_context": "fork"
                 if "fork" in torch.multiprocessing.get_all_start_methods() else None}
    # Its own generator: the loader draws worker seeds when an iterator starts (per epoch
    # without workers, once with persistent ones); from torch's global generator that would
    # shift the model's random stream (modality dropout) with the number of workers.
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler,
                                       num_workers=workers, pin_memory=pin_memory,
                                       collate_fn=_identity,
                                       generator=torch.Generator().manual_seed(0), **extra)


def _identity(x: Any) -> Any:
    return x
