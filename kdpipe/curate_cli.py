"""`kdpipe curate`: run a workflow's curate stage with command-line overrides, then export.

The work is `kdpipe.api.run_curate` (and `kdpipe.curate_export`); this module parses the
options and prints. The stage is the workflow's `curate` / `curate-frames` (or an instance of
one; `--stage` picks among several). A workflow without one gets one added for this run:
`curate` when a stage of it produces teacher `detections`, else `curate-frames`. Upstream
stages run first when stale, as with `kdpipe run curate`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kdpipe.pipeline.errors import ConfigError

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

    from kdpipe.api import run_curate

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
