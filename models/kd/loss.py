"""`KDLoss`: the student's detection loss plus weighted distillation terms, as `fit`'s loss."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import KDTerm

# A KD term's weight over training (fraction done -> factor): early on the teacher's features
# steer the student; late, when the student fits its own targets, a feature term that pulls
# elsewhere only costs detection accuracy (the Table 4 runs, docs/RESULTS.md).
DECAYS: dict[str, Callable[[float], float]] = {
    "none": lambda f: 1.0,
    "linear": lambda f: 1.0 - f,
    "cosine": lambda f: 0.5 * (1.0 + math.cos(math.pi * f)),
}


class KDLoss:
    """L = L_det + sum_m w_m * L_m over the configured methods m.

    L_det is the student's own loss on the batch's targets (pseudo-labels and/or GT). The frozen
    teacher (eval mode: no modality dropout) runs on the same augmented batch once per step,
    and only when some method is on; its output and the batch's CenterTargets (the masks of
    foreground methods) go to every term. The terms' modules are trained with the student
    (pass `trainable` to `fit`).
    """

    def __init__(self, teacher: nn.Module, terms: Mapping[str, tuple[float, KDTerm]],
                 decay: Mapping[str, str] | None = None) -> None:
        self.teacher = teacher
        self.weights = {name: w for name, (w, _) in terms.items()}
        self.trainable = nn.ModuleDict({name: term for name, (_, term) in terms.items()})
        self.decay = {name: (decay or {}).get(name, "none") for name in terms}
        unknown = sorted(set(self.decay.values()) - set(DECAYS))
        if unknown:
            raise ValueError(f"unknown KD weight decay {unknown} (known: {', '.join(DECAYS)})")
        self.progress = 0.0  # fraction of training done; `fit` sets it before every step

    def set_progress(self, fraction: float) -> None:
        self.progress = min(1.0, max(0.0, fraction))

    def weight(self, name: str) -> float:
        """The term's weight at the current step: its configured weight times its decay."""
        return self.weights[name] * DECAYS[self.decay[name]](self.progress)

    def __call__(self, model: nn.Module, batch: dict[str, Any], targets: list[dict[str, Any]],
                 frames: Sequence[Any] = ()) -> dict[str, Tensor]:
        out = model(batch)
        det = model.loss(out, targets)
        losses = {"loss_det": det["loss"], **{k: v for k, v in det.items() if k != "loss"}}
        total = losses["loss_det"]
        if len(self.trainable):
            with torch.no_grad():                                  # teacher: eval mode, frozen
                t_out = self.teacher(batch)
            t = model.build_targets(targets)                       # head-grid targets (masks)
            for name, term in self.trainable.items():
                for key, value in term(out, t_out, t).items():
                    losses[key] = value
                    total = total + self.weight(name) * value
        losses["loss"] = total
        return losses
