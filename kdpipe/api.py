"""Public Python API: the same calls the CLI makes."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kdpipe.config import load_workflow
from kdpipe.pipeline.dag import build_plan, select
from kdpipe.pipeline.executor import make_executor
from kdpipe.pipeline.runner import execute, status
from kdpipe.pipeline.store import Workspace
from kdpipe.stages import canonical_name


def _names(xs: Sequence[str]) -> list[str]:
    return [canonical_name(x) for x in xs]


def run_workflow(workflow: str | Path, workspace: str, stages: Sequence[str] = (), *,
                 overrides: Sequence[str] = (), scheduler: str | None = None,
                 from_: Sequence[str] = (), to: Sequence[str] = (), only: Sequence[str] = (),
                 force: bool = False, wait: bool = False, show_progress: bool = False,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Plan, lock the workspace, and run what is not up to date. Returns a JSON-able report."""
    wf = load_workflow(workflow, list(overrides))
    ws = Workspace(workspace)
    executor = make_executor(scheduler)  # checks the spelling now; starts nothing yet
    with ExitStack() as stack:
        stack.enter_context(ws.lock(wait=wait))
        # plan under the lock: the fingerprint of raw inputs must match what runs
        plan = build_plan(wf.stages, wf.deltas)
        names = select(plan, _names(stages), from_=_names(from_), to=_names(to), only=_names(only))
        progress = None
        if show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            bar = stack.enter_context(Progress("[progress.description]{task.description}",
                                               BarColumn(), MofNCompleteColumn(),
                                               TimeElapsedColumn(), transient=False))
            tasks: dict[str, Any] = {}

            def progress(desc: str, done: int, total: int) -> None:
                if desc not in tasks:
                    tasks[desc] = bar.add_task(desc, total=total)
                bar.update(tasks[desc], completed=done, total=total)

        def on_stage(name: str, key: str) -> None:
            if log:
                log(f"running {name} ({key})")

        results = execute(plan, ws, names, executor=executor,
                          seed=wf.seed, force=force, progress=progress, on_stage=on_stage)
    return {"workflow": wf.name, "workspace": ws.url, "stages": [asdict(r) for r in results]}


def workflow_status(workflow: str | Path, workspace: str,
                    overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    wf = load_workflow(workflow, list(overrides))
    return status(build_plan(wf.stages, wf.deltas), Workspace(workspace))
