"""Direct reads of one frame's points from the `points/1` Zarr layout (schemas/points.py).

Why not zarr-python for every read: a frame is one contiguous row range, but a zarr-python
slice costs 1-3 ms (event loop round trip, codec pipeline, the shard index read and parsed again
on every call), 20-30x a per-frame `np.fromfile`. This reader does only what the slice needs: it
parses the array's `zarr.json` once, reads each shard's index once (checking its crc32c), maps
each shard file once (`mmap`: blosc decodes straight from the page cache, no read copy) and
decodes the chunks a frame touches with numcodecs' blosc, which takes codec, shuffle and
typesize from each chunk's blosc header. The store stays a plain Zarr v3 store.

Random order mostly misses any cache, so a miss must be cheap: a chunk is decoded straight into
the frame when the frame covers it, else into a reused scratch buffer (no page faults) and the
frame's rows copied out. Only a chunk holding >= 4 frames (radar), or any chunk during
sequential reads, is kept in a small LRU cache that the scene's next frames hit.
(Decoding only the blosc blocks a frame needs was measured too: copying those blocks out of
the shard behind a rewritten blosc header cost as much as decoding whole chunks from the map.)

Anything outside that layout (unsharded arrays, other codecs, a missing chunk or shard, which
Zarr reads as the fill value) is read by zarr-python, so results always equal zarr-python's.
Fork-safe: maps are reopened when `os.getpid()` changes (DataLoader workers); picklable
(spawn); thread-safe (a map evicted while another thread decodes from it stays alive until that
thread drops it). Stores are immutable once published: a shard truncated under a live map
would fault (SIGBUS) on access, which is why every index entry is checked against the file size.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MISSING = 2**64 - 1          # shard index entry of a chunk that was never written
_LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}
_BLOSC_HEAD = 16             # blosc1 header: nbytes (decoded size) is the int32 at byte 4


class PointsReadError(ValueError):
    """The store's bytes contradict its metadata (corrupt index or chunk): never guessed at."""


@dataclass(frozen=True)
class Layout:
    """One sharded `points` array the direct path understands."""

    rows: int           # rows per inner chunk
    cols: int
    per_shard: int      # inner chunks per shard (along rows)
    index_end: bool     # shard index at the end (else the start)
    crc: bool           # index followed by its crc32c
    blosc: bool         # inner chunks are blosc frames (else raw little-endian float32)
    sep: str            # chunk key separator


