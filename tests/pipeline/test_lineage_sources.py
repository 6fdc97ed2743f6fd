"""Raw-file rows recorded as dicts or as a table (ingest's, at 10^7 files) give one sources
table, the same bytes either way."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from kdpipe.pipeline import lineage
from kdpipe.pipeline.stage import StageContext


def _rows(names: str) -> list[dict[str, object]]:
    return [{"path": f"/raw/{n}.bin", "bytes": 10 * i, "sha256": n * 64}
            for i, n in enumerate(names, start=1)]


def test_dicts_and_tables_make_the_same_sources_table(tmp_path: Path) -> None:
    everything = _rows("dcabe")
    (tmp_path / "dicts").mkdir()
    as_dicts = lineage.write_sources(tmp_path / "dicts",
                                     [pl.DataFrame(everything + everything[:2])])
    ctx = StageContext(stage="s", key="k", config=None, inputs={}, outputs={},  # type: ignore[arg-type]
                       workdir=tmp_path, executor=None)  # type: ignore[arg-type]
    ctx.record_sources(everything[:2])                           # a stage's own dicts
    ctx.record_sources(pl.DataFrame(everything[1:]))             # ingest's table, one overlap
    ctx.record_sources(pl.DataFrame(everything).clear())         # an empty table
    assert ctx.sources[0].to_dicts() == everything[:2] and len(ctx.sources) == 3
    (tmp_path / "mixed").mkdir()
    mixed = lineage.write_sources(tmp_path / "mixed", ctx.sources)
    assert as_dicts == mixed == {"table": lineage.SOURCES_TABLE, "files": 5, "bytes": 150}
    table = (tmp_path / "mixed" / lineage.SOURCES_TABLE).read_bytes()
    assert table == (tmp_path / "dicts" / lineage.SOURCES_TABLE).read_bytes()
    assert pl.read_parquet(tmp_path / "mixed" / lineage.SOURCES_TABLE)["path"].to_list() == [
        f"/raw/{n}.bin" for n in "abcde"]
    assert lineage.write_sources(tmp_path, [pl.DataFrame(everything).clear()]) is None
