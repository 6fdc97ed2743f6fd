"""Flip test-time augmentation for pseudo-labelling: the head maps of a scene and of its mirror
image, averaged before decoding (CenterPoint's flip TTA, the y -> -y mirror of `augment.flip_y`).

Why: the student learns the teacher's hard decisions, and with a teacher trained on few labels
most of its misses are on small objects whose peak sits near the score threshold (the audit of
the Table 4 teacher: precision 0.25-0.52, recall 0.57-0.91). A mirrored second look votes on
every peak: a peak both passes agree on keeps its score, one seen in a single pass halves.

Averaging maps rather than merging boxes keeps one decode (peaks, top-k, NMS as trained) and
needs nothing but the mirror of the grid: on a grid symmetric in y (VoD: [-25.6, 25.6] m) the
mirror of head row `iy` is row `H - 1 - iy`, and a box code [dx, dy, z, log l, log w, log h,
sin, cos (, vx, vy)] of the mirrored scene maps back as dy -> 1 - dy, sin -> -sin, vy -> -vy
(y = (iy + dy) * cell + y0 with y0 = -H * cell / 2). Heatmaps are averaged as probabilities.
Point modalities only: a camera image is not mirrored here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .batch import MODEL_FIELDS
from .config import DetectorConfig

_DY, _SIN, _VY = 1, 6, 9  # box-code channels the mirror changes
_EPS = 1e-6


def check_flip(cfg: DetectorConfig, modalities: tuple[str, ...]) -> None:
    """Raise ValueError where the mirror is not exact: a grid not symmetric in y, or cameras."""
    _, y0, _, _, y1, _ = cfg.point_cloud_range_m
    if abs(y0 + y1) > _EPS:
        raise ValueError(f"flip TTA needs a range symmetric in y, got y in [{y0}, {y1}] m")
    if any(m not in MODEL_FIELDS for m in modalities):
        raise ValueError(f"flip TTA mirrors point clouds only; the model reads {modalities}")


def flip_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch mirrored across the x-axis: y -> -y of every point modality (column 2 after
    the batch index); everything else is shared."""
    out = dict(batch)
    for m in MODEL_FIELDS:
        if m in batch:
            pts = batch[m].clone()  # (N, 1 + C) [b, x, y, z, ...]
            pts[:, 2] = -pts[:, 2]
            out[m] = pts
    return out


def unflip_maps(heatmap: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
    """Head maps of the mirrored scene, mapped back onto the original grid.

    heatmap: (B, K, Ho, Wo); box: (B, R, Ho, Wo) with rows along y."""
    heatmap, box = heatmap.flip(-2), box.flip(-2).clone()
    box[:, _DY] = 1.0 - box[:, _DY]
    box[:, _SIN] = -box[:, _SIN]
    if box.shape[1] > _VY:
        box[:, _VY] = -box[:, _VY]
    return heatmap, box


def flip_averaged(model: torch.nn.Module, batch: Mapping[str, Any], out: Mapping[str, Any]
                  ) -> dict[str, Tensor]:
    """`out` (the model's output on `batch`) averaged with its output on the mirrored batch:
    "heatmap" logits of the mean probability, "box" the mean code, ready for `decode`."""
    flipped = model(flip_batch(batch))
    heat_f, box_f = unflip_maps(flipped["heatmap"].float(), flipped["box"].float())
    prob = 0.5 * (out["heatmap"].float().sigmoid() + heat_f.sigmoid())  # (B, K, Ho, Wo)
    prob = prob.clamp(_EPS, 1.0 - _EPS)
    return {"heatmap": torch.log(prob) - torch.log1p(-prob),
            "box": 0.5 * (out["box"].float() + box_f)}
