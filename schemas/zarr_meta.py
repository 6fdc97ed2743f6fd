"""Read-only views of a local Zarr v3 store's metadata, for schema checks at scale.

Why: zarr-python opens each node through its event loop, ~10 ms of driver time per VoD group
(13 nodes and 4 `offsets` reads): 0.34 s for 2,000 frames, ~3 minutes for a fleet's 10^6
frames (15,600 groups), all after the workers are done. The checks only need each node's
`zarr.json` (node type, shape, data type, attributes) and the small `offsets` arrays. Here a
node's `zarr.json` is parsed by zarr's own metadata classes (so what zarr refuses is refused)
and a single-chunk uncompressed array is read from its one chunk file; anything else (another
codec, another chunk layout) is read by zarr-python. `ZarrLayout.validate` runs the same checks
on these views and falls back to zarr-python's objects when a view cannot be built (a missing
or unreadable `zarr.json`, Zarr v2), so a broken store gets zarr's own error.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import zarr

_LITTLE = [{"name": "bytes", "configuration": {"endian": "little"}}]
_DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}
_kinds: dict[str, tuple[np.dtype[Any], Any, int]] = {}  # array kind -> (dtype, fill, ndim)


class MetaGroup:
    """A group: its attributes and its children (nodes with a `zarr.json`)."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        from zarr.core.group import GroupMetadata

        self.path = path
        self.attrs = GroupMetadata.from_dict(doc).attributes

    def members(self, max_depth: int = 0) -> Iterator[tuple[str, MetaGroup | MetaArray]]:
        """Direct children (`max_depth` 0 only, as the layouts ask)."""
        if max_depth != 0:
            raise ValueError("only direct children are listed")
        for child in self.path.iterdir():
            try:  # one read: a child without a zarr.json (a file, a chunk folder) is no node
                node = open_meta(child)
            except (FileNotFoundError, NotADirectoryError):
                continue
            yield child.name, node


class MetaArray:
    """An array: shape, data type, attributes; `[...]` reads it (the chunk file itself for a
    single-chunk uncompressed array, else through zarr-python)."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path, self._doc = path, doc
        # zarr parses each distinct kind (everything but shape and attributes) once: ~0.4 ms
        # a node, the most of this check's time otherwise
        kind = json.dumps({k: v for k, v in doc.items() if k not in ("shape", "attributes")},
                          sort_keys=True)
        if kind not in _kinds:
            from zarr.core.metadata.v3 import ArrayV3Metadata

            meta = ArrayV3Metadata.from_dict(doc)
            _kinds[kind] = (np.dtype(meta.dtype.to_native_dtype()), meta.fill_value,
                            len(meta.shape))
        self.dtype, self._fill, ndim = _kinds[kind]
        shape, attrs = doc["shape"], doc.get("attributes", {})
        if not (isinstance(shape, list) and len(shape) == ndim and isinstance(attrs, dict)
                and all(type(s) is int and s >= 0 for s in shape)):
            raise ValueError(f"{path}: shape {shape!r} or attributes are not valid")
        self.shape: tuple[int, ...] = tuple(shape)
        self.attrs = attrs

    def __getitem__(self, sel: Any) -> npt.NDArray[Any]:
        d = self._doc
        one_chunk = (d.get("codecs") == _LITTLE and d.get("chunk_key_encoding") == _DEFAULT_KEYS
                     and d["chunk_grid"].get("name") == "regular"
                     and list(d["chunk_grid"]["configuration"]["chunk_shape"]) == list(self.shape)
                     and not d.get("storage_transformers") and len(self.shape) >= 1
                     and math.prod(self.shape) > 0
                     and self.dtype.kind in "biuf")
        if not one_chunk:
            import zarr

            return np.asarray(zarr.open_array(store=str(self.path), mode="r")[sel])
        chunk = self.path / "c" / "/".join(["0"] * len(self.shape))
        if chunk.is_file():
            data = np.fromfile(chunk, dtype=self.dtype.newbyteorder("<"))
            if data.size != math.prod(self.shape):
                raise ValueError(f"{chunk}: {data.size} values, shape {self.shape}")
            data = data.astype(self.dtype, copy=False).reshape(self.shape)
        else:  # a chunk of only the fill value is not stored
            data = np.full(self.shape, self._fill, dtype=self.dtype)
        return np.asarray(data[sel])


def open_meta(path: Path) -> MetaGroup | MetaArray:
    """The node at `path` from its `zarr.json` (OSError, ValueError or KeyError when there is
    no readable v3 metadata: the caller then asks zarr-python)."""
    doc = json.loads((path / "zarr.json").read_bytes())
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3:  # noqa: PLR2004
        raise ValueError(f"{path}: not Zarr v3 metadata")
    kind = doc.get("node_type")
    if kind == "group":
        return MetaGroup(path, doc)
    if kind == "array":
        return MetaArray(path, doc)
    raise ValueError(f"{path}: node_type {kind!r}")


def is_group(node: Any) -> TypeGuard[MetaGroup | zarr.Group]:
    import zarr

    return isinstance(node, MetaGroup | zarr.Group)


def is_array(node: Any) -> TypeGuard[MetaArray | zarr.Array[Any]]:
    import zarr

    return isinstance(node, MetaArray | zarr.Array)
