"""Run a plan against a workspace: skip what is committed, run the rest, publish, record lineage."""
from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from kdpipe.pipeline import lineage
from kdpipe.pipeline.dag import Node, Plan
from kdpipe.pipeline.errors import Interrupted, KdpipeError, PlanError, StageError
from kdpipe.pipeline.executor import Executor, SyncExecutor
from kdpipe.pipeline.hashing import digest_path
from kdpipe.pipeline.progress import ProgressSink, StageProgress
from kdpipe.pipeline.stage import StageContext
from kdpipe.pipeline.store import ENVIRONMENT_ERRNOS, Workspace
from kdpipe.schemas.base import summarize


@dataclass
class StageResult:
    stage: str
    key: str
    status: str                 # "ran" | "cached"
    seconds: float
    path: str
    outputs: dict[str, str] = field(default_factory=dict)   # port -> artifact path
    # early cutoff: "same outputs as <key>" (ran, made the bytes of a committed artifact) or
    # "cut off: upstream outputs unchanged" (cached only because of such a stage upstream)
    note: str = ""


class ExecuteOptions(TypedDict, total=False):
    """How `execute` runs (every key optional).

    executor: where stage units run (default: in this process); closed when `execute` returns.
    seed: the run's seed, handed to every stage (default 0).
    force: re-run stages even if their artifacts are committed: True for every selected
        stage, or the names of the stages to force (default False: none).
    progress: receives every stage's units, training steps and epochs, named by the stage.
    on_stage: called with (stage, key) just before a stage runs.
    """

    executor: Executor | None
    seed: int
    force: bool | Collection[str]
    progress: ProgressSink | None
    on_stage: Callable[[str, str], None] | None


def execute(plan: Plan, ws: Workspace, names: Sequence[str],
            **options: Unpack[ExecuteOptions]) -> list[StageResult]:
    """Run the selected stages whose artifacts are not committed (all of them with `force`).

    Executors start their workers on first use, so a run with nothing to do starts none; the
    executor is closed when this returns. Ctrl-C becomes `Interrupted`, whose one line says
    where a re-run resumes.
    """
    force, seed = options.get("force", False), options.get("seed", 0)
    forced = set(names) if force is True else set(force or ())
    progress, on_stage = options.get("progress"), options.get("on_stage")
    todo = {n for n in names if n in forced or not ws.is_committed(n, plan.nodes[n].key)}
    for n in names:
        for src in plan.nodes[n].upstream.values():
            if src not in todo and not ws.is_committed(src, plan.nodes[src].key):
                raise PlanError(f"stage '{n}' needs the output of '{src}', which is not in the "
                                f"workspace and not selected to run; run '{src}' too")
    ex = options.get("executor") or SyncExecutor()
    results = []
    cut: set[str] = set()  # stages that ran and made bytes an artifact already had
    try:
        for n in names:
            key = plan.nodes[n].key
            # decided now, not up front: an early cutoff upstream may have re-keyed this stage
            # to an artifact that is committed
            if n not in forced and ws.is_committed(n, key):
                up = set(plan.nodes[n].upstream.values())
                note = "cut off: upstream outputs unchanged" if up & cut else ""
                if note:
                    cut.add(n)
                results.append(StageResult(n, key, "cached", 0.0, ws.artifact_dir(n, key),
                                           _output_paths(plan, ws, n), note))
                continue
            if on_stage:
                on_stage(n, key)
            t0 = time.perf_counter()
            tracker = StageProgress(n, progress)
            try:
                same_as = _run_stage(plan, ws, n, ex, seed, tracker)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted; {tracker.resume_hint()}") from None
            note = ""
            if same_as is not None:  # early cutoff: downstream keys as they were
                plan, note = plan.rekey(n, same_as, ws.canonical_key), f"same outputs as {same_as}"
                cut.add(n)
            key = plan.nodes[n].key
            results.append(StageResult(n, key, "ran", time.perf_counter() - t0,
                                       ws.artifact_dir(n, key), _output_paths(plan, ws, n), note))
    finally:
        ex.close()
    return results


