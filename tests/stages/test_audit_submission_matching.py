"""The submission audit's matching shortcuts equal the plain algorithm: candidates found through
an x window are every same-frame, same-class pair within the cutoff, in ground-truth input
order; matching at all thresholds at once (uncontested detections without copies) equals
`greedy_match` run threshold by threshold; `in_racks` equals a pair-by-pair test."""
from __future__ import annotations

import numpy as np
import pytest

from kdpipe.evaluation.nuscenes_boxes import centres_in_boxes, in_racks
from kdpipe.stages.audit.metrics import BoxSet, candidates, greedy_match
from kdpipe.stages.audit.tp_errors import match_thresholds

THS_M = (0.5, 1.0, 2.0, 4.0)


def _crowd(seed: int, n_gt: int, n_det: int) -> tuple[BoxSet, BoxSet]:
    """Few frames and classes, centres on a 0.25 m grid: many contested pairs and exact
    distance ties."""
    rng = np.random.default_rng(seed)
    gt = BoxSet(rng.integers(0, 3, n_gt), rng.integers(0, 2, n_gt), np.zeros((n_gt, 7)),
                rng.integers(-40, 40, (n_gt, 2)) * 0.25)
    det = BoxSet(rng.integers(0, 3, n_det), rng.integers(0, 2, n_det), np.zeros((n_det, 7)),
                 rng.integers(-40, 40, (n_det, 2)) * 0.25 + 5000.0 * (seed % 2),
                 rng.integers(0, 5, n_det) / 4.0)  # score ties too
    if seed % 2:  # far from the origin: the x window's keys get large
        gt = BoxSet(gt.frame, gt.cls, gt.boxes, gt.xy + 5000.0)
    return det, gt


@pytest.mark.parametrize("seed", range(6))
def test_candidates_are_every_pair_within_the_cutoff(seed: int) -> None:
    det, gt = _crowd(seed, 80, 120)
    got = candidates(det, gt, "center_distance", 4.0)
    for p in range(len(det)):
        d = np.hypot(*(gt.xy - det.xy[p]).T)
        want = np.flatnonzero((gt.frame == det.frame[p]) & (gt.cls == det.cls[p]) & (d < 4.0))
        row = got.gt[p][got.gt[p] >= 0]
        assert row.tolist() == want.tolist()          # input order: the devkit's tie-break
        assert np.array_equal(got.cost[p][: row.size], d[want])


@pytest.mark.parametrize(("seed", "n_det"), [(s, n) for s in range(4) for n in (30, 150)])
def test_all_thresholds_at_once_equal_one_by_one(seed: int, n_det: int) -> None:
    det, gt = _crowd(seed, 60, n_det)  # few detections: most uncontested
    cand = candidates(det, gt, "center_distance", max(THS_M))
    got = match_thresholds(det, cand, len(gt), 3, THS_M)
    for t, th in enumerate(THS_M):
        want = greedy_match(det, cand, len(gt), np.full(len(det), th), "center_distance")
        assert np.array_equal(got[t], want), th
    assert (got >= 0).any() and (got < 0).any()


def test_in_racks_equals_pairwise() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 4, 200)
    xyz = rng.uniform(-3, 3, (200, 3))
    rack_frame = rng.integers(0, 4, 6)
    racks = np.c_[rng.uniform(-2, 2, (6, 3)), rng.uniform(1, 3, (6, 3)), rng.uniform(-3, 3, 6)]
    want = np.array([any(centres_in_boxes(xyz[i:i + 1], racks[r:r + 1])[0]
                         for r in np.flatnonzero(rack_frame == frame[i])) for i in range(200)])
    got = in_racks(frame, xyz, (rack_frame, racks))
    assert np.array_equal(got, want) and want.any() and not want.all()
