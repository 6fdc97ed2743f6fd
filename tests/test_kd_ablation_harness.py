"""benchmarks/kd_ablation.py's Table 4 workflow plans as kdpipe would run it (planning only,
nothing trained) with a label budget, a subset of volumes and a KD weight; its arguments are
checked; its goals block pairs each student with the baseline per seed."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from kdpipe.config import load_workflow
from kdpipe.pipeline.dag import build_plan

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kd_ablation.py"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    """The script as `python benchmarks/kd_ablation.py` loads it: its folder on sys.path, for
    its sibling modules (kd_rows, kd_table4, kd_report)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("kd_ablation", SCRIPT)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(SCRIPT.parent))


def args(harness: ModuleType, monkeypatch: pytest.MonkeyPatch, *argv: str) -> argparse.Namespace:
    monkeypatch.setattr(sys, "argv", ["kd_ablation.py", *argv])
    return harness.parse_args()


def test_table4_with_a_label_budget_and_one_volume_plans(
        harness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = args(harness, monkeypatch, "--table4", "--table4-labeled", "40", "--table4-volumes",
             "all", "--epochs", "60", "--table4-method", "ssod-occ", "--kd-weight", "0.3",
             "--kd-decay", "cosine", "--teacher-tta", "flip")
    evals = harness.workflow_table4(tmp_path / "wf.toml", tmp_path / "world", a, 7, 240, 800)
    assert list(evals) == ["radar baseline, 1/6 labeled (40)", "teacher, 1/6 labeled (40)",
                           "student (ssod-occ), 1040 unlabeled (all)"]
    wf = load_workflow(tmp_path / "wf.toml")
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False, seed=7)
    assert {"teacher-q", "radar-q", "distill-q-all"} <= set(plan.nodes)
    assert not any(n.startswith(("distill-q-quarter", "distill-q-train")) for n in plan.nodes)
    for stage in ("teacher-q", "radar-q"):
        cfg = plan.nodes[stage].config
        assert cfg.max_frames == 40 and cfg.optim.epochs == 60
    student = plan.nodes["distill-q-all"].config
    assert list(student.unlabeled_splits) == ["train", "unlabeled"]
    assert student.optim.epochs == 10  # max(10, 2,400 baseline frame-steps / 1,040 frames)
    assert student.kd["occupied"]["weight"] == 0.3 and student.kd["occupied"]["decay"] == "cosine"
    assert plan.nodes["label-q"].config.tta == "flip"
    assert plan.nodes["evaluate-q-teacher"].config.model_dump().get("tta") is None  # scored plain


def test_table4_volumes_are_checked(harness: ModuleType,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        args(harness, monkeypatch, "--table4", "--table4-volumes", "all,most")


def test_goals_pair_each_row_with_its_reference_per_seed(harness: ModuleType) -> None:
    base, student = "radar baseline, 1/6 labeled (40)", "student (ssod), 1040 unlabeled (all)"
    per_seed = [{base: {"EAA mAP ap11": b}, student: {"EAA mAP ap11": s}}
                for b, s in ((14.0, 30.0), (16.0, 31.0), (15.0, 32.0))]
    (goal,) = harness.goals_table4(per_seed).values()
    assert goal == {"mean": 16.0, "std": 1.0, "beyond_2_std": True}


def test_table4_oracle_trains_radar_only_on_the_gt_of_every_student_frame(
        harness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = tmp_path / "vod_8_0"
    sets = world / "lidar" / "ImageSets"
    sets.mkdir(parents=True)
    (world / "lidar" / "training" / "velodyne").mkdir(parents=True)
    (world / "lidar" / "training" / "velodyne" / "000001.bin").write_bytes(b"\0" * 16)
    (world / "radar").mkdir()
    (world / "radar" / "synth_scenes.json").write_text("{}")
    for name, ids in {"train": "000001 000002", "unlabeled": "000003 000004 000005",
                      "val": "000006", "full": "000001 000002 000003 000004 000005 000006"}.items():
        (sets / f"{name}.txt").write_text(ids.replace(" ", "\n") + "\n")
    a = args(harness, monkeypatch, "--table4", "--table4-labeled", "1", "--table4-volumes",
             "all", "--epochs", "60", "--table4-method", "ssod", "--table4-oracle")
    evals = harness.workflow_table4(tmp_path / "wf.toml", world, a, 0, 2, 3)
    assert evals["radar-only on the GT of the 5 frames (oracle)"] == "evaluate-q-oracle"
    oracle = world.with_name("vod_8_0_oracle")
    o_sets = oracle / "lidar" / "ImageSets"
    assert (o_sets / "train.txt").read_text().split() == [f"00000{i}" for i in range(1, 6)]
    assert (o_sets / "val.txt").read_text() == (sets / "val.txt").read_text()
    assert not (o_sets / "unlabeled.txt").exists()
    for f in ("lidar/training/velodyne/000001.bin", "radar/synth_scenes.json"):
        assert (oracle / f).samefile(world / f) and not (oracle / f).is_symlink()
    wf = load_workflow(tmp_path / "wf.toml")
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False, seed=0)
    trainer = plan.nodes["radar-oracle"]
    assert trainer.config.model == "radar-only" and list(trainer.config.splits) == ["train"]
    assert trainer.config.max_frames is None
    # the student's frame-steps: max(10, 60 epochs x 1 label / 5 frames) epochs of 5 frames
    assert trainer.config.optim.epochs == plan.nodes["distill-q-all"].config.optim.epochs == 12
    assert set(trainer.upstream.values()) == {"ingest-oracle"}
    assert plan.nodes["ingest-oracle"].config.roots == [str(oracle)]
    scorer = plan.nodes["evaluate-q-oracle"]
    assert scorer.upstream["checkpoint"] == "radar-oracle"
    assert scorer.upstream["frames"] == "ingest"  # scored on the same val as every other row


def test_table4_self_training_adds_a_round_2_teacher_and_its_student(
        harness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--self-train-sigma: the LiDAR+radar teacher re-trained on round 1's pseudo-labels (SSOD
    only: no ground truth beyond the 40 frames round 1 saw), labelling again at that sigma, and
    the method's student on those labels; both scored."""
    a = args(harness, monkeypatch, "--table4", "--table4-labeled", "40", "--table4-volumes",
             "all", "--epochs", "60", "--table4-method", "ssod", "--self-train-sigma", "0.5")
    evals = harness.workflow_table4(tmp_path / "wf.toml", tmp_path / "world", a, 7, 240, 800)
    assert evals["teacher round 2 (re-trained on its pseudo-labels)"] == "evaluate-q-r2-teacher"
    assert evals["student (ssod), round-2 labels at sigma 0.5"] == "evaluate-q-r2"
    wf = load_workflow(tmp_path / "wf.toml")
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False, seed=7)
    r2 = plan.nodes["teacher-r2"].config
    assert r2.student == "sckd-teacher" and r2.ssod and not r2.gt and not r2.feature_kd
    assert list(r2.unlabeled_splits) == ["train", "unlabeled"] and r2.optim.epochs == 10
    assert plan.nodes["pseudo-r2"].config.sigma == 0.5
    student = plan.nodes["distill-q-r2"]
    assert student.config.student == "radar-only" and not student.config.feature_kd
    assert student.upstream["pseudo_labels"] == "pseudo-r2"
    assert plan.nodes["label-r2"].upstream["teacher"] == "teacher-r2"
    assert plan.nodes["teacher-r2"].upstream["pseudo_labels"] == "pseudo-q"
