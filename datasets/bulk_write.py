"""Large store files written past the page cache (`O_DIRECT`), where the filesystem allows it.

Why: ingest writes each shard once and reads it back only much later (training, at another
time, maybe on another machine), and a fleet's store (10^5-10^6 frames, 0.8 MB a frame) is
larger than any page cache: cached writes only evict pages that are worth keeping and pay for
a page-cache page per 4 KiB written. Databases write their bulk flushes the same way (RocksDB's
`use_direct_io_for_flush_and_compaction`). On this project's 2-core VM a new page-cache page
costs ~2.7 us of system time (the host backs guest memory on first touch): a 1 GB shard write
took 1.9-2.8 s of CPU cached and 0.05 s direct (0.54 s wall); that was a quarter of a sync VoD
ingest's CPU (`docs/BENCHMARKS.md`, 2026-12-02).

How: the file's bytes are copied into one page-aligned buffer (reused: a fresh buffer would
cost the same first touch), written with `O_DIRECT` in whole 4 KiB blocks, and the file is cut
back to its length with `ftruncate`. The bytes on disk are the same as a buffered write's.
Small files, platforms without `O_DIRECT`, filesystems that refuse it (tmpfs, some network
filesystems: `EINVAL` at open or write) and `KDPIPE_DIRECT_IO=off` get a plain buffered write.
Durability is unchanged where it matters: the group's done-marker is written after its shards,
and a killed group is rewritten whole.
"""
from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

BLOCK = 4096                 # O_DIRECT's alignment of offsets, lengths and memory on Linux
MIN_BYTES = 256 * 1024       # below this the page cache costs little and direct I/O waits more
_refused: set[int] = set()   # st_dev of filesystems that refused O_DIRECT in this process
_buffer: list[mmap.mmap] = []  # the one aligned buffer of this process, grown on demand


def enabled() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get("KDPIPE_DIRECT_IO", "auto") != "off"


def write_file(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    """Write `parts` as the file `path` (created or truncated), bypassing the page cache when
    the file is large and the filesystem supports it."""
    total = sum(len(p) for p in parts)
    if total < MIN_BYTES or not enabled() or _direct(path, parts, total) is False:
        with open(path, "wb") as f:
            for p in parts:
                f.write(p)


def _aligned(size: int) -> mmap.mmap:
    """A page-aligned anonymous buffer of at least `size` bytes (mmap memory is page-aligned)."""
    if not _buffer or len(_buffer[0]) < size:
        if _buffer:
            _buffer.pop().close()
        _buffer.append(mmap.mmap(-1, max(size, 8 << 20)))
    return _buffer[0]


def _direct(path: Path, parts: Sequence[bytes | memoryview], total: int) -> bool:
    """True when written with O_DIRECT, False when the caller must write it buffered."""
    try:
        dev = os.stat(path.parent).st_dev
    except OSError:
        return False
    if dev in _refused:
        return False
    padded = -(-total // BLOCK) * BLOCK
    buf = _aligned(padded)
    view = memoryview(buf)
    pos = 0
    for p in parts:
        view[pos:pos + len(p)] = p
        pos += len(p)
    view[pos:padded] = bytes(padded - pos)  # the pad is cut off below; zeros keep it tidy
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        _refused.add(dev)
        return False
    try:
        done = 0
        while done < padded:  # a short write still ends on a block boundary
            done += os.write(fd, view[done:padded])
        os.ftruncate(fd, total)
    except OSError as e:
        os.close(fd)
        if e.errno != errno.EINVAL:
            raise
        _refused.add(dev)
        return False
    finally:
        view.release()
    os.close(fd)
    return True
