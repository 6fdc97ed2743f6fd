"""The runner checks outputs against their declared schemas before publishing; plans resolve
schema names before anything runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from kdpipe.api import run_workflow
from kdpipe.config import Workflow
from kdpipe.pipeline.dag import build_plan
from kdpipe.pipeline.errors import PlanError, StageError
from kdpipe.pipeline.stage import (
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
    ZarrArtifact,
)
from kdpipe.pipeline.store import Workspace
from kdpipe.schemas.tables import FRAMES, frame_table


class BreakConfig(StageConfig):
    broken: bool = True   # False: write the artifact as its schema says


def write_frames(ctx: StageContext[BreakConfig]) -> None:
    df = frame_table([{"frame_id": "toy/00001", "n_lidar": 12}], FRAMES)
    if ctx.config.broken:  # the classic slip: an int column built without its declared width
        df = df.with_columns(pl.col("n_lidar").cast(pl.Int64))
    df.write_parquet(ctx.outputs["frames"])


def write_points(ctx: StageContext[BreakConfig]) -> None:
    import zarr

    from kdpipe.datasets.common import GroupWriter, Storage

    root = ctx.outputs["points"]
    zarr.open_group(store=str(root), mode="w", zarr_format=3,
                    attributes={"format": "vod", "frame": "ego"}).require_group("toy")
    w = GroupWriter(ctx.workdir, "toy", "scene_0", Storage(64, 2, 5))
    w.declare("lidar", ("x", "y", "z", "intensity"), ("m", "m", "m", "1"), native_frame="lidar")
    for i in range(3):
        w.add_frame({"frame": f"{i:05d}"}, {"lidar": np.ones((4 + i, 4), np.float32)}, [], [])
    w.write(root)
    if ctx.config.broken:  # frame 1 claims more points than the store has
        zarr.create_array(store=str(root / "toy/scene_0/lidar/offsets"), overwrite=True,
                          data=np.array([0, 4, 9, 20], np.int64))


def write_report(ctx: StageContext[BreakConfig]) -> None:
    ctx.outputs["report"].write_text(json.dumps({"anything": "goes"}))
    pl.DataFrame({"whatever": [1]}).write_parquet(ctx.outputs["free_table"])


FRAMES_STAGE = Stage(name="bad-frames", config=BreakConfig, run=write_frames, inputs=(),
                     outputs=(Port("frames", ParquetArtifact, "frames/1"),))
POINTS_STAGE = Stage(name="bad-points", config=BreakConfig, run=write_points, inputs=(),
                     outputs=(Port("points", ZarrArtifact, "points/1"),))
FREE_STAGE = Stage(name="free", config=BreakConfig, run=write_report, inputs=(),
                   outputs=(Port("report", JsonArtifact), Port("free_table", ParquetArtifact)))


def _run(tmp_path: Path, stage: Stage[Any], **config: Any) -> tuple[dict[str, Any], Workspace]:
    wf = Workflow("schema-check", (stage,), {stage.name: dict(config)})
    return run_workflow(wf, str(tmp_path / "ws"), scheduler="sync"), Workspace(tmp_path / "ws")


def _refused(tmp_path: Path, stage: Stage[Any]) -> str:
    """Run the broken stage; check nothing was published; the error's text."""
    key = build_plan([stage], {}).nodes[stage.name].key
    with pytest.raises(StageError) as err:
        _run(tmp_path, stage)
    ws = Workspace(tmp_path / "ws")
    assert not ws.is_committed(stage.name, key)
    assert not Path(ws.artifact_dir(stage.name, key)).exists()  # only `<key>.partial` may stay
    events = (tmp_path / "ws" / "lineage" / "events.jsonl").read_text().splitlines()
    assert [json.loads(e)["eventType"] for e in events] == ["START", "FAIL"]
    return str(err.value)


def test_parquet_output_breaking_its_schema_is_not_published(tmp_path: Path) -> None:
    msg = _refused(tmp_path, FRAMES_STAGE)
    assert msg == ("stage 'bad-frames' output 'frames' does not match frames/1: "
                   "column n_lidar is Int64, expected Int32")


def test_zarr_points_with_bad_offsets_are_not_published(tmp_path: Path) -> None:
    msg = _refused(tmp_path, POINTS_STAGE)
    assert msg == ("stage 'bad-points' output 'points' does not match points/1: "
                   "toy/scene_0/lidar/offsets[-1] is 20, points has 15 rows")


@pytest.mark.parametrize("stage", [FRAMES_STAGE, POINTS_STAGE], ids=lambda s: s.name)
def test_outputs_that_match_are_published(tmp_path: Path, stage: Stage[Any]) -> None:
    report, ws = _run(tmp_path, stage, broken=False)
    assert report["stages"][0]["status"] == "ran"
    assert ws.is_committed(stage.name, report["stages"][0]["key"])


def test_outputs_without_a_schema_are_not_checked(tmp_path: Path) -> None:
    report, ws = _run(tmp_path, FREE_STAGE)
    assert ws.is_committed("free", report["stages"][0]["key"])


def test_unknown_schema_name_fails_the_plan_naming_stage_and_port(tmp_path: Path) -> None:
    typo = Stage(name="typo", config=BreakConfig, run=write_frames, inputs=(),
                 outputs=(Port("frames", ParquetArtifact, "frame/1"),))
    with pytest.raises(PlanError, match=r"^stage 'typo' output 'frames': unknown schema 'frame/1' "
                                        r"\(known: .*frames/1"):
        _run(tmp_path, typo)
    assert not (tmp_path / "ws" / "artifacts").exists()  # nothing ran
    reader = Stage(name="reader", config=BreakConfig, run=write_report,
                   inputs=(Port("frames", ParquetArtifact, "frames/2"),),
                   outputs=(Port("report", JsonArtifact),))
    ok = Stage(name="ok", config=BreakConfig, run=write_frames, inputs=(),
               outputs=(Port("frames", ParquetArtifact),))
    with pytest.raises(PlanError, match="stage 'reader' input 'frames': unknown schema 'frames/2'"):
        build_plan([ok, reader], {})


def test_schema_of_another_artifact_kind_fails_the_plan() -> None:
    wrong = Stage(name="wrong", config=BreakConfig, run=write_points, inputs=(),
                  outputs=(Port("points", ZarrArtifact, "frames/1"),))
    with pytest.raises(PlanError, match="stage 'wrong' output 'points' is zarr but schema "
                                        "frames/1 describes parquet artifacts"):
        build_plan([wrong], {})
