"""Built-in stages, looked up by the name users type (`teacher-label`), imported lazily.

Stage modules import heavy libraries (torch, the devkits) inside `run`, and this table holds
import paths rather than objects, so planning a workflow imports only the stages it names.
"""
from __future__ import annotations

import importlib
from typing import Any

from kdpipe.pipeline.errors import ConfigError

BUILTIN: dict[str, str] = {
    "ingest": "kdpipe.stages.ingest:STAGE",
    "teacher-train": "kdpipe.stages.teacher_train:STAGE",
    "teacher-label": "kdpipe.stages.teacher_label:STAGE",
    "pseudo-label": "kdpipe.stages.pseudo_label:STAGE",
    "evaluate": "kdpipe.stages.evaluate:STAGE",
    "distill": "kdpipe.stages.distill:STAGE",
    "audit": "kdpipe.stages.audit:STAGE",
    "imkd-weights": "kdpipe.stages.imkd_weights:STAGE",
    "imkd-distill": "kdpipe.stages.imkd_distill:STAGE",
    "curate": "kdpipe.stages.curate:STAGE",
    "curate-frames": "kdpipe.stages.curate:FRAMES_STAGE",
    "distill-selected": "kdpipe.stages.distill:SELECTED_STAGE",
    "radar-filter": "kdpipe.stages.radar_filter:STAGE",
}


def canonical_name(name: str) -> str:
    """`teacher_label` and `teacher-label` name the same stage; the CLI spelling wins."""
    return name.strip().replace("_", "-")


def load_stage(spec: str) -> Any:
    """A stage by built-in name or by `module:ATTR` (workflow plugins)."""
    target = BUILTIN.get(canonical_name(spec), spec)
    if ":" not in target:
        raise ConfigError(f"unknown stage '{spec}' (built-in: {', '.join(sorted(BUILTIN))}; "
                          f"plugins are given as module:ATTR)")
    mod_name, attr = target.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load stage '{spec}' from {target}: {e}") from None
    return obj