def _output_paths(plan: Plan, ws: Workspace, n: str) -> dict[str, str]:
    node = plan.nodes[n]
    return {p.name: f"{ws.artifact_dir(n, node.key)}/{p.filename()}" for p in node.stage.outputs}


def _run_stage(plan: Plan, ws: Workspace, n: str, ex: Executor, seed: int,
               progress: StageProgress) -> str | None:
    """Run and publish stage `n`; the key of the committed artifact whose outputs it made
    again byte for byte (an early cutoff: nothing published, an alias recorded), else None."""
    node = plan.nodes[n]
    run_id, start = lineage.new_run_id(), lineage.now_iso()
    in_ports = node.upstream_port  # input port -> the producer's output port (its file name)
    in_names = [f"{src}/{plan.nodes[src].key}/{in_ports[p].filename()}"
                for p, src in node.upstream.items()]
    out_names = [f"{n}/{node.key}/{p.filename()}" for p in node.stage.outputs]
    scope = lineage.RunScope(run_id=run_id, stage=n, workspace=ws.url, inputs=in_names,
                             outputs=out_names)
    ws.append_event(lineage.run_event("START", scope))
    workdir = ws.prepare(n, node.key)
    inputs = {p: ws.input_path(src, plan.nodes[src].key, in_ports[p].filename())
              for p, src in node.upstream.items()}
    outputs = {p.name: workdir / p.filename() for p in node.stage.outputs}
    # the asked key (no raw-file stat fingerprint): it is written into the outputs' metadata,
    # and a file merely touched must not change the bytes (see pipeline/dag.py, early cutoff)
    ctx: StageContext[Any] = StageContext(
        stage=n, key=node.asked_key or node.key, config=node.config, inputs=inputs, outputs=outputs,
        workdir=workdir, executor=ex, seed=seed, progress=progress)
    try:
        node.stage.run(ctx)
        missing = [p for p, path in outputs.items() if not path.exists()]
        if missing:
            raise StageError(f"stage '{n}' finished without writing {', '.join(missing)}")
        _check_schemas(n, node, outputs)
    except BaseException as e:
        ws.append_event(lineage.run_event("FAIL", scope,
                                          facets={"error": f"{type(e).__name__}: {e}"}))
        if isinstance(e, KdpipeError) or not isinstance(e, Exception):
            raise
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:  # disk full, permissions
            where = f": {e.filename}" if e.filename else ""
            raise StageError(f"stage '{n}' failed: {os.strerror(e.errno)}{where} (the work done "
                             f"so far is kept; fix this and run again to resume)") from e
        log = ws.local_root / "logs" / f"{run_id}.log"
        try:  # best effort: the traceback must not hide the stage's own error
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
        except OSError:
            log = Path("(not written)")
        raise StageError(f"stage '{n}' failed: {type(e).__name__}: {e} (traceback: {log})") from e
    in_lineage = {}
    for p, src in node.upstream.items():
        up = ws.read_lineage(src, plan.nodes[src].key)
        in_lineage[p] = {"stage": src, "key": plan.nodes[src].key,
                         "digest": up["outputs"][in_ports[p].name]["digest"]}
    out_lineage = {p: {"file": path.name,
                       "digest": ctx.output_digests.get(p) or digest_path(path)}
                   for p, path in outputs.items()}
    sources = lineage.write_sources(workdir, ctx.sources)
    asked = lineage.Asked(stage=n, key=node.key, version=node.stage.version,
                          config=node.config.model_dump(mode="json"),
                          source_hash=node.stage.source_hash(), fingerprint=node.fingerprint,
                          seed=seed, asked_key=node.asked_key or node.key)
    rec = lineage.record(asked, inputs=in_lineage, outputs=out_lineage, sources=sources,
                         run_id=run_id, start=start)
    if ctx.facts:  # what the stage reports about its work (e.g. points trained on)
        rec["facts"] = ctx.facts
    same = _same_outputs(ws, n, rec)
    if same is not None:
        ws.write_alias(n, node.key, {"stage": n, "key": node.key, "same_as": same,
                                     "fingerprint": node.fingerprint, "outputs": out_lineage,
                                     "run_id": run_id, "start": start, "end": rec["end"]})
        shutil.rmtree(workdir)
    else:
        ws.publish(n, node.key, workdir, rec)
    ws.append_event(lineage.run_event("COMPLETE", scope, facets={
        "key": node.key, "outputs": out_lineage, **({"same_as": same} if same else {})}))
    return same


