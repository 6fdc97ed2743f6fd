"""Row-chunked Zarr v3 arrays written without zarr-python's codec pipeline: the same bytes.

Why: a group's `points` array (64 VoD frames: 63 MB of LiDAR) written through zarr-python cost
~2.5x the CPU of blosc itself (per-chunk asyncio round trips, the empty-chunk test building a
full fill-value array, shard assembly), and the group digest then read every file back to hash
it; and each synchronous zarr call (13 per VoD group: group, 4 sensor groups, 8 arrays) is a
hand-off to zarr's event-loop thread, ~3 ms of wall time apiece on a loaded machine. Here
every `zarr.json` is zarr-python's own serialisation (`zarr_nodes.create_nodes`: built by zarr
once per node kind), and the chunks are written as zarr 3.1 writes them for that metadata:

- the rows are cut into inner chunks of `chunk_rows` (the last one padded with the fill value
  0), each encoded by the array's codecs (`bytes` little-endian, then blosc with the array's
  cname / clevel / shuffle / typesize, or nothing);
- a chunk whose bytes are all zero (the fill value, compared bit for bit as zarr does, so -0.0
  is data) is not stored (`write_empty_chunks=False`): its index entry is 2^64 - 1;
- a shard is its stored chunks in order, then the index ((chunks, 2) little-endian uint64
  offset, length) and the index's crc32c; a shard with no stored chunk is no file;
- a single-chunk uncompressed array (`offsets`) is its little-endian bytes at `c/0`, unless
  all zero.

Any metadata other than that (a zarr default that changed, another codec) is written through
zarr-python instead, so the store never depends on this module agreeing with zarr: `tests/
datasets/test_shard_writer.py` compares the bytes with zarr-python's for every storage option.
The sha256 of each file is taken from the bytes as they are written (`Written`), so the group
digest needs no second read (`pipeline.hashing.digest_path(root, known=written.sha256)`).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.zarr_nodes import Node, create_nodes

__all__ = ["Node", "Written", "create_nodes", "write_row_array", "write_small_array"]

MISSING = 2**64 - 1   # index entry of a chunk that is not stored
_LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass
class Written:
    """sha256 of the files written, by path relative to the group folder being digested."""

    root: Path
    sha256: dict[str, str] = field(default_factory=dict)

    def file(self, path: Path, parts: Sequence[bytes | memoryview]) -> None:
        """Write `parts` as one file (no joined copy) and record its digest."""
        h = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for p in parts:
                h.update(p)
                f.write(p)
        self.sha256[path.relative_to(self.root).as_posix()] = h.hexdigest()


def row_chunks(parts: Sequence[npt.NDArray[Any]], rows: int, cols: int,
               dtype: npt.DTypeLike) -> Iterator[npt.NDArray[Any]]:
    """The rows of `parts` (each (n_i, cols)) concatenated, as (rows, cols) C-contiguous
    chunks, the last padded with zeros. A yielded chunk is valid until the next one is asked
    for (a reused buffer): encode it first. No concatenated copy of the whole is made."""
    buf = np.empty((rows, cols), dtype)
    fill = 0
    for p in parts:
        i, n = 0, len(p)
        while i < n:
            if fill == 0 and n - i >= rows and p.flags.c_contiguous and p.dtype == buf.dtype:
                yield p[i:i + rows]        # a whole chunk inside one part: no copy
                i += rows
                continue
            take = min(rows - fill, n - i)
            buf[fill:fill + take] = p[i:i + take]
            fill, i = fill + take, i + take
            if fill == rows:
                yield buf
                fill = 0
    if fill:
        buf[fill:] = 0
        yield buf


def _is_fill(chunk: npt.NDArray[Any]) -> bool:
    """All bytes zero: zarr's empty-chunk test for fill value 0 (bit patterns: -0.0 is data)."""
    flat = chunk.reshape(-1)
    if flat.size and flat[0] != 0:  # the usual case, decided by one element
        return False
    return not flat.view(np.uint8).any()


def _blosc(codecs: list[Any]) -> Any | None | bool:
    """The numcodecs Blosc of an inner codec list [bytes(little), blosc?]; None for [bytes];
    False for anything else."""
    if not codecs or codecs[0] != _LITTLE or len(codecs) > 2:  # noqa: PLR2004
        return False
    if len(codecs) == 1:
        return None
    c = codecs[1]
    if c.get("name") != "blosc":
        return False
    from numcodecs import Blosc

    conf = c["configuration"]
    return Blosc(cname=conf["cname"], clevel=conf["clevel"], shuffle=_SHUFFLE[conf["shuffle"]],
                 blocksize=conf["blocksize"], typesize=conf["typesize"])


