"""Feature-distillation methods as named, registered terms (like models: `@register_kd(name)`).

A term is an `nn.Module` holding whatever it trains with the student (adapters); it maps the
student's forward output, the frozen teacher's forward output and the batch's detection targets
to one or more *unweighted* loss scalars. `KDLoss` (loss.py) weights and sums them. Builders get
the channel counts (`KDShapes`) so adapters are sized from the two models, never guessed.

A method that needs the student built differently (RadarDistill's alignment module runs at
inference too) says so in `student_overrides`: the distill stage merges them into the student's
DetectorConfig before it builds the student, and they land in its checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from kdpipe.models.targets import CenterTargets


@dataclass(frozen=True)
class KDShapes:
    """Channels of the maps a term may tap (encoder grid = head grid x out_stride)."""

    student_encoder: int    # C of the student's radar BEV map (features["radar"])
    teacher_lidar: int      # C of the teacher's LiDAR map (features["lidar"])
    teacher_fusion: int     # C of the teacher's fused map (features["fusion"]; = lidar if none)
    student_bev: int        # C of the student's backbone output ("bev")
    teacher_bev: int        # C of the teacher's backbone output
    num_classes: int
    box_code_size: int


class KDTerm(nn.Module):
    """One distillation method: `forward(student_out, teacher_out, targets) -> {name: loss}`.

    `student_out` / `teacher_out` are detector forward outputs ("features", "bev", "heatmap",
    "box"); `targets` are the batch's CenterTargets on the head grid (pseudo-labels and/or GT),
    which masked methods use as foreground. Losses are unweighted; names start with "loss_".
    """

    needs_teacher: bool = True

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any],
                targets: CenterTargets) -> dict[str, Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class KDMethod:
    """A registered method: its builder and the student config it requires."""

    name: str
    build: Callable[..., KDTerm]
    student_overrides: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda _: {}
    summary: str = ""


_KD: dict[str, KDMethod] = {}


def register_kd(name: str, summary: str = "",
                student_overrides: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
                ) -> Callable[[Callable[..., KDTerm]], Callable[..., KDTerm]]:
    """Decorator registering `fn(shapes: KDShapes, **options) -> KDTerm` as method `name`."""

    def deco(fn: Callable[..., KDTerm]) -> Callable[..., KDTerm]:
        if name in _KD:
            raise ValueError(f"KD method {name!r} is already registered")
        _KD[name] = KDMethod(name, fn, student_overrides or (lambda _: {}), summary)
        return fn

    return deco


def get_kd(name: str) -> KDMethod:
    """The registered method `name` (KeyError naming the known ones)."""
    try:
        return _KD[name]
    except KeyError:
        raise KeyError(f"unknown KD method {name!r}; known: {sorted(_KD)}") from None


def list_kd() -> list[str]:
    """Registered KD method names, sorted."""
    return sorted(_KD)


def create_kd(name: str, shapes: KDShapes, **options: Any) -> KDTerm:
    """Build method `name`; unknown options are a TypeError naming the method."""
    method = get_kd(name)
    try:
        return method.build(shapes, **options)
    except TypeError as exc:
        raise TypeError(f"KD method {name!r}: {exc}") from None
