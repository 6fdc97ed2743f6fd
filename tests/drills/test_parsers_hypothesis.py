"""Property tests for the raw-format parsers: any bytes / any text either parses or raises
`FormatError` (the error ingest turns into a rejects row), never another exception.

Strategies build inputs that are *almost* valid (real headers and keys, numbers at the edges of
float64, huge integers, NaN/inf spellings, extra or missing tokens), where hand-written cases
stop, plus plain random bytes.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdpipe.datasets.formats import (
    FormatError,
    read_kitti_calib,
    read_kitti_labels,
    read_radar_pcd,
    read_vod_pose,
)
from kdpipe.datasets.formats.kitti import DONT_CARE
from kdpipe.datasets.formats.vod import POSE_KEYS

SETTINGS = settings(max_examples=int(os.environ.get("KDPIPE_HYPOTHESIS_EXAMPLES", "250")),
                    deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def parses_or_format_error(reader: Callable[[Path], Any], path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        reader(path)
    except FormatError:
        pass


# numbers as they appear in the text formats, edge cases included
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(["nan", "-inf", "inf", "1e309", "-1e-400", "0x10", "1_000", "١٢", "+-1",
                     "", "-", ".", "e5", "NaN", "Infinity", "9" * 400]),
)
TOKEN = st.one_of(NUMBER, st.text(st.characters(codec="utf-8"), max_size=6))

# ----------------------------------------------------------------------------- PCD header

PCD_FIELD = st.tuples(st.sampled_from(["x", "y", "z", "rcs", "vx", "id", "x"]),
                      st.sampled_from(["1", "2", "4", "8", "3", "0", "-4", "99999999999999999999"]),
                      st.sampled_from(["F", "I", "U", "Q", "f"]),
                      st.sampled_from(["1", "1", "3", "0", "-1", "10000000000000000000000"]))


@st.composite
def pcd_files(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(PCD_FIELD, min_size=1, max_size=5))
    n = draw(st.one_of(st.integers(-2, 6).map(str), NUMBER))
    width = draw(st.one_of(st.just(n), NUMBER))
    lines = ["# .PCD v0.7", draw(st.sampled_from(["VERSION 0.7", "VERSION .7", "VERSION 0.7 x"])),
             "FIELDS " + " ".join(f[0] for f in fields), "SIZE " + " ".join(f[1] for f in fields),
             "TYPE " + " ".join(f[2] for f in fields), "COUNT " + " ".join(f[3] for f in fields),
             f"WIDTH {width}", draw(st.sampled_from(["HEIGHT 1", "HEIGHT 0", "HEIGHT 2"])),
             "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {n}",
             draw(st.sampled_from(["DATA binary", "DATA ascii", "DATA binary_compressed"]))]
    lines = draw(st.permutations(lines)) if draw(st.booleans()) else lines
    payload = draw(st.binary(max_size=400))
    return ("\n".join(lines) + "\n").encode() + payload


@SETTINGS
@given(data=st.one_of(pcd_files(), st.binary(max_size=600)))
def test_pcd_header(scratch: Path, data: bytes) -> None:
    parses_or_format_error(read_radar_pcd, scratch / "r.pcd", data)


# ----------------------------------------------------------------------------- KITTI labels

LABEL_LINE = st.one_of(
    st.tuples(st.sampled_from(["Car", "Pedestrian", DONT_CARE, "car", "Ünknown"]),
              st.lists(NUMBER, min_size=13, max_size=16)).map(lambda t: " ".join([t[0], *t[1]])),
    st.lists(TOKEN, max_size=18).map(" ".join),
)


@SETTINGS
@given(lines=st.lists(LABEL_LINE, max_size=4), allowed=st.booleans())
def test_kitti_label_lines(scratch: Path, lines: list[str], allowed: bool) -> None:
    classes = {"Car", "Pedestrian"} if allowed else None
    parses_or_format_error(lambda p: read_kitti_labels(p, classes), scratch / "l.txt",
                           "\n".join(lines).encode("utf-8", "surrogatepass"))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_kitti_label_bytes(scratch: Path, data: bytes) -> None:
    parses_or_format_error(read_kitti_labels, scratch / "l.txt", data)


# ----------------------------------------------------------------------------- calibration

CALIB_KEY = st.sampled_from(["P0", "P2", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo", "R_rect",
                             "Tr_velo_cam", "Tr_radar_to_cam", "P2 ", " P2", "X", ""])
CALIB_LINE = st.tuples(CALIB_KEY, st.sampled_from([":", "", ": ", "::"]),
                       st.lists(NUMBER, min_size=0, max_size=13)).map(
    lambda t: f"{t[0]}{t[1]} {' '.join(t[2])}")


@SETTINGS
@given(lines=st.lists(CALIB_LINE, max_size=8), junk=st.binary(max_size=40))
def test_calib_files(scratch: Path, lines: list[str], junk: bytes) -> None:
    parses_or_format_error(read_kitti_calib, scratch / "c.txt", "\n".join(lines).encode())
    parses_or_format_error(read_kitti_calib, scratch / "c.txt",
                           "\n".join(lines).encode() + junk)


# ----------------------------------------------------------------------------- VoD pose

BIG_INT = st.integers(-(10**400), 10**400)  # JSON integers are unbounded
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.floats() | BIG_INT | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=20)
MATRIX = st.one_of(
    st.lists(st.one_of(st.floats(), st.integers(-(10**400), 10**400), st.booleans()),
             min_size=16, max_size=16),
    JSON_VALUE)


@st.composite
def pose_files(draw: st.DrawFn) -> bytes:
    objs = [{k: draw(MATRIX)} for k in draw(st.lists(st.sampled_from(POSE_KEYS), max_size=4))]
    if draw(st.booleans()):  # one JSON object instead of JSON lines
        merged: dict[str, Any] = {}
        for o in objs:
            merged.update(o)
        objs = [merged]
    text = "\n".join(json.dumps(o, allow_nan=True) for o in objs)
    return text.encode()


@SETTINGS
@given(data=st.one_of(pose_files(), st.binary(max_size=200),
                      st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_vod_pose(scratch: Path, data: bytes) -> None:
    parses_or_format_error(read_vod_pose, scratch / "p.json", data)


def test_pose_with_a_huge_integer_is_a_format_error(scratch: Path) -> None:
    """What hypothesis found first: `math.isfinite(10**400)` raises OverflowError."""
    doc = {k: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1] for k in POSE_KEYS}
    doc["odomToCamera"][3] = 10**400
    path = scratch / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="16 finite numbers"):
        read_vod_pose(path)
    assert not math.isfinite(float("inf"))
