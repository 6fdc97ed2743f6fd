"""`radar-filter` between ingest and teacher-train: the teacher trains on the filtered store.

Data flows only through ports: a stage that writes new points (and its own frames table) is
read by every consumer bound to it, never bypassed by a path derived from another input.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.datasets.store import IngestStore
from kdpipe.models import create_model
from kdpipe.runtime.model_data import read_group_frames, sensor_map
from kdpipe.testing import TINY_DETECTOR

MIN_RCS = 0.0


def _train_points(store: IngestStore, max_frames: int) -> dict[str, int]:
    """Points teacher-train's frames hold after cropping, counted straight from `store`."""
    model = create_model("sckd-teacher", **TINY_DETECTOR)
    frames = store.select_frames(["train"], labeled_only=True, max_frames=max_frames)
    out = {"lidar": 0, "radar": 0}
    for (src, scene), g in frames.group_by("source", "scene", maintain_order=True):
        for pts, _ in read_group_frames(store, str(src), str(scene), g["frame_index"].to_list(),
                                        sensor_map("radar", model.modalities),
                                        model.config.point_cloud_range_m):
            for m in out:
                out[m] += len(pts[m])
    return out


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory: pytest.TempPathFactory, vod_world: Path
                 ) -> dict[str, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("radar_filter")
    wf = tmp / "filtered.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "radar-filter", "teacher-train"]
seed = 1
[ingest]
format = "vod"
roots = ["{vod_world}"]
[radar-filter]
min_rcs_dbsm = {MIN_RCS}
[teacher-train]
ports = {{ points = "filtered_points", frames = "filtered_frames" }}
max_frames = 8
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
batch_size = 4
""")
    rep = run_workflow(wf, str(tmp / "ws"), scheduler="sync")
    return {s["stage"]: s for s in rep["stages"]}


def test_filtered_store_keeps_layout_and_drops_weak_radar(filtered_run) -> None:  # type: ignore[no-untyped-def]
    ing, flt = filtered_run["ingest"]["outputs"], filtered_run["radar-filter"]["outputs"]
    frames = pl.read_parquet(flt["filtered_frames"])
    before = pl.read_parquet(ing["frames"])
    assert frames["frame_id"].to_list() == before["frame_id"].to_list()
    total_before = total_after = 0
    for (src, scene), g in frames.group_by("source", "scene"):
        old = zarr.open_group(f"{ing['points']}/{src}/{scene}", mode="r")
        new = zarr.open_group(f"{flt['filtered_points']}/{src}/{scene}", mode="r")
        fields = list(new["radar/points"].attrs["fields"])
        rcs = new["radar/points"][:][:, fields.index("rcs")]
        assert (rcs >= MIN_RCS).all()
        np.testing.assert_array_equal(new["lidar/points"][:], old["lidar/points"][:])
        off = new["radar/offsets"][:]
        counts = dict(zip(g["frame_index"].to_list(), g["n_radar"].to_list(), strict=True))
        assert all(counts[i] == off[i + 1] - off[i] for i in counts)
        old_rcs = old["radar/points"][:][:, fields.index("rcs")]
        assert len(rcs) == int((old_rcs >= MIN_RCS).sum())
        total_before, total_after = total_before + len(old_rcs), total_after + len(rcs)
    assert 0 < total_after < total_before  # the threshold bites on the synthetic radar


def test_teacher_trained_on_the_filtered_points(filtered_run) -> None:  # type: ignore[no-untyped-def]
    ing, flt = filtered_run["ingest"]["outputs"], filtered_run["radar-filter"]["outputs"]
    lin = json.loads((Path(str(filtered_run["teacher-train"]["path"])) / "_lineage.json")
                     .read_text())
    assert lin["inputs"]["points"]["stage"] == "radar-filter"
    assert lin["inputs"]["frames"]["stage"] == "radar-filter"
    filtered = IngestStore(Path(str(flt["filtered_points"])), Path(str(flt["filtered_frames"])))
    original = IngestStore(Path(str(ing["points"])), Path(str(ing["frames"])))
    want, unfiltered = _train_points(filtered, 8), _train_points(original, 8)
    assert want["radar"] < unfiltered["radar"] and want["lidar"] == unfiltered["lidar"]
    assert lin["facts"]["train_points"] == want
