"""The direct shard writer stores the bytes zarr-python stores, and its digest is digest_path's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from kdpipe.datasets.shard_writer import (
    Node,
    Written,
    create_nodes,
    write_row_array,
    write_small_array,
)
from kdpipe.pipeline.hashing import digest_path

ROWS, PER_SHARD = 64, 4


def _files(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes()
            for f in sorted(root.rglob("*")) if f.is_file()}


def _parts(rng: np.random.Generator, cols: int, sizes: list[int]) -> list[np.ndarray]:
    return [rng.normal(size=(n, cols)).astype(np.float32) for n in sizes]


CASES = {
    "one part": [100],
    "exact shards": [ROWS * PER_SHARD, ROWS * PER_SHARD],
    "uneven frames": [0, 3, 200, 1, 0, 333, 64, 7],
    "empty": [],
    "only empty frames": [0, 0],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("codec", ["lz4", "zstd", "lz4-noshuffle", "none"])
def test_same_bytes_as_zarr(tmp_path: Path, case: str, codec: str) -> None:
    rng = np.random.default_rng(0)
    parts = _parts(rng, 7, CASES[case])
    if case == "uneven frames":  # a whole chunk of zeros (not stored), and -0.0 (stored)
        parts.insert(3, np.zeros((ROWS * 2, 7), np.float32))
        parts.append(np.full((5, 7), -0.0, np.float32))
    cname, _, shuffle = codec.partition("-")
    compressors = None if cname == "none" else BloscCodec(
        cname=cname, clevel=5,
        shuffle=BloscShuffle.noshuffle if shuffle else BloscShuffle.shuffle)
    spec = {"chunks": (ROWS, 7), "shards": (ROWS * PER_SHARD, 7), "compressors": compressors,
            "dimension_names": ("point", "field"), "attributes": {"fields": list("abcdefg")}}
    data = np.concatenate(parts) if parts else np.zeros((0, 7), np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    ref = zarr.open_group(store=str(tmp_path / "ref"), mode="w", zarr_format=3,
                          attributes={"frames": ["a"]})
    sensor = ref.create_group("lidar")
    sensor.create_array("points", data=data, **spec)
    sensor.create_array("offsets", data=offsets, chunks=(max(len(offsets), 1),),
                        compressors=None, attributes={"meaning": "m"})
    array = {k: v for k, v in spec.items() if k != "attributes"}
    create_nodes(tmp_path / "got", {"frames": ["a"]}, [
        Node("lidar"),
        Node("lidar/points", spec["attributes"], {**array, "shape": data.shape,
                                                  "dtype": np.float32}),
        Node("lidar/offsets", {"meaning": "m"}, {"shape": offsets.shape, "dtype": np.int64,
                                                 "chunks": (max(len(offsets), 1),),
                                                 "compressors": None})])
    written = Written(tmp_path / "got")
    write_row_array(tmp_path / "got/lidar/points", parts, written)
    write_small_array(tmp_path / "got/lidar/offsets", offsets, written)

    assert _files(tmp_path / "got") == _files(tmp_path / "ref")
    assert digest_path(tmp_path / "got", written.sha256) == digest_path(tmp_path / "ref")
    back = zarr.open_group(store=str(tmp_path / "got"), mode="r")
    np.testing.assert_array_equal(back["lidar/points"][...], data)


def test_digest_reads_files_it_was_not_told(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"x")
    (tmp_path / "y").write_bytes(b"yy")
    written = Written(tmp_path)
    written.file(tmp_path / "b" / "z", [b"z", memoryview(b"zz")])
    assert (tmp_path / "b" / "z").read_bytes() == b"zzz"
    assert digest_path(tmp_path, written.sha256) == digest_path(tmp_path)
    assert digest_path(tmp_path, {}) == digest_path(tmp_path)


def test_other_layouts_go_through_zarr(tmp_path: Path) -> None:
    """An unsharded array (not the layout the direct path writes) is stored by zarr-python."""
    parts = _parts(np.random.default_rng(1), 4, [10, 0, 90])
    data = np.concatenate(parts)
    ref = zarr.open_group(store=str(tmp_path / "ref"), mode="w", zarr_format=3)
    ref.create_array("points", data=data, chunks=(32, 4))
    ref.create_array("offsets", data=np.array([0, 10, 100]), chunks=(2,))
    create_nodes(tmp_path / "got", {}, [
        Node("points", {}, {"shape": data.shape, "dtype": np.float32, "chunks": (32, 4)}),
        Node("offsets", {}, {"shape": (3,), "dtype": np.int64, "chunks": (2,)})])
    written = Written(tmp_path / "got")
    write_row_array(tmp_path / "got/points", parts, written)
    write_small_array(tmp_path / "got/offsets", np.array([0, 10, 100]), written)
    assert written.sha256 == {}
    assert _files(tmp_path / "got") == _files(tmp_path / "ref")
