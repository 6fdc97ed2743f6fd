"""Schema objects: the registry, and per schema a write -> validate round trip and broken writes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import zarr

import kdpipe.schemas as S
from kdpipe.schemas import points as P
from kdpipe.schemas.tables import FRAMES, SCHEMAS, TABLE_SCHEMAS, check_table, frame_table
from kdpipe.schemas.weight_maps import CHANNELS

# -- registry ---------------------------------------------------------------------------------


def test_every_built_in_port_schema_resolves_to_its_kind() -> None:
    from kdpipe.stages import BUILTIN, load_stage

    for name in BUILTIN:
        stage = load_stage(name)
        for port in (*stage.inputs, *stage.outputs):
            if port.schema:
                assert S.get_schema(port.schema).kind == port.kind.kind, (name, port.name)


def test_unknown_name_is_one_clear_error() -> None:
    with pytest.raises(S.UnknownSchemaError,
                       match=r"unknown schema 'frames/9' \(known: .*frames/1"):
        S.get_schema("frames/9")
    assert S.get_schema(S.SCHEMAS["frames/1"]) is S.SCHEMAS["frames/1"]  # objects pass through


def test_register_twice_is_a_no_op_but_a_different_definition_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_REGISTRY", {})
    mine = S.TableSchema("plugin_rows", 1, "a plugin's table", {"a": pl.Int32})
    assert S.register_schema(mine) is mine
    S.register_schema(S.TableSchema("plugin_rows", 1, "a plugin's table", {"a": pl.Int32}))
    with pytest.raises(ValueError, match="plugin_rows/1 is already registered"):
        S.register_schema(S.TableSchema("plugin_rows", 1, "", {"a": pl.Int64}))


def test_planning_does_not_import_torch() -> None:
    code = ("import sys, kdpipe.schemas as S; from kdpipe.pipeline.dag import build_plan; "
            "from kdpipe.testing import SOURCE, SCALE; build_plan([SOURCE, SCALE], {}, "
            "fingerprint=False); S.get_schema('checkpoint/1'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- tables -----------------------------------------------------------------------------------


def test_table_objects_and_dtype_dicts_agree() -> None:
    for schema in TABLE_SCHEMAS:
        if schema.id in SCHEMAS:
            assert dict(schema.columns) == SCHEMAS[schema.id]
    assert {s.id for s in TABLE_SCHEMAS} - set(SCHEMAS) == {"toy_records/1"}


@pytest.mark.parametrize("schema", TABLE_SCHEMAS, ids=lambda s: s.id)
def test_table_round_trip_and_each_kind_of_break(schema: S.TableSchema, tmp_path: Path) -> None:
    first = next(iter(schema.columns))  # a String column in every table (an id or a name)
    df = frame_table([{first: "x"}], schema.columns)
    df.write_parquet(tmp_path / "ok.parquet")
    assert schema.validate(tmp_path / "ok.parquet") == []
    assert schema.validate_frame(df) == []
    df.with_columns(pl.lit(1, pl.Int64).alias(first)).write_parquet(tmp_path / "typed.parquet")
    assert schema.validate(tmp_path / "typed.parquet") == [
        f"column {first} is Int64, expected String"]
    df.drop(first).with_columns(bogus=pl.lit(1.0)).write_parquet(tmp_path / "cols.parquet")
    assert schema.validate(tmp_path / "cols.parquet") == [
        f"column {first} is missing", "unexpected column(s) bogus"]


def test_frames_message_names_the_column_and_both_dtypes(tmp_path: Path) -> None:
    df = frame_table([{"frame_id": "vod/00001", "n_lidar": 5}], FRAMES)
    df.with_columns(pl.col("n_lidar").cast(pl.Int64)).write_parquet(tmp_path / "f.parquet")
    with pytest.raises(S.SchemaMismatchError, match="column n_lidar is Int64, expected Int32$"):
        S.get_schema("frames/1").check(tmp_path / "f.parquet")
    check_table(df, "frames/1")  # the dict form still works as before


def test_not_a_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("hello")
    (problem,) = S.get_schema("frames/1").validate(tmp_path / "x.parquet")
    assert problem.startswith("not a readable Parquet file")
    assert S.get_schema("frames/1").validate(tmp_path / "missing.parquet")


# -- points/1 ---------------------------------------------------------------------------------


def write_points(root: Path, fmt: str = "vod", radar: P.SensorLayout = P.VOD_RADAR,
                 cameras: bool = False) -> Path:
    """A two-frame store written by the real group writer, with ingest's root attributes."""
    from kdpipe.datasets.common import ArrayLayout, GroupWriter, Storage

    top = zarr.open_group(store=str(root), mode="w", zarr_format=3,
                          attributes={"format": fmt, "frame": "ego", "layout": "..."})
    top.require_group("src")
    w = GroupWriter(root.parent / "work", "src", "scene_0", Storage(64, 2, 5))
    w.declare("lidar", P.LIDAR.fields, P.LIDAR.units, native_frame="lidar")
    w.declare("radar", radar.fields, radar.units, native_frame="radar")
    rng = np.random.default_rng(0)
    for i, (n_l, n_r) in enumerate([(30, 5), (0, 7)]):  # an empty LiDAR frame included
        w.add_frame({"frame": f"{i:05d}"}, {"lidar": rng.normal(size=(n_l, 4)),
                                            "radar": rng.normal(size=(n_r, len(radar.fields)))},
                    [], [])
    if cameras:
        w.add_array("camera/CAM_FRONT", np.zeros((2, 4, 6, 3), np.uint8),
                    ArrayLayout((1, 4, 6, 3), (2, 4, 6, 3), ("frame", "y", "x", "rgb"),
                                {"channel": "CAM_FRONT"}))
    w.write(root)
    return root


