"""The `kdpipe` command line: parses, calls, prints. No pipeline logic lives here."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kdpipe.cli_common import Json, Set, Workflow, WorkflowFilter, Ws, emit_json, err, out
from kdpipe.cli_data import export_app, export_rerun, synth_app
from kdpipe.pipeline.errors import Interrupted, KdpipeError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Cross-modality knowledge distillation pipeline for radar detectors.")
app.add_typer(synth_app, name="synth")
app.add_typer(export_app, name="export")
app.command("export-rerun")(export_rerun)


def _version(show: bool) -> None:
    """`kdpipe --version`: the installed distribution's version (its metadata, not a
    constant that could drift from what pip installed)."""
    if not show:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("kdpipe")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from kdpipe import __version__ as v
    sys.stdout.write(f"kdpipe {v}\n")
    raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", help="print the installed kdpipe version and exit", is_eager=True,
        callback=_version)] = False) -> None:
    """Cross-modality knowledge distillation pipeline for radar detectors."""


StageList = Annotated[list[str] | None, typer.Argument(help="stages to run (+ stale upstream)")]
Scheduler = Annotated[str | None,
                      typer.Option(help="sync | local[:N] | tcp://HOST:PORT | scheduler file")]
From = Annotated[list[str] | None, typer.Option("--from", help="this stage and downstream")]
Wait = Annotated[bool, typer.Option(help="wait for the workspace lock instead of failing")]


@app.command()
def run(
    workflow: Workflow,
    stages: StageList = None,
    workspace: Ws = "workspace",
    set_: Set = None,
    scheduler: Scheduler = None,
    from_: From = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="this stage and upstream")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="exactly these stages")] = None,
    force: Annotated[bool, typer.Option(help=(
        "re-run the named stages even if cached (STAGE args, --only, --to; --from: that stage "
        "and downstream); upstream they pull in runs only if stale"))] = False,
    wait: Wait = False,
    as_json: Json = False,
) -> None:
    """Run stages of a workflow; up-to-date stages are skipped."""
    from kdpipe.pipeline import prefetch

    with _interruptible(), prefetch.hinted(workflow, set_ or []):  # before the heavy imports
        from kdpipe.api import run_workflow

        report = run_workflow(workflow, workspace, stages or [], overrides=set_ or [],
                              scheduler=scheduler, from_=from_ or [], to=to or [],
                              only=only or [], force=force, wait=wait,
                              show_progress=not as_json and err.is_terminal,
                              log=None if as_json else err.print)
    if as_json:
        emit_json(report)
        return
    ran = [r for r in report["stages"] if r["status"] == "ran"]
    if not ran:
        out.print(f"nothing to do: {len(report['stages'])} stage(s) up to date")
    width = max((len(r["stage"]) for r in report["stages"]), default=14)
    for r in report["stages"]:
        note = f"  ({r['note']})" if r.get("note") else ""  # early cutoff
        out.print(f"{r['stage']:<{width}} {r['status']:<7} {r['key']}  {r['seconds']:.1f}s  "
                  f"{r['path']}{note}")
    _print_results(report)


def _print_results(report: dict[str, Any]) -> None:
    """The results block (when something was evaluated), then one `warning:` line each."""
    from rich.markup import escape

    from kdpipe.results import render

    if report.get("results"):
        for table in render(report["results"]):
            _print_wide(table)
    for w in report.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


@app.command()
def metrics(names: Annotated[list[str] | None, typer.Argument(
                help="evaluate stages, STAGE/KEY or key prefixes (default: all)")] = None,
            workspace: Ws = "workspace", workflow: WorkflowFilter = None,
            as_json: Json = False) -> None:
    """Evaluate metrics of committed artifacts side by side, with a diff column."""
    from kdpipe.results import MetricsQuery, metrics_show, render_metrics

    rep = metrics_show(MetricsQuery(workspace, workflow, names or []))
    if as_json:
        emit_json(rep)
    elif not rep["columns"]:
        out.print(f"no committed evaluate artifacts in {workspace}", highlight=False)
    else:
        _print_wide(render_metrics(rep))


def _print_wide(table: Any) -> None:
    """A table at its natural width when output is not a terminal (rich would use 80)."""
    from rich.measure import Measurement

    need = Measurement.get(out, out.options.update_width(400), table).maximum
    (out if out.is_terminal else Console(width=max(out.width, need))).print(table)


@app.command()
def status(workflow: Workflow, workspace: Ws = "workspace", set_: Set = None,
           as_json: Json = False) -> None:
    """Each stage: up to date, stale (and why) or missing."""
    from kdpipe.pipeline import prefetch

    with prefetch.hinted(workflow, set_ or []):
        from kdpipe.api import workflow_status

        rows = workflow_status(workflow, workspace, overrides=set_ or [],
                               require_workspace=True)
    if as_json:
        emit_json(rows)
        return
    colors = {"up-to-date": "green", "stale": "yellow", "missing": "red"}
    for r in rows:
        why = f" ({'; '.join(r['reasons'])})" if r["reasons"] else ""
        out.print(f"[{colors[r['state']]}]{r['stage']:<14} {r['state']:<11}[/] {r['key']}{why}")
        for w in r["warnings"]:
            out.print(f"  [yellow]warning:[/] {w}")


@app.command()
def lineage(target: Annotated[str, typer.Argument(help="artifact path, STAGE/KEY or STAGE")],
            workspace: Ws = "workspace", as_json: Json = False,
            max_files: Annotated[int, typer.Option(help="raw files shown per stage")] = 10,
            depth: Annotated[int | None, typer.Option(
                min=0, help="show parents up to N levels up (1: direct parents only)")] = None,
            config: Annotated[bool, typer.Option(
                "--config", help="show each artifact's config values")] = False) -> None:
    """The ancestry of an artifact down to the raw input files and their digests; an artifact
    read along several paths is shown once (later: `(shown above)`)."""
    from rich.markup import escape
    from rich.tree import Tree

    from kdpipe.pipeline import ancestry
    from kdpipe.pipeline.store import Workspace

    ws = Workspace(workspace, create=False).require()
    node = ancestry.graph(ws, *ancestry.resolve(ws, target), depth=depth, config=config)
    if as_json:
        emit_json(node)
        return

    def add(t: Tree, n: dict[str, Any]) -> None:
        if "ref" in n:
            t.add(f"[bold]{n['stage']}[/] {n['key']}  [dim](shown above)[/]")
            return
        outs = ", ".join(f"{p} sha256:{o['digest'][:12]}" for p, o in n["outputs"].items())
        branch = t.add(f"[bold]{n['stage']}[/] {n['key']}  {outs}")
        if "config" in n:
            cfg = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(n["config"].items()))
            branch.add(f"[dim]config[/] {escape(cfg)}")
        for c in n["inputs"]:
            add(branch, c)
        files = n["raw_files"]
        for f in files[:max_files]:
            branch.add(f"[dim]raw[/] {f['path']}  sha256:{f['sha256'][:12]}  {f['bytes']} B")
        if len(files) > max_files:
            branch.add(f"[dim]... {len(files) - max_files} more raw files (--json lists all)[/]")
        hidden = [f"{n[k]} {what}" for k, what in (("hidden_inputs", "input(s)"),
                                                   ("hidden_raw_files", "raw file(s)"))
                  if n.get(k)]
        if hidden:
            branch.add(f"[dim]... {' and '.join(hidden)} beyond --depth[/]")

    root = Tree(f"lineage of {target}")
    add(root, node)
    out.print(root)


@app.command()
def gc(workspace: Ws = "workspace", workflow: WorkflowFilter = None,
       yes: Annotated[bool, typer.Option("--yes", help="delete (default: only list)")] = False,
       wait: Wait = False, as_json: Json = False) -> None:
    """List (with --yes: delete) stale .partial work dirs, leftovers and superseded artifacts."""
    from kdpipe.api import collect_garbage

    rep = collect_garbage(workspace, workflow, delete=yes, wait=wait)
    if as_json:
        emit_json(rep)
        return
    verb = "deleted" if yes else "would delete"
    for r in rep["items"]:
        out.print(f"{verb} {r['kind']:<12} {r['bytes']:>12,} B  {r['path']}", highlight=False)
    hint = "; pass --yes to delete" if rep["items"] and not yes else ""
    out.print(f"{verb} {len(rep['items'])} item(s), {rep['bytes']:,} B{hint}", highlight=False)


Opt = typer.Option


@app.command("curate")
def curate(
    workflow: Workflow,
    workspace: Ws = "workspace",
    where: Annotated[list[str] | None, Opt("--where", help="SQL filter over the frame table, "
                                           "e.g. \"n_radar > 150\" (repeatable; replaces the "
                                           "config's)")] = None,
    strategy: Annotated[str | None, Opt(help="uncertainty | rare-class | radar-density | "
                                        "diversity | mix")] = None,
    budget: Annotated[int | None, Opt(help="frames to select", min=1)] = None,
    seed: Annotated[int | None, Opt(help="tie-break / diversity seed")] = None,
    stage: Annotated[str | None, Opt(help="which curate stage of the workflow")] = None,
    set_: Set = None,
    export: Annotated[str | None, Opt(help="kitti | nuscenes | csv")] = None,
    out: Annotated[Path | None, Opt("--out", help="export folder (new or empty)")] = None,
    split_name: Annotated[str, Opt(help="kitti: ImageSets/<name>.txt")] = "train",
    files: Annotated[str, Opt(help="kitti: hardlink | symlink | copy the raw files")] = "hardlink",
    scheduler: Annotated[str | None, Opt(help="sync | local[:N] | tcp://HOST:PORT")] = None,
    as_json: Json = False,
) -> None:
    """Select the frames most worth labeling (curate stage) and optionally export them."""
    from kdpipe import curate_cli

    with _interruptible():
        curate_cli.curate(curate_cli.CurateCommand(
            workflow=workflow, workspace=workspace, where=where, strategy=strategy, budget=budget,
            seed=seed, stage=stage, overrides=set_ or [], export=export, out=out,
            split_name=split_name, files=files, scheduler=scheduler, as_json=as_json))


@app.command("show")
def show(
    frame: Annotated[str, typer.Argument(help="frame id (vod/00549) or unique native id")],
    workspace: Ws = "workspace",
    out: Annotated[Path | None, Opt("--out", help="PNG path (default "
                                    "<frame_id>.png here)")] = None,
    detections: Annotated[str | None, Opt(help="stage name or Parquet path of scored "
                                          "boxes to draw")] = None,
    min_score: Annotated[float, Opt(help="detections below are not drawn")] = 0.1,
    range_: Annotated[str | None, Opt("--range", help="x0,y0,x1,y1 metres (ego)")] = None,
    open3d: Annotated[bool, Opt("--open3d", help="also open an open3d window "
                                "(needs a display)")] = False,
    weights: Annotated[bool, Opt("--weights", help="draw the frame's IMKD weight map "
                                 "(imkd-weights) under the points")] = False,
    as_json: Json = False,
) -> None:
    """Render one frame's bird's-eye view (LiDAR, radar, GT, optional detections) to a PNG."""
    from kdpipe import show as show_cli

    show_cli.show(show_cli.ShowCommand(
        frame=frame, workspace=workspace, out=out, detections=detections, min_score=min_score,
        range_=range_, open3d=open3d, weights=weights, as_json=as_json))


@app.command("audit")
def audit(
    workflow: Annotated[Path | None, typer.Option(
        "--workflow", "-w", help="workflow TOML file (required unless --submission)")] = None,
    workspace: Ws = "workspace",
    set_: Set = None,
    precision_target: Annotated[float | None, Opt(
        help="recommend the lowest threshold reaching this precision (else best F1)",
        min=0.0, max=1.0)] = None,
    write_thresholds_to: Annotated[Path | None, Opt(
        "--write-thresholds", help="write the recommended thresholds into this workflow's "
        "pseudo-label.class_thresholds")] = None,
    scheduler: Annotated[str | None, Opt(help="sync | local[:N] | tcp://HOST:PORT")] = None,
    force: Annotated[bool, Opt(help="re-run the audit even if cached")] = False,
    submission: Annotated[Path | None, Opt(
        help="instead of a workflow: score this nuScenes detection submission JSON (mmdet3d, "
        "OpenPCDet, kdpipe export) like DetectionEval: mAP, NDS, TP errors per class")] = None,
    ingest: Annotated[Path | None, Opt(
        help="with --submission: the ground truth, an ingest artifact directory "
        "(<workspace>/artifacts/ingest/<key>) or a workspace (its newest ingest holding "
        "every sample of the submission)")] = None,
    as_json: Json = False,
) -> None:
    """Audit pseudo-labels against held-out ground truth (PR/F1/AP, calibration, thresholds),
    or with --submission/--ingest score a nuScenes submission file against a store."""
    from kdpipe import audit_cli

    if submission is not None or ingest is not None:
        from kdpipe import submission_audit

        if submission is None or ingest is None or workflow is not None or set_ \
                or write_thresholds_to is not None:
            raise submission_audit.SubmissionError(
                "kdpipe audit: --submission and --ingest go together, without --workflow, "
                "--set or --write-thresholds")
        submission_audit.audit(submission, ingest, as_json)
        return
    if workflow is None:
        raise KdpipeError("kdpipe audit: give --workflow FILE (or --submission FILE.json "
                          "--ingest PATH)")
    with _interruptible():
        audit_cli.audit(audit_cli.AuditCommand(
            workflow=workflow, workspace=workspace, overrides=set_ or [],
            precision_target=precision_target, write_thresholds_to=write_thresholds_to,
            scheduler=scheduler, force=force, as_json=as_json))


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C inside a command that runs stages: the one line saying where a re-run resumes,
    exit 130. Inside `app()` typer turns any KeyboardInterrupt (Interrupted is one) into a
    silent exit 130, so `main` never sees it: the line must be printed here."""
    try:
        yield
    except Interrupted as e:
        err.print(_one_line(e), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        err.print("interrupted; finished stages are kept", highlight=False)
        raise typer.Exit(130) from None


def _one_line(e: object) -> str:
    """A message as one line (Dask's and devkits' messages span several), markup escaped."""
    from rich.markup import escape

    return escape(" ".join(str(e).split()))


def main() -> None:
    """Entry point: user errors are one line on stderr and a non-zero exit, never a traceback."""
    try:
        app()
    except Interrupted as e:  # Ctrl-C in a run: where a re-run resumes, in one line
        err.print(_one_line(e), highlight=False, soft_wrap=True)
        sys.exit(130)
    except KdpipeError as e:
        err.print(f"[red]error:[/] {_one_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; finished stages are kept", highlight=False)
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("KDPIPE_DEBUG"):
            raise
        from kdpipe.pipeline.store import ENVIRONMENT_ERRNOS

        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:  # disk full, permissions
            where = f": {e.filename}" if e.filename else ""
            err.print(f"[red]error:[/] {_one_line(os.strerror(e.errno or 0) + where)}",
                      highlight=False, soft_wrap=True)
            sys.exit(2)
        err.print(f"[red]internal error:[/] {type(e).__name__}: {_one_line(e)} "
                  "(KDPIPE_DEBUG=1 for a traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
