"""curate: filters against an independent polars filter, each strategy on hand-built tables,
budget and determinism, lineage to the raw files, and distill trained on a selection only."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.pipeline import ancestry
from kdpipe.pipeline.dag import validate_config
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.store import Workspace
from kdpipe.runtime.frames import restrict_to_selection
from kdpipe.schemas.tables import BOXES, DETECTIONS, FRAMES, check_table, frame_table
from kdpipe.stages import load_stage
from kdpipe.stages.curate.stage import (
    CurateConfig,
    candidates,
    make_selection,
)
from kdpipe.stages.curate.strategies import class_weights, spread_order
from kdpipe.testing import TINY_DETECTOR, ingest_store


def _frames(specs: list[tuple[str, str, int]], split: str = "unlabeled") -> pl.DataFrame:
    """(frame_id, scene, n_radar) -> a FRAMES table, frame_index in list order per scene."""
    idx: dict[str, int] = {}
    rows = []
    for fid, scene, n_radar in specs:
        idx[scene] = idx.get(scene, -1) + 1
        rows.append({"frame_id": fid, "dataset": "vod", "source": "s", "scene": scene,
                     "frame": fid.split("/")[-1], "frame_index": idx[scene], "split": split,
                     "labeled": split != "unlabeled", "n_lidar": 1000, "n_radar": n_radar,
                     "n_boxes": 0, "lidar_path": f"/raw/{fid}.bin"})
    return frame_table(rows, FRAMES)


def _dets(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return frame_table([{"frame_id": f, "det_index": i, "label": lab, "score": s,
                         "x_ego_m": 10.0, "y_ego_m": 0.0, "z_ego_m": 0.0, "length_m": 4.0,
                         "width_m": 2.0, "height_m": 1.5, "yaw_ego_rad": 0.0}
                        for i, (f, lab, s) in enumerate(rows)], DETECTIONS)


def _pick(frames: pl.DataFrame, dets: pl.DataFrame | None = None,
          counts: dict[str, int] | None = None, **cfg: object) -> list[str]:
    sel, _ = make_selection(frames, CurateConfig(**cfg), dets, counts)  # type: ignore[arg-type]
    check_table(sel, "selection/1")
    assert sel["rank"].to_list() == list(range(1, sel.height + 1))
    return sel["frame_id"].to_list()


FOUR = _frames([("s/a", "x", 10), ("s/b", "x", 10), ("s/c", "y", 10), ("s/d", "y", 10)])


def test_uncertainty_prefers_scores_near_sigma() -> None:
    dets = _dets([("s/a", "Car", 0.9), ("s/a", "Car", 0.95),        # confident: nothing to learn
                  ("s/b", "Car", 0.10), ("s/b", "Car", 0.11), ("s/b", "Car", 0.09),
                  ("s/c", "Car", 0.02),                              # far below the band
                  ("s/d", "Car", 0.12)])
    assert _pick(FOUR, dets, strategy="uncertainty", budget=2, sigma=0.1, band=0.05) \
        == ["s/b", "s/d"]
    # moving sigma moves the preference: around 0.9 the confident frame is the uncertain one
    assert _pick(FOUR, dets, strategy="uncertainty", budget=1, sigma=0.9, band=0.1) == ["s/a"]


def test_rare_class_prefers_the_rare_class() -> None:
    dets = _dets([("s/a", "Car", 0.8), ("s/a", "Car", 0.7), ("s/a", "Car", 0.9),
                  ("s/b", "Cyclist", 0.6),
                  ("s/d", "Cyclist", 0.05)])                         # below rare_min_score
    counts = {"Car": 50, "Cyclist": 2}
    sel, _ = make_selection(FOUR, CurateConfig(strategy="rare-class", budget=4,
                                               rare_min_score=0.1), dets, counts)
    assert sel["frame_id"].to_list()[:2] == ["s/b", "s/a"]
    assert sel.filter(pl.col("frame_id") == "s/d")["score"].item() == 0.0
    assert "Cyclist" in sel["reason"][0]
    w = class_weights(counts, ["Pedestrian"])        # never labeled: the largest weight
    assert w["Pedestrian"] > w["Cyclist"] > w["Car"]


def test_radar_density_and_diversity() -> None:
    frames = _frames([(f"s/x{i}", "x", 100 + i) for i in range(10)]
                     + [(f"s/y{i}", "y", 50) for i in range(10)]
                     + [(f"s/z{i}", "z", 10) for i in range(2)])
    assert _pick(frames, strategy="radar-density", budget=2) == ["s/x9", "s/x8"]
    one_each = _pick(frames, strategy="diversity", budget=3)
    assert sorted(f[2] for f in one_each) == ["x", "y", "z"]
    six = _pick(frames, strategy="diversity", budget=6)
    assert sorted(f[2] for f in six) == ["x", "x", "y", "y", "z", "z"]
    for scene in "xy":  # two picks from ten frames in time order: spread, not neighbours
        i, j = sorted(int(f[3:]) for f in six if f[2] == scene)
        assert j - i >= 4, six
    for n in (1, 2, 7, 10, 33):
        assert sorted(spread_order(n, 0.37)) == list(range(n))


def test_mix_prefers_frames_strong_on_both_terms() -> None:
    dets = _dets([("s/a", "Car", 0.1), ("s/b", "Cyclist", 0.6), ("s/c", "Cyclist", 0.1)])
    top = _pick(FOUR, dets, {"Car": 50, "Cyclist": 2}, strategy="mix", budget=1,
                weights={"uncertainty": 1.0, "rare-class": 1.0})
    assert top == ["s/c"]  # near sigma and a rare class


def test_where_matches_an_independent_polars_filter(vod_world: Path, tmp_path: Path) -> None:
    frames = pl.read_parquet(ingest_store(tmp_path, vod_world, block_frames=10)
                             / "frames.parquet")
    # The cut comes from the frames the other two clauses keep, so every clause removes some
    # frames whatever the synthetic radar's density (the world's median left none of them).
    pool = frames.filter((pl.col("scene") != "block_00001") & pl.col("frame_id").str.ends_with("0"))
    cut = int(pool["n_radar"].min())  # type: ignore[arg-type]
    cfg = CurateConfig(splits=[], where=[f"n_radar > {cut}", "scene <> 'block_00001'",
                                         "frame_id LIKE '%0'"])
    want = frames.filter((pl.col("n_radar") > cut) & (pl.col("scene") != "block_00001")
                         & pl.col("frame_id").str.ends_with("0"))
    got = candidates(frames, cfg)
    assert 0 < got.height < frames.height
    assert sorted(got["frame_id"]) == sorted(want["frame_id"])
    only = candidates(frames, CurateConfig(where=[f"n_radar > {cut}"]))  # default: unlabeled
    assert set(only["split"]) == {"unlabeled"}
    assert only.height == frames.filter((pl.col("split") == "unlabeled")
                                        & (pl.col("n_radar") > cut)).height


@pytest.mark.parametrize("expr, why", [("n_radar >", "unable to parse"),
                                       ("__import__('os')", "unsupported function"),
                                       ("os.system('ls')", "unsupported")])
def test_bad_expression_is_one_config_error_at_plan_time(expr: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        validate_config(load_stage("curate"), {"where": [expr]})
    assert "curate.where" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("expr, why", [("nope > 3", "unknown column .* n_radar"),
                                       ("n_radar + 1", "not a condition")])
def test_bad_column_or_non_condition_is_one_config_error(expr: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        candidates(FOUR, CurateConfig(where=[expr]))
    assert repr(expr) in str(e.value) and "\n" not in str(e.value)


def test_curate_frames_refuses_teacher_strategies() -> None:
    with pytest.raises(ConfigError, match="needs teacher detections"):
        validate_config(load_stage("curate-frames"), {"strategy": "uncertainty"})
    with pytest.raises(ConfigError, match="needs teacher detections"):
        validate_config(load_stage("curate-frames"),
                        {"strategy": "mix", "weights": {"rare-class": 1.0}})


def test_budget_exact_or_all_candidates_with_the_shortfall_reported() -> None:
    frames = _frames([(f"s/{i:02d}", f"sc{i % 3}", 10 + i) for i in range(20)])
    sel, summary = make_selection(frames, CurateConfig(strategy="radar-density", budget=7))
    assert sel.height == 7 and summary["selected"] == 7 and "note" not in summary
    sel, summary = make_selection(frames, CurateConfig(strategy="radar-density", budget=7,
                                                       where=["n_radar >= 25"]))
    assert sel.height == 5 == summary["candidates"] and summary["frames_in_splits"] == 20
    assert "only 5 frame(s) passed" in str(summary["note"])


def test_no_boxes_or_no_candidates_give_zero_scores_or_an_empty_selection() -> None:
    none = _dets([])
    for strategy in ("uncertainty", "rare-class"):
        sel, _ = make_selection(FOUR, CurateConfig(strategy=strategy, budget=2), none, {})
        assert sel.height == 2 and (sel["score"] == 0.0).all()
    sel, _ = make_selection(FOUR, CurateConfig(strategy="mix", budget=2), none, {})
    assert sel.height == 2  # diversity alone decides
    sel, summary = make_selection(FOUR, CurateConfig(budget=2, where=["n_radar > 99"]), none)
    assert sel.is_empty() and summary["selected"] == 0 and "empty" in str(summary["note"])


def test_same_seed_same_selection_other_seed_other_ties() -> None:
    frames = _frames([(f"s/{i:02d}", "sc", 42) for i in range(30)])  # every score ties
    runs = {seed: _pick(frames, strategy="radar-density", budget=5, seed=seed) for seed in (0, 1)}
    assert _pick(frames, strategy="radar-density", budget=5, seed=0) == runs[0]
    assert runs[0] != runs[1]
    # ties follow the seed, not the input order
    assert _pick(frames.reverse(), strategy="radar-density", budget=5, seed=0) == runs[0]


def test_labeled_class_counts_come_from_the_labeled_splits() -> None:
    from kdpipe.stages.curate.stage import class_counts

    frames = pl.concat([_frames([("s/t1", "x", 1), ("s/t2", "x", 1)], split="train"),
                        _frames([("s/v1", "y", 1)], split="val")])
    boxes = frame_table([{"frame_id": f, "box_index": 0, "class_name": c, "label": c}
                         for f, c in [("s/t1", "Car"), ("s/t2", "Car"), ("s/t2", "Cyclist"),
                                      ("s/v1", "Pedestrian")]], BOXES)
    assert class_counts(boxes, frames, ["train"]) == {"Car": 2, "Cyclist": 1}


def test_restrict_to_selection(tmp_path: Path) -> None:
    listed = pl.DataFrame({"frame_id": ["a", "b", "c"], "split": "unlabeled"})
    pl.DataFrame({"frame_id": ["c", "a"]}).write_parquet(tmp_path / "sel.parquet")
    assert sorted(restrict_to_selection(listed, tmp_path / "sel.parquet")["frame_id"]) \
        == ["a", "c"]
    pl.DataFrame({"frame_id": ["a", "z"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="1 selected frame"):
        restrict_to_selection(listed, tmp_path / "bad.parquet")


@pytest.fixture(scope="module")
def curate_run(tmp_path_factory: pytest.TempPathFactory, vod_world: Path,
               ) -> tuple[str, dict[str, dict], list[str], Path]:
    """ingest -> tiny teacher -> labels -> curate (uncertainty) -> distill on the selection."""
    from kdpipe.runtime import frames as rt_frames

    tmp = tmp_path_factory.mktemp("curate")
    wf = tmp / "curate.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "curate",
          "distill-selected"]
seed = 1
[ingest]
format = "vod"
roots = ["{vod_world}"]
block_frames = 10
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
[teacher-label]
splits = ["unlabeled"]
[pseudo-label]
sigma = 0.05
[curate]
strategy = "uncertainty"
budget = 5
sigma = 0.05
[distill-selected]
lrfd_weight = 0.0
frfd_weight = 0.0
[distill-selected.optim]
epochs = 1
""")
    seen: list[str] = []
    original = rt_frames.training_frames  # distill's build imports it when it runs

    def spy(*args, **kw):  # type: ignore[no-untyped-def]
        out = original(*args, **kw)
        seen.extend(f.frame_id for f in out)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(rt_frames, "training_frames", spy)  # the sync executor runs stages in-process
    try:
        rep = run_workflow(wf, str(tmp / "ws"), scheduler="sync")
    finally:
        mp.undo()
    return str(tmp / "ws"), {s["stage"]: s for s in rep["stages"]}, seen, wf


