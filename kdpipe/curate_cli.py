"""`kdpipe curate`: run a workflow's curate stage with command-line overrides, then export.

The work is `kdpipe.api.run_curate` (and `kdpipe.curate_export`); `kdpipe.cli` parses the options
into a `CurateCommand`, this module calls and prints. The stage is the workflow's `curate` /
`curate-frames` (or an instance of one; `--stage` picks among several). A workflow without one gets
one added for this run: `curate` when a stage of it produces teacher `detections`, else
`curate-frames`. Upstream stages run first when stale, as with `kdpipe run curate`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kdpipe.pipeline.errors import ConfigError


@dataclass(frozen=True)
class CurateCommand:
    """`kdpipe curate`'s options (see `kdpipe curate --help`; `overrides` is `--set`)."""

    workflow: Path
    workspace: str = "workspace"
    where: list[str] | None = None
    strategy: str | None = None
    budget: int | None = None
    seed: int | None = None
    stage: str | None = None
    overrides: list[str] = field(default_factory=list)
    export: str | None = None
    out: Path | None = None
    split_name: str = "train"
    files: str = "hardlink"
    scheduler: str | None = None
    as_json: bool = False


def curate(cmd: CurateCommand) -> None:
    """Run the curate stage, export the selection if asked, print the ranking or the JSON."""
    import sys

    from rich.console import Console

    from kdpipe.api import run_curate

    export, out = cmd.export, cmd.out
    if (export is None) != (out is None):
        raise ConfigError("--export and --out go together")
    err, con = Console(stderr=True, soft_wrap=True), Console(soft_wrap=True)
    rep = run_curate(cmd.workflow, cmd.workspace, stage=cmd.stage, where=cmd.where,
                     strategy=cmd.strategy, budget=cmd.budget, seed=cmd.seed,
                     overrides=cmd.overrides, scheduler=cmd.scheduler,
                     log=None if cmd.as_json else err.print)
    if export is not None and out is not None:
        from kdpipe.curate_export import export_selection

        rep["export"] = export_selection(rep["selection"], export, out, name=cmd.split_name,
                                         files=cmd.files)
    if cmd.as_json:
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
