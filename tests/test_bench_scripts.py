"""benchmarks/: run_all finds the scripts that run as benchmarks (not kd_ablation's helper
modules), the IMKD figure reads old and new JSON, and the IMKD harness's depth rows plan with
LiDAR depth on and the other rows without it (planning only, nothing trained)."""
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

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def load() -> Iterator[object]:
    """Loads a benchmark script as `python benchmarks/X.py` does: its folder on sys.path."""
    sys.path.insert(0, str(BENCH))

    def _load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    try:
        yield _load
    finally:
        sys.path.remove(str(BENCH))


def test_run_all_discovers_benchmarks_not_helper_modules(load) -> None:  # type: ignore[no-untyped-def]
    found = load("run_all").discover()
    assert {"ingest", "ingest_tail", "ingest_nuscenes", "kd_ablation", "imkd"} <= set(found)
    assert not {"kd_rows", "kd_table4", "kd_report", "bench_figures", "run_all"} & set(found)


def test_imkd_figure_reads_old_and_new_goal_blocks(load) -> None:  # type: ignore[no-untyped-def]
    figures = load("bench_figures")
    old = {"goal": {"IMKD (L1+L2+L3) - no KD, NDS": -0.13, "need": ">= 3", "met": False}}
    new = {"goal": {"best KD row": "camera+radar student + LiDAR depth only",
                    "best KD row - no KD, NDS": 0.3, "need": ">= 3", "met": False}}
    (a,), (b,) = figures.figure_rows("imkd", old), figures.figure_rows("imkd", new)
    assert a["measured"] == "-0.13" and a["met"] is False
    assert b["measured"] == "0.3" and "LiDAR depth only" in b["figure"]


def test_imkd_depth_rows_plan_with_lidar_depth(load, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    imkd = load("imkd")
    a = imkd.parser().parse_args(["--cell-m", "1.6", "--student-epochs", "3",
                                  "--depth-weight", "3", "--rows", "nokd,depth,l123d"])
    wf = load_workflow(imkd.workflow(tmp_path / "wf.toml", tmp_path / "world", a))
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False, seed=0)
    students = {n: plan.nodes[f"student-{n}"].config for n in ("nokd", "depth", "l123d")}
    assert not any(n.startswith("student-l1") and n != "student-l123d" for n in plan.nodes)
    assert students["nokd"].depth_weight == 0.0 and students["nokd"].level3_weight == 0.0
    assert students["depth"].depth_weight == 3.0 and students["depth"].level1_weight == 0.0
    assert students["l123d"].depth_weight == 3.0 and students["l123d"].level3_weight == 1.0
    assert {"evaluate-nokd", "evaluate-depth", "evaluate-l123d"} <= set(plan.nodes)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown rows"):
        imkd.parse_rows("nokd,l4")


def test_imkd_label_scarce_plans_the_same_few_labels_for_teacher_and_students(  # type: ignore[no-untyped-def]
        load, tmp_path: Path) -> None:
    imkd = load("imkd")
    world = tmp_path / "world"
    (world / "v1.0-mini").mkdir(parents=True)
    (world / "v1.0-mini" / "splits.json").write_text(
        '{"synth_train": ["a", "b", "c", "d"], "synth_val": ["e"]}')
    a = imkd.parser().parse_args(["--samples", "10", "--student-epochs", "3", "--labeled",
                                  "10", "--rows", "gt,nokd,l123,gtl123"])
    wf = load_workflow(imkd.workflow(tmp_path / "wf.toml", world, a))
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False, seed=0)
    assert plan.nodes["teacher-train"].config.max_frames == 10
    gt, nokd, l123 = (plan.nodes[f"student-{n}"].config for n in ("gt", "nokd", "l123"))
    assert all(c.max_gt_frames == 10 and c.gt for c in (gt, nokd, l123))
    assert not gt.ssod and nokd.ssod and l123.ssod
    # GT only sees the no-KD row's frame-steps: (40 SSOD + 10 GT frames) x 3 epochs on 10 frames
    assert (gt.optim.epochs, nokd.optim.epochs) == (15, 3)
    assert gt.level3_weight == nokd.level3_weight == 0.0 and l123.level3_weight == 1.0
    gtl = plan.nodes["student-gtl123"].config
    assert not gtl.ssod and gtl.level1_weight == 0.01 and gtl.optim.epochs == 15
    table = {imkd.STUDENTS[n].label: {"NDS": v} for n, v in (("gt", 10.0), ("nokd", 14.5),
                                                          ("l123", 15.0))}
    g = imkd.goal(table, ["gt", "nokd", "l123"])
    assert g["best KD row - no KD, NDS"] == 0.5 and g["best KD row - GT only, NDS"] == 5.0
    assert g["pseudo-labels alone (no KD - GT only), NDS"] == 4.5 and g["met"] is False


def test_contention_figure_reads_step_and_pipeline_json(load) -> None:  # type: ignore[no-untyped-def]
    import json

    figures = load("bench_figures")
    docs = Path(__file__).resolve().parents[1] / "docs" / "bench"
    old = json.loads((docs / "contention_steps_2026-11-30.json").read_text())
    (steps,) = figures.figure_rows("contention", old)
    assert steps["measured"] == "1.97x" and steps["met"] is True
    (now,) = figures.figure_rows("contention", json.loads((docs / "contention.json").read_text()))
    assert now["figure"].startswith("a pipeline run") and now["met"] is True
    pipe = {"mode": "pipeline", "slowdown": 2.6, "met": False, "goal": "slowdown <= 2.5x",
            "runs": {"alone": {"wall_s": 100.0}, "beside": {"wall_s": 260.0},
                     "alone_again": {"wall_s": 100.0}}}
    (r,) = figures.figure_rows("contention", pipe)
    assert r["measured"] == "2.6x (260.0 s)" and r["met"] is False and "100.0" in r["baseline"]
