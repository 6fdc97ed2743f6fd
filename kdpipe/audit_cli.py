"""`kdpipe audit`: run a workflow's audit stage (and whatever upstream is stale), summarise it, and
optionally write the recommended thresholds back into a workflow file.

The work is `kdpipe.api.run_audit` and `kdpipe.api.write_thresholds`; `kdpipe.cli` parses the
options into an `AuditCommand`, this module calls and prints. A workflow without an `audit` stage
gets one for this run (it needs a stage producing `detections`, i.e. `teacher-label`). The
thresholds marked on the curves are the workflow's own `[pseudo-label] sigma / class_thresholds`
unless `[audit]` sets them, so after `--write-thresholds` the next audit shows the new operating
point. The report names the workflow (`[workflow] name`, given to the stage as `workflow` when
the audit stage is added for this run; in a workflow listing `audit` the loader fills `[audit]
workflow` from `[workflow] name` unless the table sets it), and
`--write-thresholds` warns on stderr (one line) before writing a recommended threshold whose
best F1 is below 0.1.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def summary(rep: dict[str, Any]) -> dict[str, Any]:
    """The `--json` output: headline numbers and paths (curves stay in the audit JSON file)."""
    r = rep["report"]
    out = {k: v for k, v in rep.items() if k != "report"}
    out.update(mean_ap=r["mean_ap"], ece=r["calibration"]["ece"], protocol=r["protocol"],
               recommended_thresholds=r["recommended_thresholds"], n_frames=r["n_frames"])
    out["classes"] = {
        name: {"ap": c["ap"], "n_gt": c["n_gt"], "n_det": c["n_det"],
               "f1_at_sigma": c["marked"]["sigma"]["f1"], "f1_at_operating": c["operating"]["f1"],
               "best_f1": (c["recommended"]["best_f1"] or {}).get("f1"),
               "best_f1_threshold": (c["recommended"]["best_f1"] or {}).get("threshold"),
               "ece": c["calibration"]["ece"]} for name, c in r["classes"].items()}
    if "nuscenes" in r:
        out["nuscenes"] = {k: r["nuscenes"][k] for k in ("mean_ap", "class_ap")}
    if "audited" in r:
        out["audited"] = r["audited"]
    return out


def with_workflow_name(workflow: Path, overrides: list[str]) -> list[str]:
    """`overrides` plus `audit.workflow=<[workflow] name>` when this run adds the audit stage,
    so the report names the workflow. A workflow that lists its own audit stage is left as it
    is: `kdpipe run` must plan the same key (the loader names it, `kdpipe.config`)."""
    from kdpipe.config import load_workflow, toml_value
    from kdpipe.stages.audit.stage import AuditConfig

    wf = load_workflow(workflow, list(overrides))
    if any(issubclass(s.config, AuditConfig) for s in wf.stages) \
            or "workflow" in wf.deltas.get("audit", {}):
        return list(overrides)
    return [*overrides, f"audit.workflow={toml_value(wf.name)}"]


def _print(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(soft_wrap=True)
    r = rep["report"]
    if rep["added_to_workflow"]:
        con.print("(stage audit added to the workflow for this run)")
    proto = r["protocol"]
    con.print(f"audit {rep['status']} {rep['key']}: {r['n_frames']} frames of "
              f"{', '.join(r['splits'])}, {r['n_detections']} detections, criterion "
              f"{proto['criterion']}{' (nuScenes rules)' if proto['nuscenes_rules'] else ''}; "
              f"mAP {r['mean_ap']:.4f}, ECE {r['calibration']['ece']:.3f}")
    if "audited" in r:
        from kdpipe.stages.audit.report import audited_text

        con.print(f"audited: {audited_text(r)}", markup=False)
    t = Table("class", "GT", "det", "AP", f"F1@sigma {r['config']['sigma']:g}", "F1@op",
              "best F1", "recommended", "ECE")
    for name, c in r["classes"].items():
        best = c["recommended"]["best_f1"]
        rec = r["recommended_thresholds"].get(name)
        t.add_row(name, str(c["n_gt"]), str(c["n_det"]), f"{c['ap']:.3f}",
                  f"{c['marked']['sigma']['f1']:.3f}", f"{c['operating']['f1']:.3f}",
                  "-" if best is None else f"{best['f1']:.3f} @ {best['threshold']:.3f}",
                  "-" if rec is None else f"{rec:.3f}", f"{c['calibration']['ece']:.3f}")
    con.print(t)
    if "thresholds_written" in rep:
        con.print(f"wrote class_thresholds {rep['thresholds_written']} to {rep['workflow_out']}")
    con.print(f"report: {rep['html']}")


@dataclass(frozen=True)
class AuditCommand:
    """`kdpipe audit`'s options (see `kdpipe audit --help`; `overrides` is `--set`)."""

    workflow: Path
    workspace: str = "workspace"
    overrides: list[str] = field(default_factory=list)
    precision_target: float | None = None
    write_thresholds_to: Path | None = None
    scheduler: str | None = None
    force: bool = False
    as_json: bool = False


def audit(cmd: AuditCommand) -> None:
    """Run the audit, write the thresholds back if asked, print the table or the JSON."""
    import sys

    from rich.console import Console

    from kdpipe.api import run_audit, write_thresholds

    err = Console(stderr=True, soft_wrap=True)
    rep = run_audit(cmd.workflow, cmd.workspace,
                    overrides=with_workflow_name(cmd.workflow, cmd.overrides),
                    precision_target=cmd.precision_target, scheduler=cmd.scheduler,
                    force=cmd.force, log=None if cmd.as_json else err.print)
    if cmd.write_thresholds_to is not None:
        from kdpipe.stages.audit.report import weak_threshold_warning

        warn = weak_threshold_warning(rep["report"])
        if warn is not None:  # one plain line: the thresholds are still written, as asked
            sys.stderr.write(f"{warn}; writing them to {cmd.write_thresholds_to} anyway\n")
            sys.stderr.flush()
        rep["thresholds_written"] = write_thresholds(
            cmd.write_thresholds_to, rep["report"]["recommended_thresholds"])
        rep["workflow_out"] = str(cmd.write_thresholds_to)
    if cmd.as_json:
        sys.stdout.write(json.dumps(summary(rep), indent=1, default=str) + "\n")
        return
    _print(rep)
