"""Progress as users see it: plain per-epoch lines when stderr is not a terminal (through the
real command), one rich row per stage instance with ETA and a per-step loss on a terminal."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from kdpipe.config import toml_value
from kdpipe.pipeline.progress import StageProgress
from kdpipe.progress_view import RichProgress
from kdpipe.testing import TINY_DETECTOR

LINE = re.compile(r"^teacher-train epoch (\d+)/3 loss (\d+\.\d{4}) (\d+\.\d)s$")


@pytest.mark.slow
def test_not_a_tty_prints_one_plain_line_per_epoch(tmp_path: Path, vod_world: Path) -> None:
    wf = tmp_path / "wf.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]
[ingest]
format = "vod"
roots = [{toml_value(str(vod_world))}]
[teacher-train]
max_frames = 8
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 3
batch_size = 4
""")
    ws = tmp_path / "ws"
    res = subprocess.run([sys.executable, "-m", "kdpipe", "run", "-w", str(wf), "--workspace",
                          str(ws), "--scheduler", "sync"], capture_output=True, text=True,
                         timeout=300, check=False)  # stderr is a pipe: not a terminal
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "━" not in res.stderr  # no bars
    epochs = [m for ln in res.stderr.splitlines() if (m := LINE.match(ln))]
    assert [int(m.group(1)) for m in epochs] == [1, 2, 3], res.stderr
    # the loss printed is the epoch's mean loss, as the train log has it
    log = pl.read_parquet(next(ws.glob("artifacts/teacher-train/*/train_log.parquet")))
    assert [float(m.group(2)) for m in epochs] == pytest.approx(log["loss"].to_list(), abs=1e-4)
    assert all(float(m.group(3)) > 0 for m in epochs)


def test_rich_rows_are_per_stage_instance_with_eta_and_step_loss() -> None:
    view = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=160))
    with view:
        teacher, distill = StageProgress("teacher-train", view), StageProgress("distill", view)
        teacher.train_step(1, 2, 1, 3, 0.9)
        teacher.train_step(1, 2, 2, 3, 0.8)
        distill.train_step(1, 4, 1, 5, 2.5)
        rows = {t.description: t for t in view.bar.tasks}
        assert set(rows) == {"teacher-train", "distill"}  # not a shared "epochs" row
        t = rows["teacher-train"]
        assert (t.completed, t.total) == (2, 6) and t.fields["what"] == "epoch 1/2 loss 0.8000"
        assert rows["distill"].total == 20 and rows["distill"].fields["what"].endswith("2.5000")
        StageProgress("evaluate-student", view)("inference groups", 3, 7)
        assert view.bar.tasks[-1].description == "evaluate-student"
    columns = [type(c).__name__ for c in view.bar.columns]
    assert "TimeRemainingColumn" in columns
