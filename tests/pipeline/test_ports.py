"""Port contracts as workflows meet them: a renamed port fails at load time with the key to
write, `ports` without `uses` rebinds a stage's own ports, and `kdpipe audit` / `kdpipe curate`
run through the one orchestration path (`kdpipe.api.run_workflow`: lock, plan, execute)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import kdpipe.api
from kdpipe.cli import app
from kdpipe.config import load_workflow
from kdpipe.pipeline.dag import build_plan
from kdpipe.pipeline.errors import ConfigError, WorkspaceBusyError
from kdpipe.pipeline.stage import instance
from kdpipe.pipeline.store import Workspace
from kdpipe.testing import SCALE

STUDENT_PORTS = ('metrics = "student_metrics", metrics_table = "student_metrics_table", '
                 'eval_detections = "student_eval_detections"')


def _workflow(path: Path, stages: list[str], body: str, root: Path) -> Path:
    names = ", ".join(f'"{s}"' for s in stages)
    path.write_text(f'[workflow]\nstages = [{names}]\n[ingest]\nroots = ["{root}"]\n{body}')
    return path


def _evaluate_student(tmp_path: Path, checkpoint_key: str) -> Path:
    return _workflow(tmp_path / "wf.toml", ["ingest", "teacher-train", "evaluate-student"],
                     f'[evaluate-student]\nuses = "evaluate"\nports = {{ {checkpoint_key} = '
                     f'"teacher", {STUDENT_PORTS} }}\n', tmp_path)


def test_binding_evaluates_old_teacher_port_names_checkpoint(tmp_path: Path) -> None:
    wf = _evaluate_student(tmp_path, "teacher")
    with pytest.raises(ConfigError) as e:
        load_workflow(wf)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("[evaluate-student] ports: port 'teacher' of stage 'evaluate' is now "
                   "'checkpoint' (write ports = { checkpoint = \"teacher\", ... })")
    # the new key loads and plans: the instance reads the bound checkpoint
    wf = _evaluate_student(tmp_path, "checkpoint")
    w = load_workflow(wf)
    plan = build_plan(w.stages, w.deltas, fingerprint=False)
    assert plan.nodes["evaluate-student"].upstream["checkpoint"] == "teacher-train"


def test_renamed_port_error_is_one_line_from_the_cli(tmp_path: Path) -> None:
    wf = _evaluate_student(tmp_path, "teacher")
    res = subprocess.run([sys.executable, "-m", "kdpipe", "status", "-w", str(wf),
                          "--workspace", str(tmp_path / "ws")],
                         capture_output=True, text=True, timeout=120, check=False)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "is now 'checkpoint'" in lines[0] and "checkpoint = \"teacher\"" in lines[0]


def test_renamed_port_keeps_its_default_binding_unless_rebound() -> None:
    """A stage that renames `records` -> `rows` still reads the `records` artifact by default;
    an instance rebinding other ports keeps that, and binding the old name fails."""
    port = dataclasses.replace(SCALE.inputs[0], name="rows", artifact="records")
    stage = dataclasses.replace(SCALE, inputs=(port,), renamed_ports={"records": "rows"})
    inst = instance(stage, "scale-2", {"scaled": "scaled2"})
    assert inst.inputs[0].ref == "records" and inst.outputs[0].ref == "scaled2"
    assert instance(stage, "scale-3", {"rows": "other"}).inputs[0].ref == "other"
    with pytest.raises(ConfigError, match=r"port 'records' of stage 'toy-scale' is now 'rows' "
                                          r"\(write ports = \{ rows = \"x\", \.\.\. \}\)"):
        instance(stage, "scale-4", {"records": "x"})


def test_ports_without_uses_rebind_the_stages_own_ports(tmp_path: Path) -> None:
    filt = ('[filter]\nuses = "ingest"\nports = { points = "filtered_points", frames = '
            '"filtered_frames", boxes = "filtered_boxes", calibration = "filtered_calibration", '
            'rejects = "filtered_rejects" }\nroots = ["' + str(tmp_path) + '"]\n')
    wf = _workflow(tmp_path / "wf.toml", ["ingest", "filter", "teacher-train"],
                   filt + '[teacher-train]\nports = { points = "filtered_points", '
                   'frames = "filtered_frames" }\n', tmp_path)
    w = load_workflow(wf)
    train = next(s for s in w.stages if s.name == "teacher-train")
    assert {p.name: p.ref for p in train.inputs} == {
        "points": "filtered_points", "frames": "filtered_frames", "boxes": "boxes"}
    assert "ports" not in w.deltas["teacher-train"]  # popped: not a config key
    plan = build_plan(w.stages, w.deltas, fingerprint=False)
    assert plan.nodes["teacher-train"].upstream == {
        "points": "filter", "frames": "filter", "boxes": "ingest"}
    bad = wf.read_text().replace('frames = "filtered_frames" }', 'frame = "filtered_frames" }')
    wf.write_text(bad)
    with pytest.raises(ConfigError, match="stage 'teacher-train' has no port"):
        load_workflow(wf)


class _Stop(Exception):
    """Raised by the fake executor once the call is recorded: nothing runs."""


def _record_execute(monkeypatch: pytest.MonkeyPatch, ws: Path) -> list[dict[str, Any]]:
    """Replace `kdpipe.api.execute` (what `run_workflow` calls under the lock) by a recorder."""
    calls: list[dict[str, Any]] = []

    def fake(plan: Any, workspace: Any, names: Any, **kw: Any) -> list[Any]:
        with pytest.raises(WorkspaceBusyError):  # called under the workspace lock
            with Workspace(ws).lock():
                pass
        calls.append({"plan": plan, "names": list(names), **kw})
        raise _Stop

    monkeypatch.setattr(kdpipe.api, "execute", fake)
    return calls


def _kd(*args: str | Path) -> None:
    with pytest.raises(_Stop):
        CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_curate_cli_runs_through_the_api(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wf = _workflow(tmp_path / "wf.toml", ["ingest"], "", tmp_path)
    ws = tmp_path / "ws"
    calls = _record_execute(monkeypatch, ws)
    _kd("curate", "-w", wf, "--workspace", ws, "--scheduler", "sync", "--budget", "4",
        "--strategy", "radar-density", "--where", "n_radar > 3", "--set", "curate-frames.seed=7")
    (call,) = calls
    assert call["names"] == ["ingest", "curate-frames"]  # the stage added, upstream first
    cfg = call["plan"].nodes["curate-frames"].config
    assert (cfg.budget, cfg.strategy, cfg.where, cfg.seed) == (4, "radar-density",
                                                               ["n_radar > 3"], 7)


def test_audit_cli_runs_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = _workflow(tmp_path / "wf.toml", ["ingest", "teacher-train", "teacher-label",
                                          "pseudo-label"],
                   "[pseudo-label]\nsigma = 0.2\n", tmp_path)
    ws = tmp_path / "ws"
    calls = _record_execute(monkeypatch, ws)
    _kd("audit", "-w", wf, "--workspace", ws, "--scheduler", "sync", "--precision-target",
        "0.7", "--force")
    (call,) = calls
    assert call["names"][-1] == "audit" and call["force"]
    cfg = call["plan"].nodes["audit"].config
    assert (cfg.sigma, cfg.precision_target) == (0.2, 0.7)  # the workflow's own sigma marked


@pytest.mark.parametrize("command", ["curate", "audit"])
def test_busy_workspace_fails_with_exit_3(tmp_path: Path, command: str) -> None:
    wf = _workflow(tmp_path / "wf.toml", ["ingest", "teacher-train", "teacher-label"], "",
                   tmp_path)
    ws = tmp_path / "ws"
    with Workspace(ws).lock(), pytest.raises(WorkspaceBusyError) as e:
        CliRunner().invoke(app, [command, "-w", str(wf), "--workspace", str(ws),
                                 "--scheduler", "sync"], catch_exceptions=False)
    assert e.value.exit_code == 3
