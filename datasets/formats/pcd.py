"""nuScenes radar ``.pcd`` (binary PCD v0.7) and nuScenes LiDAR ``.pcd.bin`` files.

The radar files hold a 370-byte ASCII header followed by ``POINTS`` packed, unaligned 43-byte
records (18 fields, see :data:`RADAR_PCD_DTYPE`). Real files carry trailing zero padding (3,726
bytes in v1.0-mini), so exactly ``POINTS * stride`` bytes are decoded and the rest is ignored, as
nuscenes-devkit's ``RadarPointCloud.from_file`` does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.bins import check_finite_xyz, read_float32_bin, read_raw
from kdpipe.datasets.formats.errors import FormatError

# The Continental ARS408 record as nuScenes stores it (packed, little-endian; PCD TYPE I = signed).
RADAR_PCD_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dyn_prop", "i1"), ("id", "<i2"),
     ("rcs", "<f4"), ("vx", "<f4"), ("vy", "<f4"), ("vx_comp", "<f4"), ("vy_comp", "<f4"),
     ("is_quality_valid", "i1"), ("ambig_state", "i1"), ("x_rms", "i1"), ("y_rms", "i1"),
     ("invalid_state", "i1"), ("pdh0", "i1"), ("vx_rms", "i1"), ("vy_rms", "i1")]
)  # itemsize 43

_PCD_TYPES = {
    "F": {2: "<f2", 4: "<f4", 8: "<f8"},
    "I": {1: "i1", 2: "<i2", 4: "<i4", 8: "<i8"},
    "U": {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"},
}
_TYPE_CODE = {"f": "F", "i": "I", "u": "U"}
_MAX_HEADER_BYTES = 4096  # real headers are 370 bytes; bounds the scan on garbage input
_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT",
                "POINTS", "DATA")


def _parse_header(path: str | Path, raw: bytes) -> tuple[dict[str, list[str]], int]:
    """Split the ASCII header into ``{KEY: tokens}``; return it and the payload offset."""
    end = raw.find(b"\nDATA ", 0, _MAX_HEADER_BYTES)
    eol = raw.find(b"\n", end + 1) if end >= 0 else -1
    if end < 0 or eol < 0:
        raise FormatError(path, "header", "no 'DATA' line within the first 4 KiB; not a PCD file.")
    try:
        text = raw[:eol].decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError(path, "header", "header is not ASCII text.") from exc
    header: dict[str, list[str]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if tokens[0] not in _HEADER_KEYS or tokens[0] in header:
            raise FormatError(path, "header", f"unexpected or repeated header line {line!r}.")
        header[tokens[0]] = tokens[1:]
    missing = [k for k in _HEADER_KEYS if k not in header and k != "VIEWPOINT"]
    if missing:
        raise FormatError(path, "header", f"header lacks {', '.join(missing)}.")
    return header, eol + 1


def _header_dtype(path: str | Path, header: dict[str, list[str]]) -> tuple[np.dtype, int]:
    """Build the packed record dtype and the point count from a parsed header."""
    fields, sizes, types, counts = (header[k] for k in ("FIELDS", "SIZE", "TYPE", "COUNT"))
    if not (len(fields) == len(sizes) == len(types) == len(counts)) or not fields:
        raise FormatError(path, "header", "FIELDS, SIZE, TYPE and COUNT differ in length.")
    if header["VERSION"] != ["0.7"] or header["DATA"] != ["binary"]:
        raise FormatError(path, "header", "only 'VERSION 0.7' with 'DATA binary' is supported.")
    try:
        width, height, points = (int(header[k][0]) for k in ("WIDTH", "HEIGHT", "POINTS"))
        spec = [
            (name, _PCD_TYPES[t][int(s)]) if int(c) == 1 else (name, _PCD_TYPES[t][int(s)], int(c))
            for name, s, t, c in zip(fields, sizes, types, counts, strict=True)
        ]
        dtype = np.dtype(spec)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise FormatError(path, "header", f"bad SIZE/TYPE/COUNT/WIDTH/POINTS ({exc}).") from exc
    if min(int(c) for c in counts) < 1:
        raise FormatError(path, "header", "every COUNT must be >= 1.")
    if height != 1 or width * height != points or points < 0:
        raise FormatError(
            path, "header",
            f"need HEIGHT 1 and WIDTH*HEIGHT == POINTS, got {width}x{height}/{points}.",
        )
    return dtype, points


def read_radar_pcd(path: str | Path) -> npt.NDArray[np.void]:
    """Read a nuScenes radar binary PCD v0.7 file, all native fields, no filtering.

    Args:
        path: The ``.pcd`` file.

    Returns:
        ``(N,)`` structured array whose dtype comes from the header (for nuScenes radar:
        :data:`RADAR_PCD_DTYPE`, x/y in the radar sensor frame, metres; velocities m/s). A NaN in
        the first record means "empty cloud" (devkit convention) and yields ``N == 0``.

    Raises:
        FormatError: ``path``, ``empty``, ``header`` (malformed or unsupported header),
            ``payload`` (fewer than ``POINTS * stride`` bytes after the header, or records that
            are zero in every byte: zero padding counted as points), ``finite``.
    """
    try:
        raw = read_raw(path)
    except OSError as exc:
        raise FormatError(path, "path", f"cannot read file ({exc.strerror or exc}).") from exc
    if not raw:
        raise FormatError(path, "empty", "file is zero bytes long.")
    header, offset = _parse_header(path, raw)
    dtype, n_points = _header_dtype(path, header)
    need = n_points * dtype.itemsize
    if len(raw) - offset < need:
        raise FormatError(
            path, "payload",
            f"header promises {n_points} x {dtype.itemsize} = {need} bytes, payload has "
            f"{len(raw) - offset}.",
        )
    records = np.frombuffer(raw, dtype=dtype, count=n_points, offset=offset).copy()
    float_fields = [n for n in dtype.names or () if dtype[n].kind == "f"]
    if n_points and any(np.isnan(records[n][0]).any() for n in float_fields):
        return records[:0]
    _check_no_zero_records(path, raw[offset:offset + need], dtype.itemsize)
    if {"x", "y", "z"} <= set(dtype.names or ()):
        check_finite_xyz(path, np.column_stack([records[k] for k in ("x", "y", "z")]))
    return records


def _check_no_zero_records(path: str | Path, payload: bytes, stride: int) -> None:
    """Refuse records that are zero in every byte (hence every field).

    Real files end in zero padding after the last record (see the module doc); a header whose
    POINTS runs into that padding turns it into points at the sensor origin with zero RCS and
    velocity. A real return is never at the sensor origin with every other field 0 as well (the
    real fixtures: x >= 2.2 m, is_quality_valid = 1, pdh0 >= 1), so one such record makes the file
    a `payload` reject instead of fake points.
    """
    if not payload:
        return
    rows = np.frombuffer(payload, np.uint8).reshape(-1, stride)  # (N, stride)
    zero = ~rows.any(axis=1)  # (N,)
    n_zero = int(zero.sum())
    if not n_zero:
        return
    n, first = len(zero), int(np.argmax(zero))
    why = (f"the header promises {n} points but the payload holds {first}, then zero bytes"
           if zero[first:].all() else "zero-filled records are not points")
    raise FormatError(path, "payload", f"{n_zero} of {n} records are all zero in every field "
                                       f"({why}).")


def _pcd_header(dtype: np.dtype, n_points: int) -> bytes:
    names = dtype.names or ()
    sizes, types, counts = [], [], []
    for name in names:
        sub = dtype[name]
        base, count = (sub.base, int(np.prod(sub.shape))) if sub.shape else (sub, 1)
        if base.kind not in _TYPE_CODE:
            raise ValueError(f"field {name!r} has unsupported dtype {base}")
        sizes.append(str(base.itemsize))
        types.append(_TYPE_CODE[base.kind])
        counts.append(str(count))
    lines = [
        "# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", "FIELDS " + " ".join(names),
        "SIZE " + " ".join(sizes), "TYPE " + " ".join(types), "COUNT " + " ".join(counts),
        f"WIDTH {n_points}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {n_points}",
        "DATA binary",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_radar_pcd(path: str | Path, arr: npt.NDArray[np.void], pad_bytes: int = 1) -> None:
    """Write a structured array as binary PCD v0.7 with the same header layout as nuScenes.

    Args:
        path: Output ``.pcd`` file.
        arr: ``(N,)`` structured array (e.g. :data:`RADAR_PCD_DTYPE`); fields are written packed
            and little-endian in dtype order. ``N == 0`` writes one all-NaN record, the devkit's
            "empty cloud" marker (the devkit rejects ``WIDTH 0``).
        pad_bytes: Trailing zero bytes. nuscenes-devkit's reader asserts ``end < len(payload)``
            for every field, so a file whose last record ends exactly at EOF fails there; the
            default single byte keeps written files readable by the devkit.
    """
    if arr.dtype.names is None:
        raise ValueError("arr must be a structured array")
    packed = np.dtype(
        [(n, arr.dtype[n].newbyteorder("<") if arr.dtype[n].itemsize > 1 else arr.dtype[n])
         for n in arr.dtype.names]
    )
    out = np.zeros(max(len(arr), 1), dtype=packed)
    if len(arr):
        for name in arr.dtype.names:
            out[name] = arr[name]
    else:
        for name in arr.dtype.names:
            if packed[name].kind == "f":
                out[name] = np.nan
    Path(path).write_bytes(_pcd_header(packed, len(out)) + out.tobytes() + b"\0" * pad_bytes)


def read_nuscenes_lidar(path: str | Path) -> npt.NDArray[np.float32]:
    """Read a nuScenes LiDAR ``.pcd.bin``: ``(N, 5)`` float32 ``x, y, z, intensity, ring_index``.

    Despite the name this is not a PCD: it is a headerless float32 file in the LiDAR sensor
    frame (metres; intensity 0-255 stored as float).
    """
    return read_float32_bin(path, 5)
