"""Plan errors are raised before anything runs; slicing selects what users expect."""
from __future__ import annotations

from pathlib import Path

import pytest

from kdpipe.pipeline.dag import build_plan, select
from kdpipe.pipeline.errors import ConfigError, PlanError
from kdpipe.pipeline.stage import (
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    ZarrArtifact,
)
from kdpipe.testing import REPORT, SCALE, SOURCE


class Cfg(StageConfig):
    n: int = 1


def _stage(name: str, ins: tuple[Port, ...], outs: tuple[Port, ...]) -> Stage[Cfg]:
    return Stage(name=name, config=Cfg, run=lambda ctx: None, inputs=ins, outputs=outs)


def P(name: str, kind: type = ParquetArtifact, schema: str | None = None) -> Port:
    return Port(name, kind, schema)


def test_toposort_follows_ports_not_listing_order(tmp_path: Path) -> None:
    plan = build_plan([REPORT, SCALE, SOURCE], {"toy-source": {"root": str(tmp_path)}})
    assert plan.order == ("toy-source", "toy-scale", "toy-report")
    assert plan.nodes["toy-report"].upstream == {"scaled": "toy-scale"}


def test_cycle_is_reported_with_its_members() -> None:
    a = _stage("a", (P("y"),), (P("x"),))
    b = _stage("b", (P("x"),), (P("y"),))
    c = _stage("c", (), (P("z"),))
    with pytest.raises(PlanError, match="cycle between stages: a -> b"):
        build_plan([c, a, b], {})


def test_missing_producer_names_stage_and_artifact() -> None:
    with pytest.raises(PlanError, match="stage 'b' needs 'frames' \\(zarr\\) but no stage"):
        build_plan([_stage("b", (P("frames", ZarrArtifact),), (P("x"),))], {})


def test_port_kind_mismatch() -> None:
    a = _stage("a", (), (P("x", ParquetArtifact),))
    b = _stage("b", (P("x", JsonArtifact),), (P("y"),))
    msg = "port type mismatch: 'a' writes 'x' as parquet, 'b' reads it as json"
    with pytest.raises(PlanError, match=msg):
        build_plan([a, b], {})


def test_schema_mismatch() -> None:
    a = _stage("a", (), (P("x", schema="boxes/1"),))
    b = _stage("b", (P("x", schema="boxes/2"),), (P("y"),))
    with pytest.raises(PlanError, match="schema mismatch on 'x'"):
        build_plan([a, b], {})


def test_duplicate_producer() -> None:
    with pytest.raises(PlanError, match="produced by both 'a' and 'b'"):
        build_plan([_stage("a", (), (P("x"),)), _stage("b", (), (P("x"),))], {})


def test_unknown_config_key_and_bad_type() -> None:
    a = _stage("a", (), (P("x"),))
    with pytest.raises(ConfigError, match="a.typo: unknown config key"):
        build_plan([a], {"a": {"typo": 1}})
    with pytest.raises(ConfigError, match="a.n: Input should be a valid integer"):
        build_plan([a], {"a": {"n": "many"}})
    with pytest.raises(ConfigError, match="not in the workflow: b"):
        build_plan([a], {"b": {}})


def test_config_is_frozen() -> None:
    cfg = Cfg(n=2)
    with pytest.raises(ValueError, match="frozen"):
        cfg.n = 3  # type: ignore[misc]


def test_slicing(tmp_path: Path) -> None:
    plan = build_plan([SOURCE, SCALE, REPORT], {"toy-source": {"root": str(tmp_path)}})
    assert select(plan) == ["toy-source", "toy-scale", "toy-report"]
    assert select(plan, ["toy-scale"]) == ["toy-source", "toy-scale"]
    assert select(plan, from_=["toy-scale"]) == ["toy-scale", "toy-report"]
    assert select(plan, to=["toy-scale"]) == ["toy-source", "toy-scale"]
    assert select(plan, only=["toy-report"]) == ["toy-report"]
    assert select(plan, from_=["toy-scale"], to=["toy-scale"]) == ["toy-scale"]
    with pytest.raises(PlanError, match="unknown stage 'nope'"):
        select(plan, ["nope"])


def test_the_workflow_seed_joins_the_keys_of_seeded_stages_and_their_downstream() -> None:
    """Another seed must re-train (and re-run what reads the model), never serve seed 0's
    artifacts; stages that do not use the seed (ingest) keep their key."""
    from kdpipe.config import load_workflow

    wf = load_workflow("workflows/vod_sckd.toml")
    plans = [build_plan(wf.stages, wf.deltas, fingerprint=False, seed=s) for s in (0, 0, 1)]
    keys = [{n: node.key for n, node in p.nodes.items()} for p in plans]
    assert keys[0] == keys[1]
    assert keys[0]["ingest"] == keys[2]["ingest"]
    for stage in ("teacher-train", "teacher-label", "distill", "evaluate"):
        assert keys[0][stage] != keys[2][stage], stage
    seeded = {n for n, node in plans[0].nodes.items() if node.stage.seeded}
    assert {"teacher-train", "distill"} <= seeded and "ingest" not in seeded


def test_the_main_job_compares_teacher_baseline_and_student_on_the_same_labels() -> None:
    """The README's claim (student > baseline) is only fair if the baseline gets exactly the
    teacher's labels and budget, the student no ground truth, and every frame the student
    learns from is labeled by the teacher; an edit to one of the three breaks that silently."""
    from kdpipe.config import load_workflow

    wf = load_workflow("workflows/vod_sckd.toml")
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False)
    teacher, baseline = (plan.nodes[n].config for n in ("teacher-train", "train-radar"))
    assert (baseline.splits, baseline.max_frames) == (teacher.splits, teacher.max_frames)
    assert teacher.max_frames is not None  # label-scarce: the labeled budget is explicit
    assert baseline.optim == teacher.optim and baseline.detector == teacher.detector
    assert (teacher.model, baseline.model) == ("sckd-teacher", "radar-only")
    student, labels = plan.nodes["distill"].config, plan.nodes["teacher-label"].config
    assert student.ssod and not student.gt
    assert set(student.unlabeled_splits) <= set(labels.splits)
    assert "val" in labels.splits and "val" not in student.unlabeled_splits
    assert plan.nodes["train-radar"].upstream == plan.nodes["teacher-train"].upstream
