"""The synthetic VoD radar is calibrated to the real VoD fixture frames (issue 15).

Both sides are measured by the same code (`benchmarks/radar_stats.py`, kdpipe's VoD readers):
the real numbers are computed here from the fixture files, not copied. The bands are loose on
purpose: the real side is 3 frames (~60 labeled objects, 1 car), so only what 3 frames can
justify is asserted. With the pre-calibration defaults (generic radar model) the pedestrian and
cyclist ratios were 0.13 and 0.27, points per frame 0.77x real and the on-object RCS median
+9 dBsm (real -14.6): every test below failed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from kdpipe.datasets.synth import SynthConfig, write_vod

REPO = Path(__file__).resolve().parents[2]


def _stats_module() -> Any:
    spec = importlib.util.spec_from_file_location("radar_stats", REPO / "benchmarks/radar_stats.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stats(real: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rs = _stats_module()
    world = tmp_path_factory.mktemp("radar_cal") / "vod"
    # 4 short scenes: more layouts than one long scene for the same writing time (~6 s).
    write_vod(world, 40, seed=0, cfg=SynthConfig(vod_frames_per_scene=10))
    return {"real": rs.measure(real / "vod"), "synth": rs.measure(world), "bands": rs.BANDS_M}


def _range_matched_ratio(stats: dict[str, Any], cls: str) -> float:
    """Synthetic mean points per object / the real per-band means weighted by the synthetic
    objects' range mix (the real frames hold their pedestrians closer than the synthetic world)."""
    real, synth = stats["real"]["objects"][cls], stats["synth"]["objects"][cls]
    observed, expected = 0.0, 0.0
    for lo, hi in stats["bands"]:
        key = f"{lo:g}-{hi:g}m"
        if synth[key]["n"] and real[key]["n"]:
            observed += synth[key]["n"] * synth[key]["mean"]
            expected += synth[key]["n"] * real[key]["mean"]
    assert expected > 0, f"no {cls} in a range band both datasets hold"
    return observed / expected


@pytest.mark.parametrize("cls", ["Pedestrian", "Cyclist"])
def test_points_per_object_match_real_by_class(stats: dict[str, Any], cls: str) -> None:
    ratio = _range_matched_ratio(stats, cls)
    assert 0.45 <= ratio <= 1.6, f"{cls}: synthetic/real points per object {ratio:.2f}"


def test_clutter_share_and_points_per_frame(stats: dict[str, Any]) -> None:
    real, synth = stats["real"]["frame"], stats["synth"]["frame"]
    assert abs(synth["clutter_share"] - real["clutter_share"]) <= 0.07
    assert 0.8 <= synth["points_mean"] / real["points_mean"] <= 1.25


def test_rcs_does_not_give_objects_away(stats: dict[str, Any]) -> None:
    """Real VoD: points on objects have a *lower* median RCS than clutter (-14.6 vs -12 dBsm)."""
    real, synth = stats["real"]["rcs_dbsm"], stats["synth"]["rcs_dbsm"]
    assert abs(synth["on"]["p50"] - real["on"]["p50"]) <= 3.0
    assert synth["on"]["p50"] < synth["off"]["p50"]
    assert abs(synth["off"]["p50"] - real["off"]["p50"]) <= 3.0
