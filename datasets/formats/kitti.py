"""KITTI-style object labels (``label_2/*.txt``) and calibration (``calib/*.txt``).

Used for KITTI itself, for View-of-Delft (same format, 16 columns with a trailing score) and for
prediction export to the VoD evaluator. Label boxes stay in the KITTI camera convention here;
:mod:`kdpipe.schemas.boxes` converts them to canonical ego boxes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.bins import read_text
from kdpipe.datasets.formats.errors import FormatError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

FloatArray = npt.NDArray[np.float64]
DONT_CARE = "DontCare"  # KITTI's ignore regions: dims -1, location -1000; kept, not size-checked
_N_COLS_GT, _N_COLS_SCORED = 15, 16


@dataclass(frozen=True)
class KittiLabels:
    """One label file as column arrays (N rows, file order).

    Attributes:
        class_name: ``(N,)`` str, verbatim (``Car``, ``rider``, ``DontCare``...).
        truncated: ``(N,)`` float (VoD: unused, 0/1 or a track id).
        occluded: ``(N,)`` int64 (0..3, -1 for DontCare).
        alpha: ``(N,)`` observation angle, radians.
        bbox_ltrb: ``(N, 4)`` 2D box left, top, right, bottom, pixels.
        dims_hwl: ``(N, 3)`` height, width, length, metres.
        loc_cam: ``(N, 3)`` bottom-centre location, rectified camera frame (y down), metres.
        rot_y: ``(N,)`` rotation about camera +y, radians.
        score: ``(N,)`` detection score; NaN when the file had 15 columns.
    """

    class_name: npt.NDArray[np.str_]
    truncated: FloatArray
    occluded: npt.NDArray[np.int64]
    alpha: FloatArray
    bbox_ltrb: FloatArray
    dims_hwl: FloatArray
    loc_cam: FloatArray
    rot_y: FloatArray
    score: FloatArray

    def __len__(self) -> int:
        return len(self.class_name)

    @property
    def has_score(self) -> bool:
        """True when every row carries a score (16-column file)."""
        return bool(len(self)) and bool(np.isfinite(self.score).all())

    @classmethod
    def from_rows(cls, rows: npt.ArrayLike, class_name: Collection[str]) -> KittiLabels:
        """Build from an ``(N, 15)`` float array of the numeric columns (score last)."""
        v = np.asarray(rows, dtype=np.float64).reshape(-1, _N_COLS_GT)
        return cls(
            class_name=np.asarray(list(class_name), dtype=np.str_).reshape(-1),
            truncated=v[:, 0], occluded=v[:, 1].astype(np.int64), alpha=v[:, 2],
            bbox_ltrb=v[:, 3:7], dims_hwl=v[:, 7:10], loc_cam=v[:, 10:13], rot_y=v[:, 13],
            score=v[:, 14],
        )

    def rows(self) -> FloatArray:
        """The numeric columns as ``(N, 15)`` float64 (inverse of :meth:`from_rows`)."""
        return np.column_stack([
            self.truncated, self.occluded, self.alpha, self.bbox_ltrb, self.dims_hwl,
            self.loc_cam, self.rot_y, self.score,
        ]).reshape(-1, _N_COLS_GT)


def alpha_from_rot_y(rot_y: npt.ArrayLike, loc_cam: npt.ArrayLike) -> FloatArray:
    """KITTI observation angle ``alpha = rot_y - atan2(x, z)`` wrapped to ``[-pi, pi)``."""
    loc = np.asarray(loc_cam, dtype=np.float64).reshape(-1, 3)
    alpha = np.asarray(rot_y, dtype=np.float64) - np.arctan2(loc[:, 0], loc[:, 2])
    return np.mod(alpha + np.pi, 2 * np.pi) - np.pi


def read_kitti_labels(
    path: str | Path, allowed_classes: Collection[str] | None = None
) -> KittiLabels:
    """Parse a KITTI/VoD label file (15 columns, or 16 with a score).

    Args:
        path: ``label_2/<frame>.txt``.
        allowed_classes: If given, any other class name (``DontCare`` is always allowed) raises
            ``FormatError("class")``.

    Returns:
        The labels; an empty (or blank) file gives zero rows, which is valid.

    Raises:
        FormatError: ``path``; ``label`` (wrong column count, unparsable number, or files mixing
            15 and 16 columns); ``finite``; ``box_size`` (a non-DontCare box with h, w or l <= 0);
            ``class``.
    """
    text = read_text(path, "label")
    names: list[str] = []
    rows: list[list[float]] = []
    widths: set[int] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) not in (_N_COLS_GT, _N_COLS_SCORED):
            raise FormatError(
                path, "label", f"line {lineno}: {len(tokens)} columns, need 15 or 16."
            )
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError as exc:
            raise FormatError(path, "label", f"line {lineno}: non-numeric value ({exc}).") from exc
        if not all(map(math.isfinite, values)):
            raise FormatError(path, "finite", f"line {lineno}: NaN or inf in a numeric column.")
        if tokens[0] != DONT_CARE and min(values[7:10]) <= 0:
            raise FormatError(path, "box_size", f"line {lineno}: h, w, l must be > 0, got "
                              f"{values[7:10]}.")
        if allowed_classes is not None and tokens[0] not in allowed_classes \
                and tokens[0] != DONT_CARE:
            raise FormatError(path, "class", f"line {lineno}: unknown class {tokens[0]!r}.")
        widths.add(len(tokens))
        names.append(tokens[0])
        rows.append(values if len(values) == _N_COLS_GT else [*values, math.nan])
    if len(widths) > 1:
        raise FormatError(path, "label", "file mixes 15- and 16-column lines.")
    return KittiLabels.from_rows(np.array(rows, dtype=np.float64).reshape(-1, _N_COLS_GT), names)


def _fmt(value: float, precision: int | None) -> str:
    if precision is not None:
        return f"{value:.{precision}f}"
    # Shortest round-trip repr (as VoD writes); integral values as ints ("0", "1", "-1").
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_kitti_labels(
    path: str | Path, labels: KittiLabels, precision: int | None = None
) -> None:
    """Write a label file; rows with a finite score get the 16th column.

    Args:
        path: Output ``.txt`` (an empty file when ``labels`` is empty, which the VoD evaluator
            needs for frames without detections).
        labels: Rows to write.
        precision: Decimals for every float (KITTI GT uses 2); ``None`` writes shortest
            round-trip floats like the VoD files, so reading back is exact.
    """
    rows = labels.rows()
    lines = []
    for name, row in zip(labels.class_name, rows, strict=True):
        cols = [str(name), _fmt(row[0], precision), str(int(row[1]))]
        cols += [_fmt(v, precision) for v in row[2:14]]
        if math.isfinite(row[14]):
            cols.append(_fmt(row[14], precision))
        lines.append(" ".join(cols) + "\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


# ----------------------------------------------------------------------------- calibration

_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                 "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
# KITTI tracking / raw spellings of the same matrices.
_CALIB_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam",
                  "Tr_imu_velo": "Tr_imu_to_velo"}
_CALIB_ORDER = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")


def _to_4x4(m: FloatArray) -> FloatArray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def read_kitti_calib(path: str | Path) -> dict[str, FloatArray]:
    """Parse a KITTI/VoD calibration file.

    Args:
        path: ``calib/<frame>.txt``; ``Key: v1 v2 ...`` lines; empty values (VoD's
            ``Tr_imu_to_velo:``) are skipped, unknown keys are kept as flat arrays.

    Returns:
        ``P0..P3`` ``(3, 4)`` (P0, P1, P3 may be absent), ``R0_rect`` ``(3, 3)`` (identity if
        absent), ``Tr_velo_to_cam`` ``(3, 4)``, ``Tr_imu_to_velo`` ``(3, 4)`` if present, plus the
        derived 4x4s ``R0_rect_4x4``, ``Tr_velo_to_cam_4x4`` and ``T_rect_from_velo`` =
        ``R0_rect_4x4 @ Tr_velo_to_cam_4x4`` (the ``T_cam_from_ego`` that box conversion wants;
        "velo" is whichever sensor the file calibrates: VoD radar/ holds radar->camera).

    Raises:
        FormatError: ``path``; ``calib`` (unparsable/non-finite numbers, wrong value count, or
            P2 / Tr_velo_to_cam missing).
    """
    return parse_kitti_calib(path, read_text(path, "calib"))


def parse_kitti_calib(path: str | Path, text: str) -> dict[str, FloatArray]:
    """`read_kitti_calib` of the already-read `text` of `path` (named in errors)."""
    calib: dict[str, FloatArray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        key, sep, rest = line.partition(":")
        if not sep:  # KITTI tracking calib uses "Key v1 v2 ..." without a colon
            key, _, rest = line.strip().partition(" ")
        key = _CALIB_ALIASES.get(key.strip(), key.strip())
        if not key or not rest.strip():
            continue
        try:
            values = np.array([float(t) for t in rest.split()], dtype=np.float64)
        except ValueError as exc:
            raise FormatError(path, "calib", f"line {lineno} ({key}): {exc}.") from exc
        if not np.isfinite(values).all():
            raise FormatError(path, "calib", f"line {lineno} ({key}): NaN or inf.")
        shape = _CALIB_SHAPES.get(key)
        if shape is not None and values.size != shape[0] * shape[1]:
            raise FormatError(path, "calib", f"{key} has {values.size} values, need "
                              f"{shape[0] * shape[1]}.")
        calib[key] = values.reshape(shape) if shape else values
    for key in ("P2", "Tr_velo_to_cam"):
        if key not in calib:
            raise FormatError(path, "calib", f"missing {key}.")
    calib.setdefault("R0_rect", np.eye(3))
    calib["R0_rect_4x4"] = _to_4x4(calib["R0_rect"])
    calib["Tr_velo_to_cam_4x4"] = _to_4x4(calib["Tr_velo_to_cam"])
    calib["T_rect_from_velo"] = calib["R0_rect_4x4"] @ calib["Tr_velo_to_cam_4x4"]
    return calib


def write_kitti_calib(
    path: str | Path, calib: Mapping[str, npt.ArrayLike], float_format: str | None = None
) -> None:
    """Write a calib file in KITTI key order (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo).

    Args:
        path: Output ``.txt``.
        calib: Needs ``P2`` and ``Tr_velo_to_cam`` (``(3, 4)`` or ``(4, 4)``); missing P0/P1/P3
            are copies of P2 and a missing R0_rect is identity (as in VoD); a missing
            ``Tr_imu_to_velo`` is written as VoD's empty ``Tr_imu_to_velo:`` line. Derived
            ``*_4x4`` keys are ignored.
        float_format: e.g. ``"{:.12e}"`` for KITTI's look; ``None`` writes shortest round-trip
            floats so :func:`read_kitti_calib` gets the exact values back.
    """
    full = {k: np.asarray(v, dtype=np.float64) for k, v in calib.items()}
    for key in ("P0", "P1", "P3"):
        full.setdefault(key, full["P2"])
    full.setdefault("R0_rect", np.eye(3))
    fmt = float_format.format if float_format else (lambda v: repr(float(v)))
    lines = []
    for key in _CALIB_ORDER:
        if key not in full:
            lines.append(f"{key}:")
            continue
        rows, cols = _CALIB_SHAPES[key]
        m = full[key]
        m = m.reshape(rows, cols) if m.size == rows * cols else m  # flat 12/9 values accepted
        values = m[:rows, :cols].reshape(-1)
        lines.append(f"{key}: " + " ".join(fmt(v) for v in values))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
