"""PointsReader equals zarr-python on stores written by the real ingest, frame by frame.

Small chunks and shards (passed through the ingest config) make LiDAR frames span several
chunks and shards and radar frames straddle chunk and shard edges; 64k-row chunks make frames
share chunks (the cache path). Orders: random, sequential, after a fork, from threads.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from kdpipe.datasets.common import GroupWriter, Storage
from kdpipe.datasets.points_reader import PointsReader, PointsReadError, parse_layout
from kdpipe.testing import ingest_store

# (compressor, chunk_rows, shard_chunks)
LAYOUTS = [("lz4", 1000, 3), ("zstd", 65536, 2), ("none", 5000, 4), ("lz4", 65536, 8)]
Frame = tuple[str, str, str, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdpipe.datasets.synth import write_vod

    out = tmp_path_factory.mktemp("reader_world") / "vod"
    write_vod(out, 10, seed=5)
    return out


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda p: f"{p[0]}-{p[1]}x{p[2]}")
def store(request: pytest.FixtureRequest, world: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Path:
    comp, rows, per_shard = request.param
    tmp = tmp_path_factory.mktemp(f"store_{comp}_{rows}")
    art = ingest_store(tmp, world, compressor=comp, chunk_rows=rows, shard_chunks=per_shard)
    return art / "points.zarr"


def all_frames(root: Path) -> list[Frame]:
    out = []
    for d in sorted(root.glob("*/*/*/offsets")):
        sensor, scene, source = d.parent.name, d.parent.parent.name, d.parent.parent.parent.name
        n = zarr.open_array(store=str(d), mode="r").shape[0] - 1
        out += [(source, scene, sensor, i) for i in range(n)]
    return out


def shuffled(frames: list[Frame], seed: int) -> list[Frame]:
    return [frames[i] for i in np.random.default_rng(seed).permutation(len(frames))]


def expected(root: Path, f: Frame) -> np.ndarray:
    g = root / f[0] / f[1] / f[2]
    off = zarr.open_array(store=str(g / "offsets"), mode="r")[:]
    return np.asarray(zarr.open_array(store=str(g / "points"), mode="r")[off[f[3]]:off[f[3] + 1]])


def check_all(reader: PointsReader, root: Path, frames: list[Frame]) -> None:
    for f in frames:
        got, want = reader.frame(*f), expected(root, f)
        assert got.dtype == np.float32 and got.shape == want.shape, f
        assert np.array_equal(got, want), f
        assert got.flags.writeable and got.flags.c_contiguous
        got[...] = -1.0  # the caller owns it: later reads (cache hits) must not see this


def test_layout_and_metadata(store: Path) -> None:
    r = PointsReader(store)
    for d in sorted(store.glob("*/*/*/points")):
        assert parse_layout(json.loads((d / "zarr.json").read_text()))
        src, scene, sensor = d.parts[-4:-1]
        arr = zarr.open_array(store=str(d), mode="r")
        assert r.fields(src, scene, sensor) == list(arr.attrs["fields"])
        assert np.array_equal(r.offsets(src, scene, sensor),
                              zarr.open_array(store=str(d.parent / "offsets"), mode="r")[:])


def test_random_order_equals_zarr(store: Path) -> None:
    frames = shuffled(all_frames(store), 0)
    r = PointsReader(store)
    check_all(r, store, frames)
    assert r.stats["zarr"] == 0  # every frame took the direct path
    spans = [f for f in frames if f[2] == "lidar"]
    assert len(spans) >= 10


def test_sequential_order_uses_cache(store: Path) -> None:
    r = PointsReader(store)
    check_all(r, store, sorted(all_frames(store)))
    comp = zarr.open_array(store=str(next(store.glob("*/*/lidar/points"))), mode="r")
    if comp.compressors:  # blosc: consecutive frames share a chunk's decoded rows
        assert r.stats["hits"] > 0


def _child(reader: PointsReader, frames: list[Frame], conn: Any) -> None:
    import os

    arrays = [reader.frame(*f) for f in frames]
    conn.send((os.getpid(), reader._pid, arrays))
    conn.close()


def test_after_fork(store: Path) -> None:
    frames = shuffled(all_frames(store), 1)
    r = PointsReader(store)
    check_all(r, store, frames[:5])  # the parent maps shards and caches chunks first
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(r, frames, send))
    p.start()
    pid, reader_pid, arrays = recv.recv()
    p.join(30)
    assert p.exitcode == 0
    assert pid == reader_pid != r._pid  # the child reset its maps and cache
    for f, got in zip(frames, arrays, strict=True):
        assert np.array_equal(got, expected(store, f)), f
    check_all(r, store, frames[5:10])  # the parent is unaffected


def test_threads_and_pickle(store: Path) -> None:
    frames = all_frames(store)
    # the bytes were pickled on the line before: nothing untrusted is loaded
    r = pickle.loads(pickle.dumps(PointsReader(store, cache_bytes=4 << 20)))  # noqa: S301
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda f: r.frame(*f), frames))
    for f, a in zip(frames, got, strict=True):
        assert np.array_equal(a, expected(store, f)), f


def test_index_errors(store: Path) -> None:
    r = PointsReader(store)
    with pytest.raises(IndexError):
        r.frame(*all_frames(store)[0][:3], 10_000)


def test_corrupt_shard_index_raises(store: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "points.zarr"
    shutil.copytree(store, root)
    lidar = next(root.glob("*/*/lidar"))
    shard = lidar / "points" / "c" / "0" / "0"
    lay = parse_layout(json.loads((lidar / "points" / "zarr.json").read_text()))
    assert lay is not None and lay.crc and lay.index_end
    data = bytearray(shard.read_bytes())
    data[len(data) - 4 - 16 * lay.per_shard] ^= 0x01  # first index entry, lowest offset byte
    shard.write_bytes(bytes(data))
    src, scene = lidar.parts[-3:-1]
    with pytest.raises(PointsReadError, match="checksum mismatch"):
        PointsReader(root).frame(src, scene, "lidar", 0)


def _write_group(root: Path, tmp: Path, clouds: list[np.ndarray], storage: Storage) -> None:
    """A group through ingest's own writer (GroupWriter), frames as given."""
    w = GroupWriter(tmp, "src", "scene", storage)
    w.declare("lidar", ("x", "y", "z", "intensity"), ("m", "m", "m", "1"), "lidar")
    for i, c in enumerate(clouds):
        w.add_frame({"frame": f"{i:05d}"}, {"lidar": c}, [], [])
    w.write(root)


