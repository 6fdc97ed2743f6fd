"""CenterPoint targets, focal loss and decode: a perfect prediction decodes back to the GT."""
from __future__ import annotations

import math

import pytest
import torch

from kdpipe.models import DetectorConfig, build_targets, create_model
from kdpipe.models.targets import gaussian_focal_loss, gaussian_radius

GT = torch.tensor([
    [10.3, 2.1, -1.0, 4.2, 1.8, 1.5, 0.3],  # car
    [20.7, -5.2, -0.8, 0.8, 0.6, 1.7, -2.5],  # pedestrian
    [30.1, 8.9, -0.9, 1.8, 0.7, 1.6, 3.0],  # cyclist
    [35.0, -20.0, -1.0, 4.0, 1.7, 1.5, -1.2],  # car
])
LABELS = torch.tensor([0, 1, 2, 0])


def _perfect_out(model: torch.nn.Module, targets: list[dict]) -> dict:
    """Heatmap logits from the Gaussian targets; box map = targets at the centre cells."""
    t = model.build_targets(targets)
    logits = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    b, _, h, w = t.heatmap.shape
    box = torch.zeros(b * h * w, model.config.box_code_size)
    box[t.index] = t.box
    box = box.view(b, h, w, -1).permute(0, 3, 1, 2)
    return {"heatmap": logits, "box": box}


@pytest.mark.parametrize("cfg", [{}, {"backbone_strides": (2, 2)}, {"with_velocity": True}])
def test_targets_decode_round_trip(cfg: dict) -> None:
    model = create_model("radar-only", **cfg)
    gt = GT
    if model.config.with_velocity:
        gt = torch.cat([GT, torch.tensor([[1.0, 0.5]] * 4)], 1)
    # Frame 0: all boxes (+ one outside the range, dropped); frame 1: no boxes.
    outside = torch.cat([torch.tensor([[60.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]), gt[:1, 7:]], 1)
    targets = [{"boxes": torch.cat([gt, outside]), "labels": torch.cat([LABELS, LABELS[:1]])},
               {"boxes": torch.zeros(0, gt.shape[1]), "labels": torch.zeros(0, dtype=torch.long)}]
    dets = model.decode(_perfect_out(model, targets), score_threshold=0.5)
    assert dets[1]["boxes"].shape == (0, gt.shape[1])
    d = dets[0]
    assert d["boxes"].shape == gt.shape and d["boxes"].dtype == torch.float32
    assert d["labels"].dtype == torch.int64
    assert torch.all(d["scores"][:-1] >= d["scores"][1:])
    order = torch.argsort(d["boxes"][:, 0])
    got, labels = d["boxes"][order], d["labels"][order]
    assert torch.equal(labels, LABELS)  # GT is sorted by x already
    cell = model.config.out_cell_m
    assert torch.allclose(got[:, :2], gt[:, :2], atol=cell)
    assert torch.allclose(got[:, 2:6], gt[:, 2:6], atol=1e-4)
    yaw_err = torch.remainder(got[:, 6] - gt[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert yaw_err.abs().max() < 1e-4
    assert torch.allclose(got[:, 7:], gt[:, 7:], atol=1e-5)


def test_targets_layout_and_ignore_band() -> None:
    cfg = DetectorConfig()
    t = build_targets([{"boxes": GT, "labels": LABELS,
                        "ignore": torch.tensor([[40.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0],
                                                [10.3, 2.1, -1.0, 4.2, 1.8, 1.5, 0.3]]),
                        "weights": torch.tensor([1.0, 0.5, 0.5, 1.0])}], cfg)
    assert t.heatmap.shape == (1, 3, 128, 128)
    assert int(t.heatmap.eq(1).sum()) == 4 and t.index.shape == (4,) and t.box.shape == (4, 8)
    assert torch.equal(t.box_weight, torch.tensor([1.0, 0.5, 0.5, 1.0]))
    iy, ix = int((0.0 + 25.6) / 0.4), int(40.0 / 0.4)
    assert t.heatmap_weight[0, 0, iy, ix] == 0  # inside the ignore band
    assert t.heatmap[0, :, iy, ix].max() == 0  # ignore boxes are never positives
    # An ignore box on top of a real object does not remove the object's positive.
    cy, cx = int((2.1 + 25.6) / 0.4), int(10.3 / 0.4)
    assert t.heatmap[0, 0, cy, cx] == 1 and t.heatmap_weight[0, 0, cy, cx] == 1
    assert t.heatmap_weight[0, 0, cy + 1, cx] == 0
    # Pedestrian: the formula gives < 1 cell at 0.4 m; the minimum radius still splats a blob.
    assert gaussian_radius(torch.tensor(2.0), torch.tensor(1.5), 0.1) < 2
    py, px = int((-5.2 + 25.6) / 0.4), int(20.7 / 0.4)
    assert 0 < t.heatmap[0, 1, py + 1, px] < 1 and 0 < t.heatmap[0, 1, py, px + 2] < 1


def test_focal_loss_weights_and_normalisation() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 1] = 1.0
    good = torch.full_like(target, -8.0)
    good[0, 0, 1, 1] = 8.0
    bad = -good
    ones = torch.ones_like(target)
    assert gaussian_focal_loss(good, target, ones) < 1e-3 < gaussian_focal_loss(bad, target, ones)
    # Weight 0 everywhere but the positive removes every negative's contribution.
    w = torch.zeros_like(target)
    w[0, 0, 1, 1] = 1.0
    assert gaussian_focal_loss(bad, target, w) < gaussian_focal_loss(bad, target, ones)
    # No positives: still finite (normalised by max(1, n_pos)).
    assert torch.isfinite(gaussian_focal_loss(bad, torch.zeros_like(target), ones))


def test_decode_nms_and_threshold() -> None:
    model = create_model("radar-only", nms_iou_bev=0.1)
    targets = [{"boxes": GT, "labels": LABELS}]
    out = _perfect_out(model, targets)
    # A duplicate peak of the car 2 cells away, same class, lower score: NMS removes it.
    t = model.build_targets(targets)
    idx = int(t.index[0])
    h, w = out["heatmap"].shape[2:]
    iy, ix = divmod(idx, w)
    out["heatmap"][0, 0, iy, ix + 3] = 5.0
    out["box"][0, :, iy, ix + 3] = out["box"][0, :, iy, ix]
    assert model.decode(out, score_threshold=0.5)[0]["boxes"].shape[0] == 4
    plain = create_model("radar-only")
    assert plain.decode(out, score_threshold=0.5)[0]["boxes"].shape[0] == 5
    # GT peaks score 1 - 1e-4, the duplicate sigmoid(5) ~ 0.993.
    assert plain.decode(out, score_threshold=0.995)[0]["boxes"].shape[0] == 4
