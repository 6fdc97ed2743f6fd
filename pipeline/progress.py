"""A run's progress as events: units finished (`ctx.map`), training steps and epochs.

The runner hands every stage a `StageProgress` as `ctx.progress`: called `(desc, done, total)`
as units finish (and `("epochs", done, total)` by the training loop after each saved epoch),
plus `train_step(...)` after each optimiser step. It forwards all of it, named by the stage
instance, to the run's `ProgressSink` (bars or plain lines: `kdpipe/progress_view.py`), and
remembers how far the stage got, for the one line a Ctrl-C prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TrainStep:
    """One optimiser step of a training stage."""

    epoch: int          # 1-based epoch this step belongs to
    epochs: int
    step: int           # steps done in this epoch
    steps: int          # steps per epoch
    loss: float         # running mean of this epoch's loss so far


class ProgressSink(Protocol):
    def units(self, stage: str, desc: str, done: int, total: int) -> None:
        ...

    def train_step(self, stage: str, step: TrainStep) -> None:
        ...

    def epoch_end(self, stage: str, step: TrainStep, seconds: float) -> None:
        ...


class StageProgress:
    """`ctx.progress` of one stage instance (see the module docstring)."""

    def __init__(self, stage: str, sink: ProgressSink | None = None) -> None:
        self.stage, self.sink = stage, sink
        self.epochs_done: int | None = None     # epochs saved (training stages)
        self.epochs: int | None = None
        self.units: tuple[str, int, int] | None = None   # last (desc, done, total)
        self.last_step: TrainStep | None = None
        self._t_epoch = time.perf_counter()

    def __call__(self, desc: str, done: int, total: int) -> None:
        if desc == "epochs":  # the training loop, after an epoch's state is on disk
            self.epochs_done, self.epochs = done, total
            now = time.perf_counter()
            step = self.last_step or TrainStep(done, total, 0, 0, float("nan"))
            if self.sink is not None:
                self.sink.epoch_end(self.stage, step, now - self._t_epoch)
            self._t_epoch = now
            return
        self.units = (desc, done, total)
        if self.sink is not None:
            self.sink.units(self.stage, desc, done, total)

    def train_step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        if self.epochs_done is None:  # first step of this run (maybe resumed)
            self.epochs_done, self.epochs = epoch - 1, epochs
        self.last_step = TrainStep(epoch, epochs, step, steps, loss)
        if self.sink is not None:
            self.sink.train_step(self.stage, self.last_step)

    def resume_hint(self) -> str:
        """Where a re-run picks up after an interruption now."""
        if self.epochs_done is not None and self.epochs:
            nxt = min(self.epochs_done + 1, self.epochs)
            return (f"re-run resumes {self.stage} from epoch {nxt}/{self.epochs} "
                    f"({self.epochs_done} finished epoch(s) saved; finished stages are kept)")
        units = ""
        if self.units is not None and self.units[1]:
            desc, done, total = self.units
            units = f" and {done}/{total} finished {desc} unit(s) of {self.stage}"
        return (f"re-run resumes from {self.stage} (finished stages{units} are kept)")
