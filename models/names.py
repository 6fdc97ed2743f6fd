"""The registered model names, importable without torch (`kdpipe.models.list_models()` needs
the registry, which imports every model). Stage configs check `model` / `student` against
them while the plan is built, so a typo fails there in one line, before any stage runs;
`tests/models/test_names.py` keeps `MODEL_NAMES` equal to the built-in registry.
"""
from __future__ import annotations

import sys

from pydantic_core import PydanticCustomError

MODEL_NAMES: tuple[str, ...] = ("imkd-student", "lidar-only", "radar-only", "sckd-teacher")


def known_models() -> list[str]:
    """The built-in names, plus any a plugin registered (when the registry is already loaded;
    never imported here, so this stays torch-free)."""
    registry = sys.modules.get("kdpipe.models.registry")
    return sorted({*MODEL_NAMES, *(registry.list_models() if registry is not None else ())})


def check_model_name(name: str) -> str:
    """`name` if it is a registered model (a pydantic field validator).

    Raises:
        PydanticCustomError: unknown name; the message lists the known ones.
    """
    known = known_models()
    if name not in known:
        raise PydanticCustomError("unknown_model", "unknown model '{got}' (known: {known})",
                                  {"got": name, "known": ", ".join(known)})
    return name
