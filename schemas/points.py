"""`points/1`: the Zarr point store written by `ingest` (and any stage that derives one).

    points.zarr/                       root attrs: format, frame="ego", layout, kdpipe
      <source>/<scene>/                attrs: source, scene, frames (F native frame ids)
        <sensor>/points   (N, C) float32   attrs: fields (C names), units (C), frame="ego",
                                           native_frame
        <sensor>/offsets  (F + 1,) int64   points[offsets[i]:offsets[i + 1]] is frame i
        camera/<CHANNEL>  (F, H, W, 3) uint8  attrs: channel (nuScenes only; downscaled images)

Sensors are `lidar` and `radar`, plus VoD's accumulated `radar_3` / `radar_5` (3 / 5 scans in one
cloud). Every sensor's points are in the ego frame, metres. A derived store nests its upstream's
root attributes under `upstream`; the dataset format is read through that chain.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kdpipe.schemas.zarr_layout import (
    ZarrLayout,
    check_array,
    frame_list,
    members,
    unexpected,
)
from kdpipe.schemas.zarr_meta import is_group

if TYPE_CHECKING:
    from kdpipe.schemas.zarr_layout import GroupNode


@dataclass(frozen=True)
class SensorLayout:
    """The columns of one sensor's `points`, in order, with units.

    Attributes:
        fields: Column names, in column order.
        units: One unit per field ("1": unitless; "code": an enumerated state).
        exact: True: exactly these columns. False: these first, then any further columns
            (KITTI-format radar, whose columns beyond x, y, z are set by `ingest.radar_columns`).
    """

    fields: tuple[str, ...]
    units: tuple[str, ...]
    exact: bool = True

    def check(self, where: str, fields: Sequence[str], units: Sequence[str]) -> list[str]:
        """Problems of the (fields, units) a `points` array declares."""
        n = len(self.fields)
        got = (tuple(fields), tuple(units)) if self.exact else (tuple(fields)[:n], tuple(units)[:n])
        if got == (self.fields, self.units):
            return []
        want = ", ".join(f"{f} [{u}]" for f, u in zip(self.fields, self.units, strict=True))
        return [f"{where} fields {list(fields)} units {list(units)}, expected "
                f"{'' if self.exact else 'to start with '}{want}"]


LIDAR = SensorLayout(("x", "y", "z", "intensity"), ("m", "m", "m", "1"))
VOD_RADAR = SensorLayout(("x", "y", "z", "rcs", "v_r", "v_r_comp", "time"),
                         ("m", "m", "m", "dBsm", "m/s", "m/s", "scan"))
# x .. time as VoD (time: sweep index 0, -1, ...), then the native PCD fields, the channel (index
# into the five radars) and time_lag (s before the LiDAR keyframe).
NUSCENES_RADAR = SensorLayout(
    ("x", "y", "z", "rcs", "v_r", "v_r_comp", "time", "dyn_prop", "id", "vx", "vy", "vx_comp",
     "vy_comp", "is_quality_valid", "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0",
     "vx_rms", "vy_rms", "channel", "time_lag"),
    ("m", "m", "m", "dBsm", "m/s", "m/s", "sweep", "code", "1", "m/s", "m/s", "m/s", "m/s", "code",
     "code", "code", "code", "code", "code", "code", "code", "index into RADARS", "s"))
ANY_RADAR = SensorLayout(("x", "y", "z"), ("m", "m", "m"), exact=False)

_SENSOR_KINDS = {"lidar": re.compile(r"lidar"), "radar": re.compile(r"radar(_\d+)?")}


def _origin(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The root attributes of the store a derived store came from (itself if not derived)."""
    while isinstance(attrs.get("upstream"), Mapping):
        attrs = attrs["upstream"]
    return attrs


