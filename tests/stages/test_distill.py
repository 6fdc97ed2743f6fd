"""SCKD distillation: each loss is zero at its target, adapters fit the teacher, steps lower the
loss, and a distill run's lineage reaches the raw files through pseudo-labels and the teacher."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.models import create_model
from kdpipe.models.distill import SCKDAdapters, feature_mse
from kdpipe.pipeline import ancestry
from kdpipe.pipeline.store import Workspace
from kdpipe.testing import TINY_DETECTOR

TINY = TINY_DETECTOR
GT = torch.tensor([[10.3, 2.1, -1.0, 4.2, 1.8, 1.5, 0.3], [20.7, -5.2, -0.8, 0.8, 0.6, 1.7, -2.5]])


def test_feature_losses_zero_at_target_positive_otherwise() -> None:
    teacher = create_model("sckd-teacher", **TINY).eval()
    student = create_model("radar-only", **TINY)
    c = teacher.config.encoder_channels
    ad = SCKDAdapters(student.config.encoder_channels, c, 2 * c, lrfd=True, frfd=True)
    f_s = torch.randn(2, 16, 64, 64)
    lidar_target = ad.lidar(f_s).detach()
    fusion_target = torch.cat([a(f_s) for a in ad.fusion], 1).detach()
    assert lidar_target.shape == (2, c, 64, 64) and fusion_target.shape == (2, 2 * c, 64, 64)
    assert ad.lrfd(f_s, lidar_target).item() == 0.0
    assert ad.frfd(f_s, fusion_target).item() == 0.0
    assert ad.lrfd(f_s, lidar_target + 0.1).item() > 0
    assert ad.frfd(f_s, fusion_target * 1.1).item() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        feature_mse(f_s, lidar_target[:, :8])
    one = SCKDAdapters(16, c, 2 * c, lrfd=False, frfd=True, frfd_adapters=1)
    assert one.lidar is None and len(one.fusion) == 1


def test_adapters_match_the_teacher_feature_maps() -> None:
    teacher = create_model("sckd-teacher", **TINY).eval()
    student = create_model("radar-only", **TINY).eval()
    pts = torch.tensor([[0, 12.0, 1.0, -0.5, 0.3], [1, 30.0, -4.0, -0.2, 0.5]])
    radar = torch.tensor([[0, 12.0, 1.0, -0.5, 5.0, 1.0, 0.0],
                          [1, 30.0, -4.0, -0.2, 2.0, 0.0, 0.0]])
    batch = {"lidar": pts, "radar": radar, "batch_size": 2}
    tf = teacher(batch)["features"]
    sf = student(batch)["features"]["radar"]
    ad = SCKDAdapters(sf.shape[1], tf["lidar"].shape[1], tf["fusion"].shape[1],
                      lrfd=True, frfd=True)
    assert ad.lidar(sf).shape == tf["lidar"].shape
    assert torch.cat([a(sf) for a in ad.fusion], 1).shape == tf["fusion"].shape


def test_ssod_loss_at_its_target_and_off_it() -> None:
    model = create_model("radar-only", **TINY)
    targets = [{"boxes": GT, "labels": torch.tensor([0, 1]), "ignore": torch.zeros(0, 7)}]
    t = model.build_targets(targets)
    logits = torch.logit(t.heatmap.clamp(1e-6, 1 - 1e-6))
    b, _, h, w = t.heatmap.shape
    box = torch.zeros(b * h * w, model.config.box_code_size)
    box[t.index] = t.box
    perfect = {"heatmap": logits, "box": box.view(b, h, w, -1).permute(0, 3, 1, 2)}
    at = model.loss(perfect, targets)
    off = model.loss({"heatmap": logits.roll(3, dims=-1), "box": perfect["box"] + 0.5}, targets)
    # The box term is exactly zero at the target; the Gaussian focal term is not (its negatives
    # inside a blob keep a small (1 - gt)^4 p^2 weight), so it is compared with a miss.
    assert at["loss_box"].item() == 0.0 < off["loss_box"].item()
    assert at["loss_heatmap"].item() < 0.1 * off["loss_heatmap"].item()


@pytest.fixture(scope="module")
def sckd_run(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> tuple[str, dict]:
    tmp = tmp_path_factory.mktemp("sckd")
    wf = tmp / "sckd.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "distill"]
seed = 2
[ingest]
format = "vod"
roots = ["{vod_world}"]
[teacher-train]
max_frames = 8
detector = {toml_value(TINY)}
[teacher-train.optim]
epochs = 2
[pseudo-label]
sigma = 0.05
[distill]
max_unlabeled_frames = 8
[distill.optim]
epochs = 4
batch_size = 4
lr_max = 0.003
""")
    ws = str(tmp / "ws")
    rep = run_workflow(wf, ws, scheduler="sync")
    return ws, {s["stage"]: s for s in rep["stages"]}


