"""Small real stages for tests and the re-run benchmark (like `zarr.testing`).

They use the machinery a real stage uses: raw sources fingerprinted into the key, per-unit
resumable work on the executor, Parquet outputs with provenance metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.pipeline.stage import (
    JsonArtifact,
    ParquetArtifact,
    Port,
    Stage,
    StageConfig,
    StageContext,
)


class ToySourceConfig(StageConfig):
    root: str = "raw"
    delay_s: float = 0.0          # per unit, so a test can kill a run mid-stage
    files_per_unit: int = 4
    fail_unit: int | None = None  # raise in this unit: failure injection for tests


def _digest_unit(item: tuple[str, list[str], str, float, bool]) -> list[dict[str, Any]]:
    root, names, unit_path, delay_s, fail = item
    if fail:
        raise RuntimeError(f"injected failure in {unit_path}")
    done = Path(unit_path)
    if done.exists():  # finished before a kill: resume skips it
        return list(json.loads(done.read_text()))
    rows = []
    for name in names:
        data = (Path(root) / name).read_bytes()
        rows.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                     "byte_sum": int(sum(data))})
    time.sleep(delay_s)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, done)
    return rows


def run_source(ctx: StageContext[ToySourceConfig]) -> None:
    cfg = ctx.config
    root = Path(cfg.root).resolve()
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    units_dir = ctx.workdir / "_units"
    units_dir.mkdir(exist_ok=True)
    k = cfg.files_per_unit
    items = [(str(root), names[i:i + k], str(units_dir / f"{i:08d}.json"), cfg.delay_s,
              i // k == cfg.fail_unit)
             for i in range(0, len(names), k)]
    rows = [r for unit in ctx.map(_digest_unit, items, desc="digest") for r in unit]
    ctx.record_sources({"path": str(root / r["name"]), "bytes": r["bytes"], "sha256": r["sha256"]}
                       for r in rows)
    pl.DataFrame(rows, schema={"name": pl.String, "bytes": pl.Int64, "sha256": pl.String,
                               "byte_sum": pl.Int64}).write_parquet(
        ctx.outputs["records"], metadata=ctx.file_metadata())
    for p in units_dir.iterdir():
        p.unlink()
    units_dir.rmdir()


SOURCE = Stage(name="toy-source", config=ToySourceConfig, run=run_source, inputs=(),
               outputs=(Port("records", ParquetArtifact, "toy_records/1"),),
               sources=lambda c: [Path(c.root)])


class ToyScaleConfig(StageConfig):
    factor: int = 2


def run_scale(ctx: StageContext[ToyScaleConfig]) -> None:
    df = pl.read_parquet(ctx.inputs["records"])
    df.with_columns(scaled=pl.col("byte_sum") * ctx.config.factor).write_parquet(
        ctx.outputs["scaled"], metadata=ctx.file_metadata())


SCALE = Stage(name="toy-scale", config=ToyScaleConfig, run=run_scale,
              inputs=(Port("records", ParquetArtifact, "toy_records/1"),),
              outputs=(Port("scaled", ParquetArtifact),))


class ToyReportConfig(StageConfig):
    title: str = "report"


def run_report(ctx: StageContext[ToyReportConfig]) -> None:
    df = pl.read_parquet(ctx.inputs["scaled"])
    ctx.outputs["summary"].write_text(json.dumps(
        {"title": ctx.config.title, "files": df.height, "scaled_total": int(df["scaled"].sum())},
        sort_keys=True))


REPORT = Stage(name="toy-report", config=ToyReportConfig, run=run_report,
               inputs=(Port("scaled", ParquetArtifact),),
               outputs=(Port("summary", JsonArtifact),))


class ToyJoinConfig(StageConfig):
    title: str = "join"


def run_join(ctx: StageContext[ToyJoinConfig]) -> None:
    left, right = pl.read_parquet(ctx.inputs["left"]), pl.read_parquet(ctx.inputs["right"])
    ctx.outputs["joined"].write_text(json.dumps(
        {"title": ctx.config.title, "left": int(left["scaled"].sum()),
         "right": int(right["scaled"].sum())}, sort_keys=True))


# Reads two artifacts (bind `left` / `right` with `ports`): two stages reading one source under
# it make the ancestry a diamond.
JOIN = Stage(name="toy-join", config=ToyJoinConfig, run=run_join,
             inputs=(Port("left", ParquetArtifact), Port("right", ParquetArtifact)),
             outputs=(Port("joined", JsonArtifact),))


def write_raw(root: Path, n_files: int, size: int = 64, seed: int = 0) -> None:
    """Deterministic raw files for toy workflows."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (root / f"{i:06d}.bin").write_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest()
                                            * (size // 32))


def toy_workflow(path: Path, raw: Path, delay_s: float = 0.0) -> Path:
    path.write_text(f"""[workflow]
name = "toy"
stages = []
plugins = ["kdpipe.testing:SOURCE", "kdpipe.testing:SCALE", "kdpipe.testing:REPORT"]

[toy-source]
root = "{raw}"
delay_s = {delay_s}
""")
    return path


# A detector small enough to train for a few epochs inside a test (0.8 m pillars, 16 channels).
TINY_DETECTOR: dict[str, Any] = {"pillar_size_m": 0.8, "encoder_channels": 16,
                                 "backbone_filters": [16, 32], "upsample_filters": [16, 16],
                                 "head_channels": 16}


Roots = Path | str | list[Path] | tuple[Path, ...]


def ingest_workflow(path: Path, roots: Roots, fmt: str = "vod", **extra: Any) -> Path:
    """Write a one-stage `ingest` workflow for `roots` (extra keys: IngestConfig deltas)."""
    from kdpipe.config import toml_value

    roots = [roots] if isinstance(roots, Path | str) else list(roots)
    lines = ["[workflow]", 'stages = ["ingest"]', "[ingest]", f"format = {toml_value(fmt)}",
             f"roots = {toml_value([str(r) for r in roots])}",
             *(f"{k} = {toml_value(v)}" for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def ingest_store(tmp: Path, roots: Roots, fmt: str = "vod", ws: str = "ws", **extra: Any) -> Path:
    """Ingest `roots` through a one-stage workflow (sync executor); the artifact directory."""
    from kdpipe.api import run_workflow

    wf = ingest_workflow(tmp / f"wf_ingest_{fmt}_{ws}.toml", roots, fmt, **extra)
    return Path(run_workflow(wf, str(tmp / ws), scheduler="sync")["stages"][0]["path"])