def _sharded_plan(meta: dict[str, Any], cols: int) -> tuple[int, int, Any] | None:
    """(chunk_rows, chunks per shard, blosc or None) when the metadata is the layout this
    module writes (chunks and shards split the first axis only; `cols` = the product of the
    others), else None."""
    try:
        (shard,) = meta["codecs"]
        conf = shard["configuration"]
        inner, outer = conf["chunk_shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        trail = list(meta["shape"][1:])  # whole in every chunk: a chunk is rows of `cols`
        ok = (shard["name"] == "sharding_indexed" and meta["fill_value"] == 0
              and meta["chunk_key_encoding"] == {"name": "default",
                                                 "configuration": {"separator": "/"}}
              and meta["chunk_grid"]["name"] == "regular" and trail and math.prod(trail) == cols
              and inner[1:] == outer[1:] == trail and outer[0] % inner[0] == 0
              and conf["index_codecs"] == [_LITTLE, {"name": "crc32c"}]
              and conf.get("index_location", "end") == "end"
              and not meta.get("storage_transformers"))
        codecs = conf["codecs"]
        if codecs[:1] == [{"name": "bytes"}] and meta["data_type"] in ("uint8", "int8", "bool"):
            codecs = [_LITTLE, *codecs[1:]]  # 1-byte types: zarr writes no endian, none to swap
        blosc = _blosc(codecs)
    except (KeyError, TypeError, ValueError):
        return None
    if not ok or blosc is False:
        return None
    return int(inner[0]), int(outer[0]) // int(inner[0]), blosc


def write_row_array(folder: Path, parts: Sequence[npt.NDArray[Any]],
                    written: Written) -> None:
    """Store the rows of `parts` concatenated in the array at `folder` (made by `create_nodes`
    with shape (sum of rows, *T) and the parts' dtype; e.g. T = (C,) for points, (H, W, 3) for
    camera frames, whose chunks and shards then split the first axis only).

    Args:
        folder: the array's folder (its `zarr.json` is there).
        parts: (n_i, *T) arrays of one dtype, in row order.
        written: receives the sha256 of the chunk files written here.
    """
    meta = json.loads((folder / "zarr.json").read_bytes())
    shape = [int(s) for s in meta["shape"]]
    n, cols = shape[0], math.prod(shape[1:])
    dtype = np.dtype(parts[0].dtype if parts else np.float32)
    plan = _sharded_plan(meta, cols)
    if plan is None or dtype.byteorder == ">":  # not the layout above: zarr writes it
        import zarr

        zarr.open_array(store=str(folder), mode="r+")[...] = (
            np.concatenate(parts) if parts else np.zeros((0, *shape[1:]), dtype))
        return
    # a row's trailing axes flattened: C order, the bytes zarr encodes for such a chunk
    parts = [p.reshape(len(p), cols) for p in parts]
    shard_key = "/".join(["0"] * (len(shape) - 1))  # the shard's chunk-grid key past axis 0
    rows, per_shard, blosc = plan
    chunks: list[bytes | memoryview] = []
    index = np.full((per_shard, 2), MISSING, dtype="<u8")
    pos = shard = 0
    for k, chunk in enumerate(row_chunks(parts, rows, cols, dtype)):
        j = k % per_shard
        if not _is_fill(chunk):
            b = blosc.encode(chunk) if blosc is not None else chunk.tobytes()
            chunks.append(b)
            index[j] = (pos, len(b))
            pos += len(b)
        if j == per_shard - 1 or (k + 1) * rows >= n:  # the shard is complete (or the last)
            _write_shard(folder / "c" / str(shard) / shard_key, chunks, index, written)
            chunks, pos, shard = [], 0, shard + 1
            index[:] = MISSING


def _write_shard(path: Path, chunks: list[bytes | memoryview], index: npt.NDArray[np.uint64],
                 written: Written) -> None:
    if not chunks:
        return
    import google_crc32c

    raw = index.tobytes()
    written.file(path, [*chunks, raw, google_crc32c.value(raw).to_bytes(4, "little")])


def write_small_array(folder: Path, data: npt.NDArray[Any], written: Written) -> None:
    """Store a 1-D uncompressed array made by `create_nodes` as one chunk (e.g. `offsets`:
    `chunks=(max(len, 1),)`, `compressors=None`), as zarr-python stores it."""
    meta = json.loads((folder / "zarr.json").read_bytes())
    simple = (meta.get("codecs") == [_LITTLE] and meta.get("fill_value") == 0
              and meta.get("chunk_key_encoding") == {"name": "default",
                                                     "configuration": {"separator": "/"}}
              and meta["chunk_grid"]["configuration"]["chunk_shape"] == [max(len(data), 1)]
              and data.ndim == 1 and data.dtype.byteorder != ">" and not meta.get(
                  "storage_transformers"))
    if not simple:
        import zarr

        zarr.open_array(store=str(folder), mode="r+")[...] = data
        return
    if len(data) and not _is_fill(data):
        written.file(folder / "c" / "0", [np.ascontiguousarray(data).tobytes()])
