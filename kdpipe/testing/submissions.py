"""Imperfect nuScenes detections made from ground truth, for the submission-audit test and
benchmark (one generator, so both exercise the same kinds of error)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdpipe.schemas.tables import DETECTIONS


def noisy_detections(gt: pl.DataFrame, seed: int, *, fp_per_object: float = 0.4,
                     height_noise: bool = True, fp_extra_labels: Sequence[str] | None = None
                     ) -> pl.DataFrame:
    """Ground truth made imperfect: 15% missed, noise in centre (growing with range), size,
    yaw and velocity, 10% duplicates, 3% another class, `fp_per_object` clutter boxes per
    object; `fp_extra_labels` relabels the clutter among the ground truth's classes and these
    (classes absent from the ground truth); None keeps the sampled labels."""
    rng = np.random.default_rng(seed)
    gt = gt.filter(pl.col("label").is_not_null())
    hit = gt.filter(pl.Series(rng.random(gt.height) > 0.15))
    n = hit.height
    sd_m = 0.1 + 0.02 * np.hypot(hit["x_ego_m"].to_numpy(), hit["y_ego_m"].to_numpy())
    names = sorted(set(gt["label"].to_list()))
    noise: dict[str, Any] = {  # drawn in this order: a seed gives the same boxes
        "x_ego_m": pl.col("x_ego_m") + rng.normal(0, sd_m),
        "y_ego_m": pl.col("y_ego_m") + rng.normal(0, sd_m),
        "z_ego_m": pl.col("z_ego_m") + rng.normal(0, 0.1, n),
        "length_m": pl.col("length_m") * rng.uniform(0.8, 1.2, n),
        "width_m": pl.col("width_m") * rng.uniform(0.8, 1.2, n)}
    if height_noise:
        noise["height_m"] = pl.col("height_m") * rng.uniform(0.8, 1.2, n)
    noise["yaw_ego_rad"] = (pl.col("yaw_ego_rad") + rng.normal(0, 0.3, n)
                            + np.pi * (rng.random(n) < 0.1))  # some boxes facing backwards
    noise["vx_ego_mps"] = pl.col("vx_ego_mps").fill_null(0.0) + rng.normal(0, 0.5, n)
    noise["vy_ego_mps"] = pl.col("vy_ego_mps").fill_null(0.0) + rng.normal(0, 0.5, n)
    noise["label"] = pl.when(pl.Series(rng.random(n) < 0.03)).then(
        pl.Series(rng.choice(names, n))).otherwise(pl.col("label"))
    noise["score"] = pl.Series(np.clip(rng.beta(5, 2, n) - 0.004 * sd_m, 0.01, 1.0))
    tp = hit.with_columns(**noise)
    dup = tp.sample(fraction=0.1, seed=seed).with_columns(
        x_ego_m=pl.col("x_ego_m") + rng.normal(0, 1.0), score=pl.col("score") * 0.6)
    n_fp = max(1, int(fp_per_object * gt.height))
    clutter: dict[str, Any] = {"x_ego_m": pl.Series(rng.uniform(-55, 55, n_fp)),
                               "y_ego_m": pl.Series(rng.uniform(-55, 55, n_fp)),
                               "score": pl.Series(rng.beta(2, 5, n_fp))}
    if fp_extra_labels is not None:
        clutter["label"] = pl.Series(rng.choice([*names, *fp_extra_labels], n_fp))
    fp = gt.sample(n_fp, with_replacement=True, seed=seed + 1).with_columns(**clutter)
    return pl.concat([tp, dup, fp]).with_columns(
        det_index=pl.lit(0, pl.Int32), vx_ego_mps=pl.col("vx_ego_mps").fill_null(0.0),
        vy_ego_mps=pl.col("vy_ego_mps").fill_null(0.0)).select(list(DETECTIONS))


def scramble_attributes(sub: Path, seed: int) -> None:
    """Wrong attributes on a quarter of the boxes (some empty), as a detector gets them."""
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES

    rng = np.random.default_rng(seed)
    data = json.loads(sub.read_text())
    for boxes in data["results"].values():
        for b in boxes:
            if rng.random() < 0.25:
                b["attribute_name"] = str(rng.choice([*ATTRIBUTE_NAMES, ""]))
    sub.write_text(json.dumps(data))


def add_split_of_every_scene(tables: Path, name: str) -> None:
    """A custom devkit split `name` in `<tables>/splits.json` holding every scene."""
    path = tables / "splits.json"
    splits = json.loads(path.read_text())
    splits[name] = sorted({s for v in splits.values() for s in v})
    path.write_text(json.dumps(splits))
