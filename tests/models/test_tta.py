"""Flip TTA (models/tta.py): the head maps of a mirrored scene map back onto the original grid
exactly as the project's own target encoding says they should, the batch mirror is the scene's
mirror (a mirror-symmetric scene gives mirror-symmetric averaged maps), and grids or
modalities it cannot mirror exactly are refused."""
from __future__ import annotations

import pytest
import torch

from kdpipe.models import create_model
from kdpipe.models.decode import decode_boxes
from kdpipe.models.targets import build_targets
from kdpipe.models.tta import check_flip, flip_averaged, flip_batch, unflip_maps
from kdpipe.testing import TINY_DETECTOR

# (x, y, z, l, w, h, yaw, vx, vy): off cell borders, headings in several quadrants
BOXES = torch.tensor([[12.3, 5.7, -0.4, 4.1, 1.8, 1.5, 0.4, 3.0, 1.2],
                      [30.9, -11.1, 0.2, 0.8, 0.7, 1.7, -2.2, 0.5, -0.9],
                      [8.45, -1.35, 0.0, 1.9, 0.6, 1.4, 1.3, -1.0, 0.3]])
LABELS = torch.tensor([0, 1, 2])


def dense_maps(boxes: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """What a perfect head would output for `boxes`: the heatmap target (as logits) and the box
    code written at each centre cell."""
    t = build_targets([{"boxes": boxes, "labels": LABELS}], cfg)
    heat = t.heatmap.clamp(1e-4, 1 - 1e-4)
    heat = torch.log(heat) - torch.log1p(-heat)  # (1, K, Ho, Wo) logits
    box = torch.zeros(1, cfg.box_code_size, *heat.shape[2:])  # (1, R, Ho, Wo)
    box.view(cfg.box_code_size, -1)[:, t.index] = t.box.T
    return heat, box


def mirrored(boxes: torch.Tensor) -> torch.Tensor:
    m = boxes.clone()
    m[:, 1], m[:, 6], m[:, 8] = -m[:, 1], -m[:, 6], -m[:, 8]
    return m


@pytest.mark.parametrize("velocity", [False, True])
def test_unflipped_maps_of_the_mirrored_scene_are_the_scene_maps(velocity: bool) -> None:
    cfg = create_model("radar-only", **TINY_DETECTOR, with_velocity=velocity).config
    boxes = BOXES if velocity else BOXES[:, :7]
    heat, box = dense_maps(boxes, cfg)
    heat_m, box_m = dense_maps(mirrored(BOXES)[:, :boxes.shape[1]], cfg)
    assert not torch.equal(heat_m, heat)  # the mirror is another scene
    heat_u, box_u = unflip_maps(heat_m, box_m)
    torch.testing.assert_close(heat_u, heat)
    occupied = box.abs().sum(1, keepdim=True) > 0
    torch.testing.assert_close(box_u * occupied, box, atol=1e-5, rtol=0)
    dets = decode_boxes(heat_u, box_u, cfg, score_threshold=0.5, top_k=10)[0]
    order = dets["labels"].argsort()
    torch.testing.assert_close(dets["boxes"][order], boxes, atol=1e-4, rtol=0)


def _symmetric_batch() -> dict[str, object]:
    """A scene equal to its own mirror: every point with its y -> -y twin (none on y = 0)."""
    g = torch.Generator().manual_seed(3)
    n = 400
    half = torch.rand(n, 4, generator=g) * torch.tensor([50.0, 24.0, 3.0, 1.0]) \
        + torch.tensor([0.5, 0.37, -1.5, 0.0])
    lidar = torch.cat([half, half * torch.tensor([1.0, -1.0, 1.0, 1.0])])
    rhalf = torch.rand(60, 6, generator=g) * torch.tensor([50.0, 24.0, 2.0, 10.0, 5.0, 0.0]) \
        + torch.tensor([0.5, 0.37, -1.0, -5.0, -2.0, 0.0])
    radar = torch.cat([rhalf, rhalf * torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, 1.0])])
    return {"batch_size": 1,
            "lidar": torch.cat([torch.zeros(len(lidar), 1), lidar], 1),
            "radar": torch.cat([torch.zeros(len(radar), 1), radar], 1)}


def test_a_mirror_symmetric_scene_gives_mirror_symmetric_averaged_maps() -> None:
    torch.manual_seed(0)
    model = create_model("sckd-teacher", **TINY_DETECTOR).eval()
    batch = _symmetric_batch()
    with torch.no_grad():
        out = model(batch)
        avg = flip_averaged(model, batch, out)
        # an untrained model is not mirror-symmetric: the average is what makes it so
        assert not torch.allclose(unflip_maps(out["heatmap"], out["box"])[0], out["heatmap"],
                                  atol=1e-3)
        heat_u, box_u = unflip_maps(avg["heatmap"], avg["box"])
    torch.testing.assert_close(heat_u, avg["heatmap"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(box_u, avg["box"], atol=1e-4, rtol=1e-4)


def test_flip_batch_mirrors_points_only_and_copies() -> None:
    batch = _symmetric_batch()
    flipped = flip_batch(batch)
    lidar, lidar_f = batch["lidar"], flipped["lidar"]
    assert isinstance(lidar, torch.Tensor) and isinstance(lidar_f, torch.Tensor)
    torch.testing.assert_close(lidar_f[:, 2], -lidar[:, 2])
    torch.testing.assert_close(lidar_f[:, [0, 1, 3, 4]], lidar[:, [0, 1, 3, 4]])
    assert lidar_f.data_ptr() != lidar.data_ptr() and flipped["batch_size"] == 1


def test_grids_and_modalities_that_cannot_be_mirrored_are_refused() -> None:
    cfg = create_model("radar-only", **TINY_DETECTOR).config
    check_flip(cfg, ("radar",))
    with pytest.raises(ValueError, match="symmetric in y"):
        check_flip(cfg.model_copy(update={"point_cloud_range_m": (0, -20, -3, 51.2, 30, 2)}),
                   ("radar",))
    with pytest.raises(ValueError, match="point clouds only"):
        check_flip(cfg, ("camera", "radar"))
