"""`kdpipe lineage`: walk lineage records from an artifact down to the raw files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.pipeline.errors import KdpipeError
from kdpipe.pipeline.lineage import SOURCES_TABLE
from kdpipe.pipeline.store import Workspace


def resolve(ws: Workspace, target: str) -> tuple[str, str]:
    """(stage, key) for a path inside the store, `stage/key`, or a stage name (newest)."""
    p = Path(target)
    if ws.is_local and p.exists():
        rel = p.resolve().relative_to(ws.root / "artifacts") if _inside(p, ws) else None
        if rel is None or len(rel.parts) < 2:
            raise KdpipeError(f"{target} is not an artifact of workspace {ws.url}")
        return rel.parts[0], rel.parts[1]
    parts = target.strip("/").split("/")
    if len(parts) >= 2 and ws.is_committed(parts[0], parts[1]):
        return parts[0], parts[1]
    recs = ws.committed(parts[0])
    if len(parts) == 1 and recs:
        return parts[0], recs[0]["key"]
    raise KdpipeError(f"no committed artifact '{target}' in workspace {ws.url}")


def _inside(p: Path, ws: Workspace) -> bool:
    try:
        p.resolve().relative_to(ws.root / "artifacts")
        return True
    except ValueError:
        return False


def _node(ws: Workspace, stage: str, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(lineage record, the artifact's entry without its parents) of a committed artifact."""
    if not ws.is_committed(stage, key):
        raise KdpipeError(f"artifact {stage}/{key} is referenced but missing from {ws.url}")
    rec = ws.read_lineage(stage, key)
    return rec, {"stage": stage, "key": key, "path": ws.artifact_dir(stage, key),
                 "outputs": rec["outputs"], "source_hash": rec.get("source_hash"),
                 "git": rec.get("git"), "end": rec.get("end"), "inputs": [], "raw_files": []}


def tree(ws: Workspace, stage: str, key: str) -> dict[str, Any]:
    """The ancestry of one artifact as nested dicts: inputs recursively, raw files at leaves.

    A shared ancestor appears once per path to it; `graph` (`kdpipe lineage`) lists it once."""
    rec, node = _node(ws, stage, key)
    for port, inp in sorted(rec.get("inputs", {}).items()):
        child = tree(ws, inp["stage"], inp["key"])
        child["port"], child["digest"] = port, inp["digest"]
        node["inputs"].append(child)
    if rec.get("sources"):
        path = ws.input_path(stage, key, SOURCES_TABLE)
        node["raw_files"] = pl.read_parquet(path).to_dicts()
    return node


def graph(ws: Workspace, stage: str, key: str, *, depth: int | None = None,
          config: bool = False) -> dict[str, Any]:
    """The ancestry of one artifact, each artifact once: the ancestry is a DAG (two stages
    reading one ingest), so a nested walk would repeat a shared subtree once per path to it.

    Nested like `tree`, depth first; an artifact met again is a reference `{"stage", "key",
    "port", "digest", "ref": "stage/key"}` to its one full entry. `depth`: parents this many
    levels up are listed (raw files count as a level below their artifact); an artifact at the
    limit lists none and says how many it has (`"hidden_inputs"`, `"hidden_raw_files"`).
    `config`: add each artifact's config values.
    """
    seen: set[tuple[str, str]] = set()

    def visit(stage: str, key: str, level: int) -> dict[str, Any]:
        seen.add((stage, key))
        rec, node = _node(ws, stage, key)
        if config:
            node["config"] = rec.get("config", {})
        inputs = sorted(rec.get("inputs", {}).items())
        sources = rec.get("sources") or {}
        if depth is not None and level >= depth:
            node["hidden_inputs"] = len(inputs)
            node["hidden_raw_files"] = int(sources.get("files", 0))
            return node
        for port, inp in inputs:
            if (inp["stage"], inp["key"]) in seen:
                child = {"stage": inp["stage"], "key": inp["key"],
                         "ref": f"{inp['stage']}/{inp['key']}"}
            else:
                child = visit(inp["stage"], inp["key"], level + 1)
            child["port"], child["digest"] = port, inp["digest"]
            node["inputs"].append(child)
        if sources:
            node["raw_files"] = pl.read_parquet(ws.input_path(stage, key, SOURCES_TABLE)).to_dicts()
        return node

    return visit(stage, key, 0)
