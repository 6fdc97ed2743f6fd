"""Feature-distillation methods (models/kd/): each loss is zero at its target and positive off
it, masks select the cells they should, adapters fit the maps they target, a few optimiser
steps lower each loss, and the torch-free option table matches the registered builders."""
from __future__ import annotations

import inspect

import pytest
import torch
from pydantic import ValidationError

from kdpipe.models import create_model
from kdpipe.models.kd import KDLoss, KDShapes, create_kd, get_kd, list_kd
from kdpipe.models.kd.masks import (
    activation_mask,
    box_mask,
    fit_to,
    occupancy_mask,
    teacher_mask,
)
from kdpipe.models.names import KD_METHODS
from kdpipe.stages.distill import DistillConfig
from kdpipe.testing import TINY_DETECTOR

TINY = TINY_DETECTOR
BOXES = torch.tensor([[10.3, 2.1, -1.0, 4.2, 1.8, 1.5, 0.3],
                      [30.7, -5.2, -0.8, 0.8, 0.6, 1.7, -2.5]])
TARGETS = [{"boxes": BOXES, "labels": torch.tensor([0, 1])},
           {"boxes": torch.zeros(0, 7), "labels": torch.zeros(0, dtype=torch.long)}]


def _batch() -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    lidar = torch.cat([torch.randint(0, 2, (400, 1), generator=g).float(),
                       torch.rand(400, 1, generator=g) * 50, torch.rand(400, 1, generator=g) * 50
                       - 25, torch.rand(400, 2, generator=g)], 1)
    radar = torch.cat([torch.randint(0, 2, (60, 1), generator=g).float(),
                       torch.rand(60, 1, generator=g) * 50, torch.rand(60, 1, generator=g) * 50
                       - 25, torch.rand(60, 4, generator=g)], 1)
    return {"lidar": lidar, "radar": radar, "batch_size": 2}


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module, KDShapes]:
    torch.manual_seed(0)
    teacher = create_model("sckd-teacher", **TINY).eval()
    student = create_model("radar-only", **TINY)
    c = teacher.config.encoder_channels
    shapes = KDShapes(student.config.encoder_channels, c, 2 * c, student.backbone.out_channels,
                      teacher.backbone.out_channels, 3, student.config.box_code_size)
    return teacher, student, shapes


def test_option_table_matches_the_registered_builders() -> None:
    assert set(KD_METHODS) == set(list_kd())
    for name in list_kd():
        params = [p for p in inspect.signature(get_kd(name).build).parameters if p != "shapes"]
        assert tuple(params) == KD_METHODS[name], name


