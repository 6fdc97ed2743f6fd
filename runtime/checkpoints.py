"""Checkpoint files: model name + config + weights + lineage, loaded with `weights_only=True`.

A checkpoint is a plain dict of tensors, strings and numbers, so `torch.load(weights_only=True)`
can read it and nothing in it is unpickled as code. The model is rebuilt from the registry by
name and config, then its weights are loaded strictly. A checkpoint from a workspace is checked
against the sha256 its lineage records before it is loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.store import LINEAGE

FORMAT = "kdpipe-checkpoint/1"


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write atomically (tmp + rename): a kill never leaves a half-written checkpoint."""
    from kdpipe.models import to_checkpoint

    blob = {"format": FORMAT, **to_checkpoint(model), "meta": meta}  # loaded with map_location
    atomic_save(blob, path)


def input_refs(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Input artifacts as `stage/key/file`, not absolute paths: the same work in two workspaces
    (a cluster run and a local run, a crash drill and its reference) must give the same bytes."""
    return {k: "/".join(Path(v).parts[-3:]) for k, v in inputs.items()}


def atomic_save(obj: Any, path: Path) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, after its bytes were checked against its lineage record.

    A checkpoint inside a workspace artifact has the sha256 its stage recorded in
    `_lineage.json` beside it; a file changed since (tampered, or corrupted on disk) is refused
    before anything is unpickled. The bytes are read once, hashed and loaded from memory, so
    the file cannot change between the check and the load.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None
    verify_lineage_digest(Path(path), hashlib.sha256(raw).hexdigest())
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...: one line, no traceback
        raise ConfigError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a kdpipe checkpoint ({FORMAT})")
    return blob


def verify_lineage_digest(path: Path, sha256: str) -> None:
    """Refuse a workspace artifact file whose bytes differ from the digest in its lineage.

    Files outside a workspace (no `_lineage.json` beside them) are not checked.
    """
    rec_path = path.parent / LINEAGE
    if not rec_path.is_file():
        return
    try:
        outputs = json.loads(rec_path.read_text())["outputs"]
        want = next(o["digest"] for o in outputs.values() if o["file"] == path.name)
    except (ValueError, KeyError, TypeError, StopIteration):
        raise ConfigError(f"{rec_path} does not record a digest for {path.name}; the artifact "
                          f"is damaged, re-run its stage with --force") from None
    if want != sha256:
        raise ConfigError(f"checkpoint {path} does not match the sha256 in its lineage "
                          f"({sha256[:12]} != {want[:12]}): it changed after it was written; "
                          f"re-run its stage with --force")


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module,
                                                                      dict[str, Any]]:
    """The model in eval mode on `device`, and the checkpoint's metadata."""
    from kdpipe.models import from_checkpoint

    blob = read_checkpoint(path)
    return from_checkpoint(blob).to(device).eval(), blob["meta"]
