"""IMKD student: camera lift geometry, splat, fusion and head shapes, the three distillation
losses (zero at the target, positive off it, weighting weights), and a few steps lowering them;
LiDAR depth for the camera branch: targets on a hand-made camera, the loss, the objective."""
from __future__ import annotations

import pytest
import torch

from kdpipe.models import create_model
from kdpipe.models.camera_bev import frustum_points_ego, splat
from kdpipe.models.camera_depth import depth_loss, lidar_depth_bins
from kdpipe.models.imkd import IMKDAdapters, IMKDLoss, intensity_kl, weighted_feature_mse

RANGE = (0.0, -12.8, -3.0, 25.6, 12.8, 2.0)
TINY = {"point_cloud_range_m": RANGE, "pillar_size_m": 0.8, "encoder_channels": 8,
        "backbone_filters": [8, 16], "upsample_filters": [8, 8], "head_channels": 8,
        "image_width": 8, "depth_bins": 8, "depth_range_m": (1.0, 25.0)}
# Optical camera (x right, y down, z forward) at ego (1.5, 0, 1.5), looking along +x.
R_EGO_CAM = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _camera(batch: int, hw: tuple[int, int] = (16, 32), seed: int = 0) -> dict:
    h, w = hw
    k = torch.tensor([[20.0, 0.0, (w - 1) / 2], [0.0, 20.0, (h - 1) / 2], [0.0, 0.0, 1.0]])
    t = torch.eye(4)
    t[:3, :3], t[:3, 3] = R_EGO_CAM, torch.tensor([1.5, 0.0, 1.5])
    g = torch.Generator().manual_seed(seed)
    return {"camera": torch.randint(0, 256, (batch, 1, 3, h, w), generator=g, dtype=torch.uint8),
            "camera_intrinsics": k.expand(batch, 1, 3, 3).clone(),
            "camera_to_ego": t.expand(batch, 1, 4, 4).clone()}


def _batch(batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    radar = torch.cat([torch.randint(0, batch, (60, 1), generator=g).float(),
                       torch.rand(60, 3, generator=g) * torch.tensor([25.0, 25.0, 2.0])
                       - torch.tensor([0.0, 12.5, 1.0]), torch.randn(60, 3, generator=g)], 1)
    return {"radar": radar, "batch_size": batch, **_camera(batch, seed=seed)}


def test_frustum_rays_land_where_the_camera_looks() -> None:
    cam = _camera(1, hw=(15, 31))
    depths = torch.tensor([5.0, 10.0])
    pts = frustum_points_ego(cam["camera_intrinsics"], cam["camera_to_ego"], depths,
                             (15, 31), (15, 31))  # (1, 1, 2, 15, 31, 3), stride 1
    assert pts.shape == (1, 1, 2, 15, 31, 3)
    # The principal point (pixel 15, 7) looks straight ahead: ego x = 1.5 + depth, y = 0, z = 1.5.
    torch.testing.assert_close(pts[0, 0, :, 7, 15], torch.tensor([[6.5, 0.0, 1.5],
                                                                  [11.5, 0.0, 1.5]]))
    # Pixels right of centre (u > cx) see the ego's right side (y < 0), lower rows see lower z.
    assert pts[0, 0, 0, 7, 30, 1] < 0 < pts[0, 0, 0, 7, 0, 1]
    assert pts[0, 0, 0, 14, 15, 2] < 1.5 < pts[0, 0, 0, 0, 15, 2]


def test_splat_sums_features_into_their_cells() -> None:
    feats = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 4, 1, 1, 1)  # (B, N, D, h, w, C=1)
    pts = torch.tensor([[2.1, 0.3, 0.0], [2.3, 0.1, 0.0], [10.0, -5.0, 0.0],
                        [10.0, -5.0, 9.0]]).view(1, 1, 4, 1, 1, 3)  # the last is above z1
    bev = splat(feats, pts, RANGE, 0.8, (32, 32))  # (1, 1, H, W)
    iy0, ix0 = int((0.3 + 12.8) / 0.8), int(2.1 / 0.8)
    iy1, ix1 = int((-5.0 + 12.8) / 0.8), int(10.0 / 0.8)
    assert bev[0, 0, iy0, ix0] == 3.0 and bev[0, 0, iy1, ix1] == 4.0
    assert bev.sum() == 7.0


