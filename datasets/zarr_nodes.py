"""A group's Zarr v3 metadata (`zarr.json` of its groups and arrays) written in one go.

Why: zarr-python creates a node through its event loop (existence checks, metadata objects, a
thread hand-off per call); a VoD group's 13 nodes cost ~28 ms of CPU even in one round trip,
~0.45 ms a frame, 7% of a sync ingest (2026-12-02). The `zarr.json` of a node is zarr's own
metadata serialised (`json.dumps(to_dict(), indent=json_indent, allow_nan=True)`), and for the
nodes ingest makes only two of its values vary: the array's `shape` and the `attributes`. So
zarr-python builds each distinct node kind once per process, in memory, and later nodes of that
kind are its JSON with those two values put in. A kind is reused only after a probe shows that
changing them changes nothing else in the bytes (a second build with another shape and other
attributes, compared byte for byte); a kind where it does goes through zarr-python every time.
`tests/datasets/test_shard_writer*.py` compare every file with a store zarr-python wrote.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PROBE = {"kdpipe_probe": [1, "x"]}
# node kind -> zarr's metadata dict of that kind (shape and attributes to be put in), or None
# when the probe found other values depending on them (then zarr-python writes every node)
_templates: dict[str, dict[str, Any] | None] = {}


@dataclass(frozen=True)
class Node:
    """A group (`array` None) or an array (`array`: `create_array` keywords) to create."""

    path: str                              # relative to the root group, e.g. "lidar/points"
    attributes: dict[str, Any] = field(default_factory=dict)
    array: dict[str, Any] | None = None


def create_nodes(root: Path, attributes: dict[str, Any], nodes: Sequence[Node]) -> None:
    """Create (overwrite) the group at `root` and `nodes` below it (metadata only), as
    zarr-python would: `root`'s earlier contents are removed. Parents come before children."""
    everything = [Node("", attributes), *nodes]
    texts = [_text(n) for n in everything]
    shutil.rmtree(root, ignore_errors=True)
    if any(t is None for t in texts):
        _through_zarr(root, attributes, nodes)
        return
    for node, text in zip(everything, texts, strict=True):
        folder = root / node.path if node.path else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "zarr.json").write_bytes(text)  # type: ignore[arg-type]


def _text(node: Node) -> bytes | None:
    """The node's `zarr.json` bytes from its kind's template, or None (zarr-python writes it)."""
    kind = "group" if node.array is None else repr(sorted(
        (k, repr(v)) for k, v in node.array.items() if k != "shape"))
    if kind not in _templates:
        _templates[kind] = _template(node)
    t = _templates[kind]
    if t is None:
        return None
    d = dict(t)
    d["attributes"] = node.attributes
    if node.array is not None:
        d["shape"] = [int(s) for s in node.array["shape"]]
    return _dumps(d)


def _template(node: Node) -> dict[str, Any] | None:
    """zarr's metadata dict for `node`'s kind, if only shape and attributes vary in it."""
    shape = None if node.array is None else tuple(int(s) for s in node.array["shape"])
    other = None if shape is None else tuple(s + 3 for s in shape)
    try:
        a = json.loads(_zarr_bytes(node, shape, {}))
        b = _zarr_bytes(node, other, _PROBE)
    except Exception:  # noqa: BLE001 -- zarr-python itself then writes it, or says why not
        return None
    d = dict(a)
    d["attributes"] = _PROBE
    if other is not None:
        d["shape"] = list(other)
    return a if _dumps(d) == b else None


def _zarr_bytes(node: Node, shape: tuple[int, ...] | None, attributes: dict[str, Any]) -> bytes:
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    store = zarr.storage.MemoryStore()
    if node.array is None:
        made: Any = zarr.create_group(store, attributes=attributes, zarr_format=3)
    else:
        made = zarr.create_array(store, name="a", attributes=attributes,
                                 **{**node.array, "shape": shape})
    return bytes(made.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]
                 .to_bytes())


def _dumps(d: dict[str, Any]) -> bytes:
    """As zarr 3 serialises metadata (`to_buffer_dict`)."""
    import zarr

    return json.dumps(d, allow_nan=True, indent=zarr.config.get("json_indent")).encode()


def _through_zarr(root: Path, attributes: dict[str, Any], nodes: Sequence[Node]) -> None:
    """zarr-python creates every node, in one round trip to its event loop."""
    import asyncio

    from zarr.api.asynchronous import open_group
    from zarr.core.sync import sync

    async def build() -> None:
        group = await open_group(store=str(root), mode="w", zarr_format=3,
                                 attributes=attributes)
        made = {"": group}
        for depth in sorted({n.path.count("/") for n in nodes}):  # parents first
            level = [n for n in nodes if n.path.count("/") == depth]
            done = await asyncio.gather(*(_create(made, n) for n in level))
            made.update({n.path: g for n, g in zip(level, done, strict=True)})

    sync(build())


async def _create(made: dict[str, Any], node: Node) -> Any:
    parent, _, name = node.path.rpartition("/")
    if node.array is None:
        return await made[parent].create_group(name, attributes=node.attributes)
    return await made[parent].create_array(name, attributes=node.attributes, **node.array)
