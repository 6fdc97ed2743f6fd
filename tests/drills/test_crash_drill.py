"""The crash drill, short: SIGKILL `kdpipe run` in ingest, the teacher's checkpoint write,
teacher-label and distill's checkpoint write; every artifact must equal an uninterrupted run's.

Each kill lands mid-stage: right after the first finished ingest group / inference part, or
right after a training loop replaced its per-epoch train_state.pt. The long, seeded-random
version is `python benchmarks/crash_drill.py` (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kdpipe.datasets.synth import write_vod
from kdpipe.testing.drills import crash_drill


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


def test_a_copy_retired_by_force_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """A kill between retiring the old artifact (`--force`) and deleting it left
    `<key>.replaced-<pid>/` behind for good; the next run of the stage removes it."""
    from kdpipe.api import run_workflow
    from kdpipe.testing import toy_workflow, write_raw
    from kdpipe.testing.drills import leftovers

    write_raw(tmp_path / "raw", 8)
    wf = toy_workflow(tmp_path / "wf.toml", tmp_path / "raw")
    rep = run_workflow(wf, str(tmp_path / "ws"), scheduler="sync")
    final = Path(rep["stages"][0]["path"])
    stale = final.with_name(final.name + ".replaced-12345")
    shutil.copytree(final, stale)  # as a killed `--force` publish leaves it
    run_workflow(wf, str(tmp_path / "ws"), ["toy-source"], only=["toy-source"], force=True,
                 scheduler="sync")
    assert not stale.exists() and leftovers(tmp_path / "ws") == []
