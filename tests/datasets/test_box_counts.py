"""Vectorised points-per-box counts equal `schemas.boxes.points_in_boxes` to the integer."""
from __future__ import annotations

import numpy as np
import pytest

from kdpipe.datasets.box_counts import count_points_in_boxes
from kdpipe.schemas import boxes as bx


def _scene(rng: np.random.Generator, n_pts: int, n_boxes: int, spread_m: float
           ) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.column_stack([rng.uniform(-spread_m, spread_m, (n_boxes, 2)),
                             rng.uniform(-1, 1, n_boxes), rng.uniform(0.3, 6, (n_boxes, 3)),
                             rng.uniform(-np.pi, np.pi, n_boxes)])
    far = rng.uniform(-spread_m * 1.5, spread_m * 1.5, (n_pts, 3))
    # points on and next to the faces (the inclusive comparisons) and inside the boxes
    k = max(1, n_pts // max(n_boxes, 1)) if n_boxes else 0
    near = []
    for b in boxes:
        local = rng.uniform(-0.6, 0.6, (k, 3)) * b[3:6]
        local[: k // 3, 0] = np.sign(local[: k // 3, 0]) * b[3] / 2  # exactly on the l face
        local[k // 3: 2 * k // 3, 2] = b[5] / 2                       # exactly on the top
        c, s = np.cos(b[6]), np.sin(b[6])
        xy = np.column_stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]])
        near.append(np.column_stack([xy + b[:2], local[:, 2] + b[2]]))
    pts = np.concatenate([far, *near]) if near else far
    return pts.astype(np.float32), boxes


@pytest.mark.parametrize("seed", range(40))
def test_equal_to_points_in_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_boxes = int(rng.integers(0, 40))
    pts, boxes = _scene(rng, int(rng.integers(0, 20000)), n_boxes, float(rng.choice([5, 50, 400])))
    want = bx.points_in_boxes(pts, boxes)
    got = count_points_in_boxes(pts, boxes)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_edge_cases() -> None:
    rng = np.random.default_rng(0)
    pts, boxes = _scene(rng, 1000, 5, 20)
    for p, b in [(pts[:0], boxes), (pts, boxes[:0]), (pts[:1], boxes),
                 (np.array([[1e30, -1e30, 0.0], [0, 0, 0]]), boxes),
                 (pts, np.concatenate([boxes, [[1e6, -1e6, 0, 4, 2, 2, 0.3]]])),
                 (pts, np.array([[0, 0, 0, 1e100, 1e100, 1e100, 0.0]]))]:
        np.testing.assert_array_equal(count_points_in_boxes(p, b), bx.points_in_boxes(p, b))


def test_non_finite_points_count_nowhere() -> None:
    rng = np.random.default_rng(1)
    pts, boxes = _scene(rng, 2000, 6, 10)
    pts[::7, 0], pts[1::7, 1], pts[2::7, 2] = np.nan, np.inf, -np.inf
    np.testing.assert_array_equal(count_points_in_boxes(pts, boxes), bx.points_in_boxes(pts, boxes))


@pytest.mark.parametrize("spread_m", [0.0, 1.0, 300.0])
def test_grid_cells_of_one_box_and_of_several(spread_m: float) -> None:
    """Boxes on one spot (every grid cell names several boxes), close together (a mix) and far
    apart (every marked cell names one box): the same counts on a scan big enough for the grid."""
    rng = np.random.default_rng(int(spread_m))
    boxes = np.column_stack([rng.uniform(-spread_m, spread_m, (12, 2)), np.zeros(12),
                             rng.uniform(1, 5, (12, 3)), rng.uniform(-np.pi, np.pi, 12)])
    pts = np.concatenate([rng.normal(b[:3], b[3:6], (400, 3)) for b in boxes]).astype(np.float32)
    np.testing.assert_array_equal(count_points_in_boxes(pts, boxes), bx.points_in_boxes(pts, boxes))
