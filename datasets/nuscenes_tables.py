"""The nuScenes JSON tables as ingest reads them, without importing nuscenes-devkit.

Importing the devkit costs ~4 s of CPU (it pulls in sklearn, scipy.stats and matplotlib) and
every Dask worker paid it once before its first scene; on a 2-core machine two workers paying it
at the same time were slower than one (issue 17). `NusTables` does what `NuScenes.__init__` does
for the tables ingest uses, record for record:

* each table is the JSON array of its file (`orjson`; `json` where orjson refuses, e.g. NaN);
* `get(table, token)` returns the record with that token, the *last* one if a token repeats (the
  devkit's `_token2ind` is filled in table order), `KeyError` if none;
* the devkit's reverse index decorates the same records: `sample_annotation.category_name`,
  `sample_data.sensor_modality` / `channel`, `sample.data` (keyframe channel -> sample_data
  token) and `sample.anns` (annotation tokens in table order);
* sample_data whose calibrated_sensor (or its sensor) is missing are set aside in `kd_orphans`
  and left out of the index (they reject their frame as "calib" instead of failing the load).

`box_velocity` is the devkit's `NuScenes.box_velocity`, operation for operation.
"""
from __future__ import annotations

import json
from pathlib import Path  # noqa: TC003 -- used at runtime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

# The devkit's table list (lidarseg / panoptic tables are not read by ingest).
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
          "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")

Record = dict[str, Any]


class TableError(Exception):
    """A table file that cannot be read as a JSON array of records (message names the file)."""


def load_table(table_root: Path, name: str) -> list[Record]:
    path = table_root / f"{name}.json"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TableError(f"{name}.json: {type(e).__name__}: {e}") from None
    try:
        table = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # NaN / Infinity literals, huge ints: what the devkit's json.load accepts
            table = json.loads(raw)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise TableError(f"{name}.json: {type(e).__name__}: {e}") from None
    if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
        raise TableError(f"{name}.json: not a JSON array of records")
    return table


class NusTables:
    """The tables of one `dataroot/version` with the devkit's reverse index (see module doc).

    Raises:
        TableError: a table file is missing, not JSON, or not an array of records.
        KeyError: a record lacks its token or names a record that does not exist (as the devkit).
    """

    def __init__(self, table_root: Path) -> None:
        tables = {name: load_table(table_root, name) for name in TABLES}
        cs = {r.get("token"): r.get("sensor_token") for r in tables["calibrated_sensor"]}
        sensors = {r.get("token") for r in tables["sensor"]}
        ok = [cs.get(r.get("calibrated_sensor_token"), "\0") in sensors
              for r in tables["sample_data"]]
        pairs = list(zip(tables["sample_data"], ok, strict=True))
        self.kd_orphans: dict[Any, Record] = {r.get("token"): r for r, good in pairs if not good}
        tables["sample_data"] = [r for r, good in pairs if good]
        self.tables = tables
        self._by_token = {name: {r["token"]: r for r in rows} for name, rows in tables.items()}
        self._reverse_index()

    def __getattr__(self, name: str) -> list[Record]:
        # `tables.sample`, `tables.sensor`, ... as on a `NuScenes` object
        if name in TABLES:
            return self.__dict__["tables"][name]  # type: ignore[no-any-return]
        raise AttributeError(name)

    def get(self, table: str, token: str) -> Record:
        return self._by_token[table][token]

    def _reverse_index(self) -> None:
        get = self.get
        for rec in self.sample_annotation:
            inst = get("instance", rec["instance_token"])
            rec["category_name"] = get("category", inst["category_token"])["name"]
        for rec in self.sample_data:
            sensor = get("sensor", get("calibrated_sensor", rec["calibrated_sensor_token"])
                         ["sensor_token"])
            rec["sensor_modality"] = sensor["modality"]
            rec["channel"] = sensor["channel"]
        for rec in self.sample:
            rec["data"] = {}
            rec["anns"] = []
        for rec in self.sample_data:
            if rec["is_key_frame"]:
                get("sample", rec["sample_token"])["data"][rec["channel"]] = rec["token"]
        for rec in self.sample_annotation:
            get("sample", rec["sample_token"])["anns"].append(rec["token"])
        if self.map and "log_tokens" not in self.map[0]:  # the devkit refuses these tables too
            raise KeyError("log_tokens not in the map table")

    def box_velocities(self, tokens: list[str],
                       max_time_diff: float = 1.5) -> npt.NDArray[np.float64]:
        """(B, 3) `box_velocity` of each annotation: the same float operations, element by
        element, on arrays (no neighbour: limit -inf, so NaN as the devkit)."""
        ann, sample = self._by_token["sample_annotation"], self._by_token["sample"]
        ends: list[tuple[Record, Record]] = []   # (first, last) of each annotation
        limit = np.empty(len(tokens))             # (B,) largest time difference allowed
        for i, tok in enumerate(tokens):
            cur = ann[tok]
            has_prev, has_next = cur["prev"] != "", cur["next"] != ""
            ends.append((ann[cur["prev"]] if has_prev else cur,
                         ann[cur["next"]] if has_next else cur))
            limit[i] = (max_time_diff * 2 if has_prev and has_next else
                        max_time_diff if has_prev or has_next else -np.inf)
        pos_diff = np.array([last["translation"] for _, last in ends], dtype=float) \
            - np.array([first["translation"] for first, _ in ends], dtype=float)  # (B, 3)
        time_last = 1e-6 * np.array([sample[last["sample_token"]]["timestamp"]
                                     for _, last in ends], dtype=float)
        time_first = 1e-6 * np.array([sample[first["sample_token"]]["timestamp"]
                                      for first, _ in ends], dtype=float)
        time_diff = time_last - time_first  # (B,)
        with np.errstate(divide="ignore", invalid="ignore"):  # the devkit's numpy warns here
            v = pos_diff / time_diff[:, None]
        v[time_diff > limit] = np.nan
        return v.reshape(-1, 3)

    def box_velocity(self, token: str, max_time_diff: float = 1.5) -> npt.NDArray[np.float64]:
        """(3,) global velocity (m/s) of an annotation from its neighbours, NaN if unknown."""
        current = self.get("sample_annotation", token)
        has_prev, has_next = current["prev"] != "", current["next"] != ""
        if not has_prev and not has_next:
            return np.array([np.nan, np.nan, np.nan])
        first = self.get("sample_annotation", current["prev"]) if has_prev else current
        last = self.get("sample_annotation", current["next"]) if has_next else current
        pos_diff = np.array(last["translation"]) - np.array(first["translation"])
        time_last = 1e-6 * self.get("sample", last["sample_token"])["timestamp"]
        time_first = 1e-6 * self.get("sample", first["sample_token"])["timestamp"]
        time_diff = time_last - time_first
        if has_next and has_prev:  # centred difference: twice the gap allowed
            max_time_diff *= 2
        if time_diff > max_time_diff:
            return np.array([np.nan, np.nan, np.nan])
        return pos_diff / time_diff  # type: ignore[no-any-return]
