"""nuScenes radar for one keyframe: the five channels' sweeps read, then one `(M, 23)` cloud.

Per sweep only what must be per sweep happens here: its transform chain, the read (and digest)
of its file, the state filter and the rigid transform of its points and velocities. Every other
column is filled once for all sweeps of all channels of the keyframe (25 sweeps for 5 radars x 5
sweeps): the per-sweep numpy calls, not the arithmetic, were the cost (issue 17).

`read_radar` is `pcd.read_radar_pcd` with the header parsed once per distinct header (files of
one rig differ only in WIDTH / POINTS) and its checks done on whole buffers; anything it does
not recognise as valid goes to `read_radar_pcd`, whose error is then the one raised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path  # noqa: TC003 -- annotations of a dataclass module
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.bins import read_raw
from kdpipe.datasets.formats.pcd import (
    RADAR_PCD_DTYPE,
    _header_dtype,
    _parse_header,
    read_radar_pcd,
)
from kdpipe.datasets.nuscenes_io import (
    RADAR_FIELDS,
    NusDb,
    data_file,
    read_logged,
    record,
    stamp_us,
    transform,
)

if TYPE_CHECKING:
    from kdpipe.datasets.common import FileLog
    from kdpipe.datasets.nuscenes import RadarFilter

_COL = {n: i for i, n in enumerate(RADAR_FIELDS)}
_NATIVE = ("rcs", *RADAR_FIELDS[7:21])  # rcs, dyn_prop .. vy_rms: stored as read
_MAX_HEADERS = 1024  # distinct headers remembered per process


@dataclass(frozen=True)
class _Layout:
    dtype: np.dtype
    n_points: int
    float_idx: tuple[int, ...]  # fields whose NaN in record 0 means "empty cloud"


_LAYOUTS: dict[bytes, _Layout] = {}


def _layout(path: Path, raw: bytes) -> _Layout | None:
    """The record layout of the file's header, or None where the fast path does not apply.

    Raises:
        FormatError: `header`, as `read_radar_pcd` (the same functions, in the same order).
    """
    header, _ = _parse_header(path, raw)
    dtype, n_points = _header_dtype(path, header)
    names = dtype.names or ()
    xyz = names[:3] == ("x", "y", "z") and all(
        dtype.fields[n][0] == np.dtype("<f4") and dtype.fields[n][1] == 4 * i  # type: ignore[index]
        for i, n in enumerate(names[:3]))
    if not xyz or any(dtype[n].shape for n in names):  # not the nuScenes layout: the full reader
        return None
    return _Layout(dtype, n_points, tuple(i for i, n in enumerate(names) if dtype[n].kind == "f"))


def read_radar(path: Path) -> npt.NDArray[np.void]:
    """`read_radar_pcd(path)`: the same records and the same errors (see module doc)."""
    try:
        raw = read_raw(path)  # digested here when a FileLog is reading
    except OSError:
        return read_radar_pcd(path)
    end = raw.find(b"\nDATA ", 0, 4096)
    eol = raw.find(b"\n", end + 1) if end >= 0 else -1
    if eol < 0:
        return read_radar_pcd(path)  # its `empty` / `header` error
    header = raw[:eol + 1]
    lay = _LAYOUTS.get(header)
    if lay is None:
        lay = _layout(path, raw)
        if lay is not None and len(_LAYOUTS) < _MAX_HEADERS:
            _LAYOUTS[header] = lay
    records = _records(raw, len(header), lay) if lay is not None else None
    return read_radar_pcd(path) if records is None else records


def _records(raw: bytes, offset: int, lay: _Layout) -> npt.NDArray[np.void] | None:
    """The checked records of a file with a known layout, None if any check fails (the caller
    then gets the error from `read_radar_pcd`)."""
    stride = lay.dtype.itemsize
    need = lay.n_points * stride
    if len(raw) - offset < need:
        return None  # `payload`
    records = np.frombuffer(raw, lay.dtype, count=lay.n_points, offset=offset).copy()
    if lay.n_points:
        first = records[0].item()  # tuple of Python scalars
        if any(first[i] != first[i] for i in lay.float_idx):  # NaN: the devkit's empty cloud
            return records[:0]
        rows = np.frombuffer(raw, np.uint8, count=need, offset=offset).reshape(-1, stride)
        xyz: npt.NDArray[np.float32] = np.ndarray(  # (N, 3) view of x, y, z
            (lay.n_points, 3), "<f4", raw, offset, (stride, 4))
        if not rows.any(axis=1).all() or not np.isfinite(xyz).all():
            return None  # a zero record (`payload`) or a non-finite point (`finite`)
    return records


def radar_filter(flt: RadarFilter) -> Any:
    """The configured state filters as `records -> kept records` (devkit semantics; None keeps
    every value, and no filter at all returns the records as they are)."""
    tests = [(n, np.asarray(v)) for n, v in (("invalid_state", flt.invalid_states),
                                             ("dyn_prop", flt.dynprop_states),
                                             ("ambig_state", flt.ambig_states)) if v is not None]

    def keep(rec: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
        if not tests:
            return rec
        m = np.ones(len(rec), bool)
        for name, allowed in tests:
            m &= np.isin(rec[name], allowed)
        return rec[m]

    return keep


@dataclass
class RadarRef:
    """Where one keyframe's radar goes: ego(LiDAR keyframe) <- global, its time, the filter."""

    t_ego_from_global: npt.NDArray[np.float64]  # (4, 4)
    ref_us: int
    sweeps: int
    keep: Any
    # the sweeps read so far, in storage order (channel, then sweep 0, -1, ...)
    recs: list[npt.NDArray[np.void]] = field(default_factory=list)   # (N_i,) native records
    chains: list[npt.NDArray[np.float64]] = field(default_factory=list)  # (4, 4) per sweep
    tags: list[tuple[int, int, float]] = field(default_factory=list)  # (time, channel, lag s)


