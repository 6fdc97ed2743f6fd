"""The CLI's surface: `kdpipe --version`, one `--workflow` rule, help text on every parameter."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from typing import Any

import typer

from kdpipe.cli import app

KDPIPE = [sys.executable, "-m", "kdpipe"]
# Commands where the workflow is what runs: required there, never guessed.
RUNS_A_WORKFLOW = {"run", "status", "curate", "audit"}


def commands(cmd: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every leaf command of the click tree typer builds, with its full name (typer may bring
    its own copy of click, so groups are recognised by their `commands`)."""
    if hasattr(cmd, "commands"):
        return [c for name, sub in cmd.commands.items()
                for c in commands(sub, f"{path} {name}".strip())]
    return [(path, cmd)]


def tree() -> list[tuple[str, Any]]:
    return commands(typer.main.get_command(app))


def test_version_is_the_installed_distributions() -> None:
    res = subprocess.run([*KDPIPE, "--version"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"kdpipe {version('kdpipe')}"
    assert "--version" in subprocess.run([*KDPIPE, "--help"], capture_output=True, text=True,
                                         timeout=60, check=False).stdout


def test_every_option_and_argument_has_help() -> None:
    missing = []
    root = typer.main.get_command(app)
    for name, cmd in [("", root), *tree()]:
        for p in cmd.params:
            text: Any = getattr(p, "help", None)
            if p.name != "help" and not (text and text.strip()):
                missing.append(f"kdpipe {name} {p.opts[0]}".replace("  ", " "))
    assert not missing, f"parameters without help: {missing}"


def test_workflow_option_is_the_same_everywhere() -> None:
    seen = {}
    for name, cmd in tree():
        for p in cmd.params:
            if p.name == "workflow":
                seen[name] = p
                assert type(p).__name__ == "TyperOption", name
                assert set(p.opts) | set(p.secondary_opts) == {"--workflow", "-w"}, name
                if name == "audit":  # required unless --submission (checked in the command)
                    assert not p.required and p.default is None, name
                elif name in RUNS_A_WORKFLOW:
                    assert p.required and p.default is None, name
                else:  # a filter
                    assert not p.required and p.default is None, name
    assert set(seen) == RUNS_A_WORKFLOW | {"gc", "metrics"}


def test_audit_without_workflow_or_submission_guesses_nothing(tmp_path: Any) -> None:
    res = subprocess.run([*KDPIPE, "audit", "--workspace", str(tmp_path / "ws")],
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert res.returncode == 2 and "--workflow" in res.stderr and "--submission" in res.stderr
    assert not (tmp_path / "ws").exists()


def test_run_without_workflow_guesses_nothing(tmp_path: Any) -> None:
    res = subprocess.run([*KDPIPE, "run", "--workspace", str(tmp_path / "ws")],
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert res.returncode == 2 and "--workflow" in res.stderr
    assert not (tmp_path / "ws").exists()
