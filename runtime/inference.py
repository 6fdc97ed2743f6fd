"""Batched detector inference over an ingested store, one Dask task per Zarr group (scene).

Shared by `teacher-label` and `evaluate`. Each task reads its group's arrays once, runs the model
on batches of consecutive frames and writes a Parquet part into the stage's work directory; a
re-run after a kill skips finished parts. The model is loaded once per worker process (a
module-level cache keyed by checkpoint path and device), not once per task.

Reads overlap compute: a background thread (`Prefetcher`; Dask workers are daemonic processes,
so no DataLoader worker processes) reads the group and collates each next batch, in pinned host
memory when the model is on CUDA, while the model runs the current one. `amp = "bf16"` runs the
forward under autocast; decoding always runs in float32. `tta = "flip"` (teacher-label) averages
each batch's head maps with those of its mirror image before decoding (`models/tta.py`).
"""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import numpy as np
import polars as pl
import torch

from kdpipe.datasets.store import IngestStore
from kdpipe.models.batch import collate, to_device
from kdpipe.models.tta import check_flip, flip_averaged
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import StageContext
from kdpipe.runtime.camera_data import camera_channels
from kdpipe.runtime.checkpoints import load_model
from kdpipe.runtime.config import (  # defined torch-free there; re-exported here
    AmpMode,
    TtaMode,
)
from kdpipe.runtime.model_data import (
    frame_arrays,
    read_group_frames,
    resolve_device,
    sensor_map,
    tune_allocator,
    worker_threads,
)
from kdpipe.schemas.tables import DETECTION_FRAMES, DETECTIONS

if TYPE_CHECKING:
    from kdpipe.models.contract import Detector

_MODELS: dict[tuple[str, str], tuple[torch.nn.Module, dict[str, Any]]] = {}
_PREFETCH_BATCHES = 2  # batches collated ahead: one in the queue, one being built
_T = TypeVar("_T")


@dataclass(frozen=True)
class InferTask:
    store: IngestStore
    checkpoint: str
    source: str
    scene: str
    frame_ids: tuple[str, ...]
    frame_indices: tuple[int, ...]
    radar_sensor: str
    batch_size: int
    top_k: int
    score_floor: float
    device: str
    part: str                       # Parquet part this task writes
    amp: AmpMode = "fp32"
    tta: TtaMode = "none"           # "flip": models/tta.py


def cached_model(checkpoint: str, device: str) -> Detector:
    key = (checkpoint, device)
    if key not in _MODELS:
        torch.set_num_threads(worker_threads())
        tune_allocator()
        _MODELS.clear()  # one model per worker: a new checkpoint replaces the old one
        _MODELS[key] = load_model(Path(checkpoint), resolve_device(device))
    return cast("Detector", _MODELS[key][0])  # checkpoints hold registry models: Detectors


def detection_frame(frame_ids: list[str], dets: list[dict[str, torch.Tensor]],
                    classes: tuple[str, ...]) -> pl.DataFrame:
    """Decoded boxes -> `detections/1` rows (boxes as float64, ranks by descending score)."""
    counts = [int(d["scores"].shape[0]) for d in dets]
    if sum(counts) == 0:
        return pl.DataFrame(schema=DETECTIONS)
    # One table per batch: concatenate the frames' tensors once, no per-frame DataFrames.
    b = torch.cat([d["boxes"] for d in dets]).detach().cpu().numpy().astype(np.float64)  # (n, 7|9)
    n = len(b)
    vel = b[:, 7:9] if b.shape[1] >= 9 else np.full((n, 2), np.nan)
    return pl.DataFrame({
        "frame_id": np.repeat(np.asarray(frame_ids, dtype=object), counts).tolist(),
        "det_index": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
        "label": np.asarray(classes, dtype=object)[
            torch.cat([d["labels"] for d in dets]).cpu().numpy()].tolist(),
        "score": torch.cat([d["scores"] for d in dets]).detach().cpu().numpy().astype(np.float64),
        "x_ego_m": b[:, 0], "y_ego_m": b[:, 1], "z_ego_m": b[:, 2], "length_m": b[:, 3],
        "width_m": b[:, 4], "height_m": b[:, 5], "yaw_ego_rad": b[:, 6],
        "vx_ego_mps": vel[:, 0], "vy_ego_mps": vel[:, 1]}, schema=DETECTIONS,
    ).with_columns(pl.col("vx_ego_mps", "vy_ego_mps").fill_nan(None))


