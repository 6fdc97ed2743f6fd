"""Batched, on-device decode + rotated NMS equal the per-frame implementations they replaced.

`kdpipe.models._reference` keeps the previous code (greedy NMS over a host copy of the IoU
matrix; decode looping over frames) as the oracle: the batched versions must keep the same boxes
in the same order with the same scores.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from kdpipe.models import DetectorConfig, create_model, decode_boxes, nms_bev
from kdpipe.models._reference import decode_boxes_reference as _reference_decode_boxes
from kdpipe.models._reference import nms_bev_reference as _reference_nms_bev
from kdpipe.models.iou import nms_bev_batched
from kdpipe.testing import TINY_DETECTOR

N_RANDOM_CASES = 300  # seeded batches of the NMS equality test (each of 1-6 frames)


def _random_batch(seed: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """Clustered, rotated, overlapping boxes with tied scores; empty and one-box frames."""
    g = torch.Generator().manual_seed(seed)
    n_frames = int(torch.randint(1, 7, (1,), generator=g))
    k = int(torch.randint(0, 60, (1,), generator=g))
    boxes = torch.rand(n_frames, k, 7, generator=g)  # (B, k, 7)
    spread = float(torch.rand(1, generator=g)) * 12 + 1  # tight clusters up to sparse scenes
    boxes[..., :2] *= spread
    boxes[..., 2] = boxes[..., 2] * 2 - 1
    boxes[..., 3:6] = boxes[..., 3:6] * 4 + 0.2
    boxes[..., 6] = (boxes[..., 6] - 0.5) * 2 * math.pi
    if k > 1:  # exact duplicates and same-footprint flips: IoU 1 pairs
        boxes[:, 1] = boxes[:, 0]
        boxes[:, -1, :6], boxes[:, -1, 6] = boxes[:, 0, :6], boxes[:, 0, 6] + math.pi
    levels = int(torch.randint(1, 6, (1,), generator=g))  # few distinct scores: many ties
    scores = torch.randint(0, levels, (n_frames, k), generator=g).float() / levels  # (B, k)
    valid = torch.rand(n_frames, k, generator=g) < float(torch.rand(1, generator=g)) + 0.2
    valid[0] = False  # an empty frame
    if n_frames > 1 and k > 0:  # a frame with one box
        valid[1] = False
        valid[1, k // 2] = True
    threshold = [0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.99][seed % 7]
    return boxes, scores, valid, threshold


def test_batched_nms_equals_reference_on_random_cases() -> None:
    kept = suppressed = 0
    for seed in range(N_RANDOM_CASES):
        boxes, scores, valid, thr = _random_batch(seed)
        order, keep = nms_bev_batched(boxes, scores, valid, thr)
        for b in range(boxes.shape[0]):
            idx = valid[b].nonzero()[:, 0]  # padded-row index of each valid entry
            want = idx[_reference_nms_bev(boxes[b][idx], scores[b][idx], thr)]
            got = order[b][keep[b]]
            assert torch.equal(got, want), (seed, b, got.tolist(), want.tolist())
            assert torch.equal(nms_bev(boxes[b][idx], scores[b][idx], thr),
                               _reference_nms_bev(boxes[b][idx], scores[b][idx], thr)), (seed, b)
            kept += len(want)
            suppressed += len(idx) - len(want)
    assert kept > 1000 and suppressed > 1000  # the cases exercise suppression, not just keeps


def test_batched_nms_in_memory_bounded_steps_is_the_same(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from kdpipe.models import iou

    for seed in range(40):
        boxes, scores, valid, thr = _random_batch(seed)
        want = nms_bev_batched(boxes, scores, valid, thr)
        with monkeypatch.context() as m:  # a step of one or two frames
            m.setattr(iou, "_NMS_ENTRIES_PER_STEP", 2 * max(1, boxes.shape[1]) ** 2 - 1)
            got = nms_bev_batched(boxes, scores, valid, thr)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), seed


def test_nms_bev_ties_follow_stable_order_and_edge_cases() -> None:
    box = torch.tensor([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.7])
    same = box.repeat(4, 1)  # four identical boxes, equal scores: the first index wins
    assert nms_bev(same, torch.ones(4), 0.5).tolist() == [0]
    assert nms_bev(same, torch.tensor([0.5, 0.9, 0.9, 0.1]), 0.5).tolist() == [1]
    assert nms_bev(torch.zeros(0, 7), torch.zeros(0), 0.5).tolist() == []
    assert nms_bev(box[None], torch.ones(1), 0.5).tolist() == [0]
    # A chain a > b > c where a suppresses b only: c survives (greedy, not "any overlap").
    chain = box.repeat(3, 1)
    chain[1, 0] += 1.0
    chain[2, 0] += 2.0
    ref = _reference_nms_bev(chain, torch.tensor([0.9, 0.8, 0.7]), 0.3)
    assert nms_bev(chain, torch.tensor([0.9, 0.8, 0.7]), 0.3).tolist() == ref.tolist() == [0, 2]
    with pytest.raises(ValueError, match="same length"):
        nms_bev(same, torch.ones(3), 0.5)


def _assert_same(got: list[dict[str, Tensor]], want: list[dict[str, Tensor]]) -> float:
    """Same frames, boxes, labels and order; returns the largest score difference."""
    assert len(got) == len(want)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g["labels"], w["labels"])
        assert g["boxes"].shape == w["boxes"].shape and g["boxes"].dtype == w["boxes"].dtype
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=1e-5)
        if len(g["scores"]):
            worst = max(worst, float((g["scores"] - w["scores"]).abs().max()))
    assert worst <= 1e-5
    return worst


@pytest.mark.parametrize("nms", [None, 0.0, 0.1, 0.5])
@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.3])
def test_decode_equals_reference_on_random_maps(nms: float | None, threshold: float) -> None:
    cfg = DetectorConfig(**TINY_DETECTOR, nms_iou_bev=nms)
    g = torch.Generator().manual_seed(int(threshold * 100) + (0 if nms is None else 7))
    n_cls, h, w = len(cfg.classes), 24, 32
    heat = torch.randn(5, n_cls, h, w, generator=g) * 2  # (B, K, H, W)
    heat[2] = -30.0  # a frame below every threshold: empty
    heat[3, :, :, :16] = 1.5  # plateaus: tied peaks
    box = torch.randn(5, 8, h, w, generator=g)  # (B, 8, H, W)
    box[:, 3:5] = box[:, 3:5] * 0.3 + 1.5  # large boxes: neighbours overlap
    for top_k in (1, 50, 100):
        _assert_same(decode_boxes(heat, box, cfg, threshold, top_k),
                     _reference_decode_boxes(heat, box, cfg, threshold, top_k))


@pytest.mark.parametrize("name", ["sckd-teacher", "radar-only"])
def test_decode_of_a_tiny_model_batch_equals_reference(name: str) -> None:
    from kdpipe.models.batch import collate

    torch.manual_seed(0)
    model = create_model(name, **TINY_DETECTOR, nms_iou_bev=0.1).eval()
    g = torch.Generator().manual_seed(1)
    frames = []
    for _ in range(6):
        xyz = torch.rand(500, 3, generator=g) * torch.tensor([50.0, 50.0, 4.0]) \
            + torch.tensor([0.0, -25.0, -2.5])
        frames.append({"lidar": torch.cat([xyz, torch.rand(500, 1, generator=g)], 1).numpy(),
                       "radar": torch.cat([xyz[:60], torch.rand(60, 3, generator=g)], 1).numpy()})
    frames[4] = {"lidar": frames[4]["lidar"][:0], "radar": frames[4]["radar"][:0]}  # no points
    with torch.inference_mode():
        out = model(collate(frames, model.modalities))
        for threshold in (0.0, 0.01, 0.1):
            got = model.decode(out, score_threshold=threshold, top_k=100)
            want = _reference_decode_boxes(out["heatmap"], out["box"], model.config, threshold)
            _assert_same(got, want)
    assert sum(len(d["scores"]) for d in got) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decode_on_cuda_equals_the_cpu_reference() -> None:
    cfg = DetectorConfig(**TINY_DETECTOR, nms_iou_bev=0.1)
    g = torch.Generator().manual_seed(5)
    heat = torch.randn(8, len(cfg.classes), 24, 32, generator=g) * 2  # (B, K, H, W)
    box = torch.randn(8, 8, 24, 32, generator=g)  # (B, 8, H, W)
    box[:, 3:5] = box[:, 3:5] * 0.3 + 1.5
    got = decode_boxes(heat.cuda(), box.cuda(), cfg, 0.05, 100)
    assert got[0]["boxes"].is_cuda
    cpu = [{k: v.cpu() for k, v in d.items()} for d in got]
    # CUDA's atan2/exp may round differently from the CPU's: boxes are compared to 1e-5 (no
    # IoU in these cases lies within rounding of the threshold, so the kept sets agree).
    _assert_same(cpu, _reference_decode_boxes(heat, box, cfg, 0.05, 100))
    for seed in range(20):
        boxes, scores, valid, thr = _random_batch(seed)
        order, keep = nms_bev_batched(boxes.cuda(), scores.cuda(), valid.cuda(), thr)
        want = nms_bev_batched(boxes, scores, valid, thr)
        assert torch.equal(order.cpu(), want[0]) and torch.equal(keep.cpu(), want[1]), seed
