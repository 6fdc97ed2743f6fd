"""Contracts every registered model keeps (timm-style, parametrised over list_models())."""
from __future__ import annotations

import pydantic
import pytest
import torch

from kdpipe.models import (
    DetectorConfig,
    create_model,
    from_checkpoint,
    list_models,
    register_model,
    to_checkpoint,
)

B = 2


def _points(n_per_frame: int, n_feat: int, batch: int, seed: int) -> torch.Tensor:
    """(batch * n, 1 + n_feat) rows [b, x, y, z, ...]; ~10% outside the VoD range."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        xyz = torch.rand(n_per_frame, 3, generator=g) * torch.tensor([60.0, 60.0, 6.0])
        xyz -= torch.tensor([4.0, 30.0, 3.5])
        rest = torch.randn(n_per_frame, n_feat - 3, generator=g)
        rows.append(torch.cat([torch.full((n_per_frame, 1), float(b)), xyz, rest], 1))
    return torch.cat(rows)


def _cameras(batch: int, seed: int, n_cam: int = 1, hw: tuple[int, int] = (32, 64)) -> dict:
    """Camera inputs as the stages build them: (B, N, 3, H, W) uint8 images, K (B, N, 3, 3) of
    that image, camera_to_ego (B, N, 4, 4) (optical frame: x right, y down, z forward)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    k = torch.tensor([[w * 0.6, 0.0, w / 2], [0.0, w * 0.6, h / 2], [0.0, 0.0, 1.0]])
    t = torch.eye(4)
    t[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    t[:3, 3] = torch.tensor([1.5, 0.0, 1.5])
    return {"camera": torch.randint(0, 256, (batch, n_cam, 3, h, w), generator=g,
                                    dtype=torch.uint8),
            "camera_intrinsics": k.expand(batch, n_cam, 3, 3).clone(),
            "camera_to_ego": t.expand(batch, n_cam, 4, 4).clone()}


def _batch(batch: int = B, n_lidar: int = 2000, n_radar: int = 100, seed: int = 0) -> dict:
    """Every input any model reads; a model ignores the keys of modalities it does not use."""
    return {"lidar": _points(n_lidar, 4, batch, seed),
            "radar": _points(n_radar, 6, batch, seed + 1), "batch_size": batch,
            **_cameras(batch, seed + 2)}


def _targets(batch: int = B) -> list[dict]:
    boxes = torch.tensor([[10.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3],
                          [20.0, -5.0, -1.0, 0.8, 0.6, 1.7, 1.0],
                          [30.0, 8.0, -1.0, 1.8, 0.7, 1.6, -2.0]])
    return [{"boxes": boxes, "labels": torch.tensor([0, 1, 2])} for _ in range(batch)]


@pytest.mark.parametrize("name", list_models())
def test_attributes_and_output_shapes(name: str) -> None:
    model = create_model(name)
    cfg = model.config
    assert isinstance(cfg, DetectorConfig) and model.name == name
    assert model.classes == cfg.classes
    assert set(model.modalities) <= {"lidar", "radar", "camera"} and model.modalities
    out = model.eval()(_batch())
    w, h = cfg.grid_size
    ho, wo = h // cfg.out_stride, w // cfg.out_stride
    assert out["heatmap"].shape == (B, len(cfg.classes), ho, wo)
    assert out["box"].shape == (B, 8, ho, wo)
    assert out["bev"].shape[0] == B and out["bev"].shape[2:] == (ho, wo)
    c = cfg.encoder_channels
    assert set(out["features"]) == set(model.modalities) | ({"fusion"} if len(model.modalities) == 2
                                                             else set())
    for mod in model.modalities:
        assert out["features"][mod].shape == (B, c, h, w)
    if "fusion" in out["features"]:
        assert out["features"]["fusion"].shape == (B, 2 * c, h, w)


def test_student_radar_map_matches_teacher_lidar_map() -> None:
    """Distillation adapters need F_R(student) and F_L(teacher) on the same (C, H, W)."""
    batch = _batch()
    with torch.no_grad():
        f_t = create_model("sckd-teacher").eval()(batch)["features"]
        f_s = create_model("radar-only").eval()(batch)["features"]
    assert f_s["radar"].shape == f_t["lidar"].shape == f_t["radar"].shape


@pytest.mark.parametrize("name", list_models())
def test_backward_gives_finite_grads_on_every_param(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, p_drop=0.0).train()
    out = model(_batch())
    losses = model.loss(out, _targets())
    assert set(losses) >= {"loss", "loss_heatmap", "loss_box"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_state_dict_round_trip_is_exact(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = create_model(name)
    model.train()(_batch(seed=5))  # move BN running stats away from their init
    model.eval()
    batch = _batch(seed=7)
    with torch.no_grad():
        ref = model(batch)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    clone = create_model(name).eval()
    clone.load_state_dict(torch.load(path, weights_only=True))
    torch.save(to_checkpoint(model), tmp_path / "ckpt.pt")
    rebuilt = from_checkpoint(torch.load(tmp_path / "ckpt.pt", weights_only=True)).eval()
    assert rebuilt.config == model.config and rebuilt.name == name
    with torch.no_grad():
        for m in (clone, rebuilt):
            out = m(batch)
            assert torch.equal(out["heatmap"], ref["heatmap"])
            assert torch.equal(out["box"], ref["box"])


@pytest.mark.parametrize("name", list_models())
def test_empty_point_clouds_and_targets(name: str) -> None:
    model = create_model(name).train()
    batch = {"lidar": torch.zeros(0, 5), "radar": torch.zeros(0, 7), "batch_size": B}
    out = model(batch)
    empty = {"boxes": torch.zeros(0, 7), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model.loss(out, [empty] * B)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    # One frame with points, one without; boxes only in the empty frame.
    batch = _batch(batch=1)
    batch["batch_size"] = 2
    batch.update(_cameras(2, seed=0))  # images are per frame: an empty cloud still has them
    out = model(batch)
    tg = [{"boxes": torch.zeros(0, 7), "labels": torch.zeros(0, dtype=torch.long)}, _targets(1)[0]]
    assert torch.isfinite(model.loss(out, tg)["loss"])
    dets = model.eval().decode(model(batch), score_threshold=0.0, top_k=7)
    assert len(dets) == 2 and all(d["boxes"].shape == (7, 7) for d in dets)


def test_single_point_and_missing_modality() -> None:
    """A one-point radar scan in training (BatchNorm edge) and a batch without "lidar"."""
    model = create_model("radar-only").train()
    radar = torch.tensor([[0.0, 10.0, 0.0, 0.0, 1.0, 2.0, 0.0]])
    out = model({"radar": radar, "batch_size": 1})
    assert torch.isfinite(out["heatmap"]).all()
    teacher = create_model("sckd-teacher").train()
    assert torch.isfinite(teacher({"radar": radar, "batch_size": 1})["heatmap"]).all()
    # Every LiDAR point out of range (behind, too far, too high, bad batch index).
    lidar = torch.tensor([[0.0, -5.0, 0.0, 0.0, 1.0], [0.0, 100.0, 0.0, 0.0, 1.0],
                          [0.0, 10.0, 0.0, 9.0, 1.0], [3.0, 10.0, 0.0, 0.0, 1.0]])
    out = teacher({"lidar": lidar, "radar": radar, "batch_size": 1})
    assert out["features"]["lidar"].abs().sum() == 0
    assert out["features"]["radar"].abs().sum() > 0


def test_velocity_head() -> None:
    model = create_model("radar-only", with_velocity=True)
    out = model.eval()(_batch())
    assert out["box"].shape[1] == 10
    tg = [{"boxes": torch.tensor([[10.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3, 1.0, -2.0]]),
           "labels": torch.tensor([0])}] * B
    assert torch.isfinite(model.loss(out, tg)["loss"])
    assert model.decode(out, top_k=5)[0]["boxes"].shape == (5, 9)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("radar-only")(lambda **cfg: torch.nn.Identity())
    with pytest.raises(KeyError, match="radar-only"):
        create_model("no-such-model")
    with pytest.raises(pydantic.ValidationError):
        create_model("radar-only", not_a_field=1)
    assert list_models() == sorted(list_models())
    assert {"sckd-teacher", "lidar-only", "radar-only"} <= set(list_models())


def test_config_presets_and_validation() -> None:
    small, paper = DetectorConfig(), DetectorConfig(size="paper")
    assert small.grid_size == (128, 128) and small.out_stride == 1
    assert paper.encoder_channels == 128 and paper.encoder_hidden_channels == 64
    assert paper.backbone_layer_nums == (5, 5) and paper.backbone_strides == (1, 2)
    assert paper.backbone_filters == (128, 256) and paper.upsample_filters == (256, 256)
    assert DetectorConfig(size="paper", pillar_size_m=0.2).grid_size == (256, 256)
    assert DetectorConfig(**paper.model_dump(mode="json")) == paper
    with pytest.raises(pydantic.ValidationError):
        small.pillar_size_m = 0.2  # frozen
    with pytest.raises(pydantic.ValidationError, match="multiple"):
        DetectorConfig(pillar_size_m=0.3)
    with pytest.raises(pydantic.ValidationError):
        DetectorConfig(size="huge")
    model = create_model("sckd-teacher", size="paper")
    n_params = sum(p.numel() for p in model.parameters())
    assert 3e6 < n_params < 1e7  # SECOND-sized, not the small one