def test_curate_stage_selection_and_summary(curate_run) -> None:  # type: ignore[no-untyped-def]
    _, st, _, _ = curate_run
    sel = pl.read_parquet(st["curate"]["outputs"]["selection"])
    check_table(sel, "selection/1")
    assert sel.height == 5 and set(sel["split"]) == {"unlabeled"}
    assert sel["score"].is_sorted(descending=True)
    summary = json.loads(Path(st["curate"]["outputs"]["selection_summary"]).read_text())
    assert summary["selected"] == 5 and summary["candidates"] == 24
    # the scores are the uncertainty weights recomputed from the stored detections
    dets = pl.read_parquet(st["teacher-label"]["outputs"]["detections"])
    mass = dets.with_columns(w=(1 - (pl.col("score") - 0.05).abs() / 0.05).clip(0)) \
        .group_by("frame_id").agg(pl.col("w").sum())
    want = mass.sort("w", descending=True)["w"].head(5).to_list()
    assert sel["score"].to_list() == pytest.approx(want)


def test_distill_selected_trains_on_the_selection_only(curate_run) -> None:  # type: ignore[no-untyped-def]
    import torch

    _, st, seen, _ = curate_run
    sel = pl.read_parquet(st["curate"]["outputs"]["selection"])
    assert sorted(seen) == sorted(sel["frame_id"])
    blob = torch.load(st["distill-selected"]["outputs"]["student"], weights_only=True)
    assert blob["meta"]["train_frames"] == 5


