"""Rotated IoU / NMS against shapely, plus hand cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from kdpipe.models import boxes_iou_3d, boxes_iou_bev, nms_bev


def _poly(b: np.ndarray) -> Polygon:
    x, y, _, length, width, _, yaw = b[:7]
    c, s = math.cos(yaw), math.sin(yaw)
    local = [(length / 2, width / 2), (-length / 2, width / 2),
             (-length / 2, -width / 2), (length / 2, -width / 2)]
    return Polygon([(x + c * dx - s * dy, y + s * dx + c * dy) for dx, dy in local])


def _random_boxes(n: int, seed: int, spread_m: float = 6.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(n, 7, generator=g, dtype=torch.float64)
    b[:, :2] *= spread_m
    b[:, 2] = b[:, 2] * 2 - 1
    b[:, 3:6] = b[:, 3:6] * 4 + 0.2
    b[:, 6] = (b[:, 6] - 0.5) * 2 * math.pi
    return b


def _shapely_iou(a: torch.Tensor, b: torch.Tensor, three_d: bool) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, ba in enumerate(a.numpy()):
        for j, bb in enumerate(b.numpy()):
            pa, pb = _poly(ba), _poly(bb)
            inter = pa.intersection(pb).area
            if not three_d:
                out[i, j] = inter / (pa.area + pb.area - inter)
                continue
            top = min(ba[2] + ba[5] / 2, bb[2] + bb[5] / 2)
            bottom = max(ba[2] - ba[5] / 2, bb[2] - bb[5] / 2)
            inter *= max(0.0, top - bottom)
            out[i, j] = inter / (pa.area * ba[5] + pb.area * bb[5] - inter)
    return out


@pytest.mark.parametrize("three_d", [False, True])
def test_matches_shapely_on_random_boxes(three_d: bool) -> None:
    a, b = _random_boxes(40, 0), _random_boxes(30, 1)
    fn = boxes_iou_3d if three_d else boxes_iou_bev
    ref = _shapely_iou(a, b, three_d)
    assert (ref > 0).mean() > 0.2  # the test exercises overlaps, not just zeros
    np.testing.assert_allclose(fn(a, b).numpy(), ref, atol=1e-4)
    # float32 in, float32 out, same values.
    got32 = fn(a.float(), b.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, atol=1e-4)


def test_hand_cases() -> None:
    box = torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.7]])
    square = torch.tensor([[5.0, -3.0, 0.5, 2.0, 2.0, 1.0, 0.2]])
    turned = square.clone()
    turned[0, 6] += math.pi / 2
    far = box.clone()
    far[0, 0] += 10.0
    assert boxes_iou_bev(box, box).item() == pytest.approx(1.0, abs=1e-6)
    assert boxes_iou_3d(box, box).item() == pytest.approx(1.0, abs=1e-6)
    assert boxes_iou_bev(square, turned).item() == pytest.approx(1.0, abs=1e-6)
    assert boxes_iou_bev(box, far).item() == 0.0
    flipped = box.clone()
    flipped[0, 6] += math.pi  # same footprint, opposite heading
    assert boxes_iou_bev(box, flipped).item() == pytest.approx(1.0, abs=1e-6)
    # Same footprint, z shifted by half the height: 3D IoU = (h/2) / (3h/2) = 1/3.
    up = box.clone()
    up[0, 2] += 0.75
    assert boxes_iou_3d(box, up).item() == pytest.approx(1 / 3, abs=1e-6)
    # Axis-aligned half overlap: [0, 2] x [0, 2] vs [1, 3] x [0, 2] -> 2 / 6.
    a = torch.tensor([[1.0, 1.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    b = torch.tensor([[2.0, 1.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    assert boxes_iou_bev(a, b).item() == pytest.approx(1 / 3, abs=1e-6)
    assert boxes_iou_bev(torch.zeros(0, 7), box).shape == (0, 1)
    # Extra columns (velocities) are ignored.
    assert boxes_iou_bev(torch.cat([box, torch.ones(1, 2)], 1), box).item() == pytest.approx(1.0)


def _greedy_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    order = np.argsort(-scores.numpy(), kind="stable")
    polys = [_poly(b) for b in boxes.numpy()]
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            inter = polys[i].intersection(polys[k]).area
            if inter / (polys[i].area + polys[k].area - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return keep


def test_nms_matches_greedy_reference() -> None:
    boxes = _random_boxes(60, 3, spread_m=12.0)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for thr in (0.01, 0.3, 0.7):
        keep = nms_bev(boxes, scores, thr)
        assert keep.tolist() == _greedy_nms_reference(boxes, scores, thr)
    assert nms_bev(torch.zeros(0, 7), torch.zeros(0), 0.5).numel() == 0


def test_near_degenerate_configurations() -> None:
    """Touching, nested, and almost-parallel boxes (tiny yaw differences) still match shapely."""
    base = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    cases = [base.clone() for _ in range(6)]
    cases[0][0, 0] = 4.0  # touching along an edge
    cases[1][0, 3:5] = torch.tensor([1.0, 0.5])  # nested
    cases[2][0, 6] = 1e-7  # almost identical
    cases[3][0, 6] = math.pi / 2 + 1e-9
    cases[4][0, :2] = torch.tensor([0.5, 0.3])
    cases[4][0, 6] = 1e-6
    cases[5][0, :2] = torch.tensor([2.0, 1.0])  # corner on corner
    others = torch.cat(cases)
    np.testing.assert_allclose(boxes_iou_bev(base, others).numpy(),
                               _shapely_iou(base, others, three_d=False), atol=1e-4)
