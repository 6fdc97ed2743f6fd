"""What every `kdpipe` command module shares: the consoles, the JSON output and one spelling
and default per shared option."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

# One spelling and one default per shared option in every command: a workflow is required
# wherever it is what runs (run, status, curate, audit; no command guesses one), and an
# optional filter in gc and metrics.
Workflow = Annotated[Path, typer.Option("--workflow", "-w", help="workflow TOML file")]
WorkflowFilter = Annotated[Path | None, typer.Option(
    "--workflow", "-w", help="workflow TOML file; only its current keys (default: all)")]
Ws = Annotated[str, typer.Option("--workspace", help="workspace directory or fsspec URL")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
Set = Annotated[list[str] | None, typer.Option(
    "--set", help="STAGE.KEY=VALUE over the workflow file (repeatable)")]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")