@pytest.mark.parametrize("compressor", ["lz4", "none"])
def test_empty_frames_missing_chunks_and_fallback(tmp_path: Path, compressor: str) -> None:
    rng = np.random.default_rng(0)
    zeros = np.zeros((250, 4), np.float32)  # whole all-zero chunks: Zarr skips writing them
    clouds = [rng.normal(size=(70, 4)).astype(np.float32), np.zeros((0, 4), np.float32),
              rng.normal(size=(130, 4)).astype(np.float32), zeros,
              np.zeros((0, 4), np.float32), rng.normal(size=(33, 4)).astype(np.float32)]
    root = tmp_path / "points.zarr"
    _write_group(root, tmp_path, clouds, Storage(50, 2, 5, compressor))
    # an unsharded array, as another writer might leave it: read through zarr-python
    g = zarr.open_group(store=str(root / "src" / "scene"), mode="a")
    other = g.create_group("radar")
    other.create_array("points", data=np.concatenate(clouds[:3]), chunks=(40, 4),
                       attributes={"fields": ["x", "y", "z", "i"]})
    other.create_array("offsets", data=np.array([0, 70, 70, 200], np.int64), chunks=(4,))
    r = PointsReader(root)
    frames = [("src", "scene", "lidar", i) for i in range(len(clouds))]
    frames += [("src", "scene", "radar", i) for i in range(3)]
    check_all(r, root, frames)
    assert r.stats["zarr"] == 1 + 3  # the all-zero frame (missing chunks) + every radar frame
    for i, c in enumerate(clouds):
        assert np.array_equal(r.frame("src", "scene", "lidar", i), c)
    assert r.frame("src", "scene", "lidar", 1).shape == (0, 4)
    assert r.fields("src", "scene", "radar") == ["x", "y", "z", "i"]
