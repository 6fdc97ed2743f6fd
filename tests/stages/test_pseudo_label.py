"""Pseudo-label filtering: SCKD's sigma, per-class thresholds and the ST3D ignore band."""
from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from kdpipe.schemas.tables import DETECTIONS
from kdpipe.stages.pseudo_label import PseudoLabelConfig, filter_detections


def _dets(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame([{"frame_id": f, "det_index": i, "label": c, "score": s,
                          "x_ego_m": 10.0, "y_ego_m": 0.0, "z_ego_m": 0.0, "length_m": 4.0,
                          "width_m": 2.0, "height_m": 1.5, "yaw_ego_rad": 0.0}
                         for i, (f, c, s) in enumerate(rows)], schema=DETECTIONS)


DETS = _dets([("a", "Car", 0.95), ("a", "Car", 0.35), ("a", "Pedestrian", 0.12),
              ("b", "Cyclist", 0.09), ("b", "Pedestrian", 0.25), ("b", "Car", 0.05)])


def _states(cfg: PseudoLabelConfig) -> list[tuple[str, float, str]]:
    out = filter_detections(DETS, cfg)
    return [(r["label"], r["score"], r["state"]) for r in out.iter_rows(named=True)]


def test_sckd_single_threshold_keeps_scores_above_sigma() -> None:
    got = _states(PseudoLabelConfig())
    assert got == [("Car", 0.95, "positive"), ("Car", 0.35, "positive"),
                   ("Pedestrian", 0.12, "positive"), ("Pedestrian", 0.25, "positive")]


def test_per_class_thresholds_override_sigma() -> None:
    got = _states(PseudoLabelConfig(class_thresholds={"Car": 0.5, "Pedestrian": 0.2}))
    assert got == [("Car", 0.95, "positive"), ("Pedestrian", 0.25, "positive")]


def test_ignore_band_between_negative_and_positive() -> None:
    cfg = PseudoLabelConfig(sigma=0.3, class_thresholds={"Car": 0.6}, ignore_threshold=0.1,
                            class_ignore_thresholds={"Car": 0.3})
    got = _states(cfg)
    assert got == [("Car", 0.95, "positive"), ("Car", 0.35, "ignore"),
                   ("Pedestrian", 0.12, "ignore"), ("Pedestrian", 0.25, "ignore")]


def test_band_above_positive_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="above its positive"):
        PseudoLabelConfig(sigma=0.2, ignore_threshold=0.5)
