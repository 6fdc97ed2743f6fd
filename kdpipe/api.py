"""Public Python API: the same calls the CLI makes.

`run_workflow` is the one path that plans, locks the workspace and executes; `run_audit` and
`run_curate` (`kdpipe audit`, `kdpipe curate`) only add their stage and deltas to a loaded
workflow and hand it to `run_workflow`.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypedDict, Unpack

from kdpipe.config import Workflow, absolute_roots, apply_set, load_workflow
from kdpipe.pipeline import prefetch
from kdpipe.pipeline.dag import build_plan, forced, select
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.executor import make_executor
from kdpipe.pipeline.runner import execute, status
from kdpipe.pipeline.store import Workspace
from kdpipe.stages import canonical_name


def _names(xs: Sequence[str]) -> list[str]:
    return [canonical_name(x) for x in xs]


def _load(workflow: str | Path | Workflow, overrides: Sequence[str]) -> Workflow:
    """A workflow file loaded with `overrides`, or a loaded one with them applied to a copy."""
    if not isinstance(workflow, Workflow):
        return load_workflow(workflow, list(overrides))
    if not overrides:
        return workflow
    deltas = copy.deepcopy(workflow.deltas)  # the caller's workflow stays as it was
    for a in overrides:
        apply_set(deltas, a)
    absolute_roots(list(workflow.stages), deltas, Path.cwd())  # --set paths: as typed here
    return replace(workflow, deltas=deltas)


class RunnerOptions(TypedDict, total=False):
    """How any run goes (every key optional; the CLI's options of the same names).

    overrides: "STAGE.KEY=VALUE" settings applied over the workflow file.
    scheduler: sync | local[:N] | tcp://HOST:PORT | a scheduler file (default: local cluster).
    wait: wait for the workspace lock instead of failing at once.
    log: called with one line per stage started and, without a progress bar, per training
        epoch (stage, epoch i/n, loss, seconds) and now and then per stage's units.
    """

    overrides: Sequence[str]
    scheduler: str | None
    wait: bool
    log: Callable[[str], None] | None


class AuditOptions(RunnerOptions, total=False):
    """`run_audit`'s options: a run's, plus `force` (re-run the audit even if committed)."""

    force: bool


class RunOptions(AuditOptions, total=False):
    """`run_workflow`'s options: an audit's, plus the stage selection and a progress bar.

    from_ / to / only: this stage and downstream / this stage and upstream / exactly these.
    show_progress: draw a rich progress row per stage instance (ETA, running loss).
    """

    from_: Sequence[str]
    to: Sequence[str]
    only: Sequence[str]
    show_progress: bool


class CurateOptions(RunnerOptions, total=False):
    """`run_curate`'s options: a run's, plus which curate stage and its selection overrides.

    stage: which curate stage of the workflow (when it has several).
    where / strategy / budget / seed: override that stage's config (None: keep it).
    """

    stage: str | None
    where: Sequence[str] | None
    strategy: str | None
    budget: int | None
    seed: int | None


def run_workflow(workflow: str | Path | Workflow, workspace: str, stages: Sequence[str] = (),
                 **options: Unpack[RunOptions]) -> dict[str, Any]:
    """Plan, lock the workspace, and run what is not up to date. Returns a JSON-able report.

    `workflow` is a TOML file or a `Workflow` already loaded (and possibly extended, as
    `run_audit` does) with `kdpipe.config.load_workflow`.
    """
    wf = _load(workflow, options.get("overrides", ()))
    ws = Workspace(workspace)
    # checks the spelling now; starts nothing yet
    executor = make_executor(options.get("scheduler"))
    log = options.get("log")
    with ExitStack() as stack:
        stack.enter_context(ws.lock(wait=options.get("wait", False)))
        # plan under the lock: the fingerprint of raw inputs must match what runs
        # keys through the workspace's early-cutoff aliases (pipeline/dag.py)
        plan = build_plan(wf.stages, wf.deltas, seed=wf.seed, resolve=ws.canonical_key)
        prefetch.cancel()  # a fingerprint child the plan did not ask for: reaped now, not at exit
        sliced = {"from_": _names(options.get("from_", ())), "to": _names(options.get("to", ())),
                  "only": _names(options.get("only", ()))}
        names = select(plan, _names(stages), **sliced)
        # --force re-runs the named stages only, not the upstream they pull in
        force = forced(plan, names, _names(stages), **sliced) if options.get("force") else False
        progress: Any = None
        if options.get("show_progress", False):
            from kdpipe.progress_view import RichProgress

            progress = stack.enter_context(RichProgress())
            log = progress.print if log is not None else None
        elif log is not None:
            from kdpipe.progress_view import LineProgress

            progress = LineProgress(log)

        def on_stage(name: str, key: str) -> None:
            if log:
                log(f"running {name} ({key})")

        results = execute(plan, ws, names, executor=executor, seed=wf.seed,
                          force=force, progress=progress,
                          on_stage=on_stage)
    from kdpipe.results import summarize

    report = {"workflow": wf.name, "workspace": ws.url, "stages": [asdict(r) for r in results]}
    # results: headline metrics of every evaluated model (None when nothing was evaluated);
    # warnings: one line per result that is not what it seems (kdpipe/results.py)
    return {**report, **summarize(report)}


def workflow_status(workflow: str | Path | Workflow, workspace: str,
                    overrides: Sequence[str] = (), *, require_workspace: bool = False
                    ) -> list[dict[str, Any]]:
    """Each stage of the plan: up to date, stale (and why) or missing. The workspace is never
    created; a missing one is all "missing", or a `WorkspaceError` with `require_workspace`
    (`kdpipe status`; the plan is checked first)."""
    wf = _load(workflow, overrides)
    ws = Workspace(workspace, create=False)
    plan = build_plan(wf.stages, wf.deltas, seed=wf.seed, resolve=ws.canonical_key)
    return status(plan, ws.require() if require_workspace else ws)


def collect_garbage(workspace: str, workflow: str | Path | None = None, *, delete: bool = False,
                    **options: Unpack[RunnerOptions]) -> dict[str, Any]:
    """What `kdpipe gc` lists (and with `delete`, deletes), under the workspace lock.

    Always: `<key>.partial/` work dirs, `<key>.replaced-*` copies and `<key>/` dirs without a
    lineage record. With `workflow`: also committed artifacts of its stages whose key is not
    the current plan's (refused when a raw input root is missing: the keys would be wrong).
    """
    ws = Workspace(workspace, create=False).require()
    with ws.lock(wait=options.get("wait", False)):
        found = ws.leftovers()
        if workflow is not None:
            wf = _load(workflow, options.get("overrides", ()))
            plan = build_plan(wf.stages, wf.deltas, seed=wf.seed, resolve=ws.canonical_key)
            for n in plan.order:
                node = plan.nodes[n]
                gone = [r for r in (node.stage.sources(node.config) if node.stage.sources else ())
                        if not Path(r).exists()]
                if gone:
                    raise ConfigError(f"gc: {n} input {gone[0]} not found, so the current keys "
                                      f"of {wf.path} are unknown; nothing was deleted")
            found += ws.unreferenced({n: plan.nodes[n].key for n in plan.order})
        items = [{"kind": g.kind, "path": g.path, "bytes": ws.garbage_bytes(g)} for g in found]
        if delete:
            for g in found:
                ws.remove(g)
    return {"workspace": ws.url, "deleted": delete, "items": items,
            "bytes": sum(i["bytes"] for i in items)}


def _audit_stage(wf: Workflow) -> tuple[Workflow, str, bool]:
    """(workflow with an audit stage, its name, whether it was added here)."""
    from kdpipe.stages import load_stage
    from kdpipe.stages.audit.stage import AuditConfig

    names = [s.name for s in wf.stages if issubclass(s.config, AuditConfig)]
    if len(names) > 1:
        raise ConfigError(f"{wf.path} has several audit stages ({', '.join(names)}); run one "
                          f"with `kdpipe run`")
    if names:
        return wf, names[0], False
    if not any(p.ref == "detections" for s in wf.stages for p in s.outputs):
        raise ConfigError(f"{wf.path}: no stage produces `detections` (add teacher-label); "
                          f"nothing to audit")
    stage = load_stage("audit")
    return replace(wf, stages=(*wf.stages, stage)), stage.name, True


def run_audit(workflow: str | Path, workspace: str, *, precision_target: float | None = None,
              **options: Unpack[AuditOptions]) -> dict[str, Any]:
    """Run the workflow's audit stage with its stale upstream (`kdpipe audit`).

    A workflow without an audit stage gets one for this run (it needs a stage producing
    `detections`). The thresholds marked on the curves are the workflow's own `[pseudo-label]
    sigma / class_thresholds` unless `[audit]` sets them. Returns the audit JSON (`report`)
    plus the stage's name, status, key and output paths.
    """
    overrides = options.pop("overrides", ())  # applied here, not again by run_workflow
    wf, name, added = _audit_stage(load_workflow(workflow, list(overrides)))
    delta = wf.deltas.setdefault(name, {})
    # mark the thresholds this workflow's pseudo-label really uses, unless the audit sets its own
    pseudo = wf.deltas.get("pseudo-label", {})
    for k in ("sigma", "class_thresholds"):
        if k in pseudo and k not in delta:
            delta[k] = pseudo[k]
    if precision_target is not None:
        delta["precision_target"] = precision_target
    res = run_workflow(wf, workspace, [name], **options)["stages"][-1]
    out = res["outputs"]
    report = json.loads(Path(out["audit_json"]).read_text())
    return {"stage": name, "added_to_workflow": added, "status": res["status"],
            "key": res["key"], "html": out["audit_html"], "json": out["audit_json"],
            "frames": out["audit_frames"], "report": report}


def write_thresholds(path: Path, thresholds: dict[str, float], stage: str = "pseudo-label"
                     ) -> dict[str, float]:
    """Merge `thresholds` into `[pseudo-label] class_thresholds` of a workflow file, keeping
    its comments; the merged table."""
    import tomllib

    from kdpipe.workflow_edit import set_stage_key

    if not thresholds:
        raise ConfigError("the audit recommends no threshold (no class has a true positive)")
    doc = tomllib.loads(path.read_text()) if path.is_file() else None
    if doc is None:
        raise ConfigError(f"workflow file not found: {path}")
    table = doc.get(stage) or doc.get(stage.replace("-", "_")) or {}
    merged = {**table.get("class_thresholds", {}), **thresholds}
    set_stage_key(path, stage, "class_thresholds", merged)
    return merged


def _curate_stage(wf: Workflow, wanted: str | None) -> tuple[Workflow, str, bool]:
    """(workflow with a curate stage, its name, whether it was added here)."""
    from kdpipe.stages import load_stage
    from kdpipe.stages.curate.stage import CurateConfig

    names = [s.name for s in wf.stages if issubclass(s.config, CurateConfig)]
    if wanted:
        if canonical_name(wanted) not in names:
            raise ConfigError(f"--stage {wanted}: not a curate stage of {wf.path} "
                              f"(curate stages: {', '.join(names) or 'none'})")
        return wf, canonical_name(wanted), False
    if len(names) > 1:
        raise ConfigError(f"{wf.path} has several curate stages ({', '.join(names)}); "
                          f"pick one with --stage")
    if names:
        return wf, names[0], False
    has_dets = any(p.ref == "detections" for s in wf.stages for p in s.outputs)
    stage = load_stage("curate" if has_dets else "curate-frames")
    return replace(wf, stages=(*wf.stages, stage)), stage.name, True


def run_curate(workflow: str | Path, workspace: str,
               **options: Unpack[CurateOptions]) -> dict[str, Any]:
    """Run the workflow's curate stage with its stale upstream (`kdpipe curate`).

    The stage is the workflow's `curate` / `curate-frames` (or an instance of one; `stage`
    picks among several); a workflow without one gets `curate` for this run when a stage of it
    produces teacher `detections`, else `curate-frames`. `where`/`strategy`/`budget`/`seed`
    override that stage's config (after `overrides`). Returns the selection summary, its path
    and the selected frames in rank order.
    """
    import polars as pl

    wf, name, added = _curate_stage(load_workflow(workflow, list(options.get("overrides", ()))),
                                    options.get("stage"))
    where = options.get("where")
    given = {"where": list(where) if where else None, "strategy": options.get("strategy"),
             "budget": options.get("budget"), "seed": options.get("seed")}
    wf.deltas.setdefault(name, {}).update({k: v for k, v in given.items() if v is not None})
    res = run_workflow(wf, workspace, [name], scheduler=options.get("scheduler"),
                       wait=options.get("wait", False), log=options.get("log"))["stages"][-1]
    out = res["outputs"]
    summary = json.loads(Path(out["selection_summary"]).read_text())
    sel = pl.read_parquet(out["selection"])
    return {"stage": name, "added_to_workflow": added, "status": res["status"],
            "key": res["key"], "seconds": res["seconds"], "selection": out["selection"],
            "summary": summary,
            "frames": sel.select("rank", "frame_id", "scene", "score", "reason").to_dicts()}
