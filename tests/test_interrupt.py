"""Ctrl-C during `kdpipe run` (SIGINT to the whole process group, as a terminal sends it): one
line saying where a re-run resumes, exit 130, no traceback from the driver or Dask workers;
the re-run resumes from the saved epoch."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kdpipe.config import toml_value
from kdpipe.testing import TINY_DETECTOR

KDPIPE = [sys.executable, "-m", "kdpipe"]
PROGRESS = re.compile(r"^(running \S+ \(\w+\)|\S+ epoch \d+/\d+ loss \S+ \S+s|\S+ [\w ]+ \d+/\d+)$")
EPOCHS = 6


def _workflow(tmp: Path, world: Path) -> Path:
    p = tmp / "train.toml"
    p.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]
[ingest]
format = "vod"
roots = [{toml_value(str(world))}]
[teacher-train]
max_frames = 8
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = {EPOCHS}
batch_size = 4
""")
    return p


def _start(wf: Path, ws: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`kdpipe run` in its own session (so a signal can go to its whole group, Dask workers
    included); stderr collected line by line as it comes."""
    proc = subprocess.Popen([*KDPIPE, "run", "-w", str(wf), "--workspace", str(ws), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True).start()
    return proc, lines


@pytest.mark.slow
def test_ctrl_c_in_training_is_one_line_and_the_rerun_resumes(tmp_path: Path,
                                                               vod_world: Path) -> None:
    wf, ws = _workflow(tmp_path, vod_world), tmp_path / "ws"
    proc, lines = _start(wf, ws, "--scheduler", "local:1")  # a real worker gets SIGINT too
    deadline = time.monotonic() + 240
    while not any(ln.startswith("teacher-train epoch 2/") for ln in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(lines)
    drained = time.monotonic() + 15  # the reader thread drains the pipe (slow on a busy box)
    while not any(ln.startswith("interrupted") for ln in lines) and time.monotonic() < drained:
        time.sleep(0.05)
    text = "".join(lines)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    rest = [ln.rstrip("\n") for ln in lines if ln.strip() and not PROGRESS.match(ln.strip())]
    assert len(rest) == 1, text
    m = re.fullmatch(rf"interrupted; re-run resumes teacher-train from epoch (\d+)/{EPOCHS} "
                     r"\((\d+) finished epoch\(s\) saved; finished stages are kept\)", rest[0])
    assert m, rest[0]
    saved = int(m.group(2))
    assert saved >= 2 and int(m.group(1)) == saved + 1
    # the re-run skips ingest and trains from the next epoch on, not from epoch 1
    again = subprocess.run([*KDPIPE, "run", "-w", str(wf), "--workspace", str(ws),
                            "--scheduler", "sync"], capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    status = dict(ln.split()[:2] for ln in again.stdout.splitlines()[:2])
    assert status == {"ingest": "cached", "teacher-train": "ran"}, again.stdout
    first = {int(e) for e in re.findall(r"^teacher-train epoch (\d+)/", again.stderr, re.M)}
    assert first and min(first) == saved + 1 and max(first) == EPOCHS, again.stderr
