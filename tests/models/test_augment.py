"""flip_y / global_scale keep points inside their boxes and invert correctly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.models import augment


def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    d = points[:, :3] - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    return (np.abs(lx) <= box[3] / 2) & (np.abs(ly) <= box[4] / 2) & (np.abs(d[:, 2]) <= box[5] / 2)


def _scene(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = np.array([[10.0, 3.0, -1.0, 4.0, 1.8, 1.5, 0.4, 2.0, 1.0],
                      [25.0, -6.0, -0.8, 0.8, 0.6, 1.7, -2.8, 0.0, -1.5]])
    pts = []
    for b in boxes:  # points inside each box, in the box frame then rotated
        local = (rng.random((50, 3)) - 0.5) * 0.9 * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        xyz = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
                        local[:, 2]], 1) + b[:3]
        pts.append(xyz)
    lidar = np.concatenate([np.concatenate(pts), rng.random((100, 1))], 1)
    radar = np.concatenate([np.concatenate(pts)[:20], rng.random((20, 3))], 1)
    return [lidar, radar], boxes


@pytest.mark.parametrize("as_torch", [False, True])
def test_flip_y(as_torch: bool) -> None:
    points, boxes = _scene()
    if as_torch:
        points, boxes = [torch.from_numpy(p) for p in points], torch.from_numpy(boxes)
    before = [p.clone() if as_torch else p.copy() for p in points]
    fp, fb = augment.flip_y(points, boxes)
    for p, b in zip(before, points, strict=True):  # inputs untouched
        assert (p == b).all()
    fp_np = [np.asarray(p) for p in fp]
    fb_np = np.asarray(fb)
    np.testing.assert_allclose(fb_np[:, 6], [-0.4, 2.8])
    np.testing.assert_allclose(fb_np[:, 8], [-1.0, 1.5])
    np.testing.assert_allclose(fb_np[:, 7], [2.0, 0.0])  # vx unchanged
    np.testing.assert_allclose(fp_np[1][:, 3:], np.asarray(points[1])[:, 3:])  # rcs, v_r, time
    assert _inside(fp_np[0][:50], fb_np[0]).all() and _inside(fp_np[0][50:], fb_np[1]).all()
    bp, bb = augment.flip_y(fp, fb)
    np.testing.assert_allclose(np.asarray(bb), np.asarray(boxes), atol=1e-12)
    np.testing.assert_allclose(np.asarray(bp[0]), np.asarray(points[0]))


def test_global_scale() -> None:
    points, boxes = _scene(1)
    sp, sb = augment.global_scale(points, boxes, 1.05)
    np.testing.assert_allclose(sb[:, :6], boxes[:, :6] * 1.05)
    np.testing.assert_allclose(sb[:, 7:], boxes[:, 7:] * 1.05)
    np.testing.assert_allclose(sb[:, 6], boxes[:, 6])
    np.testing.assert_allclose(sp[0][:, 3], points[0][:, 3])
    assert _inside(sp[0][:50], sb[0]).all() and _inside(sp[0][50:], sb[1]).all()
    single, _ = augment.global_scale(points[1], boxes[:, :7], 0.95)
    assert isinstance(single, np.ndarray) and np.allclose(single[:, :3], points[1][:, :3] * 0.95)
    with pytest.raises(ValueError, match="> 0"):
        augment.global_scale(points, boxes, 0.0)


def test_random_flip_scale_is_seeded() -> None:
    points, boxes = _scene(2)
    a = augment.random_flip_scale(points, boxes, np.random.default_rng(7))
    b = augment.random_flip_scale(points, boxes, np.random.default_rng(7))
    np.testing.assert_array_equal(a[1], b[1])
    s = a[1][:, 3] / boxes[:, 3]
    assert 0.95 <= s[0] <= 1.05 and np.allclose(s, s[0])
