"""Keys: stable under dict order; change with config, version, upstream keys and raw inputs only."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kdpipe.pipeline.dag import build_plan
from kdpipe.pipeline.hashing import digest_path, stage_key
from kdpipe.testing import REPORT, SCALE, SOURCE, write_raw


def test_key_ignores_dict_order() -> None:
    a = stage_key("s", 1, {"x": 1, "y": {"b": 2, "a": 1}}, {"p": "k1", "q": "k2"})
    b = stage_key("s", 1, {"y": {"a": 1, "b": 2}, "x": 1}, {"q": "k2", "p": "k1"})
    assert a == b


def test_key_changes_with_each_ingredient() -> None:
    base = stage_key("s", 1, {"x": 1}, {"p": "k1"})
    assert stage_key("s", 2, {"x": 1}, {"p": "k1"}) != base
    assert stage_key("s", 1, {"x": 2}, {"p": "k1"}) != base
    assert stage_key("s", 1, {"x": 1}, {"p": "k2"}) != base
    assert stage_key("t", 1, {"x": 1}, {"p": "k1"}) != base
    assert stage_key("s", 1, {"x": 1}, {"p": "k1"}, "fp") != base


def _plan(raw: Path, **scale: int) -> dict[str, str]:
    config = {"toy-source": {"root": str(raw)}, "toy-scale": scale}
    plan = build_plan([SOURCE, SCALE, REPORT], config)
    return {n: plan.nodes[n].key for n in plan.order}


def test_plan_keys_propagate_downstream_only(tmp_path: Path) -> None:
    write_raw(tmp_path, 5)
    k0 = _plan(tmp_path)
    assert _plan(tmp_path) == k0                           # deterministic
    assert _plan(tmp_path, factor=2) == k0                 # default spelled out: same config
    k1 = _plan(tmp_path, factor=3)
    assert k1["toy-source"] == k0["toy-source"]
    assert k1["toy-scale"] != k0["toy-scale"] and k1["toy-report"] != k0["toy-report"]


def test_version_bump_invalidates_stage_and_downstream(tmp_path: Path) -> None:
    write_raw(tmp_path, 3)
    k0 = _plan(tmp_path)
    bumped = dataclasses.replace(SCALE, version=2)
    plan = build_plan([SOURCE, bumped, REPORT], {"toy-source": {"root": str(tmp_path)}})
    assert plan.nodes["toy-source"].key == k0["toy-source"]
    assert plan.nodes["toy-scale"].key != k0["toy-scale"]
    assert plan.nodes["toy-report"].key != k0["toy-report"]


def test_raw_input_change_changes_source_key(tmp_path: Path) -> None:
    write_raw(tmp_path, 3)
    k0 = _plan(tmp_path)
    f = tmp_path / "000001.bin"
    f.write_bytes(b"changed")
    assert _plan(tmp_path)["toy-source"] != k0["toy-source"]
    os.utime(f, ns=(0, 0))
    assert _plan(tmp_path)["toy-source"] != k0["toy-source"]


def test_digest_of_tree_depends_on_names_and_bytes(tmp_path: Path) -> None:
    d = tmp_path / "a.zarr"
    (d / "c").mkdir(parents=True)
    (d / "c" / "0").write_bytes(b"x")
    d0 = digest_path(d)
    (d / "c" / "0").write_bytes(b"y")
    assert digest_path(d) != d0
    (d / "c" / "0").write_bytes(b"x")
    assert digest_path(d) == d0
    (d / "c" / "0").rename(d / "c" / "1")
    assert digest_path(d) != d0
