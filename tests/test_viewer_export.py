"""`kdpipe export-rerun`: an audit's worst frames and a curate selection written as a Rerun
recording, read back with rerun's own reader (`rerun.dataframe`) and compared with what the
store, the audit and the selection hold."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kdpipe.api import run_workflow
from kdpipe.cli import app
from kdpipe.config import toml_value
from kdpipe.datasets.store import IngestStore
from kdpipe.pipeline.errors import KdpipeError
from kdpipe.stages.audit.bev import frame_points
from kdpipe.testing import TINY_DETECTOR

rd = pytest.importorskip("rerun.dataframe")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, vod_world: Path) -> dict[str, Any]:
    """Tiny teacher, its labels on val + unlabeled, an audit and an uncertainty curate. The
    audit matches by centre distance within 30 m so that an untrained teacher still has both
    true and false positives (the TP / FP marks are then worth checking)."""
    tmp = tmp_path_factory.mktemp("rerun")
    wf = tmp / "wf.toml"
    wf.write_text(f"""[workflow]
name = "rerun-test"
stages = ["ingest", "teacher-train", "teacher-label", "audit", "curate"]
seed = 1
[ingest]
format = "vod"
roots = ["{vod_world}"]
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
batch_size = 4
[teacher-label]
batch_size = 4
splits = ["val", "unlabeled"]
[audit]
n_worst = 3
criterion = "center_distance"
distance_m = 30.0
[curate]
strategy = "uncertainty"
budget = 3
""")
    ws = tmp / "ws"
    rep = run_workflow(wf, str(ws), scheduler="sync")
    return {"ws": ws, "tmp": tmp, "stages": {s["stage"]: s for s in rep["stages"]}}


def kd(*args: str | Path) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout


def read_rrd(path: Path) -> dict[str, list[Any]]:
    """Every column of the recording on the `frame` timeline, one row per exported frame."""
    table = rd.load_recording(str(path)).view(index="frame", contents="/**").select().read_all()
    return table.drop_columns(["log_time"]).to_pydict()  # wall clock: ns, not needed here


def test_export_reads_back_equal_to_store_audit_and_selection(workspace: dict[str, Any]
                                                               ) -> None:
    st, out = workspace["stages"], workspace["tmp"] / "export.rrd"
    sel = pl.read_parquet(st["curate"]["outputs"]["selection"]).sort("rank")
    dets = pl.read_parquet(st["teacher-label"]["outputs"]["detections"])
    # a --min-score that keeps about half of the selected frames' detections
    cut = float(dets.filter(pl.col("frame_id").is_in(sel["frame_id"].implode()))["score"]
                .median())  # type: ignore[arg-type]
    code, _ = kd("export-rerun", "--out", out, "--workspace", workspace["ws"],
                 "--audit", "audit", "--selection", "curate", "--min-score", str(cut))
    assert code == 0
    report = json.loads(Path(st["audit"]["outputs"]["audit_json"]).read_text())
    worst = report["worst_frames"]
    want_ids = [w["frame_id"] for w in worst] + sel["frame_id"].to_list()
    assert len(worst) == 3 and sel.height == 3
    got = read_rrd(out)
    assert got["frame"] == list(range(6))
    assert [t[0].splitlines()[0] for t in got["/frame/info:Text"]] == \
        [f"# {f}" for f in want_ids]

    ingest = Path(st["ingest"]["path"])
    store = IngestStore.from_artifact(ingest)
    frames = store.read_frames()
    boxes = store.read_boxes()
    for i, fid in enumerate(want_ids):
        row = frames.filter(pl.col("frame_id") == fid).row(0, named=True)
        lidar, radar = frame_points(store, row)
        np.testing.assert_allclose(got["/ego/lidar:Position3D"][i], lidar[:, :3], atol=1e-6)
        np.testing.assert_allclose(got["/ego/radar:Position3D"][i], radar[:, :3], atol=1e-6)
        np.testing.assert_allclose(got["/ego/radar:rcs_dbsm"][i], radar[:, 3], atol=1e-5)
        gt = boxes.filter(pl.col("frame_id") == fid)
        assert gt.height > 0
        np.testing.assert_allclose(got["/ego/boxes/gt:PoseTranslation3D"][i],
                                   gt.select("x_ego_m", "y_ego_m", "z_ego_m").to_numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(np.asarray(got["/ego/boxes/gt:HalfSize3D"][i]) * 2,
                                   gt.select("length_m", "width_m", "height_m").to_numpy(),
                                   atol=1e-5)
        # yaw about +z as a quaternion (x, y, z, w): back to the canonical yaw
        q = np.asarray(got["/ego/boxes/gt:PoseRotationQuat"][i])
        np.testing.assert_allclose(q[:, :2], 0.0, atol=1e-7)
        yaw = 2 * np.arctan2(q[:, 2], q[:, 3])
        np.testing.assert_allclose(np.angle(np.exp(1j * (yaw - gt["yaw_ego_rad"].to_numpy()))),
                                   0.0, atol=1e-5)
        assert got["/ego/boxes/gt:Text"][i] == \
            gt.select(pl.coalesce("label", "class_name"))["label"].to_list()
        img = Path(row["image_path"])
        assert got["/camera/image:Blob"][i][0] == list(img.read_bytes())

    # audit frames: the boxes the audit kept, marked by its matching; its per-frame numbers
    for i, w in enumerate(worst):
        texts = got["/ego/boxes/det:Text"][i]
        assert len(texts) == w["n_det"] == w["tp"] + w["fp"]
        assert sum(t.endswith(" TP") for t in texts) == w["tp"]
        assert sum(t.endswith(" FP") for t in texts) == w["fp"]
        for name in ("tp", "fp", "fn", "n_gt"):
            assert got[f"/audit/{name}:Scalar"][i] == [float(w[name])]
    assert sum(w["tp"] for w in worst) > 0 and sum(w["fp"] for w in worst) > 0
    # selection frames: the teacher's detections >= --min-score, rank and score as scalars
    for j, s in enumerate(sel.iter_rows(named=True)):
        i = len(worst) + j
        every = dets.filter(pl.col("frame_id") == s["frame_id"])
        d = every.filter(pl.col("score") >= cut)
        assert 0 < d.height < every.height
        np.testing.assert_allclose(got["/ego/boxes/det:PoseTranslation3D"][i],
                                   d.select("x_ego_m", "y_ego_m", "z_ego_m").to_numpy(),
                                   atol=1e-5)
        assert [t.split()[0] for t in got["/ego/boxes/det:Text"][i]] == d["label"].to_list()
        assert got["/curate/rank:Scalar"][i] == [float(s["rank"])]
        assert got["/curate/score:Scalar"][i] == pytest.approx([s["score"]])
        assert f"reason: {s['reason']}" in got["/frame/info:Text"][i][0]


def test_export_frame_ids_with_detections_json(workspace: dict[str, Any]) -> None:
    out = workspace["tmp"] / "frames.rrd"
    ingest = Path(workspace["stages"]["ingest"]["path"])
    fid = pl.read_parquet(ingest / "frames.parquet").filter(
        pl.col("split") == "unlabeled")["frame_id"][0]
    code, stdout = kd("export-rerun", "--out", out, "--workspace", workspace["ws"],
                      "--frame", fid, "--detections", "teacher-label", "--no-images", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["frame_ids"] == [fid] and summary["bytes"] == out.stat().st_size
    got = read_rrd(out)
    assert "/camera/image:Blob" not in got
    assert len(got["/ego/boxes/det:Text"][0]) == summary["n_det"] > 0
    assert len(got["/ego/lidar:Position3D"][0]) == summary["n_lidar"] > 0


def test_nuscenes_frames_on_the_timestamp_timeline(tmp_path: Path) -> None:
    """nuScenes frames carry `timestamp_us`: the recording's `timestamp` timeline holds it
    exactly (ns), frames in the order asked; radar values are the store's RCS and v_r."""
    from kdpipe.datasets.synth import SynthConfig, write_nuscenes
    from kdpipe.testing import ingest_store

    write_nuscenes(tmp_path / "nus", 1, seed=3, cfg=SynthConfig(
        nus_samples_per_scene=3, image_scale=0.25, nus_lidar_azimuths=256, nus_radar_sweeps=1))
    art = ingest_store(tmp_path, tmp_path / "nus", "nuscenes", camera_channels=[])
    frames = pl.read_parquet(art / "frames.parquet").sort("timestamp_us", descending=True)
    ids = frames["frame_id"].to_list()
    code, _ = kd("export-rerun", "--out", tmp_path / "n.rrd", "--workspace", tmp_path / "ws",
                 *[a for f in ids for a in ("--frame", f)])
    assert code == 0
    table = rd.load_recording(str(tmp_path / "n.rrd")).view(
        index="frame", contents="/**").select().read_all()
    assert table.column("timestamp").cast("int64").to_pylist() == \
        [t * 1000 for t in frames["timestamp_us"].to_list()]
    store = IngestStore.from_artifact(art)
    for i, row in enumerate(frames.iter_rows(named=True)):
        _, radar = frame_points(store, row)  # x y z rcs v_r ...
        assert len(radar) == row["n_radar"] > 0
        np.testing.assert_allclose(table.column("/ego/radar:rcs_dbsm")[i].as_py(), radar[:, 3],
                                   atol=1e-5)
        np.testing.assert_allclose(table.column("/ego/radar:v_r_mps")[i].as_py(), radar[:, 4],
                                   atol=1e-5)


