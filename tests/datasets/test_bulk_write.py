"""Large store files go past the page cache (O_DIRECT) with the bytes a buffered write gives,
and fall back to a buffered write where O_DIRECT is refused or switched off."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdpipe.datasets import bulk_write
from kdpipe.datasets.shard_writer import Node, Written, create_nodes, write_row_array

SIZES = [bulk_write.MIN_BYTES - 1, bulk_write.MIN_BYTES, 64 * bulk_write.BLOCK,
         64 * bulk_write.BLOCK + 1, 3_000_017]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The flags of every os.open in bulk_write (the buffered path uses builtins.open)."""
    flags: list[int] = []
    real = os.open

    def spy(path: str | Path, fl: int, *a: int) -> int:
        flags.append(fl)
        return real(path, fl, *a)

    monkeypatch.setattr(bulk_write.os, "open", spy)
    monkeypatch.setattr(bulk_write, "_refused", set())
    return flags


def _parts(size: int, seed: int) -> list[bytes]:
    raw = np.random.default_rng(seed).bytes(size)
    cut = sorted({0, size, *np.random.default_rng(seed + 1).integers(0, size, 4).tolist()})
    return [raw[a:b] for a, b in zip(cut, cut[1:], strict=False)]


@pytest.mark.parametrize("size", SIZES)
def test_the_file_holds_exactly_the_parts(tmp_path: Path, opened: list[int], size: int) -> None:
    if not bulk_write.enabled():
        pytest.skip("no O_DIRECT on this platform, or KDPIPE_DIRECT_IO=off")
    path = tmp_path / "shard"
    path.write_bytes(b"x" * (size + 9000))  # a longer earlier file: truncated, not kept
    parts = _parts(size, size)
    bulk_write.write_file(path, parts)
    assert path.read_bytes() == b"".join(parts)
    direct = any(f & os.O_DIRECT for f in opened)
    if size < bulk_write.MIN_BYTES:
        assert not direct
    elif bulk_write._refused:
        pytest.skip(f"{tmp_path} refuses O_DIRECT (written buffered, bytes checked)")
    else:
        assert direct


def test_refused_or_switched_off_means_a_buffered_write(
        tmp_path: Path, opened: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _parts(600_001, 3)
    monkeypatch.setenv("KDPIPE_DIRECT_IO", "off")
    bulk_write.write_file(tmp_path / "a", parts)
    assert (tmp_path / "a").read_bytes() == b"".join(parts) and not opened
    monkeypatch.delenv("KDPIPE_DIRECT_IO")
    if not hasattr(os, "O_DIRECT"):
        return

    def refuse(path: str | Path, fl: int, *a: int) -> int:
        opened.append(fl)
        raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs answers O_DIRECT

    monkeypatch.setattr(bulk_write.os, "open", refuse)
    for name in ("b", "c"):
        bulk_write.write_file(tmp_path / name, parts)
        assert (tmp_path / name).read_bytes() == b"".join(parts)
    assert len(opened) == 1  # the filesystem is not asked again


def test_a_large_group_reads_back_through_zarr(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards over MIN_BYTES (the direct path) and the same with it off: identical files, and
    zarr-python reads the rows back."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 4)).astype(np.float32) for n in (40_000, 7, 25_001)]
    n = sum(len(p) for p in parts)
    out = {}
    for mode in ("auto", "off"):
        monkeypatch.setenv("KDPIPE_DIRECT_IO", mode)
        root = tmp_path / mode
        create_nodes(root, {}, [Node("points", {}, {
            "shape": (n, 4), "dtype": np.float32, "chunks": (8192, 4), "shards": (32768, 4)})])
        written = Written(root)
        write_row_array(root / "points", parts, written)
        np.testing.assert_array_equal(zarr.open_array(root / "points", mode="r")[...],
                                      np.concatenate(parts))
        out[mode] = {f.relative_to(root).as_posix(): f.read_bytes()
                     for f in sorted(root.rglob("*")) if f.is_file()}
    assert out["auto"] == out["off"]
    assert max(len(b) for b in out["auto"].values()) >= bulk_write.MIN_BYTES