def test_distill_steps_lower_the_total_loss(sckd_run) -> None:  # type: ignore[no-untyped-def]
    import polars as pl

    _, st = sckd_run
    log = pl.read_parquet(st["distill"]["outputs"]["distill_log"])
    assert {"loss", "loss_det", "loss_lrfd", "loss_frfd"} <= set(log.columns)
    assert log["loss"][-1] < log["loss"][0], log["loss"].to_list()
    blob = torch.load(st["distill"]["outputs"]["student"], weights_only=True)
    assert blob["name"] == "radar-only"
    assert blob["config"]["pillar_size_m"] == TINY["pillar_size_m"]  # the teacher's grid


def test_distill_lineage_reaches_raw_files(sckd_run) -> None:  # type: ignore[no-untyped-def]
    ws, st = sckd_run
    node = ancestry.tree(Workspace(ws), "distill", st["distill"]["key"])
    paths: dict[str, list[str]] = {}

    def walk(n: dict, trail: tuple[str, ...]) -> None:
        trail = (*trail, n["stage"])
        if n["raw_files"]:
            paths.setdefault(" > ".join(trail), []).extend(r["path"] for r in n["raw_files"])
        for c in n["inputs"]:
            walk(c, trail)

    walk(node, ())
    via_pseudo = [k for k in paths if "pseudo-label" in k and "teacher-label" in k]
    via_teacher = [k for k in paths if k.startswith("distill > teacher-train")]
    assert via_pseudo and via_teacher
    raw = {Path(p).name for v in paths.values() for p in v}
    assert any(p.endswith(".bin") for p in raw) and any(p.endswith(".txt") for p in raw)


def test_max_gt_frames_gives_the_teachers_few_labels(sckd_run) -> None:  # type: ignore[no-untyped-def]
    """A label-scarce student's GT frames are the ones teacher-train's `max_frames` picked."""
    from kdpipe.datasets.store import IngestStore
    from kdpipe.runtime.frames import FrameSpec, training_frames
    from kdpipe.stages.distill import DistillConfig

    _, st = sckd_run
    inputs = {k: Path(v) for k, v in st["ingest"]["outputs"].items()}
    model = create_model("radar-only", **TINY)
    spec = FrameSpec(("radar",), "radar", tuple(model.config.point_cloud_range_m))
    classes = model.classes
    few = training_frames("d", DistillConfig(ssod=False, gt=True, max_gt_frames=3), inputs,
                          classes, spec)
    every = training_frames("d", DistillConfig(ssod=False, gt=True), inputs, classes, spec)
    teacher = IngestStore.from_inputs(inputs).select_frames(["train"], labeled_only=True,
                                                            max_frames=3)
    assert [r.frame_id for r in few.refs] == teacher["frame_id"].to_list()
    assert len(every.refs) > 3 and [r.frame_id for r in every.refs][:3] == \
        teacher["frame_id"].to_list()
