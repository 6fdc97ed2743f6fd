"""Headerless float32 point-cloud ``.bin`` files (KITTI, VoD, nuScenes LiDAR) and safe paths.

A ``.bin`` is ``N * n_fields`` little-endian float32 values, row-major, no header: KITTI/VoD
LiDAR ``(x, y, z, reflectance)``, VoD radar ``(x, y, z, RCS, v_r, v_r_compensated, time)``,
nuScenes LiDAR ``(x, y, z, intensity, ring_index)``.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.errors import Check, FormatError

_F32_LE = np.dtype("<f4")

# path -> sha256 of the bytes a parser read, while `recording_digests` is active: ingest logs
# each raw file's digest from the bytes it parsed instead of reading the file a second time
_DIGESTS: ContextVar[dict[str, str] | None] = ContextVar("kdpipe_read_digests", default=None)


def read_raw(path: str | Path) -> bytes:
    """All bytes of ``path`` (``OSError`` as from ``Path.read_bytes``); their sha256 is recorded
    when a `recording_digests` block is active in this thread."""
    raw = Path(path).read_bytes()
    _record(path, raw)
    return raw


def read_raw_array(path: str | Path) -> npt.NDArray[np.uint8]:
    """All bytes of ``path`` as a new writable uint8 array (``OSError`` as `read_raw`), digested
    as `read_raw` digests: read straight into the array a parser keeps, instead of into a bytes
    object and then copied (each 1 MB allocation is fresh pages: ~0.2 ms a LiDAR scan)."""
    with open(path, "rb", buffering=0) as f:
        buf = np.empty(os.fstat(f.fileno()).st_size, np.uint8)
        view, n = memoryview(buf), 0
        while n < len(buf) and (got := f.readinto(view[n:])):
            n += got
        view.release()
        rest = f.read() if n == len(buf) else b""  # the file grew after fstat: keep it all
    if n < len(buf) or rest:
        buf = np.concatenate([buf[:n], np.frombuffer(rest, np.uint8)])
    _record(path, buf)
    return buf


def _record(path: str | Path, raw: bytes | npt.NDArray[np.uint8]) -> None:
    seen = _DIGESTS.get()
    if seen is not None:
        seen[str(path)] = hashlib.sha256(raw).hexdigest()


@contextmanager
def recording_digests() -> Iterator[dict[str, str]]:
    """Within the block, every parser read in this thread records ``{str(path): sha256}`` in
    the yielded dict (the caller pops what it logs)."""
    seen: dict[str, str] = {}
    token = _DIGESTS.set(seen)
    try:
        yield seen
    finally:
        _DIGESTS.reset(token)


def read_float32_bin(path: str | Path, n_fields: int) -> npt.NDArray[np.float32]:
    """Read a headerless little-endian float32 point file.

    Args:
        path: The ``.bin`` file.
        n_fields: Values per point (4 for KITTI/VoD LiDAR, 5 nuScenes LiDAR, 7 VoD radar).

    Returns:
        ``(N, n_fields)`` float32 array, N >= 1, native byte order.

    Raises:
        FormatError: ``path`` (missing/unreadable), ``empty`` (zero bytes), ``size`` (length not a
            multiple of ``4 * n_fields`` bytes, i.e. a truncated or mis-typed file), ``finite``
            (NaN/inf in x, y or z).
    """
    if n_fields < 1:
        raise ValueError(f"n_fields must be >= 1, got {n_fields}")
    try:
        raw = read_raw_array(path)
    except OSError as exc:
        raise FormatError(path, "path", f"cannot read file ({exc.strerror or exc}).") from exc
    stride = 4 * n_fields
    if len(raw) == 0:
        raise FormatError(path, "empty", "file is zero bytes long.")
    if len(raw) % stride:
        raise FormatError(
            path, "size",
            f"{len(raw)} bytes is not a multiple of {stride} ({n_fields} float32 per point); "
            "file is truncated or has another layout.",
        )
    # the file's own buffer when little-endian is native (no copy), else a native copy
    points = raw.view(_F32_LE).reshape(-1, n_fields).astype(np.float32, copy=False)
    check_finite_xyz(path, points)
    return points


def check_finite_xyz(path: str | Path, points: npt.NDArray[np.floating]) -> None:
    """Raise ``FormatError("finite")`` if any of the first three columns is NaN/inf.

    Args:
        path: File the points came from (for the message).
        points: ``(N, C)`` points, x, y, z first.
    """
    xyz = points[:, : min(3, points.shape[1])]
    # one pass: a NaN or inf makes the sum so. Over the whole row-major array when it is one
    # block (a contiguous sum is ~6x faster than one over the strided x, y, z columns); a
    # non-finite value in another column, or a sum that overflows, only costs the exact test.
    whole = points if points.flags.c_contiguous else xyz
    if np.isfinite(np.add.reduce(whole, axis=None)):
        return
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise FormatError(
            path, "finite",
            f"{int(bad.sum())} point(s) have non-finite x/y/z (first at row {first}).",
        )


def write_float32_bin(path: str | Path, points: npt.ArrayLike) -> None:
    """Write ``(N, C)`` points as a headerless little-endian float32 ``.bin`` (inverse of read)."""
    arr = np.ascontiguousarray(np.asarray(points), dtype=_F32_LE)
    if arr.ndim != 2:  # noqa: PLR2004
        raise ValueError(f"points must be (N, C), got shape {arr.shape}")
    Path(path).write_bytes(arr.tobytes())


def read_text(path: str | Path, check: Check) -> str:
    """Read a small text file (labels, calib, pose) as UTF-8.

    Args:
        path: The file.
        check: The check to blame when the bytes are not UTF-8 (a content problem, e.g. "label").

    Raises:
        FormatError: ``path`` if it cannot be read, ``check`` if it is not UTF-8.
    """
    try:
        raw = read_raw(path)
    except OSError as exc:
        raise FormatError(path, "path", f"cannot read file ({exc.strerror or exc}).") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, check, f"not UTF-8 text (byte {exc.start}).") from exc


def safe_join(root: str | Path, relative: str | os.PathLike[str]) -> Path:
    """Join a file name taken from a dataset table onto the dataset root, refusing escapes.

    Dataset tables (nuScenes ``sample_data.filename``, VoD split files) are untrusted input: a
    name like ``../../etc/passwd``, an absolute path or a symlink pointing outside would make
    ingest read (and hash, and copy) files that are not part of the dataset.

    Args:
        root: Dataset root directory.
        relative: Relative file name from the table (POSIX separators).

    Returns:
        The resolved absolute path (symlinks followed), guaranteed inside ``root``.

    Raises:
        FormatError: ``path`` if the name is empty, absolute, contains NUL, or resolves outside
            the resolved root.
    """
    rel = os.fspath(relative)
    if not rel or "\x00" in rel:
        raise FormatError(rel, "path", "file name is empty or contains NUL.")
    if os.path.isabs(rel) or rel.startswith(("\\", "~")) or (len(rel) > 1 and rel[1] == ":"):
        raise FormatError(rel, "path", f"file name must be relative to the dataset root {root}.")
    root_resolved = Path(root).resolve()
    # resolve(strict=False) follows every symlink that exists, so a link inside the tree that
    # points outside it is caught the same way as a literal `..`.
    target = (root_resolved / rel).resolve()
    if not target.is_relative_to(root_resolved):
        raise FormatError(rel, "path", f"file name resolves to {target}, outside root {root}.")
    return target
