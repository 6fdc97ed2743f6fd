"""The registered model and KD-method names, importable without torch
(`kdpipe.models.list_models()` needs the registry, and `kdpipe.models`' __init__ imports every
model, which is why this module lives here; `kdpipe.models.names` re-exports it). Stage configs
check `model` / `student` / `kd` against them while the plan is built, so a typo fails there in
one line, before any stage runs; `tests/models/test_names.py` keeps `MODEL_NAMES` equal to the
built-in registry, `tests/models/test_kd.py` keeps `KD_METHODS` equal to the KD registry.
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


# KD methods (models/kd/methods.py) and the options each accepts, torch-free for the same reason;
# tests/models/test_kd.py keeps this equal to the registered builders' signatures.
KD_METHODS: dict[str, tuple[str, ...]] = {
    "activation": ("tap", "teacher_tap", "kernel", "threshold", "background_weight"),
    "fg-gaussian": ("tap", "teacher_tap", "kernel", "background_weight"),
    "frfd": ("kernel", "adapters"),
    "lrfd": ("kernel",),
    "occupied": ("tap", "teacher_tap", "kernel", "background_weight"),
    "proposal": ("tap", "kernel", "threshold"),
    "radardistill": ("align_layers", "afd_weight", "pfd_weight", "threshold"),
    "response": ("threshold", "box_weight"),
}
# How a method's weight changes over training (models/kd/loss.py DECAYS; the same test keeps them
# equal). `weight` and `decay` are KDLoss's, every other option goes to the method's builder.
KD_DECAYS = ("none", "linear", "cosine")
KD_LOSS_OPTIONS = ("weight", "decay")


def check_kd_terms(terms: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """`terms` ({method: {"weight": w, option: value, ...}}) if every method and option is known
    (a pydantic field validator; values are checked when the method is built).

    Raises:
        PydanticCustomError: unknown method or option, or a weight that is not a number >= 0.
    """
    for name, table in terms.items():
        if name not in KD_METHODS:
            raise PydanticCustomError("unknown_kd", "unknown KD method '{got}' (known: {known})",
                                      {"got": name, "known": ", ".join(sorted(KD_METHODS))})
        bad = sorted(set(table) - {*KD_LOSS_OPTIONS, *KD_METHODS[name]})
        if bad:
            raise PydanticCustomError(
                "unknown_kd_option", "KD method '{m}' has no option {bad} (options: {known})",
                {"m": name, "bad": ", ".join(bad), "known": ", ".join(KD_METHODS[name])})
        if table.get("decay", "none") not in KD_DECAYS:
            raise PydanticCustomError(
                "bad_kd_decay", "KD method '{m}': decay must be one of {known}, got {d!r}",
                {"m": name, "known": ", ".join(KD_DECAYS), "d": table["decay"]})
        w = table.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
            raise PydanticCustomError("bad_kd_weight", "KD method '{m}': weight must be a "
                                      "number >= 0, got {w}", {"m": name, "w": w})
    return terms
