"""Comment-preserving edits of a workflow TOML file, through tomlkit (a style-preserving TOML
parser and writer).

Only the one key changes: its value is replaced where it stands (a trailing comment kept), or
added at the end of its table, or a new table is appended. A `[stage.key]` sub-table or
dotted `key.x = ...` lines become the one `key = {...}` line. The result is parsed back and
compared with the original document plus the one change; anything else is an error and the
file is untouched.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from kdpipe.config import toml_item
from kdpipe.pipeline.errors import ConfigError


def _spellings(stage: str) -> list[str]:
    return list(dict.fromkeys([stage, stage.replace("-", "_"), stage.replace("_", "-")]))


def set_stage_key(path: str | Path, stage: str, key: str, value: Any) -> None:
    """Set `[stage] key = value` in a workflow file, keeping everything else byte for byte."""
    p = Path(path)
    text = p.read_text()
    try:
        before = tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError) as e:
        raise ConfigError(f"{p}: invalid TOML, cannot set {key} ({e})") from None
    name = next((n for n in _spellings(stage) if n in doc), None)
    if name is None:  # a new table, set off by a blank line
        name = stage
        for ending in ("\n", "\n\n")[:2 if text.strip() else 0]:
            if not text.endswith(ending):
                doc.add(tomlkit.nl())
        doc.add(name, tomlkit.table())
    table = doc[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: '{name}' is not a table; edit it by hand")
    table[key] = toml_item(value)
    out = tomlkit.dumps(doc)
    if not out.endswith("\n"):
        out += "\n"
    _check(out, before, name, key, value, p)
    p.write_text(out)


def _check(out: str, before: dict[str, Any], table: str, key: str, value: Any, p: Path) -> None:
    """`out` must parse to `before` with only `[table] key = value` changed."""
    try:
        after = tomllib.loads(out)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: could not set {key} safely ({e}); edit it by hand") from None
    want = dict(before)
    want[table] = {**want.get(table, {}), key: tomllib.loads(
        f"v = {toml_item(value).as_string()}")["v"]}
    if after != want:
        raise ConfigError(f"{p}: could not set [{table}] {key} without changing other keys; "
                          f"edit it by hand")