class Prefetcher(Generic[_T]):
    """Runs an iterator on a daemon thread, up to `depth` items ahead of the consumer.

    Iterate it in a `with` block: leaving the block early (an error in the consumer) stops the
    producer at its next item. An exception in the producer is re-raised to the consumer, in
    order, after the items before it.
    """

    def __init__(self, produce: Callable[[], Iterable[_T]], depth: int = _PREFETCH_BATCHES
                 ) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name="kdpipe-prefetch")
        self._thread.start()

    def _run(self, produce: Callable[[], Iterable[_T]]) -> None:
        try:
            for item in produce():
                if not self._put(("item", item)):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(("error", e))
            return
        self._put(("done", None))

    def _put(self, msg: tuple[str, Any]) -> bool:
        # Bounded waits: a consumer that stopped early must not leave this blocked on a full queue.
        while not self._stop.is_set():
            try:
                self._queue.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_T]:
        while True:
            kind, payload = self._queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield payload

    def __enter__(self) -> Prefetcher[_T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _input_batches(task: InferTask, model: Detector, pin: bool
                   ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first frame's position in the task, collated batch) for each batch, read and collated
    here (the prefetch thread); tensors pinned when they go to CUDA (non-blocking copies)."""
    arrays = [frame_arrays(pts, cams) for pts, cams in read_group_frames(
        task.store, task.source, task.scene, task.frame_indices,
        sensor_map(task.radar_sensor, model.modalities), model.config.point_cloud_range_m,
        cameras=camera_channels(model))]
    for start in range(0, len(arrays), task.batch_size):
        batch = collate(arrays[start:start + task.batch_size], model.modalities)
        if pin:
            batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
        yield start, batch


def forward_precision(device: torch.device, amp: AmpMode) -> contextlib.AbstractContextManager[Any]:
    """The context the model forward runs in: autocast to bfloat16 for "bf16", else nothing."""
    if amp == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp = 'bf16' asked for, but {torch.cuda.get_device_name(device)} "
                          "has no bfloat16 support; use amp = 'fp32'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def run_task(task: InferTask) -> str:
    part = Path(task.part)
    if part.exists():  # finished before a kill
        return task.part
    model = cached_model(task.checkpoint, task.device)
    device = next(model.parameters()).device
    if task.tta == "flip":
        try:
            check_flip(model.config, tuple(model.modalities))
        except ValueError as e:
            raise ConfigError(f"tta = 'flip': {e}") from None
    frames_out = []
    prefetch = Prefetcher(lambda: _input_batches(task, model, pin=device.type == "cuda"))
    with prefetch, torch.inference_mode():
        for start, host_batch in prefetch:
            with forward_precision(device, task.amp):  # the forward only: decode runs in fp32
                batch = to_device(host_batch, device)
                out = model(batch)
                if task.tta == "flip":
                    out = flip_averaged(model, batch, out)
            dets = model.decode(out, score_threshold=task.score_floor, top_k=task.top_k)
            frames_out.append(detection_frame(
                list(task.frame_ids[start:start + task.batch_size]), dets, model.classes))
    df = pl.concat(frames_out) if frames_out else pl.DataFrame(schema=DETECTIONS)
    tmp = part.with_name(part.name + ".tmp")
    df.write_parquet(tmp)
    tmp.replace(part)
    return task.part


class InferenceSettings(Protocol):
    """How `infer` runs the model: the fields teacher-label's and evaluate's configs share."""

    @property
    def radar_sensor(self) -> str: ...      # store sensor fed to the radar branch
    @property
    def batch_size(self) -> int: ...
    @property
    def top_k(self) -> int: ...             # boxes kept per frame after peak extraction
    @property
    def score_floor(self) -> float: ...     # boxes below are not decoded
    @property
    def device(self) -> str: ...            # "auto", "cpu", "cuda", ...
    @property
    def amp(self) -> AmpMode: ...           # forward precision: "fp32" or "bf16" (autocast)


def infer_tasks(store: IngestStore, checkpoint: Path, frames: pl.DataFrame,
                settings: InferenceSettings, parts_dir: Path, tta: TtaMode = "none"
                ) -> list[InferTask]:
    """One task per (source, scene) group of `frames`, in order, each writing a part in
    `parts_dir` (also what benchmarks/teacher.py runs in-process). `tta`: "none" | "flip"."""
    tasks: list[InferTask] = []
    for (source, scene), g in frames.group_by("source", "scene", maintain_order=True):
        tasks.append(InferTask(
            store, str(checkpoint), str(source), str(scene),
            tuple(g["frame_id"].to_list()), tuple(int(i) for i in g["frame_index"]),
            settings.radar_sensor, settings.batch_size, settings.top_k, settings.score_floor,
            settings.device, str(parts_dir / f"{len(tasks):06d}.parquet"), settings.amp, tta))
    return tasks


def infer(ctx: StageContext[Any], store: IngestStore, checkpoint: Path, frames: pl.DataFrame,
          settings: InferenceSettings, tta: TtaMode = "none"
          ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Detections for `frames` (rows of `store`'s frames/1) and the frame list, zero-detection
    frames kept. `settings`: a stage config with the `InferenceSettings` fields; `tta`: "flip"
    for flip test-time augmentation (teacher-label's option; evaluate scores without).

    Tasks ask for a GPU worker resource when the cluster has one; without a GPU they run on
    the CPU workers (no code path needs a GPU).
    """
    parts_dir = ctx.workdir / "_parts"
    parts_dir.mkdir(exist_ok=True)
    tasks = infer_tasks(store, checkpoint, frames, settings, parts_dir, tta)
    gpu = {"GPU": 1.0} if ctx.executor.has_resource("GPU") else None
    paths = ctx.map(run_task, tasks, desc="inference groups", resources=gpu)
    dets = pl.concat([pl.read_parquet(p) for p in paths]) if paths else \
        pl.DataFrame(schema=DETECTIONS)
    dets = dets.sort("frame_id", "det_index")
    counts = dets.group_by("frame_id").len()
    frame_table = frames.select("frame_id", "split").join(counts, on="frame_id", how="left") \
        .select("frame_id", "split", n_detections=pl.col("len").fill_null(0).cast(pl.Int32)) \
        .sort("frame_id")
    return dets, frame_table.cast(DETECTION_FRAMES)  # type: ignore[arg-type]


def cleanup_parts(ctx: StageContext[Any]) -> None:
    parts_dir = ctx.workdir / "_parts"
    if parts_dir.exists():
        for p in parts_dir.iterdir():
            p.unlink()
        parts_dir.rmdir()