def test_student_shapes_lift_fusion_head() -> None:
    model = create_model("imkd-student", **TINY).eval()
    cfg = model.config
    w, h = cfg.grid_size
    out = model(_batch())
    f = out["features"]
    assert f["camera"].shape == f["radar"].shape == (2, 8, h, w)
    assert f["fusion"].shape == (2, 16, h, w) and out["intensity_logit"].shape == (2, 1, h, w)
    assert out["heatmap"].shape == (2, len(cfg.classes), h, w)
    # The lifted camera map is non-zero only in front of the camera, inside its field of view.
    occupied = f["camera"].abs().sum(1)[0] > 0  # (H, W)
    assert occupied.any() and not occupied[:, 0].any()  # x in [0, 0.8) is behind x_cam = 1.5
    # Without images the camera map is empty, not an error (a frame whose camera failed).
    no_cam = model({k: v for k, v in _batch().items() if not k.startswith("camera")})
    assert no_cam["features"]["camera"].abs().sum() == 0
    gate_off = create_model("imkd-student", **TINY, intensity_gate=False).eval()
    assert gate_off(_batch())["intensity_logit"] is None
    assert not any("gate" in n for n, _ in gate_off.named_parameters())


def test_losses_zero_at_target_positive_otherwise() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    w = torch.rand(2, 1, 6, 6)
    assert weighted_feature_mse(t.clone(), t, w).item() == 0.0
    assert weighted_feature_mse(s, t, w).item() > 0
    ad = IMKDAdapters(8, 4, level1=True, level2=True)
    f_radar, f_fused = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 6, 6)
    assert ad.level1(f_radar, ad.radar(f_radar).detach(), w).item() == 0.0
    assert ad.level2(f_fused, ad.fused(f_fused).detach(), w).item() == 0.0
    assert ad.level1(f_radar, ad.radar(f_radar).detach() + 0.1, w).item() > 0
    target = torch.rand(2, 1, 6, 6)
    assert intensity_kl(torch.logit(target.double()), target.double()).item() == pytest.approx(
        0.0, abs=1e-9)
    assert intensity_kl(torch.zeros(2, 1, 6, 6), target).item() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        weighted_feature_mse(s[:, :4], t, w)
    with pytest.raises(ValueError, match="weight map"):
        weighted_feature_mse(s, t, w[:, :, :3])


def test_zero_weight_cells_contribute_nothing() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    w = torch.ones(1, 1, 5, 5)
    w[..., 2, 3] = 0.0
    base = weighted_feature_mse(s, t, w)
    moved = s.clone()
    moved[..., 2, 3] += 100.0  # a huge error where the weight is 0
    assert weighted_feature_mse(moved, t, w).item() == pytest.approx(base.item(), rel=1e-6)
    moved[..., 0, 0] = t[..., 0, 0] + 10.0  # a larger error where the weight is > 0 counts
    assert weighted_feature_mse(moved, t, w).item() > base.item()
    # Heavier cells count more: the same error costs more in a cell of weight 1 than of 0.1.
    w2 = torch.full((1, 1, 5, 5), 0.1)
    w2[..., 0, 0] = 1.0
    e = torch.zeros(1, 4, 5, 5)
    a, b = e.clone(), e.clone()
    a[..., 0, 0], b[..., 4, 4] = 1.0, 1.0
    assert weighted_feature_mse(a, e, w2) > weighted_feature_mse(b, e, w2)


def test_a_few_steps_lower_every_imkd_loss() -> None:
    torch.manual_seed(0)
    student = create_model("imkd-student", **TINY).train()
    ad = IMKDAdapters(8, 8, level1=True, level2=True)
    batch = _batch(seed=3)
    h, w = student.config.grid_size[::-1]
    f_lidar = torch.randn(2, 8, h, w).relu()  # a fixed "teacher" map
    weight = torch.rand(2, 1, h, w)
    targets = [{"boxes": torch.tensor([[8.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3]]),
                "labels": torch.tensor([0])}] * 2
    opt = torch.optim.Adam([*student.parameters(), *ad.parameters()], lr=3e-3)

    def losses() -> dict[str, torch.Tensor]:
        out = student(batch)
        return {"det": student.loss(out, targets)["loss"],
                "l1": ad.level1(out["features"]["radar"], f_lidar, weight),
                "l2": ad.level2(out["features"]["fusion"], f_lidar, weight),
                "l3": intensity_kl(out["intensity_logit"], weight)}

    first = {k: v.item() for k, v in losses().items()}
    for _ in range(8):
        opt.zero_grad()
        sum(losses().values()).backward()
        opt.step()
    last = {k: v.item() for k, v in losses().items()}
    assert all(last[k] < first[k] for k in first), (first, last)


# ---------------------------------------------- LiDAR depth for the camera branch

DEPTHS = ((0.0, 16.0), 4)  # bins [0, 4), [4, 8), [8, 12), [12, 16) m


def _lidar(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)  # (P, 1 + 4) [b, x, y, z, intensity]