def test_masks_select_the_cells_they_should(models: tuple) -> None:
    _, student, _ = models
    t = student.build_targets(TARGETS)
    m = box_mask(t)                                           # (2, 1, 64, 64) at 0.8 m cells
    assert m.shape == (2, 1, 64, 64)
    # Box 1 centre (10.3, 2.1) m -> cell x = 12, y = (2.1 + 25.6) / 0.8 = 34.
    assert m[0, 0, 34, 12] == 1.0 and m[0, 0, 34, 30] == 0.0 and m[1].sum() == 0
    assert m[0, 0, 34, 13] < 1.0 and m[0, 0, 34, 13] > 0.0   # the Gaussian falls off
    heat = torch.full((1, 3, 4, 4), -10.0)
    heat[0, 1, 2, 3] = 0.0                                   # p = 0.5 at one cell
    tm = teacher_mask(heat, threshold=0.1)
    assert tm[0, 0, 2, 3] == pytest.approx(0.5) and tm.sum() == pytest.approx(0.5)
    feat = torch.zeros(1, 4, 3, 3)
    feat[0, :, 1, 1], feat[0, :, 0, 2] = 2.0, 0.3
    act = activation_mask(feat, threshold=0.2)              # 0.3 < 0.2 x 2.0? no: 0.3 < 0.4
    assert act[0, 0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert activation_mask(feat, threshold=0.1)[0, 0, 0, 2] == 1
    pillars = torch.zeros(2, 4, 3, 3)
    pillars[0, 2, 1, 0], pillars[1, 0, 2, 2] = -0.7, 1e-3  # any non-zero channel counts
    assert occupancy_mask(pillars)[:, 0].tolist() == [[[0, 0, 0], [1, 0, 0], [0, 0, 0]],
                                                      [[0, 0, 0], [0, 0, 0], [0, 0, 1]]]
    enc = student({**_batch()})["features"]["radar"]         # 60 radar points, 2 frames
    occ = occupancy_mask(enc)
    assert 0 < occ.sum() <= 60 and set(occ.unique().tolist()) <= {0.0, 1.0}
    coarse = fit_to(m, (32, 32))                             # max over 2x2 blocks
    assert coarse[0, 0, 17, 6] == 1.0
    assert fit_to(coarse, (64, 64))[0, 0, 34, 12] == 1.0


@pytest.mark.parametrize("name", sorted(KD_METHODS))
def test_each_loss_is_zero_at_its_target_positive_off_it(models: tuple, name: str) -> None:
    teacher, student, shapes = models
    batch = _batch()
    term = create_kd(name, shapes)
    s_out = student(batch)
    t_out = teacher(batch)
    targets = student.build_targets(TARGETS)
    # Build the teacher output the term would be at rest on: its adapters' image of the student.
    at_rest = {"features": dict(t_out["features"]), "bev": t_out["bev"],
               "heatmap": s_out["heatmap"].detach(), "box": s_out["box"].detach()}
    for sub_name, sub in (term.terms.items() if hasattr(term, "terms") else [(name, term)]):
        del sub_name
        if hasattr(sub, "adapter"):
            tap = sub.spec.tap
            img = sub.adapter(s_out["bev"] if tap == "bev" else s_out["features"]["radar"])
            if tap == "bev":
                at_rest["bev"] = img.detach()
            else:
                at_rest["features"][sub.spec.teacher_tap] = img.detach()
        elif hasattr(sub, "adapters"):
            ad, f_s = sub.adapters, s_out["features"]["radar"]
            if ad.lidar is not None:
                at_rest["features"]["lidar"] = ad.lidar(f_s).detach()
            if ad.fusion is not None:
                at_rest["features"]["fusion"] = torch.cat([a(f_s) for a in ad.fusion], 1).detach()
    # Foreground masks need the teacher's heatmap to show the objects too.
    zero = term(s_out, at_rest, targets)
    assert zero and all(k.startswith("loss_") for k in zero)
    for key, value in zero.items():
        assert value.item() == pytest.approx(0.0, abs=1e-6), key
    off = {"features": {k: v + 0.5 for k, v in at_rest["features"].items()},
           "bev": at_rest["bev"] + 0.5, "heatmap": at_rest["heatmap"] + 1.0,
           "box": at_rest["box"] + 0.5}
    assert sum(v.item() for v in term(s_out, off, targets).values()) > 0


@pytest.mark.parametrize("name", sorted(KD_METHODS))
def test_a_few_steps_lower_each_loss(models: tuple, name: str) -> None:
    teacher, _, shapes = models
    torch.manual_seed(1)
    over = get_kd(name).student_overrides({})
    student = create_model("radar-only", **TINY, **over)
    loss_fn = KDLoss(teacher, {name: (1.0, create_kd(name, shapes))})
    params = [*student.parameters(), *loss_fn.trainable.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    batch = _batch()
    kd_keys: list[str] = []

    def kd_loss() -> float:
        out = loss_fn(student, batch, TARGETS)
        kd_keys[:] = [k for k in out if k not in ("loss", "loss_det", "loss_heatmap",
                                                   "loss_box")]
        return float(sum(out[k].detach() for k in kd_keys))

    student.train()
    first = kd_loss()
    for _ in range(8):
        opt.zero_grad()
        loss_fn(student, batch, TARGETS)["loss"].backward()
        opt.step()
    assert kd_keys, "the method added no loss term"
    assert kd_loss() < first


def test_radardistill_builds_the_alignment_module_into_the_student() -> None:
    over = get_kd("radardistill").student_overrides({"align_layers": 3})
    assert over == {"radar_align_layers": 3}
    student = create_model("radar-only", **TINY, **over)
    assert student.align is not None and len(student.align.blocks) == 9
    out = student(_batch())
    assert out["features"]["radar"].shape == out["features"]["radar_raw"].shape
    assert create_model("radar-only", **TINY).align is None


def test_distill_config_checks_methods_at_plan_time() -> None:
    ok = DistillConfig(kd={"fg-gaussian": {"weight": 2.0, "tap": "encoder"}},
                       lrfd_weight=0, frfd_weight=0)
    assert ok.feature_kd and ok.kd["fg-gaussian"]["weight"] == 2.0
    with pytest.raises(ValidationError, match="unknown KD method 'fg'"):
        DistillConfig(kd={"fg": {}})
    with pytest.raises(ValidationError, match="has no option radius"):
        DistillConfig(kd={"response": {"radius": 2}})
    with pytest.raises(ValidationError, match="weight must be a number"):
        DistillConfig(kd={"response": {"weight": -1}})
    with pytest.raises(ValidationError, match="lrfd is set twice"):
        DistillConfig(kd={"lrfd": {}})
    assert not DistillConfig(lrfd_weight=0, frfd_weight=0).feature_kd
    assert DistillConfig(kd={"occupied": {"weight": 0.3, "decay": "cosine"}}, lrfd_weight=0,
                         frfd_weight=0).kd["occupied"]["decay"] == "cosine"
    with pytest.raises(ValidationError, match="decay must be one of none, linear, cosine"):
        DistillConfig(kd={"occupied": {"decay": "exp"}})


def test_a_decaying_weight_scales_its_term_by_the_fraction_of_training_done(models: tuple
                                                                            ) -> None:
    from kdpipe.models.kd.loss import DECAYS
    from kdpipe.models.names import KD_DECAYS

    assert tuple(DECAYS) == KD_DECAYS  # plan-time names = the run-time schedules
    teacher, _, shapes = models
    torch.manual_seed(1)
    student = create_model("radar-only", **TINY)
    term = create_kd("occupied", shapes)
    plain = KDLoss(teacher, {"occupied": (0.5, term)})
    cos = KDLoss(teacher, {"occupied": (0.5, term)}, {"occupied": "cosine"})
    lin = KDLoss(teacher, {"occupied": (0.5, term)}, {"occupied": "linear"})
    student.eval()
    for frac, f_cos, f_lin in ((0.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.25, 0.8536, 0.75),
                               (1.0, 0.0, 0.0)):
        for fn in (plain, cos, lin):
            fn.set_progress(frac)
        out = {n: fn(student, _batch(), TARGETS) for n, fn in
               (("plain", plain), ("cos", cos), ("lin", lin))}
        kd = out["plain"]["loss"] - out["plain"]["loss_det"]  # 0.5 * the term, never decayed
        assert kd.item() > 0
        for name, factor in (("cos", f_cos), ("lin", f_lin)):
            got = out[name]["loss"] - out[name]["loss_det"]
            assert got.item() == pytest.approx(factor * kd.item(), rel=1e-3, abs=1e-7), (name,
                                                                                          frac)
    with pytest.raises(ValueError, match="unknown KD weight decay"):
        KDLoss(teacher, {"occupied": (0.5, term)}, {"occupied": "exp"})