@pytest.mark.parametrize("args, msg", [
    (["--frame", "world/99999"], "frame 'world/99999' is not in any ingest artifact"),
    (["--audit", "curate"], "is not an audit (it has no 'audit_json' output)"),
    (["--selection", "audit/0000"], "no committed artifact 'audit/0000'"),
    (["--audit", "audit", "--radar-sensor", "radar_9"], "no radar sensor 'radar_9'"),
    ([], "nothing to export"),
])
def test_bad_input_is_one_error(workspace: dict[str, Any], args: list[str], msg: str) -> None:
    out = workspace["tmp"] / "bad.rrd"
    with pytest.raises(KdpipeError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        kd("export-rerun", "--out", out, "--workspace", workspace["ws"], *args)
    assert e.value.exit_code == 2
    assert not out.exists() and not list(out.parent.glob(".bad.rrd*"))


def test_cli_missing_workspace_exit_2_one_line(tmp_path: Path) -> None:
    """Through the real entry point: one line on stderr, exit 2; `--help` loads no rerun."""
    res = subprocess.run([sys.executable, "-m", "kdpipe", "export-rerun", "--out",
                          tmp_path / "x.rrd", "--workspace", tmp_path / "nope", "--audit",
                          "audit"], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: workspace not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "nope").exists()
    probe = ("import sys; from kdpipe.cli import app; "
             "assert 'rerun' not in sys.modules, 'rerun imported at CLI start'")
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
