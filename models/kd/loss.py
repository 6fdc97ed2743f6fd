"""`KDLoss`: the student's detection loss plus weighted distillation terms, as `fit`'s loss."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import KDTerm


class KDLoss:
    """L = L_det + sum_m w_m * L_m over the configured methods m.

    L_det is the student's own loss on the batch's targets (pseudo-labels and/or GT). The frozen
    teacher (eval mode: no modality dropout) runs on the same augmented batch once per step,
    and only when some method is on; its output and the batch's CenterTargets (the masks of
    foreground methods) go to every term. The terms' modules are trained with the student
    (pass `trainable` to `fit`).
    """

    def __init__(self, teacher: nn.Module, terms: Mapping[str, tuple[float, KDTerm]]) -> None:
        self.teacher = teacher
        self.weights = {name: w for name, (w, _) in terms.items()}
        self.trainable = nn.ModuleDict({name: term for name, (_, term) in terms.items()})

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
                    total = total + self.weights[name] * value
        losses["loss"] = total
        return losses
