"""The small models can fit two synthetic frames: the loss falls by well over half."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.models import create_model

# A 25.6 m x 25.6 m range keeps the 0.4 m grid at 64 x 64: same code, a quarter of the cost.
RANGE_M = (0.0, -12.8, -3.0, 25.6, 12.8, 2.0)


def _frame(b: int, boxes: np.ndarray, n_feat: int, rng: np.random.Generator) -> np.ndarray:
    """Clutter over the range plus 40 points inside every box: rows [b, x, y, z, feats...]."""
    clutter = rng.random((150, 3)) * [25.6, 25.6, 5.0] + [0.0, -12.8, -3.0]
    inside = []
    for box in boxes:
        local = (rng.random((40, 3)) - 0.5) * box[3:6]
        c, s = np.cos(box[6]), np.sin(box[6])
        inside.append(np.stack([c * local[:, 0] - s * local[:, 1] + box[0],
                                s * local[:, 0] + c * local[:, 1] + box[1],
                                local[:, 2] + box[2]], 1))
    xyz = np.concatenate([clutter, *inside])
    # Object points are bright (feature 3 = 1), clutter dim: a learnable cue beyond geometry.
    extra = rng.random((len(xyz), n_feat - 3)) * 0.1
    extra[len(clutter):, 0] = 1.0
    return np.concatenate([np.full((len(xyz), 1), b), xyz, extra], 1).astype(np.float32)


@pytest.mark.parametrize("name", ["radar-only", "sckd-teacher"])
def test_overfits_two_frames(name: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    boxes = [np.array([[8.0, 3.0, -1.0, 4.0, 1.8, 1.5, 0.3],
                       [15.0, -6.0, -0.9, 0.8, 0.6, 1.7, 1.0]]),
             np.array([[5.0, -2.0, -1.0, 1.8, 0.7, 1.6, -2.0],
                       [12.0, 6.0, -1.0, 4.2, 1.9, 1.5, 2.5],
                       [20.0, 0.0, -0.9, 0.7, 0.6, 1.8, 0.0]])]
    labels = [torch.tensor([0, 1]), torch.tensor([2, 0, 1])]
    batch = {"radar": torch.from_numpy(np.concatenate([_frame(b, bx, 6, rng)
                                                       for b, bx in enumerate(boxes)])),
             "lidar": torch.from_numpy(np.concatenate([_frame(b, bx, 4, rng)
                                                       for b, bx in enumerate(boxes)])),
             "batch_size": 2}
    targets = [{"boxes": torch.from_numpy(bx).float(), "labels": lb}
               for bx, lb in zip(boxes, labels, strict=True)]
    model = create_model(name, point_cloud_range_m=RANGE_M, p_drop=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    history = []
    for _ in range(40):
        loss = model.loss(model(batch), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert np.isfinite(history).all()
    assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3]), history
