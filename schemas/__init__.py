"""kdpipe.schemas: the contract of every artifact stages hand each other, as objects.

A schema is a frozen value object named `<name>/<version>`, the string a `Port` declares
(`Port("frames", ParquetArtifact, "frames/1")`). Plans resolve each port's name here
(`get_schema`; an unknown name fails the plan), and the runner calls `schema.validate(path)` on
every output that declares one before publishing it. What lives here:

* `base.py`: `Schema`, `TableSchema` (Parquet: column -> polars dtype), the errors.
* `tables.py`: the Parquet tables (frames, boxes, calibration, rejects, detections, ...), as
  polars dtype dicts (`FRAMES`, `frame_table`, `check_table`) and as `TableSchema`s.
* `zarr_layout.py`, `points.py`, `weight_maps.py`: Zarr layouts (`points/1`, the ingested point
  store; `imkd_weight_maps/1`, IMKD's BEV maps).
* `checkpoint.py`: `checkpoint/1`, model checkpoints (torch imported only to validate one).
* `boxes.py`: the canonical 3D box convention and conversions (not a registered schema).

Validation is cheap by design: Parquet footers, Zarr metadata and offsets, a memory-mapped
checkpoint; never the payload. Plugins register their own schemas with `register_schema`.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kdpipe.schemas.base import Schema, SchemaMismatchError, TableSchema, UnknownSchemaError
from kdpipe.schemas.checkpoint import CHECKPOINT, CheckpointSchema
from kdpipe.schemas.points import POINTS, PointsLayout, SensorLayout
from kdpipe.schemas.tables import TABLE_SCHEMAS
from kdpipe.schemas.weight_maps import IMKD_WEIGHT_MAPS, WeightMapsLayout
from kdpipe.schemas.zarr_layout import ZarrLayout

__all__ = [
    "SCHEMAS", "CheckpointSchema", "PointsLayout", "Schema", "SchemaMismatchError",
    "SensorLayout", "TableSchema", "UnknownSchemaError", "WeightMapsLayout", "ZarrLayout",
    "get_schema", "list_schemas", "register_schema",
]

_REGISTRY: dict[str, Schema] = {}
SCHEMAS: Mapping[str, Schema] = MappingProxyType(_REGISTRY)  # id -> schema, read-only view


def register_schema(schema: Schema) -> Schema:
    """Add `schema` under its id ("frames/1"); returns it.

    Registering an equal schema again is a no-op (a plugin module imported twice); a
    different schema under a taken id raises, so one never silently replaces another.
    """
    old = _REGISTRY.get(schema.id)
    if old is not None and old != schema:
        raise ValueError(f"schema {schema.id} is already registered with another definition")
    _REGISTRY[schema.id] = schema
    return schema


def get_schema(ref: str | Schema) -> Schema:
    """The schema a `Port.schema` names (a schema object is returned as it is).

    Raises:
        UnknownSchemaError: no schema is registered under that name.
    """
    if isinstance(ref, Schema):
        return ref
    try:
        return _REGISTRY[ref]
    except KeyError:
        raise UnknownSchemaError(f"unknown schema '{ref}' (known: {', '.join(list_schemas())})"
                                 ) from None


def list_schemas() -> list[str]:
    """Every registered schema id, sorted."""
    return sorted(_REGISTRY)


for _schema in (*TABLE_SCHEMAS, POINTS, IMKD_WEIGHT_MAPS, CHECKPOINT):
    register_schema(_schema)
