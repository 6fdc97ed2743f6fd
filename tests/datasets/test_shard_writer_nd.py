"""Frame-chunked N-D arrays (camera frames) written by the shard writer are zarr-python's
bytes, all-zero frames and empty arrays included."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from kdpipe.datasets.shard_writer import Node, Written, create_nodes, write_row_array


def _files(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes()
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("frames", [0, 1, 7, 9])
@pytest.mark.parametrize("codec", ["lz4-noshuffle", "none"])
def test_frame_chunked_images_same_bytes_as_zarr(tmp_path: Path, frames: int, codec: str) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, size=(frames, 5, 6, 3), dtype=np.uint8)  # (F, H, W, 3)
    if frames > 2:  # noqa: PLR2004
        data[1] = 0  # an all-zero frame: not stored
    compressors = None if codec == "none" else BloscCodec(
        cname="lz4", clevel=5, shuffle=BloscShuffle.noshuffle)
    spec = {"chunks": (1, 5, 6, 3), "shards": (4, 5, 6, 3), "compressors": compressors,
            "dimension_names": ("frame", "y", "x", "rgb")}
    ref = zarr.open_group(store=str(tmp_path / "ref"), mode="w", zarr_format=3)
    ref.create_group("camera").create_array("CAM", data=data if frames else
                                            np.zeros((0, 5, 6, 3), np.uint8),
                                            attributes={"channel": "CAM"}, **spec)
    mine = tmp_path / "mine"
    create_nodes(mine, {}, [Node("camera"), Node("camera/CAM", {"channel": "CAM"}, {
        "shape": data.shape, "dtype": data.dtype, **spec})])
    written = Written(mine)
    write_row_array(mine / "camera/CAM", [data], written)
    assert _files(mine) == _files(tmp_path / "ref")
    assert set(written.sha256) == {k for k in _files(mine) if "/c/" in k}
    np.testing.assert_array_equal(zarr.open_array(str(mine / "camera/CAM"))[...], data)
