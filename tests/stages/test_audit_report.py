"""The audit HTML report on hand-built audits (no teacher trained): it names what it audits, its
score axes span the observed scores, legends stay off the axes, weak recommended thresholds are
flagged, and `kdpipe audit --write-thresholds` warns before writing them."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

from kdpipe.stages.audit.metrics import BoxSet, candidates, greedy_match
from kdpipe.stages.audit.report import (
    WorstFrames,
    fig_f1,
    fig_pr,
    fig_reliability,
    score_axis,
    weak_threshold_warning,
    weak_thresholds,
    write_html,
)
from kdpipe.stages.audit.stage import AuditConfig, audited_from_lineage
from kdpipe.stages.audit.summary import SummarySpec, summarise

_NO_WORST = WorstFrames(None, pl.DataFrame({"frame_id": []}), pl.DataFrame(),  # type: ignore[arg-type]
                       pl.DataFrame())  # a report with no worst frames reads no store
N = 40  # frames, one ground-truth car each


def _set(xy: np.ndarray, score: np.ndarray | None = None) -> BoxSet:
    n = len(xy)
    boxes = np.zeros((n, 7))
    boxes[:, :2], boxes[:, 3:6] = xy, (4.0, 2.0, 1.5)
    return BoxSet(np.arange(n, dtype=np.int64), np.zeros(n, np.int64), boxes,
                  boxes[:, :2].copy(), score)


def _report(scores: np.ndarray, n_tp: int, audited: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """An audit of one detection per frame: the `n_tp` highest-scored on their car, the rest
    20 m away; shaped as `write_outputs` writes it (no worst frames)."""
    order = np.argsort(-scores, kind="stable")
    xy = np.tile([30.0, 0.0], (N, 1))
    xy[order[:n_tp]] = [10.2, 0.0]
    gt, det = _set(np.tile([10.0, 0.0], (N, 1))), _set(xy, scores)
    lim = np.full(N, 2.0)
    matched = greedy_match(det, candidates(det, gt, "center_distance", 2.0), N, lim,
                           "center_distance")
    spec = SummarySpec(("Car",), sigma=0.1, class_thresholds={"Car": 0.3})
    rep = summarise(det, gt, matched, det_range_m=det.boxes[:, 0], gt_range_m=gt.boxes[:, 0],
                    det_radar=np.full(N, -1), gt_radar=np.full(N, -1), spec=spec)
    cfg = AuditConfig(sigma=0.1, class_thresholds={"Car": 0.3}, workflow="wf-name")
    rep.update(protocol={"criterion": "center_distance", "nuscenes_rules": False,
                         "classes": ["Car"], "bev_range_m": [0.0, -25.6, 51.2, 25.6],
                         "match_threshold": {"Car": 2.0}},
               splits=["val"], n_frames=N, n_detections=N, worst_frames=[],
               config=cfg.model_dump(mode="json"),
               audited={"detections": None, "checkpoint": None, "model": None,
                        **(audited or {}), "workflow": cfg.workflow})
    return rep


LOW = np.linspace(0.09, 0.14, N)  # a teacher whose scores all sit in a narrow low band


def test_score_axis_covers_a_low_narrow_score_band() -> None:
    rep = _report(LOW, 2)
    lo, hi = score_axis(rep)
    assert lo <= 0.09 and hi >= 0.14  # every score on the axis
    assert (0.14 - 0.09) / (hi - lo) > 0.8  # ... and they fill it (today: 5% of 0-1)
    f1 = fig_f1(rep, 0.1, {"Car": 0.3})
    assert f1.axes[0].get_xlim() == pytest.approx((lo, hi))
    assert fig_reliability(rep).axes[0].get_xlim() == pytest.approx((lo, hi))
    labels = f1.axes[0].get_legend_handles_labels()[1]
    assert "Car threshold 0.3 (above every score)" in labels  # off the axis, still named
    wide = score_axis(_report(np.linspace(0.0, 1.0, N), 20))
    assert wide == pytest.approx((0.0, 1.0))
    empty = {"classes": {"Car": {"pr_curve": {"score": []}, "f1_curve": {"threshold": []}}}}
    assert score_axis(empty) == (0.0, 1.0)


def _overlaps(a: Any, b: Any) -> bool:
    return bool(a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)


@pytest.mark.parametrize("make", ["pr", "f1", "reliability"])
def test_legends_sit_outside_the_axes(make: str) -> None:
    rep = _report(LOW, 2)
    fig: Figure = {"pr": lambda: fig_pr(rep), "f1": lambda: fig_f1(rep, 0.1, {"Car": 0.3}),
                   "reliability": lambda: fig_reliability(rep)}[make]()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends
    page = fig.bbox
    for leg in legends:
        box = leg.get_window_extent(renderer)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1  # on the picture
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1
        for ax in fig.axes:
            assert not _overlaps(box, ax.get_window_extent(renderer)), make


def test_weak_recommended_threshold_is_flagged() -> None:
    weak = _report(LOW, 2)  # best F1: 2 of 40 found at precision 1 -> 0.095
    (name, (thr, f1)), = weak_thresholds(weak).items()
    assert name == "Car" and f1 < 0.1 and thr == weak["recommended_thresholds"]["Car"]
    line = weak_threshold_warning(weak)
    assert line is not None and "\n" not in line
    assert "below 0.1" in line and f"Car {thr:.3f} (best F1 {f1:.3f})" in line
    assert weak_threshold_warning(_report(LOW, 30)) is None  # best F1 0.86: no flag


def _lineage(root: Path, stage: str, key: str, **rec: Any) -> Path:
    d = root / stage / key
    d.mkdir(parents=True)
    (d / "_lineage.json").write_text(json.dumps({"stage": stage, "key": key, **rec}))
    return d


def test_audited_from_lineage_names_checkpoint_and_model(tmp_path: Path) -> None:
    arts = tmp_path / "artifacts"
    _lineage(arts, "teacher-train", "tkey123", config={"model": "sckd-teacher"}, inputs={})
    det = _lineage(arts, "teacher-label", "lkey456", config={}, inputs={
        "teacher": {"stage": "teacher-train", "key": "tkey123", "digest": "d"},
        "points": {"stage": "ingest", "key": "ikey", "digest": "d"}})
    got = audited_from_lineage(det / "detections.parquet")
    assert got == {"detections": {"stage": "teacher-label", "key": "lkey456"},
                   "checkpoint": {"stage": "teacher-train", "key": "tkey123"},
                   "model": "sckd-teacher"}
    # a copy without the checkpoint's record (remote inputs) still names the checkpoint
    (arts / "teacher-train" / "tkey123" / "_lineage.json").unlink()
    assert audited_from_lineage(det / "detections.parquet")["model"] is None
    assert audited_from_lineage(tmp_path / "elsewhere.parquet") == \
        {"detections": None, "checkpoint": None, "model": None}


def test_html_names_model_workflow_key_and_flags_weak_thresholds(tmp_path: Path) -> None:
    audited = {"detections": {"stage": "teacher-label", "key": "lkey456"},
               "checkpoint": {"stage": "teacher-train", "key": "tkey123"},
               "model": "sckd-teacher", "audit": {"stage": "audit", "key": "akey789"}}
    rep = _report(LOW, 2, audited)
    page = tmp_path / "audit.html"
    write_html(page, rep, _NO_WORST)
    text = page.read_text()
    for want in ("sckd-teacher", "teacher-train/tkey123", "teacher-label/lkey456",
                 "workflow wf-name", "audit/akey789"):
        assert want in text, want
    assert "<title>kdpipe audit: sckd-teacher teacher-train/tkey123 (workflow wf-name)</title>" \
        in text
    warn = weak_threshold_warning(rep)
    assert warn is not None and f"class='warn' id='weak-thresholds'>{warn}<" in text
    ok = tmp_path / "ok.html"
    write_html(ok, _report(LOW, 30), _NO_WORST)
    assert "weak-thresholds" not in ok.read_text()
    assert "model not recorded" in ok.read_text()


WORKFLOW = """[workflow]
name = "report-test"
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label"]
[ingest]
format = "vod"
roots = ["nowhere"]
[pseudo-label]
sigma = 0.1
"""


def test_kdpipe_audit_names_the_workflow_and_warns_before_writing_weak_thresholds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kdpipe audit` through its CLI with the run itself faked (a real one trains a teacher):
    the audit stage is given the workflow's name, and writing a weak threshold warns once."""
    import kdpipe.api
    from kdpipe.cli import app

    wf = tmp_path / "wf.toml"
    wf.write_text(WORKFLOW)
    target = tmp_path / "target.toml"
    target.write_text(WORKFLOW)
    seen: dict[str, Any] = {}
    rep = _report(LOW, 2)

    def fake_run_audit(workflow: Any, workspace: str, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {"stage": "audit", "added_to_workflow": True, "status": "ran", "key": "akey",
                "html": "a.html", "json": "a.json", "frames": "a.parquet", "report": rep}

    real_write = kdpipe.api.write_thresholds

    def res_stderr() -> str:  # what the command wrote to stderr so far (CliRunner's buffer)
        sys.stderr.flush()
        return bytes(sys.stderr.buffer.getvalue()).decode()  # type: ignore[attr-defined]

    def spy_write(path: Path, thresholds: dict[str, float]) -> dict[str, float]:
        seen["stderr_at_write"] = res_stderr()
        return real_write(path, thresholds)

    monkeypatch.setattr(kdpipe.api, "run_audit", fake_run_audit)
    monkeypatch.setattr(kdpipe.api, "write_thresholds", spy_write)
    res = CliRunner().invoke(app, ["audit", "-w", str(wf), "--workspace", str(tmp_path / "ws"),
                              "--json", "--write-thresholds", str(target)])
    assert res.exit_code == 0, res.output
    assert seen["overrides"] == ['audit.workflow="report-test"']
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "below 0.1" in lines[0]
    assert str(target) in lines[0]
    assert "warning: " in seen["stderr_at_write"]  # said before the file was written
    out = json.loads(res.stdout)
    assert out["thresholds_written"] == rep["recommended_thresholds"]
    assert "class_thresholds" in target.read_text()
    # the override plans: the added audit stage's config carries the name
    from kdpipe.api import _audit_stage
    from kdpipe.audit_cli import with_workflow_name
    from kdpipe.config import load_workflow
    from kdpipe.pipeline.dag import build_plan

    loaded, name, added = _audit_stage(load_workflow(wf, seen["overrides"]))
    plan = build_plan(loaded.stages, loaded.deltas, fingerprint=False)
    assert added and plan.nodes[name].config.workflow == "report-test"
    # an own value is kept; a workflow listing `audit` is left alone (`kdpipe run` plans the
    # same key as `kdpipe audit`)
    assert with_workflow_name(wf, ["audit.workflow=mine"]) == ["audit.workflow=mine"]
    listed = tmp_path / "listed.toml"
    listed.write_text(WORKFLOW.replace('"pseudo-label"]', '"pseudo-label", "audit"]'))
    assert with_workflow_name(listed, []) == []
    # ... because the loader names it: `kdpipe run` and `kdpipe audit` plan one key
    assert load_workflow(listed).deltas["audit"]["workflow"] == "report-test"
    assert load_workflow(listed, ["audit.workflow=mine"]).deltas["audit"]["workflow"] == "mine"