def read_channel(db: NusDb, root: Path, sd: dict[str, Any], ref: RadarRef, ch: int,
                 log: FileLog) -> npt.NDArray[np.float64]:
    """Read one radar channel's `ref.sweeps` sweeps (keyframe, then its `prev` chain) into `ref`.

    Each sweep goes sensor -> ego(t) -> global -> ego(LiDAR keyframe), the chain of the devkit's
    `from_file_multisweep` (without its `remove_close`); velocity vectors get the same rotation.

    Returns:
        The `(4, 4)` ego-from-sensor chain of the keyframe sweep (raw = inv(T) @ ego for
        `time == 0` points).
    """
    t_key = None
    for k in range(ref.sweeps):
        f = str(sd.get("filename", ""))
        pose = transform(db, "ego_pose", sd.get("ego_pose_token", ""), f, "pose")
        t = ref.t_ego_from_global @ pose \
            @ transform(db, "calibrated_sensor", sd.get("calibrated_sensor_token", ""), f, "calib")
        t_key = t if t_key is None else t_key  # (4, 4) ego(LiDAR keyframe) <- sensor(t)
        rec = ref.keep(read_logged(read_radar, data_file(root, sd), log))  # (N,) native fields
        if rec.dtype != RADAR_PCD_DTYPE:  # another header layout: the same fields or an error
            rec = _as_native(rec)
        ref.recs.append(rec)
        ref.chains.append(t)
        ref.tags.append((-k, ch, (ref.ref_us - stamp_us(sd)) * 1e-6))
        if not sd.get("prev"):
            break
        sd = record(db, "sample_data", sd["prev"], f, "missing")
    assert t_key is not None
    return t_key


def _as_native(rec: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    out = np.empty(len(rec), RADAR_PCD_DTYPE)
    for name in RADAR_PCD_DTYPE.names or ():
        out[name] = rec[name]  # ValueError for a missing field: the frame's "missing" reject
    return out


def radar_cloud(ref: RadarRef) -> npt.NDArray[np.float32]:
    """`(M, 23)` float32 in `RADAR_FIELDS` order (ego frame) of every sweep read into `ref`."""
    if not ref.recs:
        return np.zeros((0, len(RADAR_FIELDS)), np.float32)
    # (M,) records: joined as bytes (every sweep is RADAR_PCD_DTYPE, packed): concatenating
    # structured arrays promotes their dtypes pairwise, 2 ms per keyframe for 25 sweeps
    rec = np.concatenate([r.view(np.uint8) for r in ref.recs]).view(RADAR_PCD_DTYPE)
    n = np.array([len(r) for r in ref.recs])  # (S,) points per sweep
    ends = np.cumsum(n)
    cloud = np.empty((len(rec), len(RADAR_FIELDS)), np.float32)  # (M, 23)
    xyz = np.column_stack([rec["x"], rec["y"], rec["z"]]).astype(np.float64)  # (M, 3) sensor
    v = {p: np.column_stack([rec[p[0]], rec[p[1]]]).astype(np.float64)  # (M, 2) sensor
         for p in (("vx", "vy"), ("vx_comp", "vy_comp"))}
    for t, a, b in zip(ref.chains, ends - n, ends, strict=True):  # the rigid maps, per sweep
        if a == b:
            continue
        xyz[a:b] = xyz[a:b] @ t[:3, :3].T + t[:3, 3]
        for vv in v.values():
            vv[a:b] = vv[a:b] @ t[:2, :2].T
    cloud[:, :3] = xyz
    for name in _NATIVE:
        cloud[:, _COL[name]] = rec[name]
    rng = np.hypot(xyz[:, 0], xyz[:, 1])
    los = np.divide(xyz[:, :2], rng[:, None], out=np.zeros((len(xyz), 2)),
                    where=rng[:, None] > 0)  # (M, 2) BEV direction from the ego origin
    for (a, b), radial in zip(v, ("v_r", "v_r_comp"), strict=True):
        cloud[:, _COL[a]], cloud[:, _COL[b]] = v[a, b][:, 0], v[a, b][:, 1]
        cloud[:, _COL[radial]] = (los * v[a, b]).sum(axis=1)
    tags = np.array(ref.tags, np.float64)  # (S, 3) time (0, -1, ...: never -0.0), channel, lag
    cloud[:, _COL["time"]] = np.repeat(tags[:, 0], n)
    cloud[:, _COL["channel"]] = np.repeat(tags[:, 1], n)
    cloud[:, _COL["time_lag"]] = np.repeat(tags[:, 2], n)
    return cloud