def _same_outputs(ws: Workspace, n: str, rec: dict[str, Any]) -> str | None:
    """The key of a committed artifact of `n` asked for the same thing (same asked key: only
    the raw-file stat fingerprint differs) whose output digests equal `rec`'s; newest first."""
    if rec["asked_key"] == rec["key"]:  # no raw inputs: a new key is a new question
        return None
    digests = {p: o["digest"] for p, o in rec["outputs"].items()}
    for old in ws.committed(n):
        if (old.get("asked_key") == rec["asked_key"] and old["key"] != rec["key"]
                and {p: o.get("digest") for p, o in old["outputs"].items()} == digests):
            return str(old["key"])
    return None


def _check_schemas(n: str, node: Node, outputs: dict[str, Path]) -> None:
    """Validate every output that declares a schema; the first mismatch fails the stage.

    Checked before publishing, so a stage that breaks its contract never leaves an artifact
    that downstream stages (or a later run) would take as done.
    """
    for port, schema in node.output_schemas.items():
        problems = schema.validate(outputs[port])
        if problems:
            raise StageError(f"stage '{n}' output '{port}' does not match {schema.id}: "
                             f"{summarize(problems)}")


def status(plan: Plan, ws: Workspace) -> list[dict[str, Any]]:
    """Per stage: up-to-date / stale (with reasons) / missing, plus code-drift warnings.

    A stage whose raw files changed on disk (stat) re-runs; what reads it is stale too, but
    says that it stays cached if that stage's outputs come out byte-identical (early cutoff):
    its key under that assumption names a committed artifact.
    """
    rows = []
    # `plan` as it would be if every such stage made its newest same-asked artifact again
    if_same = plan
    waits: dict[str, list[str]] = {}  # stage -> the re-running stages whose outputs decide it
    for n in plan.order:
        node = plan.nodes[n]
        row: dict[str, Any] = {"stage": n, "key": node.key, "reasons": [], "warnings": []}
        if ws.is_committed(n, node.key):
            row["state"] = "up-to-date"
            rec = ws.read_lineage(n, node.key)
            if rec.get("source_hash") != node.stage.source_hash():
                row["warnings"].append("stage code changed since this artifact was made "
                                       "(bump the stage version to invalidate it)")
        elif ws.is_committed(n, if_same.nodes[n].key):
            roots = sorted({r for src in node.upstream.values() for r in waits.get(src, ())})
            waits[n] = roots
            row["state"] = "stale"
            row["reasons"] = [f"upstream '{r}' re-runs; cached if its outputs are unchanged "
                              f"(early cutoff)" for r in roots]
        else:
            prev = ws.committed(n)
            row["state"] = "stale" if prev else "missing"
            if prev:
                row["reasons"] = _why_stale(plan, n, prev[0])
            same = [r for r in prev if node.asked_key != node.key
                    and r.get("asked_key") == node.asked_key]
            if same:
                if_same = if_same.rekey(n, str(same[0]["key"]), ws.canonical_key)
                waits[n] = [n]
        rows.append(row)
    return rows


def _why_stale(plan: Plan, n: str, rec: dict[str, Any]) -> list[str]:
    node, why = plan.nodes[n], []
    if rec.get("version") != node.stage.version:
        why.append(f"stage version {rec.get('version')} -> {node.stage.version}")
    old, new = rec.get("config", {}), node.config.model_dump(mode="json")
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        why.append("config changed: " + ", ".join(changed))
    for port, src in node.upstream.items():
        if rec.get("inputs", {}).get(port, {}).get("key") != plan.nodes[src].key:
            why.append(f"upstream '{src}' changed")
    if node.fingerprint and rec.get("fingerprint") != node.fingerprint:
        why.append("raw input files changed")
    return why or ["no committed artifact for the current key"]
