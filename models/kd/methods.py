"""The registered feature-distillation methods (see base.py for the contract).

    lrfd          SCKD's LiDAR-to-radar feature distillation, the paper's reference (A1.3)
    frfd          SCKD's fusion-to-radar feature distillation (2 adapters; 1 = FRFD*)
    fg-gaussian   per-cell mimic inside the target boxes' Gaussians (foreground-masked KD)
    activation    per-cell mimic where the teacher's features are active, background apart
    proposal      per-cell mimic weighted by the teacher's heatmap (its proposals)
    occupied      per-cell mimic only where the student has radar returns (the cells where
                  the teacher's features are reproducible from its input)
    response      the teacher's dense heatmap and box code as soft targets (response KD)
    radardistill  alignment module in the student + activation KD on the encoder map +
                  proposal KD on the backbone map (RadarDistill, CVPR 2024, as we read it)

Per-cell losses are mean squared errors over channels, averaged over the mask (so a weight of
~1 puts them on the detection loss's scale whatever the channel count); SCKD's reference keeps
its summed-over-CHW reading (models/distill.py) so its paper weights (3e-4) still apply.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdpipe.models.distill import FeatureAdapter, SCKDAdapters
from kdpipe.models.imkd import weighted_feature_mse
from kdpipe.models.targets import CenterTargets

from .base import KDShapes, KDTerm, register_kd
from .masks import activation_mask, box_mask, fit_to, occupancy_mask, teacher_mask

Tap = Literal["encoder", "bev"]


def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over channels of the squared error, averaged over the mask's weight, batch mean.
    (B, C, H, W) x2, mask (B, 1, H, W); a frame with an empty mask contributes 0."""
    return weighted_feature_mse(student, teacher, mask) / student.shape[1]


def _maps(student: Mapping[str, Any], teacher: Mapping[str, Any], tap: Tap,
          teacher_tap: str) -> tuple[Tensor, Tensor]:
    if tap == "bev":
        return student["bev"], teacher["bev"]
    return student["features"]["radar"], teacher["features"][teacher_tap]


class _Reference(KDTerm):
    """LRFD or FRFD exactly as SCKD (and kdpipe before this module) computes them."""

    def __init__(self, adapters: SCKDAdapters, which: Literal["lrfd", "frfd"]) -> None:
        super().__init__()
        self.adapters, self.which = adapters, which

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any],
                targets: CenterTargets) -> dict[str, Tensor]:
        f_s = student["features"]["radar"]                         # (B, C_s, H, W)
        if self.which == "lrfd":
            return {"loss_lrfd": self.adapters.lrfd(f_s, teacher["features"]["lidar"])}
        return {"loss_frfd": self.adapters.frfd(f_s, teacher["features"]["fusion"])}


@register_kd("lrfd", "SCKD LRFD: adapter(F_R^S) -> F_L^T, summed MSE (reference)")
def lrfd(shapes: KDShapes, kernel: int = 3) -> KDTerm:
    ad = SCKDAdapters(shapes.student_encoder, shapes.teacher_lidar, shapes.teacher_fusion,
                      lrfd=True, frfd=False, kernel=kernel)
    return _Reference(ad, "lrfd")


@register_kd("frfd", "SCKD FRFD: [adapter_L'(F_R^S), adapter_R'(F_R^S)] -> F_fusion^T")
def frfd(shapes: KDShapes, kernel: int = 3, adapters: int = 2) -> KDTerm:
    ad = SCKDAdapters(shapes.student_encoder, shapes.teacher_lidar, shapes.teacher_fusion,
                      lrfd=False, frfd=True, frfd_adapters=adapters, kernel=kernel)
    return _Reference(ad, "frfd")


@dataclass(frozen=True)
class Mimic:
    """Where a mimic term taps and which cells it weighs.

    tap: "encoder" (the radar map before the backbone, vs the teacher's `teacher_tap` map:
    "lidar" or "fusion") or "bev" (the backbone outputs); mask: "boxes", "teacher",
    "activation", "occupied" (the student's non-empty pillars) or "none"; kernel: the adapter's
    conv kernel; threshold: of the teacher or activation mask; background_weight: weight of the
    cells outside the mask, normalised on their own (RadarDistill's AFD balances active and
    inactive regions this way).
    """

    tap: Tap = "bev"
    teacher_tap: str = "lidar"
    mask: Literal["boxes", "teacher", "activation", "occupied", "none"] = "none"
    kernel: int = 1
    threshold: float = 0.0
    background_weight: float = 0.0

    def channels(self, shapes: KDShapes) -> tuple[int, int]:
        """(student, teacher) channels of the tapped maps."""
        if self.tap == "bev":
            return shapes.student_bev, shapes.teacher_bev
        c_t = shapes.teacher_fusion if self.teacher_tap == "fusion" else shapes.teacher_lidar
        return shapes.student_encoder, c_t


