"""Checkpoint files: model name + config + weights + lineage, loaded with `weights_only=True`.

A checkpoint is a plain dict of tensors, strings and numbers, so `torch.load(weights_only=True)`
can read it and nothing in it is unpickled as code. The model is rebuilt from the registry by
name and config, then its weights are loaded strictly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from kdpipe.errors import ConfigError

FORMAT = "kdpipe-checkpoint/1"


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write atomically (tmp + rename): a kill never leaves a half-written checkpoint."""
    from kdpipe.models import to_checkpoint

    blob = {"format": FORMAT, **to_checkpoint(model), "meta": meta}  # loaded with map_location
    atomic_save(blob, path)


def atomic_save(obj: Any, path: Path) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None
    except Exception as e:  # truncated file, foreign pickle, ...: one line, no traceback
        raise ConfigError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a kdpipe checkpoint ({FORMAT})")
    return blob


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module,
                                                                      dict[str, Any]]:
    """The model in eval mode on `device`, and the checkpoint's metadata."""
    from kdpipe.models import from_checkpoint

    blob = read_checkpoint(path)
    return from_checkpoint(blob).to(device).eval(), blob["meta"]
