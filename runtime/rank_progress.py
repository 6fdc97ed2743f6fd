"""Progress of a multi-rank training run, shown by the process that launched it.

The ranks are separate processes (torch's elastic launcher), so the stage's `ctx.progress`
cannot be called from them. Rank 0 appends its progress events (`train_step` after every step,
`("epochs", done, total)` after every saved epoch) as JSON lines to a file in the stage's work
directory, and the launching process follows that file while the launcher runs, replaying each
event into its own progress: the same rows, ETA and running loss as a one-process run, and the
Ctrl-C line knows the saved epochs. A file rather than a pipe or a socket because it needs no
set-up across the launcher, works when rank 0 runs on another node with a shared work
directory, and costs one small append per step.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

PROGRESS_FILE = "rank0_progress.jsonl"


class FileProgress:
    """Rank 0's `progress` for `fit`: every event becomes one JSON line in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, event: dict[str, Any]) -> None:
        with self.path.open("a") as f:  # one line per write: a reader never sees half of one
            f.write(json.dumps(event) + "\n")

    def __call__(self, desc: str, done: int, total: int) -> None:
        self._write({"desc": desc, "done": done, "total": total})

    def train_step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        self._write({"step": [epoch, epochs, step, steps, loss]})


class FollowProgress:
    """`with FollowProgress(path, progress):` replays the lines rank 0 appends to `path` into
    `progress` (a `StageProgress`, or None: then the file is only cleaned up), every
    `interval_s` and once more at exit, so nothing rank 0 reported is lost."""

    def __init__(self, path: Path, progress: Any, interval_s: float = 0.2) -> None:
        self.path, self.progress, self.interval_s = path, progress, interval_s
        self._offset, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rank-progress", daemon=True)

    def __enter__(self) -> FollowProgress:
        self.path.unlink(missing_ok=True)  # a killed run's events are not this run's
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.drain()
        self.path.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.drain()

    def drain(self) -> None:
        """Replay the complete lines appended since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        if self.progress is None:
            return
        for line in data[:end].splitlines():
            event = json.loads(line)
            if "step" in event:
                on_step = getattr(self.progress, "train_step", None)
                if on_step is not None:
                    on_step(*event["step"])
            else:
                self.progress(event["desc"], event["done"], event["total"])
