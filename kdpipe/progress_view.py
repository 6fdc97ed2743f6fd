"""How `kdpipe run` shows progress: one rich row per stage instance on a terminal, plain lines
otherwise (CI, Slurm, a pipe), both fed by the runner's `ProgressSink` events."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kdpipe.pipeline.progress import TrainStep


def _train_text(s: TrainStep) -> str:
    return f"epoch {s.epoch}/{s.epochs} loss {s.loss:.4f}"


class RichProgress:
    """A row per stage instance, named by it: bar, done/total, elapsed, ETA and what it is
    doing (`digest 12/40`, `epoch 3/10 loss 0.5312`, updated every training step)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description:<16}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), TextColumn("{task.fields[what]}"),
                            console=console or Console(stderr=True), transient=False)
        self.rows: dict[str, Any] = {}

    def print(self, line: str) -> None:
        """A log line above the rows (printed elsewhere it would glue onto a bar)."""
        self.bar.console.print(line, highlight=False, soft_wrap=True)

    def __enter__(self) -> RichProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def _row(self, stage: str, total: int) -> Any:
        if stage not in self.rows:
            self.rows[stage] = self.bar.add_task(stage, total=total, what="")
        return self.rows[stage]

    def units(self, stage: str, desc: str, done: int, total: int) -> None:
        self.bar.update(self._row(stage, total), completed=done, total=total,
                        what=f"{desc}")

    def train_step(self, stage: str, step: TrainStep) -> None:
        total = step.epochs * step.steps
        self.bar.update(self._row(stage, total), total=total,
                        completed=(step.epoch - 1) * step.steps + step.step,
                        what=_train_text(step))

    def epoch_end(self, stage: str, step: TrainStep, seconds: float) -> None:
        return None


class LineProgress:
    """Plain lines for output that is not a terminal: one per training epoch (stage, epoch
    i/n, loss, seconds) and, for units, one at most every `every_s` seconds and at the end."""

    def __init__(self, log: Callable[[str], None], every_s: float = 10.0) -> None:
        self.log, self.every_s = log, every_s
        self._last: dict[str, float] = {}

    def units(self, stage: str, desc: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last.get(stage, 0.0) >= self.every_s:
            self._last[stage] = now
            self.log(f"{stage} {desc} {done}/{total}")

    def train_step(self, stage: str, step: TrainStep) -> None:
        return None

    def epoch_end(self, stage: str, step: TrainStep, seconds: float) -> None:
        self.log(f"{stage} {_train_text(step)} {seconds:.1f}s")