def parse_layout(meta: dict[str, Any]) -> Layout | None:
    """The layout of a points array's `zarr.json`, or None for anything else (read by zarr)."""
    try:
        (shard,) = meta["codecs"]
        conf = shard["configuration"]
        inner, outer = conf["chunk_shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        shape, idx_codecs, codecs = meta["shape"], conf["index_codecs"], conf["codecs"]
        sep = meta["chunk_key_encoding"]["configuration"].get("separator", "/")
        ok = (shard["name"] == "sharding_indexed" and meta["data_type"] == "float32"
              and meta["chunk_key_encoding"]["name"] == "default"
              and meta["chunk_grid"]["name"] == "regular" and len(shape) == 2
              and inner[1] == outer[1] == shape[1] and outer[0] % inner[0] == 0
              and idx_codecs[0] == _LITTLE and idx_codecs[1:] in ([], [{"name": "crc32c"}])
              and codecs[0] == _LITTLE and len(codecs) <= 2
              and all(c["name"] == "blosc" for c in codecs[1:]))
    except (KeyError, TypeError, ValueError):
        return None
    if not ok:
        return None
    return Layout(int(inner[0]), int(shape[1]), outer[0] // inner[0],
                  conf.get("index_location", "end") == "end", len(idx_codecs) == 2,
                  len(codecs) == 2, sep)


@dataclass
class _Array:
    path: str                       # the `points` array folder
    layout: Layout | None           # None: read through zarr-python
    fields: list[str]
    offsets: npt.NDArray[np.int64]
    last: int = -2                  # last frame read: sequential reads cache whole chunks
    zarr: Any = None
    shards: dict[int, tuple[str, npt.NDArray[np.uint64] | None]] = field(default_factory=dict)


class PointsReader:
    """Frames of a `points.zarr` store (the `points` port of `IngestStore`).

    Args:
        root: the `points.zarr` folder.
        cache_bytes: budget of the per-process LRU cache of decoded chunks.
        max_files: shard files kept mapped per process.

    `stats` counts chunk reads: cache `hits`, blosc chunks `decoded`, `raw` (uncompressed)
    chunk reads, and frames read through `zarr`-python.
    """

    def __init__(self, root: str | Path, cache_bytes: int = 64 << 20,
                 max_files: int = 128) -> None:
        self.root, self.cache_bytes, self.max_files = Path(root), cache_bytes, max_files
        self._arrays: dict[tuple[str, str, str], _Array] = {}
        self.stats = {"hits": 0, "decoded": 0, "raw": 0, "zarr": 0}
        self._reset()

    def _reset(self) -> None:
        """Per-process state: maps, cache and lock are never shared across a fork."""
        self._pid, self._lock, self._local = os.getpid(), threading.Lock(), threading.local()
        self._maps: OrderedDict[str, memoryview] = OrderedDict()
        self._cache: OrderedDict[tuple[str, int], npt.NDArray[np.float32]] = OrderedDict()
        self._cached = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "cache_bytes": self.cache_bytes, "max_files": self.max_files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def close(self) -> None:
        """Drop maps and cache (a map is unmapped once no read uses it)."""
        with self._lock:
            self._maps.clear()
            self._cache.clear()
            self._cached = 0

    def fields(self, source: str, scene: str, sensor: str) -> list[str]:
        return list(self._array(source, scene, sensor).fields)

    def offsets(self, source: str, scene: str, sensor: str) -> npt.NDArray[np.int64]:
        """(F + 1,) int64: frame i is rows offsets[i]:offsets[i + 1]."""
        return self._array(source, scene, sensor).offsets.copy()

    def frame(self, source: str, scene: str, sensor: str, index: int) -> npt.NDArray[np.float32]:
        """Frame `index` of a group as a new (N, C) float32 array (the caller owns it)."""
        a = self._array(source, scene, sensor)
        if not 0 <= index < len(a.offsets) - 1:
            raise IndexError(f"frame {index} of {source}/{scene}/{sensor} "
                             f"({len(a.offsets) - 1} frames)")
        start, stop = int(a.offsets[index]), int(a.offsets[index + 1])
        sequential, a.last = a.last in (index - 1, index), index
        lay = a.layout
        if lay is None:
            return self._zarr_rows(a, start, stop)
        out = np.empty((stop - start, lay.cols), np.float32)
        # a chunk holding >= 4 frames is read again soon by the scene's other frames
        reuse = sequential or 4 * len(out) <= lay.rows
        pos = 0
        for k in range(start // lay.rows, (stop - 1) // lay.rows + 1 if stop > start else 0):
            lo, hi = max(start - k * lay.rows, 0), min(stop - k * lay.rows, lay.rows)
            if not self._chunk_rows(a, k, (lo, hi), out[pos:pos + hi - lo], reuse):
                return self._zarr_rows(a, start, stop)  # a chunk Zarr reads as the fill value
            pos += hi - lo
        return out

    def _array(self, source: str, scene: str, sensor: str) -> _Array:
        if self._pid != os.getpid():
            self._reset()
        a = self._arrays.get((source, scene, sensor))
        if a is None:
            d = self.root / source / scene / sensor
            meta = json.loads((d / "points" / "zarr.json").read_text())
            fields = [str(f) for f in meta.get("attributes", {}).get("fields", [])]
            a = _Array(str(d / "points"), parse_layout(meta), fields,
                       _read_offsets(d / "offsets"))
            self._arrays[(source, scene, sensor)] = a
        return a

    def _chunk_rows(self, a: _Array, k: int, span: tuple[int, int],
                    dst: npt.NDArray[np.float32], reuse: bool) -> bool:
        """Rows span = [lo, hi) of chunk k into dst; False when the chunk is missing."""
        lay, (lo, hi) = a.layout, span
        assert lay is not None
        with self._lock:
            hit = self._cache.get((a.path, k))
            if hit is not None:
                self._cache.move_to_end((a.path, k))
        if hit is not None:  # cached arrays are never written again: copy outside the lock
            self.stats["hits"] += 1
            dst[...] = hit[lo:hi]
            return True
        shard, j = divmod(k, lay.per_shard)
        got = a.shards.get(shard)
        if got is None:
            got = a.shards[shard] = self._index(a, shard)
        path, idx = got
        if idx is None or idx[j, 0] == MISSING:
            return False
        off, nbytes, row = int(idx[j, 0]), int(idx[j, 1]), 4 * lay.cols
        src = self._map(path)[off:off + nbytes]
        if not lay.blosc:  # raw little-endian float32: copy the rows out of the map
            self.stats["raw"] += 1
            if nbytes != lay.rows * row:
                raise PointsReadError(f"{path}: chunk {j} holds {nbytes} bytes, expected "
                                      f"{lay.rows * row}")
            dst.reshape(-1).view(np.uint8)[...] = np.frombuffer(src, np.uint8, (hi - lo) * row,
                                                                lo * row)
            return True
        self.stats["decoded"] += 1
        if lo == 0 and hi == lay.rows:  # the frame covers it: no other frame needs it
            _decode(path, src, dst)
            return True
        chunk = (np.empty((lay.rows, lay.cols), np.float32) if reuse else
                 self._scratch(lay.rows * row).view(np.float32).reshape(lay.rows, lay.cols))
        _decode(path, src, chunk)
        dst[...] = chunk[lo:hi]
        if reuse:
            self._remember((a.path, k), chunk)
        return True

    def _remember(self, key: tuple[str, int], chunk: npt.NDArray[np.float32]) -> None:
        with self._lock:
            old = self._cache.pop(key, None)
            self._cached += chunk.nbytes - (0 if old is None else old.nbytes)
            self._cache[key] = chunk
            while self._cached > self.cache_bytes and self._cache:
                self._cached -= self._cache.popitem(last=False)[1].nbytes

    def _scratch(self, n: int) -> npt.NDArray[np.uint8]:
        """A per-thread buffer of n bytes, reused (a fresh one would cost page faults)."""
        buf: npt.NDArray[np.uint8] | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            buf = self._local.buf = np.empty(n, np.uint8)
        return buf[:n]

    def _map(self, path: str) -> memoryview:
        """The shard file, mapped read-only; at most `max_files` kept."""
        with self._lock:
            mv = self._maps.get(path)
            if mv is not None:
                self._maps.move_to_end(path)
                return mv
        with open(path, "rb") as f:
            mv = memoryview(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
        with self._lock:
            self._maps[path] = mv
            while len(self._maps) > self.max_files:
                self._maps.popitem(last=False)  # unmapped when the last reader lets go
        return mv

    def _index(self, a: _Array, shard: int) -> tuple[str, npt.NDArray[np.uint64] | None]:
        """A shard's path and its (chunks, 2) (offset, nbytes) index, read and checked once;
        None for a shard that was never written."""
        lay = a.layout
        assert lay is not None
        path = f"{a.path}/c{lay.sep}{shard}{lay.sep}0"
        n = 16 * lay.per_shard + 4 * lay.crc
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return path, None
        if size < n:
            raise PointsReadError(f"{path}: {size} bytes, shorter than its {n}-byte index")
        raw = bytes(self._map(path)[size - n:] if lay.index_end else self._map(path)[:n])
        if lay.crc:
            import google_crc32c

            stored, got = int.from_bytes(raw[-4:], "little"), google_crc32c.value(raw[:-4])
            if stored != got:
                raise PointsReadError(f"{path}: shard index checksum mismatch (stored {stored:#x}"
                                      f", computed {got:#x}): the shard is corrupt")
        idx = np.frombuffer(raw[:16 * lay.per_shard], "<u8").reshape(-1, 2)
        present = idx[:, 0] != MISSING
        if np.any(idx[present, 0] + idx[present, 1] > size):
            raise PointsReadError(f"{path}: shard index points past the end of the file")
        return path, idx

    def _zarr_rows(self, a: _Array, start: int, stop: int) -> npt.NDArray[np.float32]:
        if a.zarr is None:
            import zarr

            a.zarr = zarr.open_array(store=a.path, mode="r")
        self.stats["zarr"] += 1
        return np.asarray(a.zarr[start:stop])


def _decode(path: str, src: memoryview, dst: npt.NDArray[Any]) -> None:
    """Decode one blosc chunk into dst, which must be exactly its decoded size."""
    from numcodecs import blosc

    want = struct.unpack_from("<i", src, 4)[0] if len(src) >= _BLOSC_HEAD else -1
    if want != dst.nbytes:
        raise PointsReadError(f"{path}: blosc chunk decodes to {want} bytes, expected "
                              f"{dst.nbytes} (corrupt chunk)")
    try:
        blosc.decompress(src, dst)
    except RuntimeError as e:
        raise PointsReadError(f"{path}: blosc chunk does not decode ({e})") from e


def _read_offsets(path: Path) -> npt.NDArray[np.int64]:
    """The offsets array: its one raw chunk read directly when it is the layout ingest writes."""
    meta = json.loads((path / "zarr.json").read_text())
    shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    f = path / f"c{sep}0"
    if (meta["data_type"] == "int64" and meta["codecs"] == [_LITTLE] and len(shape) == 1
            and chunk[0] >= shape[0] and meta["chunk_key_encoding"]["name"] == "default"
            and f.is_file() and f.stat().st_size == 8 * chunk[0]):
        return np.fromfile(f, "<i8", count=shape[0]).astype(np.int64)
    import zarr

    return np.asarray(zarr.open_array(store=str(path), mode="r")[:], dtype=np.int64)