def test_points_round_trip_for_each_radar_layout(tmp_path: Path) -> None:
    layouts = {"vod": P.VOD_RADAR, "nuscenes": P.NUSCENES_RADAR,
               "kitti-radar": P.SensorLayout(("x", "y", "z", "rcs"), ("m", "m", "m", "dBsm"))}
    for fmt, radar in layouts.items():
        root = write_points(tmp_path / fmt / "points.zarr", fmt, radar, cameras=fmt == "nuscenes")
        assert S.get_schema("points/1").validate(root) == [], fmt


def test_points_layouts_match_what_ingest_declares() -> None:
    from kdpipe.datasets import nuscenes_io
    from kdpipe.datasets.common import SENSOR_FIELDS

    assert (P.LIDAR.fields, P.LIDAR.units) == SENSOR_FIELDS["lidar"]
    assert (P.VOD_RADAR.fields, P.VOD_RADAR.units) == SENSOR_FIELDS["vod_radar"]
    assert P.NUSCENES_RADAR.fields == nuscenes_io.RADAR_FIELDS
    assert P.NUSCENES_RADAR.units == nuscenes_io.RADAR_UNITS


def _rewrite(root: Path, path: str, data: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
    old = zarr.open_array(store=str(root / path), mode="r")
    zarr.create_array(store=str(root / path), data=data, overwrite=True,
                      attributes=dict(old.attrs) if attrs is None else attrs)


@pytest.mark.parametrize(("offsets", "problem"), [
    ([0, 30, 29], "src/scene_0/lidar/offsets decreases at frame 1 (30 -> 29)"),
    ([1, 30, 30], "src/scene_0/lidar/offsets[0] is 1, expected 0"),
    ([0, 30, 31], "src/scene_0/lidar/offsets[-1] is 31, points has 30 rows"),
])
def test_bad_offsets(tmp_path: Path, offsets: list[int], problem: str) -> None:
    root = write_points(tmp_path / "points.zarr")
    _rewrite(root, "src/scene_0/lidar/offsets", np.asarray(offsets, np.int64))
    assert problem in S.get_schema("points/1").validate(root)


def test_points_structure_breaks(tmp_path: Path) -> None:
    root = write_points(tmp_path / "points.zarr", cameras=True)
    lidar = zarr.open_array(store=str(root / "src/scene_0/lidar/points"), mode="r")
    _rewrite(root, "src/scene_0/lidar/offsets", np.zeros(4, np.int32))
    _rewrite(root, "src/scene_0/radar/points", lidar[:].astype(np.float32), dict(lidar.attrs))
    _rewrite(root, "src/scene_0/camera/CAM_FRONT", np.zeros((3, 4, 6, 3), np.uint8))
    zarr.open_group(store=str(root / "src/scene_0")).create_group("sonar")
    problems = S.get_schema("points/1").validate(root)
    assert "src/scene_0/lidar/offsets is int32, expected int64" in problems
    assert "src/scene_0/lidar/offsets has shape (4,), expected (3)" in problems
    assert any(p.startswith("src/scene_0/radar/points fields ['x', 'y', 'z', 'intensity']")
               for p in problems)
    assert "src/scene_0/camera/CAM_FRONT has shape (3, 4, 6, 3), expected (2, *, *, 3)" in problems
    assert any(p.startswith("src/scene_0/sonar: unknown sensor") for p in problems)


def test_derived_store_reads_the_format_through_upstream(tmp_path: Path) -> None:
    root = write_points(tmp_path / "points.zarr", "nuscenes", P.NUSCENES_RADAR)
    g = zarr.open_group(store=str(root))
    upstream = dict(g.attrs)
    g.attrs.clear()
    g.attrs.update({"upstream": upstream})
    assert S.get_schema("points/1").validate(root) == []
    g.attrs.update({"upstream": {"frame": "ego"}})
    assert S.get_schema("points/1").validate(root) == ["root attribute 'format' is missing"]


# -- imkd_weight_maps/1 and checkpoint/1 --------------------------------------------------------


def write_maps(root: Path, shape: tuple[int, ...] = (2, 4, 8, 8)) -> Path:
    """The layout `imkd-weights` writes (one scene), on a 6.4 m grid of 0.8 m cells."""
    top = zarr.open_group(store=str(root), mode="w", zarr_format=3)
    top.attrs.update({"channels": list(CHANNELS)})
    frames = ["src/00000", "src/00001"]
    g = top.require_group("src").create_group("scene_0", attributes={"frames": frames})
    g.create_array("maps", data=np.zeros(shape, np.float32), attributes={
        "channels": list(CHANNELS), "frames": frames, "cell_m": 0.8,
        "point_cloud_range_m": [-3.2, -3.2, -5.0, 3.2, 3.2, 3.0]})
    return root


def test_weight_maps_round_trip_and_break(tmp_path: Path) -> None:
    from kdpipe.stages.imkd_weights import CHANNELS as STAGE_CHANNELS

    assert CHANNELS == STAGE_CHANNELS
    schema = S.get_schema("imkd_weight_maps/1")
    assert schema.validate(write_maps(tmp_path / "ok.zarr")) == []
    assert schema.validate(write_maps(tmp_path / "bad.zarr", (2, 4, 8, 9))) == [
        "src/scene_0/maps: grid (8, 9) (H, W) does not follow from the range and cell_m 0.8 "
        "((8, 8))"]
    assert schema.validate(write_maps(tmp_path / "f.zarr", (3, 4, 8, 8))) == [
        "src/scene_0/maps has shape (3, 4, 8, 8), expected (2, 4, *, *)"]


def test_checkpoint_round_trip_and_break(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from kdpipe.runtime.checkpoints import FORMAT

    schema = S.get_schema("checkpoint/1")
    blob = {"format": FORMAT, "name": "toy", "config": {}, "state_dict": {"w": torch.zeros(2)},
            "meta": {"stage": "t"}}
    torch.save(blob, tmp_path / "ok.pt")
    assert schema.validate(tmp_path / "ok.pt") == []
    torch.save({**blob, "format": "other/1", "extra": 1, "meta": None}, tmp_path / "bad.pt")
    assert schema.validate(tmp_path / "bad.pt") == [
        "key 'meta' is a NoneType, expected dict", "unexpected key(s) extra",
        "format is 'other/1', expected 'kdpipe-checkpoint/1'"]
    torch.save({**blob, "state_dict": {"w": Path("x")}}, tmp_path / "pickle.pt")
    (problem,) = schema.validate(tmp_path / "pickle.pt")
    assert problem.startswith("not loadable with torch.load(weights_only=True)")


# -- the metadata views (schemas/zarr_meta.py) against zarr-python's nodes ---------------------


def _broken_stores(tmp_path: Path) -> dict[str, tuple[S.Schema, Path]]:
    """Good and broken stores of both layouts."""
    points, maps = S.get_schema("points/1"), S.get_schema("imkd_weight_maps/1")
    out = {"ok": (points, write_points(tmp_path / "ok" / "points.zarr", cameras=True)),
           "maps ok": (maps, write_maps(tmp_path / "maps_ok.zarr")),
           "maps grid": (maps, write_maps(tmp_path / "maps_bad.zarr", (2, 4, 8, 9)))}
    root = write_points(tmp_path / "structure" / "points.zarr", cameras=True)
    _rewrite(root, "src/scene_0/lidar/offsets", np.zeros(4, np.int32))
    _rewrite(root, "src/scene_0/camera/CAM_FRONT", np.zeros((3, 4, 6, 3), np.uint8))
    zarr.open_group(store=str(root / "src/scene_0")).create_group("sonar")
    zarr.open_group(store=str(root / "src")).create_array("stray", data=np.zeros(2))
    out["structure"] = (points, root)
    root = write_points(tmp_path / "offsets" / "points.zarr")
    _rewrite(root, "src/scene_0/lidar/offsets", np.asarray([1, 30, 29], np.int64))
    zarr.open_group(store=str(root / "src/scene_0")).attrs.update({"frames": [3], "scene": "x"})
    out["offsets"] = (points, root)
    root = write_points(tmp_path / "zeros" / "points.zarr")  # offsets chunk of zeros: no file
    zarr.create_array(store=str(root / "src/scene_0/radar/offsets"), data=np.zeros(3, np.int64),
                      chunks=(3,), compressors=None, overwrite=True)
    assert not (root / "src/scene_0/radar/offsets/c").exists()
    out["zeros"] = (points, root)
    return out


def test_metadata_views_report_what_zarr_python_nodes_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdpipe.schemas import zarr_layout

    stores = _broken_stores(tmp_path)
    fast = {name: schema.validate(root) for name, (schema, root) in stores.items()}

    def no_views(path: Path) -> None:
        raise OSError("views off")

    monkeypatch.setattr(zarr_layout, "open_meta", no_views)
    slow = {name: schema.validate(root) for name, (schema, root) in stores.items()}
    assert fast == slow
    assert fast["ok"] == fast["maps ok"] == [] and all(fast[k] for k in stores if "ok" not in k)
    assert "src/scene_0/radar/offsets[-1] is 0, points has 12 rows" in fast["zeros"]


def test_a_local_store_is_checked_without_zarr_python_nodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ingest writes it (uncompressed single-chunk offsets): no zarr-python node at all."""
    ok = write_points(tmp_path / "ok" / "points.zarr", cameras=True)
    bad = write_points(tmp_path / "bad" / "points.zarr")
    zarr.open_group(store=str(bad / "src/scene_0")).attrs.update({"scene": "x"})

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("zarr-python node opened")

    monkeypatch.setattr(zarr, "open_group", refuse)
    monkeypatch.setattr(zarr, "open_array", refuse)
    assert S.get_schema("points/1").validate(ok) == []
    assert S.get_schema("points/1").validate(bad) == [
        "src/scene_0: attribute 'scene' is 'x', expected 'scene_0'"]


def test_an_unreadable_node_gets_zarr_pythons_answer(tmp_path: Path) -> None:
    root = write_points(tmp_path / "points.zarr")
    (root / "zarr.json").write_text("{not json")
    problems = S.get_schema("points/1").validate(root)
    assert len(problems) == 1 and problems[0].startswith("not a readable Zarr group")