def test_selection_lineage_reaches_the_raw_files(curate_run) -> None:  # type: ignore[no-untyped-def]
    ws, st, _, _ = curate_run
    node = ancestry.tree(Workspace(ws), "curate", st["curate"]["key"])
    raw: set[str] = set()

    def walk(n: dict) -> None:
        raw.update(r["path"] for r in n["raw_files"])
        for c in n["inputs"]:
            walk(c)

    walk(node)
    sel = pl.read_parquet(st["curate"]["outputs"]["selection"])
    assert set(sel["lidar_path"]) <= raw and set(sel["radar_path"]) <= raw
    import pyarrow.parquet as pq

    kd = json.loads(pq.read_metadata(st["curate"]["outputs"]["selection"]).metadata[b"kdpipe"])
    assert kd["stage"] == "curate" and kd["key"] == st["curate"]["key"]
    distill_node = ancestry.tree(Workspace(ws), "distill-selected",
                                 st["distill-selected"]["key"])
    assert "curate" in {c["stage"] for c in distill_node["inputs"]}


def test_cli_reruns_the_workflows_curate_with_overrides(curate_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from kdpipe.cli import app
    from kdpipe.stages.curate.stage import class_counts

    ws, st, _, wf = curate_run
    res = CliRunner().invoke(app, ["curate", "-w", str(wf), "--workspace", ws, "--strategy",
                                   "rare-class", "--budget", "3", "--json"],
                             catch_exceptions=False)
    rep = json.loads(res.stdout)
    assert rep["stage"] == "curate" and not rep["added_to_workflow"] and rep["status"] == "ran"
    # only curate ran: the teacher and its labels were up to date
    dets = pl.read_parquet(st["teacher-label"]["outputs"]["detections"])
    ingest = Path(st["ingest"]["path"])
    counts = class_counts(pl.read_parquet(ingest / "boxes.parquet"),
                          pl.read_parquet(ingest / "frames.parquet"), ["train"])
    sel, _ = make_selection(pl.read_parquet(ingest / "frames.parquet"),
                            CurateConfig(strategy="rare-class", budget=3), dets, counts)
    assert [f["frame_id"] for f in rep["frames"]] == sel["frame_id"].to_list()
    # the frame, its ground truth and the teacher's boxes drawn from the stage name
    png = tmp_path / "top.png"
    shown = CliRunner().invoke(app, ["show", sel["frame_id"][0], "--workspace", ws, "--out",
                                     str(png), "--detections", "teacher-label", "--min-score",
                                     "0.0", "--json"], catch_exceptions=False)
    out = json.loads(shown.stdout)
    assert out["detections"].endswith("detections.parquet") and png.stat().st_size > 10_000
    assert out["n_pred"] == dets.filter(pl.col("frame_id") == sel["frame_id"][0]).height > 0


def test_candidates_the_teacher_never_saw_are_an_error(curate_run) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from kdpipe.cli import app

    ws, _, _, wf = curate_run
    with pytest.raises(ConfigError, match="not run through the teacher"):
        CliRunner().invoke(app, ["curate", "-w", str(wf), "--workspace", ws, "--set",
                                 'curate.splits=["val"]'], catch_exceptions=False)
