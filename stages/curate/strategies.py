"""Selection strategies for `curate`: each scores every candidate frame and says why.

A strategy returns one row per candidate, `(frame_id, score, reason)`, higher score = picked
first. `pick` then orders by score and breaks ties with a seeded permutation of the frame ids
(never by table or dict order), so the same inputs and seed give the same selection.

- uncertainty: teacher boxes whose score sits near the pseudo-label threshold sigma are the ones
  a human label settles; each box weighs `max(0, 1 - |score - sigma| / band)` (1 at sigma, 0 at
  sigma +- band) and a frame scores the sum.
- rare-class: boxes (score >= `min_score`) of classes rare in the labeled set, each weighted by
  inverse class frequency (scikit-learn's "balanced" `n / (k * count)`, add-one smoothed so a
  class never labeled gets the largest finite weight); a frame scores the sum.
- radar-density: radar points in the frame.
- diversity: spread across scenes and time. Scenes are visited round-robin (in a seeded order);
  within a scene, frames sorted by time are taken in van der Corput order (1/2, 1/4, 3/4, ...
  of the scene, rotated by a seeded offset), i.e. recursively halved time bins, so any prefix of
  k picks covers the scene evenly. Score = 1 - position in that order / number of candidates.
- mix: a weighted sum of the strategies' scores, each min-max normalised to [0, 1].
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

STRATEGIES = ("uncertainty", "rare-class", "radar-density", "diversity")
NEEDS_DETECTIONS = frozenset({"uncertainty", "rare-class"})
SCORED = {"frame_id": pl.String, "score": pl.Float64, "reason": pl.String}


def _on(dets: pl.DataFrame, cands: pl.DataFrame) -> pl.DataFrame:
    return dets.join(cands.select("frame_id"), on="frame_id", how="semi")


def uncertainty(cands: pl.DataFrame, dets: pl.DataFrame, sigma: float, band: float
                ) -> pl.DataFrame:
    near = _on(dets, cands).with_columns(
        w=(1.0 - (pl.col("score") - sigma).abs() / band).clip(lower_bound=0.0)
    ).filter(pl.col("w") > 0)
    per = near.group_by("frame_id").agg(mass=pl.col("w").sum(), n=pl.len())
    return cands.select("frame_id").join(per, on="frame_id", how="left").select(
        "frame_id", score=pl.col("mass").fill_null(0.0),
        reason=pl.format(f"{{}} box(es) with |score - {sigma}| < {band}, weight {{}}",
                         pl.col("n").fill_null(0), pl.col("mass").fill_null(0.0).round(3)))


def class_weights(counts: Mapping[str, int], classes: Iterable[str]) -> dict[str, float]:
    """Inverse frequency `n / (k * (count + 1))` over the labeled classes and `classes`."""
    names = sorted(set(counts) | set(classes))
    k = len(names)
    n = sum(counts.get(c, 0) for c in names) + k
    return {c: n / (k * (counts.get(c, 0) + 1)) for c in names}


def rare_class(cands: pl.DataFrame, dets: pl.DataFrame, counts: Mapping[str, int],
               min_score: float) -> pl.DataFrame:
    d = _on(dets, cands).filter(pl.col("score") >= min_score)
    none = f"no box with score >= {min_score}"
    if d.is_empty():
        return cands.select("frame_id", score=pl.lit(0.0), reason=pl.lit(none))
    weights = class_weights(counts, d["label"].unique().to_list())
    per_class = d.group_by("frame_id", "label").agg(n=pl.len()).with_columns(
        w=pl.col("label").replace_strict(weights, return_dtype=pl.Float64)
    ).with_columns(part=pl.col("n") * pl.col("w")).sort(
        "frame_id", "part", "label", descending=[False, True, False])
    per = per_class.group_by("frame_id", maintain_order=True).agg(
        total=pl.col("part").sum(),
        why=pl.format("{} {} (w {})", pl.col("n"), pl.col("label"), pl.col("w").round(2))
        .head(3).str.join(", "))
    return cands.select("frame_id").join(per, on="frame_id", how="left").select(
        "frame_id", score=pl.col("total").fill_null(0.0),
        reason=pl.col("why").fill_null(none))


def radar_density(cands: pl.DataFrame) -> pl.DataFrame:
    return cands.select("frame_id", score=pl.col("n_radar").cast(pl.Float64),
                        reason=pl.format("{} radar points", pl.col("n_radar")))


def _van_der_corput(j: int) -> float:
    x, denom = 0.0, 1.0
    while j:
        denom *= 2.0
        x += (j & 1) / denom
        j >>= 1
    return x


def spread_order(n: int, offset: float) -> list[int]:
    """Positions 0..n-1 in rotated van der Corput order: every prefix is spread evenly.

    Terminates within 2n steps: once 2^m >= n the points offset + i / 2^m are at most 1/n
    apart, so every position's interval holds one.
    """
    order: list[int] = []
    seen: set[int] = set()
    j = 0
    while len(order) < n:
        pos = min(int(((offset + _van_der_corput(j)) % 1.0) * n), n - 1)
        if pos not in seen:
            seen.add(pos)
            order.append(pos)
        j += 1
    return order


def diversity(cands: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 1])
    timed = cands.sort("source", "scene", "timestamp_us", "frame_index", "frame_id",
                       nulls_last=True)
    groups = {k: g for k, g in timed.group_by("source", "scene", maintain_order=True)}
    keys = sorted(groups, key=lambda k: (str(k[0]), str(k[1])))
    keys = [keys[i] for i in rng.permutation(len(keys))]
    queues = {}
    for k in keys:
        g = groups[k]
        queues[k] = [(g["frame_id"][p], p, g.height) for p in spread_order(g.height, rng.random())]
    rows: list[dict[str, object]] = []
    n = cands.height
    for rnd in range(max((len(q) for q in queues.values()), default=0)):
        for k in keys:
            if rnd < len(queues[k]):
                fid, p, size = queues[k][rnd]
                rows.append({"frame_id": fid, "score": 1.0 - len(rows) / n,
                             "reason": f"scene {k[1]} pick {rnd + 1}: frame {p + 1} of {size} "
                                       f"in time order"})
    return pl.DataFrame(rows, schema=SCORED)


def _normalise(s: pl.Series) -> pl.Series:
    lo, hi = s.min(), s.max()
    if hi is None or lo is None or hi == lo:
        return pl.Series(s.name, np.zeros(len(s)))
    return (s - lo) / (hi - lo)


def mix(parts: Mapping[str, pl.DataFrame], weights: Mapping[str, float]) -> pl.DataFrame:
    """Weighted mean of min-max normalised scores; the reason lists every term and the
    largest term's own reason."""
    used = {k: w / sum(weights.values()) for k, w in sorted(weights.items()) if w > 0}
    base = next(iter(parts.values())).select("frame_id")
    for name in used:
        p = parts[name]
        base = base.join(p.select("frame_id", pl.Series(name, _normalise(p["score"])),
                                  pl.col("reason").alias(f"{name}:why")), on="frame_id")
    terms = {k: pl.col(k) * w for k, w in used.items()}
    top = pl.max_horizontal(*terms.values())
    why = pl.lit(None, pl.String)
    for k in reversed(list(used)):  # ties: the first strategy in name order names the reason
        why = pl.when(terms[k] == top).then(pl.format(f"{k}: {{}}", pl.col(f"{k}:why"))) \
            .otherwise(why)
    listed = pl.concat_str([pl.format(f"{k} {{}}", pl.col(k).round(2)) for k in used],
                           separator=", ")
    return base.select("frame_id", score=pl.sum_horizontal(*terms.values()),
                       reason=pl.format("{} ({})", listed, why))


def pick(scored: pl.DataFrame, budget: int, seed: int) -> pl.DataFrame:
    """The `budget` best frames, rank 1 first; ties broken by a seeded permutation."""
    by_id = scored.sort("frame_id")
    tiebreak = np.random.default_rng([seed, 0]).permutation(by_id.height)
    return by_id.with_columns(tiebreak=pl.Series(tiebreak)).sort(
        ["score", "tiebreak"], descending=[True, False]).head(budget).drop("tiebreak") \
        .with_row_index("rank", offset=1).with_columns(pl.col("rank").cast(pl.Int32))
