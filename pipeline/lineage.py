"""Lineage records (one per artifact, the commit marker) and OpenLineage-style run events.

nanoGPT stores its config beside the weights; kdpipe does that for every artifact: what was asked
(stage, key, version, config, input keys), what was produced (output digests), from what (input
digests, raw source files), by which code (source hash, git commit, package versions), where and
when.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import socket
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

SOURCES_TABLE = "_sources.parquet"
PRODUCER = "https://github.com/kdpipe/kdpipe"
OL_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
_PACKAGES = ("kdpipe", "torch", "numpy", "zarr", "pyarrow", "polars", "dask", "distributed",
             "nuscenes-devkit", "vod-tudelft", "pydantic")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return str(uuid.uuid4())


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the kdpipe checkout, if the code runs from one."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True, timeout=10,
                               check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty.strip())}


def write_sources(workdir: Path, tables: Sequence[pl.DataFrame]) -> dict[str, Any] | None:
    """Raw input files (path, bytes, sha256 tables) go to one table, not the JSON: there may be
    10^7."""
    frames = [t.select("path", "bytes", "sha256") for t in tables if t.height]
    if not frames:
        return None
    df = pl.concat(frames, how="vertical_relaxed").unique(subset=["path"]).sort("path")
    df.write_parquet(workdir / SOURCES_TABLE)
    return {"table": SOURCES_TABLE, "files": df.height, "bytes": int(df["bytes"].sum())}


@dataclass(frozen=True)
class Asked:
    """What a stage run was asked to make and by which code: the identity half of a record."""

    stage: str
    key: str
    version: int
    config: dict[str, Any]
    source_hash: str
    fingerprint: str | None
    seed: int
    # the key without the raw-file fingerprint (== key for stages without raw inputs): early
    # cutoff compares outputs only between artifacts asked for the same thing
    asked_key: str | None = None


@dataclass(frozen=True)
class RunScope:
    """One run of one stage as its OpenLineage events name it (START, COMPLETE / FAIL).

    `inputs` / `outputs` are the dataset names, "stage/key/file", within namespace `workspace`.
    """

    run_id: str
    stage: str
    workspace: str
    inputs: list[str]
    outputs: list[str]


def record(asked: Asked, *, inputs: dict[str, dict[str, Any]],
           outputs: dict[str, dict[str, Any]], sources: dict[str, Any] | None,
           run_id: str, start: str) -> dict[str, Any]:
    """The lineage record of a finished run (`_lineage.json`, the artifact's commit marker)."""
    return {
        "format": "kdpipe.lineage/1", "stage": asked.stage, "key": asked.key,
        "asked_key": asked.asked_key or asked.key,
        "version": asked.version, "config": asked.config, "inputs": inputs, "outputs": outputs,
        "sources": sources, "fingerprint": asked.fingerprint, "source_hash": asked.source_hash,
        "git": git_state(), "packages": package_versions(), "seed": asked.seed,
        "host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id, "start": start,
        "end": now_iso(),
    }


def run_event(event_type: str, scope: RunScope,
              facets: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenLineage RunEvent (START / COMPLETE / FAIL) for the file transport."""
    ds = [{"namespace": scope.workspace, "name": n} for n in scope.inputs]
    out = [{"namespace": scope.workspace, "name": n} for n in scope.outputs]
    return {
        "eventType": event_type, "eventTime": now_iso(), "producer": PRODUCER,
        "schemaURL": OL_SCHEMA,
        "run": {"runId": scope.run_id,
                "facets": {"kdpipe": {"_producer": PRODUCER,
                                      "_schemaURL": PRODUCER + "/lineage/1",
                                      **(facets or {})}}},
        "job": {"namespace": "kdpipe", "name": scope.stage},
        "inputs": ds, "outputs": out,
    }