@dataclass(frozen=True)
class PointsLayout(ZarrLayout):
    """The point store (module docstring): per-sensor columns and offsets consistency.

    Attributes:
        lidar: Columns of `lidar`, every format.
        radar: Dataset format -> columns of its radar sensors; other formats get `ANY_RADAR`.
    """

    lidar: SensorLayout = LIDAR
    radar: Mapping[str, SensorLayout] = field(
        default_factory=lambda: {"vod": VOD_RADAR, "nuscenes": NUSCENES_RADAR}, hash=False)

    def check_root(self, attrs: Mapping[str, Any]) -> list[str]:
        origin = _origin(attrs)
        problems = [f"root attribute '{a}' is missing" for a in ("format", "frame")
                    if a not in origin]
        if origin.get("frame", "ego") != "ego":
            problems.append(f"root attribute 'frame' is {origin['frame']!r}, expected 'ego'")
        return problems

    def check_scene(self, where: str, scene: GroupNode,
                    root_attrs: Mapping[str, Any]) -> list[str]:
        fmt = str(_origin(root_attrs).get("format", ""))
        attrs = dict(scene.attrs)
        problems, n_frames = frame_list(where, attrs)
        source, name = where.split("/")
        for key, want in (("source", source), ("scene", name)):
            if attrs.get(key) != want:
                problems.append(f"{where}: attribute '{key}' is {attrs.get(key)!r}, "
                                f"expected {want!r}")
        for sensor, g in sorted(members(scene).items()):
            at = f"{where}/{sensor}"
            if not is_group(g):
                problems.append(f"{at}: an array where a sensor group belongs")
            elif sensor == "camera":
                problems += self._cameras(at, g, n_frames)
            else:
                problems += self._sensor(at, self.sensor_layout(sensor, fmt), g, n_frames)
        return problems

    def sensor_layout(self, sensor: str, fmt: str) -> SensorLayout | None:
        """The columns sensor group `sensor` of a `fmt` store must have (None: no such sensor)."""
        if _SENSOR_KINDS["lidar"].fullmatch(sensor):
            return self.lidar
        if _SENSOR_KINDS["radar"].fullmatch(sensor):
            return self.radar.get(fmt, ANY_RADAR)
        return None

    def _sensor(self, where: str, layout: SensorLayout | None, g: GroupNode,
                n_frames: int | None) -> list[str]:
        if layout is None:
            return [f"{where}: unknown sensor (sensors are lidar, radar, radar_<n>)"]
        arrays = members(g)
        points, offsets = arrays.get("points"), arrays.get("offsets")
        problems = unexpected(where, arrays, {"points", "offsets"})
        problems += check_array(f"{where}/points", points, "float32", (None, None))
        problems += check_array(f"{where}/offsets", offsets, "int64",
                                (None if n_frames is None else n_frames + 1,))
        # the checks below index into arrays this layout could not confirm (a missing one is
        # already a problem: the `is None` tests only tell the type checker)
        if problems or points is None or offsets is None:
            return problems
        pa = dict(points.attrs)
        fields, units = pa.get("fields"), pa.get("units")
        if not isinstance(fields, list) or not isinstance(units, list) \
                or len(fields) != points.shape[1] or len(units) != points.shape[1]:
            problems.append(f"{where}/points: attributes 'fields' and 'units' must list one "
                            f"name / unit per column ({points.shape[1]})")
        else:
            problems += layout.check(f"{where}/points", fields, units)
        if pa.get("frame") != "ego":
            problems.append(f"{where}/points: attribute 'frame' is {pa.get('frame')!r}, "
                            f"expected 'ego'")
        if "native_frame" not in pa:
            problems.append(f"{where}/points: attribute 'native_frame' is missing")
        return problems + _offsets(f"{where}/offsets", np.asarray(offsets[:]), points.shape[0])

    def _cameras(self, where: str, g: GroupNode, n_frames: int | None) -> list[str]:
        problems = []
        for channel, arr in sorted(members(g).items()):
            at = f"{where}/{channel}"
            bad = check_array(at, arr, "uint8", (n_frames, None, None, 3))
            if not bad and dict(arr.attrs).get("channel") != channel:
                bad.append(f"{at}: attribute 'channel' is not {channel!r}")
            problems += bad
        return problems


def _offsets(where: str, off: npt.NDArray[np.int64], n_points: int) -> list[str]:
    """offsets[0] == 0, non-decreasing, offsets[-1] == number of points."""
    problems = []
    if off.size and off[0] != 0:
        problems.append(f"{where}[0] is {off[0]}, expected 0")
    if off.size > 1 and bool(np.any(np.diff(off) < 0)):
        i = int(np.argmax(np.diff(off) < 0))
        problems.append(f"{where} decreases at frame {i} ({off[i]} -> {off[i + 1]})")
    if off.size and off[-1] != n_points:
        problems.append(f"{where}[-1] is {off[-1]}, points has {n_points} rows")
    return problems


POINTS = PointsLayout("points", 1, __doc__ or "")
