"""`ingest.unlisted_split`: the split of VoD frames that no ImageSets file lists."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kdpipe.pipeline.errors import ConfigError
from kdpipe.testing import ingest_store

REAL_FRAMES = ["vod/00549", "vod/01047", "vod/01201"]


def _frames(tmp: Path, roots: list[Path], ws: str, **extra: object) -> pl.DataFrame:
    art = ingest_store(tmp, roots, "vod", ws=ws, **extra)
    return pl.read_parquet(art / "frames.parquet")


def test_unlisted_real_frames_get_the_mapped_split(tmp_path: Path, real: Path,
                                                   vod_world: Path) -> None:
    roots = [vod_world, real / "vod"]
    before = _frames(tmp_path, roots, "before")
    after = _frames(tmp_path, roots, "after", unlisted_split={"vod": "unlabeled"})
    real_before = before.filter(pl.col("source") == "vod").sort("frame_id")
    real_after = after.filter(pl.col("source") == "vod").sort("frame_id")
    assert real_before["frame_id"].to_list() == real_after["frame_id"].to_list() == REAL_FRAMES
    # today (no mapping): split "", labeled because each has a label file
    assert real_before["split"].to_list() == ["", "", ""]
    assert real_before["labeled"].to_list() == [True, True, True]
    # mapped to "unlabeled": the existing rule makes them unlabeled despite their label files
    assert real_after["split"].to_list() == ["unlabeled"] * 3
    assert real_after["labeled"].to_list() == [False] * 3
    # the synthetic root is not in the mapping: every one of its frames keeps split and labeled
    cols = ["frame_id", "split", "labeled", "n_lidar", "n_radar", "n_boxes"]
    synth = pl.col("source") == vod_world.name
    assert before.filter(synth).select(cols).sort("frame_id").equals(
        after.filter(synth).select(cols).sort("frame_id"))


def test_listed_frames_keep_their_split(tmp_path: Path, vod_world: Path) -> None:
    """A mapping for a root whose frames are (mostly) listed changes only the unlisted ones."""
    before = _frames(tmp_path, [vod_world], "before").sort("frame_id")
    after = _frames(tmp_path, [vod_world], "after",
                    unlisted_split={vod_world.name: "test"}).sort("frame_id")
    listed = before["split"] != ""
    assert listed.any()
    assert after.filter(listed)["split"].to_list() == before.filter(listed)["split"].to_list()
    assert set(after.filter(~listed)["split"].to_list()) <= {"test"}


def test_source_named_by_names(tmp_path: Path, real: Path) -> None:
    frames = _frames(tmp_path, [real / "vod"], "named", names=["drive7"],
                     unlisted_split={"drive7": "val"})
    assert frames["split"].to_list() == ["val"] * 3
    assert frames["labeled"].to_list() == [True] * 3  # val with a label file: labeled


@pytest.mark.parametrize(("mapping", "needle"), [
    ({"nope": "unlabeled"}, "unknown source(s) nope (sources: vod)"),
    ({"vod": "unlabelled"}, "'unlabelled' is not a split"),
])
def test_bad_mapping_is_one_line_at_plan_time(tmp_path: Path, real: Path,
                                              mapping: dict[str, str], needle: str) -> None:
    from kdpipe.config import load_workflow
    from kdpipe.pipeline.dag import build_plan
    from kdpipe.testing import ingest_workflow

    wf = load_workflow(ingest_workflow(tmp_path / "wf.toml", [real / "vod"], "vod",
                                       unlisted_split=mapping))
    with pytest.raises(ConfigError) as err:
        build_plan(wf.stages, wf.deltas, fingerprint=False)
    msg = str(err.value)
    assert "\n" not in msg and "ingest" in msg and "unlisted_split" in msg and needle in msg
