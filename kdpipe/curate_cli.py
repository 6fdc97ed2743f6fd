"""`kdpipe curate`: run a workflow's curate stage with command-line overrides, then export.

The stage is the workflow's `curate` / `curate-frames` (or an instance of one; `--stage` picks
among several). A workflow without one gets one added for this run: `curate` when a stage of
it produces teacher `detections`, else `curate-frames`. Upstream stages run first when stale,
as with `kdpipe run curate`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from kdpipe.pipeline.errors import ConfigError


def _curate_stage(wf: Any, wanted: str | None) -> tuple[Any, str, bool]:
    """(workflow with a curate stage, its name, whether it was added here)."""
    from kdpipe.stages import canonical_name, load_stage
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


def run_curate(workflow: str | Path, workspace: str, *, stage: str | None = None,
               where: Sequence[str] | None = None, strategy: str | None = None,
               budget: int | None = None, seed: int | None = None,
               overrides: Sequence[str] = (), scheduler: str | None = None, wait: bool = False,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Plan with the overrides, run the curate stage (and stale upstream); a JSON-able report."""
    import polars as pl

    from kdpipe.config import load_workflow
    from kdpipe.pipeline.dag import build_plan, select
    from kdpipe.pipeline.executor import make_executor
    from kdpipe.pipeline.runner import execute
    from kdpipe.pipeline.store import Workspace

    wf, name, added = _curate_stage(load_workflow(workflow, list(overrides)), stage)
    delta = wf.deltas.setdefault(name, {})
    given = {"where": list(where) if where else None, "strategy": strategy, "budget": budget,
             "seed": seed}
    delta.update({k: v for k, v in given.items() if v is not None})
    ws = Workspace(workspace)
    executor = make_executor(scheduler)
    with ws.lock(wait=wait):
        plan = build_plan(wf.stages, wf.deltas)
        names = select(plan, [name])

        def on_stage(n: str, key: str) -> None:
            if log:
                log(f"running {n} ({key})")

        results = execute(plan, ws, names, executor=executor, seed=wf.seed, on_stage=on_stage)
    res = results[-1]
    summary = json.loads(Path(res.outputs["selection_summary"]).read_text())
    sel = pl.read_parquet(res.outputs["selection"])
    return {"stage": name, "added_to_workflow": added, "status": res.status, "key": res.key,
            "seconds": res.seconds, "selection": res.outputs["selection"], "summary": summary,
            "frames": sel.select("rank", "frame_id", "scene", "score", "reason").to_dicts()}


Opt = typer.Option


def curate(
    workflow: Annotated[Path, Opt("--workflow", "-w", help="workflow TOML file")],
    workspace: Annotated[str, Opt("--workspace", help="workspace directory")] = "workspace",
    where: Annotated[list[str] | None, Opt("--where", help="SQL filter over the frame table, "
                                           "e.g. \"n_radar > 150\" (repeatable; replaces the "
                                           "config's)")] = None,
    strategy: Annotated[str | None, Opt(help="uncertainty | rare-class | radar-density | "
                                        "diversity | mix")] = None,
    budget: Annotated[int | None, Opt(help="frames to select", min=1)] = None,
    seed: Annotated[int | None, Opt(help="tie-break / diversity seed")] = None,
    stage: Annotated[str | None, Opt(help="which curate stage of the workflow")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="STAGE.KEY=VALUE")] = None,
    export: Annotated[str | None, Opt(help="kitti | nuscenes | csv")] = None,
    out: Annotated[Path | None, Opt("--out", help="export folder (new or empty)")] = None,
    split_name: Annotated[str, Opt(help="kitti: ImageSets/<name>.txt")] = "train",
    files: Annotated[str, Opt(help="kitti: hardlink | symlink | copy the raw files")] = "hardlink",
    scheduler: Annotated[str | None, Opt(help="sync | local[:N] | tcp://HOST:PORT")] = None,
    as_json: Annotated[bool, Opt("--json", help="machine-readable output on stdout")] = False,
) -> None:
    """Select the frames most worth labeling (curate stage) and optionally export them."""
    import sys

    from rich.console import Console

    if (export is None) != (out is None):
        raise ConfigError("--export and --out go together")
    err, con = Console(stderr=True, soft_wrap=True), Console(soft_wrap=True)
    rep = run_curate(workflow, workspace, stage=stage, where=where, strategy=strategy,
                     budget=budget, seed=seed, overrides=set_ or [], scheduler=scheduler,
                     log=None if as_json else err.print)
    if export is not None and out is not None:
        from kdpipe.curate_export import export_selection

        rep["export"] = export_selection(rep["selection"], export, out, name=split_name,
                                         files=files)
    if as_json:
        sys.stdout.write(json.dumps(rep, indent=1, default=str) + "\n")
        return
    s = rep["summary"]
    if rep["added_to_workflow"]:
        con.print(f"(stage {rep['stage']} added to the workflow for this run)")
    con.print(f"{rep['stage']} {rep['status']} {rep['key']}: selected {s['selected']} of "
              f"budget {s['budget']} from {s['candidates']} candidate frame(s) "
              f"({s['frames_in_splits']} in splits {', '.join(s['splits']) or 'all'}), strategy "
              f"{s['strategy']}, {rep['seconds']:.2f} s")
    if "note" in s:
        con.print(f"[yellow]note:[/] {s['note']}")
    for r in rep["frames"][:20]:
        con.print(f"{r['rank']:>4}  {r['frame_id']:<24} {r['score']:8.3f}  {r['reason']}",
                  highlight=False)
    if len(rep["frames"]) > 20:
        con.print(f"... {len(rep['frames']) - 20} more in {rep['selection']}")
    else:
        con.print(f"selection: {rep['selection']}")
    if "export" in rep:
        con.print(f"exported {rep['export']['frames']} frame(s) as {export} to "
                  f"{rep['export']['out']}")
