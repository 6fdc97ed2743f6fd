"""SCKD modality dropout gate (Eqs. 6-7) and Adaptive Fusion inside the teacher."""
from __future__ import annotations

import torch

from kdpipe.models import AdaptiveFusion, create_model, modality_dropout_gate


def _batch(n_frames: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    lidar, radar = [], []
    for b in range(n_frames):
        xyz = torch.rand(500, 3, generator=g) * torch.tensor([50.0, 50.0, 4.0]) - torch.tensor(
            [0.0, 25.0, 2.5])
        lidar.append(torch.cat([torch.full((500, 1), float(b)), xyz, torch.rand(500, 1)], 1))
        radar.append(torch.cat([torch.full((50, 1), float(b)), xyz[:50], torch.randn(50, 3)], 1))
    return {"lidar": torch.cat(lidar), "radar": torch.cat(radar), "batch_size": n_frames}


def test_gate_rates_match_the_paper() -> None:
    g = torch.Generator().manual_seed(1234)
    g_lidar, g_radar = modality_dropout_gate(200_000, 0.2, 0.2, generator=g)
    drop_lidar = 1 - g_lidar.mean().item()
    drop_radar = 1 - g_radar.mean().item()
    assert abs(drop_lidar - 0.04) < 0.003  # P_drop * P_L
    assert abs(drop_radar - 0.16) < 0.005  # P_drop * (1 - P_L)
    assert ((g_lidar + g_radar) >= 1).all()  # never both
    assert set(g_lidar.unique().tolist()) <= {0.0, 1.0}


def test_eval_never_drops_and_train_drops() -> None:
    torch.manual_seed(0)
    batch = _batch()
    # p_drop = 1, p_lidar = 1: in training LiDAR is always dropped, in eval never.
    model = create_model("sckd-teacher", p_drop=1.0, p_lidar=1.0)
    c = model.config.encoder_channels
    model.eval()
    with torch.no_grad():
        feats = model(batch)["features"]
        fused, weights = model.fusion(feats["lidar"], feats["radar"])
    assert torch.equal(feats["fusion"], fused)
    assert feats["fusion"][:, :c].abs().sum() > 0 and feats["fusion"][:, c:].abs().sum() > 0
    assert torch.allclose(weights.sum(1), torch.ones_like(weights[:, 0]))
    model.train()
    feats = model(batch)["features"]
    assert feats["fusion"][:, :c].abs().sum() == 0 and feats["fusion"][:, c:].abs().sum() > 0
    assert feats["lidar"].abs().sum() > 0  # the tap is the pre-gate encoder output
    # p_drop = 0: nothing dropped in training either.
    model = create_model("sckd-teacher", p_drop=0.0).train()
    feats = model(batch)["features"]
    assert feats["fusion"][:, :c].abs().sum() > 0 and feats["fusion"][:, c:].abs().sum() > 0


def test_adaptive_fusion_shapes_and_concat_variant() -> None:
    af = AdaptiveFusion(8).eval()
    f_l, f_r = torch.randn(2, 8, 16, 12), torch.randn(2, 8, 16, 12)
    fused, w = af(f_l, f_r)
    assert fused.shape == (2, 16, 16, 12) and w.shape == (2, 2, 16, 12)
    assert torch.allclose(fused[:, :8], w[:, :1] * f_l)
    model = create_model("sckd-teacher", fusion="concat").eval()
    assert model.fusion is None
    batch = _batch()
    with torch.no_grad():
        feats = model(batch)["features"]
    assert torch.equal(feats["fusion"], torch.cat([feats["lidar"], feats["radar"]], 1))
