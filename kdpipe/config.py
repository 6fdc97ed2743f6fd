"""Workflows: TOML files holding deltas over the defaults in code, plus typed `--set` overrides.

    [workflow]
    name = "smoke"
    stages = ["ingest"]        # built-in names, in order; plugins = ["pkg.mod:STAGE"] adds more
    seed = 0

    [ingest]                   # only what differs from IngestConfig's defaults
    format = "vod"

    [evaluate-student]         # a second instance of a stage: `uses` names the stage, `ports`
    uses = "evaluate"          # binds its ports to other artifacts (port -> artifact name);
    [evaluate-student.ports]   # every output is rebound: two stages never write one artifact
    checkpoint = "student"
    metrics = "student_metrics"
    metrics_table = "student_metrics_table"
    eval_detections = "student_eval_detections"

    [teacher-train]            # `ports` without `uses` rebinds a stage's own ports
    ports = { points = "filtered_points", frames = "filtered_frames" }

Ports a stage renamed (`Stage.renamed_ports`) fail with a one-line message naming the new key.

Raw input paths (`root` / `roots` of a stage that reads raw files, e.g. `[ingest] roots`) that
are relative resolve against the workflow file's folder, not the current directory, so a
workflow means the same data from wherever it is run; relative paths given with `--set` resolve
against the current directory. Either way the plan (and its keys) holds the absolute path.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import instance
from kdpipe.stages import canonical_name, load_stage

_WORKFLOW_KEYS = {"name", "stages", "seed", "plugins"}


@dataclass(frozen=True)
class Workflow:
    name: str
    stages: tuple[Any, ...]                       # Stage objects, in workflow order
    deltas: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    path: Path | None = None


def parse_value(text: str) -> Any:
    """A `--set` value as TOML would read it (`3`, `0.4`, `true`, `[1, 2]`), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def toml_item(v: Any) -> Any:
    """A Python value as a tomlkit item written on one line: dicts as inline tables (keys whose
    value is None left out: TOML has no null), lists and tuples as arrays, paths as strings."""
    import tomlkit

    if isinstance(v, dict):
        table = tomlkit.inline_table()
        for k, x in v.items():
            if x is not None:
                table.append(str(k), toml_item(x))
        return table
    if isinstance(v, list | tuple):
        arr = tomlkit.array()
        for x in v:
            arr.append(toml_item(x))
        return arr
    return tomlkit.item(str(v) if isinstance(v, Path) else v)


def toml_value(v: Any) -> str:
    """A Python value as a TOML literal (the inverse of `parse_value`), via tomlkit."""
    return str(toml_item(v).as_string())


def toml_table(name: str, cfg: dict[str, Any], uses: str | None = None,
               ports: dict[str, str] | None = None) -> list[str]:
    """The lines of a workflow's `[name]` table: the stage's config deltas, and for an instance
    of another stage its `uses` and `ports` (scripts that write workflows, e.g. benchmarks/)."""
    lines = [f"[{name}]"]
    if uses:
        lines += [f'uses = "{uses}"', f"ports = {toml_value(ports or {})}"]
    return lines + [f"{k} = {toml_value(v)}" for k, v in cfg.items()]


def apply_set(deltas: dict[str, dict[str, Any]], assignment: str) -> None:
    """Apply `stage.key=value` (nested keys with more dots) to the deltas, in place."""
    lhs, sep, rhs = assignment.partition("=")
    parts = [p for p in lhs.strip().split(".") if p]
    if not sep or len(parts) < 2:
        raise ConfigError(f"--set {assignment!r}: expected STAGE.KEY=VALUE")
    node = deltas.setdefault(canonical_name(parts[0]), {})
    for p in parts[1:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: '{p}' is not a table")
    node[parts[-1]] = parse_value(rhs.strip())


def _stage(spec: str, deltas: dict[str, dict[str, Any]]) -> Any:
    """A stage by name, or an instance of one (`uses` + `ports` popped from its table).

    `ports` without `uses` rebinds the named stage's own ports (as `uses = "<itself>"` would),
    e.g. to feed `teacher-train` from a filter stage's outputs.
    """
    table = deltas.get(canonical_name(spec), {})
    uses, ports = table.pop("uses", None), table.pop("ports", None)
    if uses is None and ports is None:
        return load_stage(spec)
    uses, ports = spec if uses is None else uses, {} if ports is None else ports
    if not isinstance(uses, str) or not isinstance(ports, dict) \
            or not all(isinstance(v, str) for v in ports.values()):
        raise ConfigError(f"[{spec}]: `uses` must be a stage name and `ports` a table of "
                          f"port = \"artifact\" strings")
    return instance(load_stage(uses), canonical_name(spec), ports)


_PATH_KEYS = ("root", "roots")


def absolute_roots(stages: list[Any], deltas: dict[str, dict[str, Any]], base: Path) -> None:
    """Make the relative `root`/`roots` of raw-input stages absolute against `base`."""
    def fix(v: Any) -> Any:
        if not isinstance(v, str) or "://" in v:  # fsspec URLs stay as they are
            return v
        return os.path.normpath(os.path.join(base, os.path.expanduser(v)))

    for st in stages:
        table = deltas.get(st.name)
        if not st.sources or not table:
            continue
        for k in _PATH_KEYS:
            if isinstance(table.get(k), list):
                table[k] = [fix(v) for v in table[k]]
            elif k in table:
                table[k] = fix(table[k])


def load_workflow(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Workflow:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"workflow file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    head = doc.pop("workflow", None)
    if not isinstance(head, dict) or not (head.get("stages") or head.get("plugins")):
        raise ConfigError(f"{p}: needs a [workflow] table with a non-empty `stages` list")
    extra = set(head) - _WORKFLOW_KEYS
    if extra:
        raise ConfigError(f"{p}: unknown [workflow] key(s): {', '.join(sorted(extra))}")
    deltas: dict[str, dict[str, Any]] = {}
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: top-level key '{name}' must be a [stage] table")
        deltas[canonical_name(name)] = table
    stages = [_stage(s, deltas) for s in head.get("stages", [])]
    stages += [_stage(s, deltas) for s in head.get("plugins", [])]
    absolute_roots(stages, deltas, p.parent.absolute())
    for a in overrides:
        apply_set(deltas, a)
    absolute_roots(stages, deltas, Path.cwd())  # what --set gave, as typed here
    seed = head.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"{p}: workflow.seed must be an integer")
    name = str(head.get("name", p.stem))
    for s in stages:  # stages that name their workflow (the audit report) get its name
        if "workflow" in s.config.model_fields:
            deltas.setdefault(s.name, {}).setdefault("workflow", name)
    return Workflow(name, tuple(stages), deltas, seed, p)