class FeatureMimic(KDTerm):
    """adapter(student map) -> teacher map, per-cell MSE weighted by a mask (see `Mimic`)."""

    def __init__(self, name: str, shapes: KDShapes, spec: Mimic) -> None:
        super().__init__()
        self.loss_name, self.spec = f"loss_{name}", spec
        self.adapter = FeatureAdapter(*spec.channels(shapes), spec.kernel)

    def region(self, f_teacher: Tensor, teacher: Mapping[str, Any], targets: CenterTargets,
               student: Mapping[str, Any]) -> Tensor:
        """(B, 1, H, W) weights on the tapped grid."""
        hw = (f_teacher.shape[-2], f_teacher.shape[-1])
        if self.spec.mask == "occupied":
            return fit_to(occupancy_mask(student["features"]["radar"]), hw)
        if self.spec.mask == "boxes":
            return fit_to(box_mask(targets), hw)
        if self.spec.mask == "teacher":
            return fit_to(teacher_mask(teacher["heatmap"], self.spec.threshold), hw)
        if self.spec.mask == "activation":
            return activation_mask(f_teacher, self.spec.threshold)
        return torch.ones_like(f_teacher[:, :1])

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any],
                targets: CenterTargets) -> dict[str, Tensor]:
        f_s, f_t = _maps(student, teacher, self.spec.tap, self.spec.teacher_tap)
        pred = self.adapter(f_s)                                   # (B, C_t, H, W)
        m = self.region(f_t, teacher, targets, student).detach()   # (B, 1, H, W)
        loss = masked_mse(pred, f_t, m)
        if self.spec.background_weight > 0:
            loss = loss + self.spec.background_weight * masked_mse(pred, f_t, 1.0 - m)
        return {self.loss_name: loss}


@register_kd("fg-gaussian", "mimic inside the target boxes' Gaussians (foreground KD)")
def fg_gaussian(shapes: KDShapes, tap: Tap = "bev", teacher_tap: str = "lidar",
                kernel: int = 1, background_weight: float = 0.0) -> KDTerm:
    return FeatureMimic("fg", shapes, Mimic(tap, teacher_tap, "boxes", kernel, 0.0,
                                            background_weight))


@register_kd("activation", "mimic where the teacher's features are active (AFD-style)")
def activation(shapes: KDShapes, tap: Tap = "encoder", teacher_tap: str = "lidar",
               kernel: int = 3, threshold: float = 0.2, background_weight: float = 0.1
               ) -> KDTerm:
    return FeatureMimic("act", shapes, Mimic(tap, teacher_tap, "activation", kernel, threshold,
                                             background_weight))


@register_kd("occupied", "mimic where the student has radar returns (reproducible cells)")
def occupied(shapes: KDShapes, tap: Tap = "encoder", teacher_tap: str = "lidar",
             kernel: int = 3, background_weight: float = 0.0) -> KDTerm:
    return FeatureMimic("occ", shapes, Mimic(tap, teacher_tap, "occupied", kernel, 0.0,
                                             background_weight))


@register_kd("proposal", "mimic weighted by the teacher's heatmap (PFD-style)")
def proposal(shapes: KDShapes, tap: Tap = "bev", kernel: int = 1, threshold: float = 0.1
             ) -> KDTerm:
    return FeatureMimic("prop", shapes, Mimic(tap, "lidar", "teacher", kernel, threshold))


class ResponseKD(KDTerm):
    """The teacher's dense outputs as soft targets: Bernoulli KL of every heatmap cell (summed,
    divided by the number of cells where the teacher sees an object), and L1 on the box code
    where the teacher's class probability reaches `threshold`, weighted by that probability.
    Pseudo-labels keep only boxes above sigma; this keeps the teacher's uncertain ones too."""

    def __init__(self, threshold: float = 0.1, box_weight: float = 0.25) -> None:
        super().__init__()
        self.threshold, self.box_weight = threshold, box_weight

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any],
                targets: CenterTargets) -> dict[str, Tensor]:
        p_t = teacher["heatmap"].detach().sigmoid()                # (B, K, Ho, Wo)
        bce = F.binary_cross_entropy_with_logits(student["heatmap"], p_t, reduction="none")
        kl = bce + torch.xlogy(p_t, p_t) + torch.xlogy(1 - p_t, 1 - p_t)  # BCE - H(p_t) >= 0
        peak = p_t.amax(1)                                         # (B, Ho, Wo)
        n_obj = (peak >= self.threshold).sum().clamp(min=1)
        w = torch.where(peak >= self.threshold, peak, torch.zeros_like(peak))
        l1 = (student["box"] - teacher["box"].detach()).abs().sum(1)  # (B, Ho, Wo)
        box = (l1 * w).sum() / w.sum().clamp(min=1e-6)
        return {"loss_resp_hm": kl.clamp(min=0).sum() / n_obj,
                "loss_resp_box": self.box_weight * box}


@register_kd("response", "teacher heatmap (KL) and box code (L1) as dense soft targets")
def response(shapes: KDShapes, threshold: float = 0.1, box_weight: float = 0.25) -> KDTerm:
    return ResponseKD(threshold, box_weight)


class Composite(KDTerm):
    """Several terms summed (each keeps its own loss names, weighted by `weights`)."""

    def __init__(self, terms: Mapping[str, KDTerm], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any],
                targets: CenterTargets) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            out.update({k: self.weights[name] * v
                        for k, v in term(student, teacher, targets).items()})
        return out


def _radardistill_student(options: Mapping[str, Any]) -> dict[str, Any]:
    return {"radar_align_layers": int(options.get("align_layers", 2))}


@register_kd("radardistill", "alignment module + activation KD (encoder) + proposal KD (bev)",
             student_overrides=_radardistill_student)
def radardistill(shapes: KDShapes, align_layers: int = 2, afd_weight: float = 1.0,
                 pfd_weight: float = 1.0, threshold: float = 0.2) -> KDTerm:
    """`align_layers` only sizes the student (student_overrides); the terms tap its aligned map."""
    del align_layers
    return Composite({"afd": activation(shapes, threshold=threshold),
                      "pfd": proposal(shapes)}, {"afd": afd_weight, "pfd": pfd_weight})