def test_targets_nearest_return_per_cell_on_a_hand_made_camera() -> None:
    # The camera of test_imkd: at ego (1.5, 0, 1.5) looking along +x, image 16 x 32, f = 20 px;
    # feature map 4 x 8 (stride 4). Depth along the optical axis = ego x - 1.5.
    cam = _camera(2)
    k = cam["camera_intrinsics"]
    lidar = _lidar([
        [0, 11.5, 0.0, 1.5, 0.0],    # on the optical axis: the principal point, depth 10 m
        [0, 7.5, 0.0, 1.5, 0.0],     # same cell, nearer (6 m): the one kept
        [0, 31.5, 0.0, 1.5, 0.0],    # 30 m: past the last bin -> no target
        [0, -5.0, 0.0, 1.5, 0.0],    # behind the camera -> nothing
        [0, 5.5, 10.0, 1.5, 0.0],    # far left of the image (u < 0) -> nothing
        [1, 3.0, 0.0, 1.5, 0.0],     # frame 1: 1.5 m, bin 0, same cell
    ])
    bins = lidar_depth_bins(lidar, k, cam["camera_to_ego"], (16, 32), (4, 8), DEPTHS)
    assert bins.shape == (2, 1, 4, 8)
    u, v = 15.5, 7.5  # the principal point ((W - 1) / 2, (H - 1) / 2)
    row, col = int((v + 0.5) * 4 / 16), int((u + 0.5) * 8 / 32)
    assert (row, col) == (2, 4)
    assert bins[0, 0, row, col] == 1          # 6 m -> bin [4, 8)
    assert bins[1, 0, row, col] == 0          # 1.5 m -> bin [0, 4)
    assert (bins[0] >= 0).sum() == 1 and (bins[1] >= 0).sum() == 1  # no other cell has one
    # A point right of the optical axis (ego y < 0) lands in a column right of the centre.
    right = lidar_depth_bins(_lidar([[0, 11.5, -4.0, 1.5, 0.0]]), k[:1],
                             cam["camera_to_ego"][:1], (16, 32), (4, 8), DEPTHS)
    assert right[0, 0, row].argmax() > col and right.max() == 2  # 10 m -> bin [8, 12)


def test_depth_loss_zero_at_target_positive_off_it() -> None:
    bins = torch.tensor([[[[1, -1], [3, 0]]]])  # (B, N, h, w) = (1, 1, 2, 2)
    at = torch.nn.functional.one_hot(bins.clamp(min=0), 4).permute(0, 1, 4, 2, 3).float()
    assert depth_loss(at, bins).item() == 0.0
    off = torch.roll(at, 1, dims=2)  # every cell sure of the wrong bin
    assert depth_loss(off, bins).item() > 10.0
    uniform = torch.full((1, 1, 4, 2, 2), 0.25)
    assert abs(depth_loss(uniform, bins).item() - float(torch.log(torch.tensor(4.0)))) < 1e-6
    # Cells without a target do not count, whatever the model says there.
    moved = at.clone()
    moved[0, 0, :, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert depth_loss(moved, bins).item() == 0.0
    empty = torch.full_like(bins, -1)
    assert depth_loss(uniform.requires_grad_(), empty).item() == 0.0


def _lidar_for(batch: dict) -> torch.Tensor:
    """A wall of LiDAR returns 8-14 m ahead of the test camera, in both frames."""
    g = torch.Generator().manual_seed(5)
    pts = []
    for b in range(int(batch["batch_size"])):
        xyz = torch.rand(300, 3, generator=g) * torch.tensor([6.0, 16.0, 3.0]) \
            + torch.tensor([9.5, -8.0, 0.0])
        pts.append(torch.cat([torch.full((300, 1), float(b)), xyz, torch.zeros(300, 1)], 1))
    return torch.cat(pts)


def test_imkd_loss_adds_depth_and_steps_lower_it() -> None:
    torch.manual_seed(0)
    student = create_model("imkd-student", **TINY, intensity_gate=False).train()
    batch = {**_batch(seed=3), "lidar": _lidar_for(_batch(seed=3))}
    targets = [{"boxes": torch.tensor([[8.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3]]),
                "labels": torch.tensor([0])}] * 2
    adapters = IMKDAdapters(8, 8, level1=False, level2=False)
    with_depth = IMKDLoss(torch.nn.Identity(), adapters, (0.0, 0.0, 0.0), TINY[
        "point_cloud_range_m"], (2.0, (TINY["depth_range_m"], TINY["depth_bins"])))
    plain = IMKDLoss(torch.nn.Identity(), adapters, (0.0, 0.0, 0.0),
                     TINY["point_cloud_range_m"])
    first = with_depth(student, batch, targets)
    assert "loss_depth" not in plain(student, batch, targets)
    assert first["loss_depth"].item() > 0
    torch.testing.assert_close(first["loss"], first["loss_det"] + 2.0 * first["loss_depth"])
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(8):
        opt.zero_grad()
        with_depth(student, batch, targets)["loss"].backward()
        opt.step()
    assert with_depth(student, batch, targets)["loss_depth"].item() < first["loss_depth"].item()
