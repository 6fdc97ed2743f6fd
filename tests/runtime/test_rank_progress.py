"""Rank 0's progress file replayed in the launching process: every event once, in order, a
half-written line only when complete, a previous run's file ignored, the file removed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kdpipe.runtime.rank_progress import FileProgress, FollowProgress


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __call__(self, desc: str, done: int, total: int) -> None:
        self.events.append((desc, done, total))

    def train_step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        self.events.append(("step", epoch, epochs, step, steps, loss))


def test_events_are_replayed_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"desc": "epochs", "done": 9, "total": 9}\n')  # a killed run's
    rec = Recorder()
    with FollowProgress(path, rec, interval_s=3600) as follow:  # drains only when told
        rank0 = FileProgress(path)
        rank0.train_step(1, 2, 1, 2, 0.5)
        follow.drain()
        with path.open("a") as f:
            f.write('{"step": [1, 2, 2, 2, 0.')  # half a line: not replayed yet
        follow.drain()
        assert rec.events == [("step", 1, 2, 1, 2, 0.5)]
        with path.open("a") as f:
            f.write('25]}\n')
        rank0("epochs", 1, 2)
    assert rec.events == [("step", 1, 2, 1, 2, 0.5), ("step", 1, 2, 2, 2, 0.25),
                          ("epochs", 1, 2)]
    assert not path.exists()


def test_without_a_progress_the_file_is_only_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    with FollowProgress(path, None, interval_s=0.01):
        FileProgress(path)("epochs", 1, 1)
    assert not path.exists()
