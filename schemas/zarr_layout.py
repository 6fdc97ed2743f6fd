"""Zarr layouts: what groups, arrays, dtypes and attributes a Zarr v3 store must have.

Both kdpipe stores are `<source>/<scene>/...`: one group per dataset root, one per scene (or
block of frames), so `ZarrLayout` walks those two levels and leaves each scene to its subclass.
Validation reads metadata (`zarr.json`) only, plus arrays a subclass asks for by name (the small
`offsets`), never the data payload.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kdpipe.schemas.base import PathLike, Schema
from kdpipe.schemas.zarr_meta import is_array, is_group, open_meta

if TYPE_CHECKING:
    from typing import TypeAlias

    import zarr

    from kdpipe.schemas.zarr_meta import MetaGroup

    GroupNode: TypeAlias = zarr.Group | MetaGroup  # what the checks read: either kind


@dataclass(frozen=True)
class ZarrLayout(Schema):
    """A Zarr v3 group holding `<source>/<scene>` groups; subclasses check root and scenes."""

    kind: ClassVar[str] = "zarr"

    def validate(self, path: PathLike) -> list[str]:
        """Open the root, check it, then every `<source>/<scene>` group (metadata only).

        A local store is read through `zarr_meta`'s views of its `zarr.json` files (~10x
        faster than zarr-python's nodes); where a view cannot be built, zarr-python's
        objects take the same checks, and its errors are the ones reported."""
        local = Path(str(path))
        if local.is_dir():
            try:
                root = open_meta(local)
                if is_group(root):
                    return self._check(root)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # zarr-python below reads it, or says why it cannot
        import zarr

        try:
            group = zarr.open_group(store=str(path), mode="r")
        except Exception as e:  # missing, not a group, unreadable zarr.json: one line
            return [f"not a readable Zarr group ({type(e).__name__}: {e})"]
        if group.metadata.zarr_format != 3:
            return [f"Zarr format {group.metadata.zarr_format}, expected 3"]
        return self._check(group)

    def _check(self, root: Any) -> list[str]:
        attrs = dict(root.attrs)
        problems = self.check_root(attrs)
        for where, scene in scene_groups(root, problems):
            problems += self.check_scene(where, scene, attrs)
        return problems

    def check_root(self, attrs: Mapping[str, Any]) -> list[str]:
        """Problems of the root group's attributes."""
        return []

    def check_scene(self, where: str, scene: GroupNode,
                    root_attrs: Mapping[str, Any]) -> list[str]:
        """Problems of one `<source>/<scene>` group (`where` names it in messages)."""
        raise NotImplementedError


def scene_groups(root: GroupNode, problems: list[str]) -> Iterator[tuple[str, GroupNode]]:
    """The `<source>/<scene>` groups in path order; arrays at those levels go to `problems`."""
    for source, sg in sorted(root.members(max_depth=0), key=lambda m: m[0]):
        if not is_group(sg):
            problems.append(f"{source}: an array where a source group belongs")
            continue
        for scene, g in sorted(sg.members(max_depth=0), key=lambda m: m[0]):
            if is_group(g):
                yield f"{source}/{scene}", g
            else:
                problems.append(f"{source}/{scene}: an array where a scene group belongs")


def members(group: GroupNode) -> dict[str, Any]:
    """Direct children by name (arrays and groups, metadata only)."""
    return dict(group.members(max_depth=0))


def check_array(where: str, arr: Any, dtype: str, shape: tuple[int | None, ...]) -> list[str]:
    """dtype and shape of an array; None in `shape` matches any length on that axis."""
    if not is_array(arr):
        return [f"{where} is missing" if arr is None else f"{where} is a group, expected an array"]
    problems = []
    if np.dtype(arr.dtype) != np.dtype(dtype):
        problems.append(f"{where} is {arr.dtype}, expected {dtype}")
    if len(arr.shape) != len(shape) or any(w is not None and g != w
                                           for g, w in zip(arr.shape, shape, strict=False)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
        problems.append(f"{where} has shape {arr.shape}, expected {want}")
    return problems


def unexpected(where: str, names: Mapping[str, Any], allowed: set[str]) -> list[str]:
    """One problem listing children that the layout does not have."""
    extra = sorted(set(names) - allowed)
    return [f"{where}: unexpected member(s) {', '.join(extra)}"] if extra else []


def frame_list(where: str, attrs: Mapping[str, Any]) -> tuple[list[str], int | None]:
    """The group's `frames` attribute checked: (problems, frame count or None if unusable)."""
    frames = attrs.get("frames")
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        return [f"{where}: attribute 'frames' is missing or not a list of frame ids"], None
    return [], len(frames)
