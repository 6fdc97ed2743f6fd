"""create_nodes writes the zarr.json files zarr-python writes, from a template per node kind
where only shape and attributes vary, and through zarr-python where more depends on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from kdpipe.datasets import zarr_nodes
from kdpipe.datasets.zarr_nodes import Node, create_nodes


def _files(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes()
            for f in sorted(root.rglob("*")) if f.is_file()}


def _points(n: int, cols: int) -> dict[str, object]:
    return {"shape": (n, cols), "dtype": np.float32, "chunks": (64, cols),
            "shards": (256, cols), "dimension_names": ("point", "field"),
            "compressors": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)}


def _reference(root: Path, attributes: dict[str, object], nodes: list[Node]) -> None:
    made = {"": zarr.open_group(store=str(root), mode="w", zarr_format=3, attributes=attributes)}
    for n in nodes:
        parent, _, name = n.path.rpartition("/")
        made[n.path] = (made[parent].create_group(name, attributes=n.attributes)
                        if n.array is None else
                        made[parent].create_array(name, attributes=n.attributes, **n.array))


@pytest.fixture(autouse=True)
def fresh_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zarr_nodes, "_templates", {})


def test_groups_of_many_shapes_and_attributes_equal_zarr_python(tmp_path: Path) -> None:
    for i, (n_lidar, n_radar, frames) in enumerate([(1000, 7, ["a"]), (0, 0, []),
                                                    (12345, 999, ["00001", "é", "x\"y"])]):
        offsets = {"shape": (len(frames) + 1,), "dtype": np.int64,
                   "chunks": (len(frames) + 1,), "compressors": None}
        nodes = [Node("lidar"), Node("lidar/points", {"fields": ["x", "y", "z", "i"], "n": i},
                                     _points(n_lidar, 4)),
                 Node("lidar/offsets", {"meaning": "m"}, offsets), Node("radar", {"k": [i]}),
                 Node("radar/points", {"fields": list("abcdefg")}, _points(n_radar, 7)),
                 Node("radar/offsets", {}, offsets)]
        attrs = {"source": "s", "scene": f"block_{i}", "frames": frames}
        _reference(tmp_path / f"ref{i}", attrs, nodes)
        (tmp_path / f"got{i}" / "stale").mkdir(parents=True)  # overwritten, as mode="w" does
        create_nodes(tmp_path / f"got{i}", attrs, nodes)
        assert _files(tmp_path / f"got{i}") == _files(tmp_path / f"ref{i}")
    # one template per kind (group; points of 4 and of 7 columns; offsets of 2, 1 and 4 rows)
    assert len(zarr_nodes._templates) == 6
    assert all(t is not None for t in zarr_nodes._templates.values())


def test_a_kind_whose_metadata_follows_its_shape_goes_through_zarr(tmp_path: Path) -> None:
    """zarr's automatic chunking depends on the shape: the probe sees it."""
    nodes = [Node("a", {"n": 1}, {"shape": (50_000, 3), "dtype": np.float32, "chunks": "auto"})]
    _reference(tmp_path / "ref", {}, nodes)
    create_nodes(tmp_path / "got", {}, nodes)
    assert _files(tmp_path / "got") == _files(tmp_path / "ref")
    assert [t for k, t in zarr_nodes._templates.items() if k != "group"] == [None]
