"""Minimal, comment-preserving edits of a workflow TOML file (no TOML writer is installed).

Only the one key changes: its line is replaced (a trailing comment kept), or inserted after the
last key of its table, or a new table is appended. The result is parsed back and compared with
the original document plus the one change; anything else is an error and the file is untouched.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from kdpipe.config import toml_value
from kdpipe.pipeline.errors import ConfigError

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")   # [table] (not [[array]])
_ANY_HEADER = re.compile(r"^\s*\[")


def _spellings(stage: str) -> set[str]:
    return {stage, stage.replace("-", "_"), stage.replace("_", "-")}


def _table_name(line: str) -> str | None:
    m = _HEADER.match(line)
    return m.group(1).strip().strip('"') if m else None


def _key_line(line: str, key: str) -> re.Match[str] | None:
    return re.match(rf"^(\s*)(\"?){re.escape(key)}\2\s*=\s*(.*)$", line)


def _trailing_comment(value_text: str) -> str:
    """The `# ...` after a one-line value (outside strings), with its leading space."""
    in_str: str | None = None
    for i, ch in enumerate(value_text):
        if in_str:
            if ch == in_str and value_text[i - 1] != "\\":
                in_str = None
        elif ch in "\"'":
            in_str = ch
        elif ch == "#":
            return "  " + value_text[i:].rstrip()
    return ""


def set_stage_key(path: str | Path, stage: str, key: str, value: Any) -> None:
    """Set `[stage] key = value` in a workflow file, keeping everything else byte for byte."""
    p = Path(path)
    text = p.read_text()
    before = tomllib.loads(text)
    lines = text.splitlines(keepends=True)
    names = _spellings(stage)
    new_line = f"{key} = {toml_value(value)}"
    headers = [(i, _table_name(ln)) for i, ln in enumerate(lines) if _ANY_HEADER.match(ln)]
    start = next((i for i, n in headers if n in names), None)
    sub = next((i for i, n in headers if n in {f"{s}.{key}" for s in names}), None)
    if sub is not None:  # `[stage.key]` sub-table: replace it with nothing, set the key above
        end = next((i for i, _ in headers if i > sub), len(lines))
        del lines[sub:end]
        headers = [(i, _table_name(ln)) for i, ln in enumerate(lines) if _ANY_HEADER.match(ln)]
        start = next((i for i, n in headers if n in names), None)
    if start is None:
        tail = "" if not lines or lines[-1].endswith("\n") else "\n"
        lines.append(f"{tail}\n[{stage}]\n{new_line}\n")
    else:
        end = next((i for i, _ in headers if i > start), len(lines))
        hit = next((i for i in range(start + 1, end) if _key_line(lines[i], key)), None)
        if hit is not None:
            m = _key_line(lines[hit], key)
            assert m is not None
            lines[hit] = f"{m.group(1)}{new_line}{_trailing_comment(m.group(3))}\n"
        else:
            last = max((i for i in range(start + 1, end)
                        if lines[i].strip() and not lines[i].lstrip().startswith("#")),
                       default=start)
            lines.insert(last + 1, new_line + "\n")
    out = "".join(lines)
    _check(out, before, stage, key, value, p)
    p.write_text(out)


def _check(out: str, before: dict[str, Any], stage: str, key: str, value: Any, p: Path) -> None:
    """`out` must parse to `before` with only `[stage] key = value` changed."""
    names = _spellings(stage)
    try:
        after = tomllib.loads(out)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: could not set {key} safely ({e}); edit it by hand") from None
    want = dict(before)
    table = next((n for n in names if n in want), stage)
    want[table] = {**want.get(table, {}), key: value}
    if after != want:
        raise ConfigError(f"{p}: could not set [{table}] {key} without changing other keys "
                          f"(a multi-line value?); edit it by hand")
