"""The crash drill, short: SIGKILL `kdpipe run` in ingest, the teacher's checkpoint write,
teacher-label and distill's checkpoint write; every artifact must equal an uninterrupted run's.

Each kill lands mid-stage: right after the first finished ingest group / inference part, or
right after a training loop replaced its per-epoch train_state.pt. The long, seeded-random
version is `python benchmarks/crash_drill.py` (docs/BENCHMARKS.md).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kdpipe.drills import crash_drill
from kdpipe.stages.synth import write_vod


@pytest.mark.slow  # six `kdpipe run` processes: about 60 s of CPU
def test_kills_at_four_moments_leave_every_artifact_identical(tmp_path: Path) -> None:
    world = tmp_path / "world"
    write_vod(world, 16, seed=3)
    targets = ["ingest@unit", "teacher-train@checkpoint", "teacher-label@unit",
               "distill@checkpoint"]
    rep = crash_drill(tmp_path, world, kills=4, kills_per_chain=4, epochs=2, scheduler="sync",
                      targets=targets, seed=0)
    assert rep["kills"] == 4 and rep["missed"] == 0, rep["kill_log"]
    assert [k["stage"] for k in rep["kill_log"]] == [t.partition("@")[0] for t in targets]
    # the training loops were killed with a checkpoint on disk, so resuming from it was tested
    assert rep["kills_with_checkpoint_on_disk"] >= 2, rep["kill_log"]
    assert rep["chains"] == 1 and rep["artifacts_compared"] == 13  # 5 stages' output ports
    assert rep["mismatches"] == [] and rep["leftovers"] == []
    assert rep["lock_held_after_kill"] == 0
