"""Model registry: ``@register_model(name)``, ``create_model(name, **cfg)``, ``list_models()``.

timm's two verbs, but a second registration of a name raises instead of silently winning
(OpenPCDet's duplicate ``'PillarNet'`` key is the failure mode this avoids).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from .contract import Detector

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[F], F]:
    """Decorator registering ``fn(**cfg) -> nn.Module`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name]!r})")
        _REGISTRY[name] = fn
        return fn

    return deco


def create_model(name: str, **cfg: Any) -> Detector:
    """Build the model registered as ``name``; ``cfg`` are DetectorConfig fields.

    Raises:
        KeyError: unknown ``name`` (the message lists the known names).
        pydantic.ValidationError: unknown or invalid config keys.
        TypeError: the registered function built something that is not a `Detector`.
    """
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(_REGISTRY)}") from None
    model = fn(**cfg)
    if not isinstance(model, Detector):
        raise TypeError(f"model {name!r} does not satisfy the Detector contract "
                        f"(models/contract.py): {type(model).__name__}")
    return model


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def to_checkpoint(model: Detector) -> dict[str, Any]:
    """Weights plus what rebuilds them: {"name", "config" (JSON-able), "state_dict"}.

    Only str/list/float/tensor values, so ``torch.load(..., weights_only=True)`` reads it back.
    """
    return {"name": model.name, "config": model.config.model_dump(mode="json"),
            "state_dict": model.state_dict()}


def from_checkpoint(ckpt: Mapping[str, Any]) -> Detector:
    """Rebuild a model from :func:`to_checkpoint` output (strict state_dict load)."""
    model = create_model(ckpt["name"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model
