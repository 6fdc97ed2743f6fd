"""The schema contract every artifact schema follows, and the Parquet table schema.

A schema is a frozen value object named `<name>/<version>` (what `Port.schema` spells). Its
`validate(path)` inspects a written artifact cheaply (metadata, never the payload) and returns
what is wrong with it, one short phrase per problem; an empty list means it conforms.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from kdpipe.pipeline.errors import KdpipeError

PathLike = str | os.PathLike[str]


class UnknownSchemaError(KdpipeError, LookupError):
    """A schema name that no module registered (a typo, or a plugin that was not imported)."""


class SchemaMismatchError(KdpipeError):
    """A written artifact does not match the schema it declares."""


def summarize(problems: list[str], limit: int = 3) -> str:
    """`problems` as one line: the first `limit` of them, then how many more there are."""
    flat = [" ".join(p.split()) for p in problems]  # one line, whatever a message held
    head = "; ".join(flat[:limit])
    return head + (f"; and {len(flat) - limit} more" if len(flat) > limit else "")


@dataclass(frozen=True)
class Schema:
    """Base of every artifact schema.

    Attributes:
        name: The artifact's data noun, e.g. "frames".
        version: Bumped on any change a reader would notice; "frames/1" and "frames/2" are
            different contracts.
        doc: One paragraph for readers: what a row / group / file is, frames and units.
    """

    kind: ClassVar[str] = "artifact"  # the `Artifact.kind` this schema describes
    name: str
    version: int
    doc: str = ""

    @property
    def id(self) -> str:
        """The registry key and `Port.schema` spelling, e.g. "frames/1"."""
        return f"{self.name}/{self.version}"

    def validate(self, path: PathLike) -> list[str]:
        """What is wrong with the artifact at `path` (empty: it conforms)."""
        raise NotImplementedError

    def check(self, path: PathLike) -> None:
        """Raise `SchemaMismatchError` (one line) unless the artifact at `path` conforms."""
        problems = self.validate(path)
        if problems:
            raise SchemaMismatchError(f"{path} does not match {self.id}: {summarize(problems)}")


@dataclass(frozen=True)
class TableSchema(Schema):
    """A Parquet table: column name -> polars dtype.

    Units and frames are in the column names (`x_ego_m`, `timestamp_us`), so the columns are the
    whole contract. Column order is not part of it: readers select columns by name.

    Attributes:
        columns: Column name -> polars dtype, every one required.
        extra_columns: Whether columns beyond `columns` are allowed. Off for every table kdpipe
            writes: each stage writes exactly its schema's columns, so an extra column is a bug
            (or a schema change that needs a new version).
    """

    kind: ClassVar[str] = "parquet"
    # Dicts cannot be hashed; a schema is identified by its id, so hashing leaves them out.
    columns: Mapping[str, Any] = field(default_factory=dict, hash=False)
    extra_columns: bool = False

    def validate(self, path: PathLike) -> list[str]:
        """Compare the file's Arrow schema (Parquet footer only, no data read) with `columns`."""
        import pyarrow.parquet as pq

        try:
            arrow = pq.read_schema(path)
        except (OSError, ValueError) as e:  # missing file; ArrowInvalid is a ValueError
            return [f"not a readable Parquet file ({type(e).__name__}: {e})"]
        try:  # polars' own mapping of Arrow types, so dtypes compare as polars wrote them
            got = dict(pl.from_arrow(arrow.empty_table()).schema)  # type: ignore[union-attr]
        except Exception as e:  # an Arrow type polars has no dtype for
            return [f"column types polars cannot read ({type(e).__name__}: {e})"]
        return self.compare(got)

    def validate_frame(self, df: pl.DataFrame) -> list[str]:
        """The same check on an in-memory frame (before writing it)."""
        return self.compare(dict(df.schema))

    def compare(self, got: Mapping[str, Any]) -> list[str]:
        """Problems of a table whose columns are `got` (name -> polars dtype)."""
        problems = [f"column {c} is missing" for c in self.columns if c not in got]
        problems += [f"column {c} is {got[c]}, expected {want}"
                     for c, want in self.columns.items() if c in got and got[c] != want]
        extra = [c for c in got if c not in self.columns]
        if extra and not self.extra_columns:
            problems.append(f"unexpected column(s) {', '.join(extra)}")
        return problems

