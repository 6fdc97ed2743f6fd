"""`checkpoint/1`: a model checkpoint (`kdpipe.runtime.checkpoints.save_checkpoint`).

One `torch.save` file holding a plain dict that `torch.load(weights_only=True)` reads:

    format      "kdpipe-checkpoint/1"
    name        registry name of the model (`kdpipe.models.create_model`)
    config      the model's config as JSON-able dict
    state_dict  parameter / buffer name -> tensor
    meta        dict: what trained it (stage, inputs, epochs, ...)

torch is imported inside `validate` only: plans resolve this schema without importing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kdpipe.schemas.base import PathLike, Schema

FORMAT = "kdpipe-checkpoint/1"


@dataclass(frozen=True)
class CheckpointSchema(Schema):
    """A checkpoint file: the keys above, with their types.

    Attributes:
        format: The value of the file's "format" key.
        keys: Key -> the type its value must have; no other keys are allowed (the writer
            stores exactly these, and `weights_only` loading takes nothing else).
    """

    kind: ClassVar[str] = "checkpoint"
    format: str = FORMAT
    keys: tuple[tuple[str, type], ...] = (("format", str), ("name", str), ("config", dict),
                                          ("state_dict", dict), ("meta", dict))

    def validate(self, path: PathLike) -> list[str]:
        """Load with `weights_only=True` and `mmap=True`: tensors stay on disk, unread."""
        import torch

        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # truncated, not a zip checkpoint, a pickled class: one line
            return [f"not loadable with torch.load(weights_only=True) ({type(e).__name__}: {e})"]
        if not isinstance(blob, dict):
            return [f"holds a {type(blob).__name__}, expected a dict"]
        return self.check_dict(blob)

    def check_dict(self, blob: dict[str, Any]) -> list[str]:
        """Problems of a loaded checkpoint dict (tensor values are not inspected)."""
        import torch

        want = dict(self.keys)
        problems = [f"key '{k}' is missing" for k in want if k not in blob]
        problems += [f"key '{k}' is a {type(blob[k]).__name__}, expected {t.__name__}"
                     for k, t in want.items() if k in blob and not isinstance(blob[k], t)]
        extra = sorted(str(k) for k in blob if k not in want)
        if extra:
            problems.append(f"unexpected key(s) {', '.join(extra)}")
        if "format" in blob and blob["format"] != self.format:
            problems.append(f"format is {blob['format']!r}, expected {self.format!r}")
        state = blob.get("state_dict")
        if isinstance(state, dict):
            bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
            if bad:
                problems.append(f"state_dict entries that are not tensors: {', '.join(bad[:3])}")
            if not state:
                problems.append("state_dict is empty")
        if isinstance(blob.get("name"), str) and not blob["name"]:
            problems.append("name is empty")
        return problems


CHECKPOINT = CheckpointSchema("checkpoint", 1, __doc__ or "")
