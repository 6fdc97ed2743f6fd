"""View-of-Delft specifics: point files, the 3-line pose JSON and the folder layout.

Labels and calibration are KITTI format (:mod:`kdpipe.datasets.formats.kitti`). Layout, per the
devkit's ``docs/GETTING_STARTED.md`` and ``vod/configuration/file_locations.py``::

    root/lidar/training/{velodyne,label_2,calib,pose,image_2}   root/lidar/ImageSets/*.txt
    root/radar/training/{velodyne,calib,pose}                   (radar calib = radar->camera)
    root/radar_3frames | radar_3_scans, root/radar_5frames | radar_5_scans  (accumulated radar)
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.bins import read_float32_bin, read_text, safe_join
from kdpipe.datasets.formats.errors import FormatError

if TYPE_CHECKING:
    from collections.abc import Mapping

POSE_KEYS = ("odomToCamera", "mapToCamera", "UTMToCamera")
_BOTTOM_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_BOTTOM_TOL = 1e-9 + 1e-5 * np.abs(_BOTTOM_ROW)   # np.isclose: atol + rtol * |b|
_FRAME_ID = re.compile(r"^\d+$")


def read_vod_radar(path: str | Path) -> npt.NDArray[np.float32]:
    """VoD radar ``.bin``: ``(N, 7)`` float32 ``x, y, z, RCS, v_r, v_r_compensated, time``.

    Radar sensor frame (x forward, y left, z up; metres), RCS in dBsm, radial velocities in m/s,
    ``time`` = scan index (0 current, -1, -2 ... in the accumulated folders).
    """
    return read_float32_bin(path, 7)


def read_vod_lidar(path: str | Path) -> npt.NDArray[np.float32]:
    """VoD LiDAR ``.bin``: ``(N, 4)`` float32 ``x, y, z, reflectance`` (1-255, not KITTI's 0-1)."""
    return read_float32_bin(path, 4)


def _pose_objects(path: str | Path, text: str) -> dict[str, object]:
    """The real files are three JSON documents, one per line; also accept one JSON object."""
    merged: dict[str, object] = {}
    try:
        for line in text.splitlines():
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise FormatError(path, "pose", "each pose line must be a JSON object.")
                merged.update(obj)
    except json.JSONDecodeError:
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(
                path, "pose", f"not JSON lines nor one JSON object ({exc.msg})."
            ) from exc
        if not isinstance(whole, dict):
            raise FormatError(path, "pose", "pose JSON must be an object.") from None
        merged = whole
    return merged


def _finite_number(v: object) -> bool:
    """A JSON number that fits a finite float64 (JSON integers are unbounded in Python: a
    400-digit one made `math.isfinite` raise OverflowError; found by hypothesis)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def read_vod_pose(path: str | Path) -> dict[str, npt.NDArray[np.float64]]:
    """Parse ``pose/<frame>.json``.

    Args:
        path: The pose file (``lidar/`` and ``radar/`` copies are identical).

    Returns:
        ``{"odomToCamera", "mapToCamera", "UTMToCamera"}`` -> ``(4, 4)`` float64, row-major as
        stored. Despite the names these are the *camera* pose in each world frame
        (world_from_camera); the devkit inverts them to get ``t_camera_odom`` etc.

    Raises:
        FormatError: ``path``; ``pose`` (bad JSON, missing key, not 16 finite numbers, or a
            bottom row other than ``0 0 0 1``).
    """
    text = read_text(path, "pose")
    objects = _pose_objects(path, text)
    poses: dict[str, npt.NDArray[np.float64]] = {}
    for key in POSE_KEYS:
        values = objects.get(key)
        if not isinstance(values, list) or len(values) != 16 or not all(  # noqa: PLR2004
            map(_finite_number, values)
        ):
            raise FormatError(path, "pose", f"{key} missing or not a list of 16 finite numbers.")
        matrix = np.array(values, dtype=np.float64).reshape(4, 4)
        # np.allclose(matrix[3], [0, 0, 0, 1], atol=1e-9) for finite values, without its
        # per-call set-up (three calls a frame)
        if not bool((np.abs(matrix[3] - _BOTTOM_ROW) <= _BOTTOM_TOL).all()):
            raise FormatError(
                path, "pose", f"{key} bottom row is {matrix[3].tolist()}, not 0 0 0 1."
            )
        poses[key] = matrix
    return poses


def write_vod_pose(path: str | Path, poses: Mapping[str, npt.ArrayLike]) -> None:
    """Write the three ``(4, 4)`` poses as VoD does: one JSON object per line, no final newline."""
    lines = [json.dumps({k: np.asarray(poses[k], dtype=np.float64).reshape(16).tolist()})
             for k in POSE_KEYS]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def stems(folder: Path, suffix: str) -> list[str]:
    """Names in `folder` ending in `suffix`, without it (`glob("*" + suffix)`'s stems, in no
    order; none for a missing folder). One `scandir`: a fleet's 10^6 frames listed in ~3x less
    time than through pathlib's Path objects."""
    try:
        with os.scandir(folder) as it:
            return [e.name[:-len(suffix)] for e in it if e.name.endswith(suffix)]
    except (FileNotFoundError, NotADirectoryError):
        return []


@dataclass(frozen=True)
class VodFramePaths:
    """Files of one VoD frame (``None`` where the optional folder/file is absent)."""

    frame_id: str
    lidar_bin: Path
    radar_bin: Path
    label: Path
    lidar_calib: Path
    radar_calib: Path
    pose: Path
    image: Path | None
    radar_3scans_bin: Path | None
    radar_5scans_bin: Path | None


@dataclass(frozen=True)
class VodLayout:
    """Resolves the VoD folder layout under ``root`` (paths are not required to exist).

    Attributes:
        root: Dataset root holding ``lidar/`` and ``radar/``.
        split: ``"training"`` or ``"testing"``.
    """

    root: Path
    split: Literal["training", "testing"] = "training"
    # folder -> its safe_join-resolved path, so a frame's files cost one lstat each, not a
    # realpath of every component (per instance: an ingest task builds its own layout)
    _real_dirs: dict[Path, Path] = field(default_factory=dict, init=False, repr=False,
                                         compare=False)
    _acc_dirs: dict[int, Path | None] = field(default_factory=dict, init=False, repr=False,
                                              compare=False)

    def sensor_dir(self, sensor: Literal["lidar", "radar"], sub: str) -> Path:
        """``root/<sensor>/<split>/<sub>``, e.g. ``sensor_dir("lidar", "label_2")``."""
        return Path(self.root) / sensor / self.split / sub

    def accumulated_radar_dir(self, n_scans: Literal[3, 5]) -> Path | None:
        """``velodyne/`` of the accumulated radar under either spelling, or ``None``.

        Raises:
            FormatError: ``path`` if both spellings exist and are different folders.
        """
        names = (f"radar_{n_scans}frames", f"radar_{n_scans}_scans")
        found = [Path(self.root) / name for name in names if (Path(self.root) / name).is_dir()]
        if len(found) == 2 and found[0].resolve() != found[1].resolve():  # noqa: PLR2004
            raise FormatError(self.root, "path", f"both {found[0].name} and {found[1].name} exist; "
                              "keep one (or make one a symlink to the other).")
        return found[0] / self.split / "velodyne" if found else None

    def frame_ids(self, sensor: Literal["lidar", "radar"] = "lidar") -> list[str]:
        """Sorted frame ids (``"00549"``) with a ``.bin`` in ``<sensor>/<split>/velodyne``."""
        return sorted(s for s in stems(self.sensor_dir(sensor, "velodyne"), ".bin")
                      if _FRAME_ID.match(s))

    def split_file(self, name: str) -> Path | None:
        """``{lidar,radar}/ImageSets/<name>.txt``, the first that exists."""
        paths = (Path(self.root) / s / "ImageSets" / f"{name}.txt" for s in ("lidar", "radar"))
        return next((p for p in paths if p.is_file()), None)

    def read_split(self, name: str) -> list[str] | None:
        """Frame ids from ``{lidar,radar}/ImageSets/<name>.txt`` (first found), else ``None``.

        Raises:
            FormatError: ``payload`` if a line is not a numeric frame id.
        """
        for sensor in ("lidar", "radar"):
            path = Path(self.root) / sensor / "ImageSets" / f"{name}.txt"
            if path.is_file():
                ids = path.read_text(encoding="utf-8").split()
                bad = [i for i in ids if not _FRAME_ID.match(i)]
                if bad:
                    raise FormatError(path, "payload", f"not a frame id: {bad[0]!r}.")
                return ids
        return None

    def frame(self, frame_id: str) -> VodFramePaths:
        """All file paths of one frame; ``frame_id`` is validated against path escapes."""
        if not _FRAME_ID.match(frame_id):
            raise FormatError(frame_id, "path", "frame id must be digits only.")

        def at(folder: Path, suffix: str) -> Path:
            return self._safe_file(folder, f"{frame_id}{suffix}")

        # every file is checked as safe_join checks it: a symlink out of the root is refused
        images = [at(self.sensor_dir("lidar", "image_2"), ext) for ext in (".jpg", ".png")]
        image = next((p for p in images if p.is_file()), None)
        acc = self._acc_dirs
        if len(acc) < 2:  # noqa: PLR2004 -- looked up once per layout, like the folders above
            acc.update({n: self.accumulated_radar_dir(n) for n in (3, 5)})  # type: ignore[arg-type]
        return VodFramePaths(
            frame_id=frame_id,
            lidar_bin=at(self.sensor_dir("lidar", "velodyne"), ".bin"),
            radar_bin=at(self.sensor_dir("radar", "velodyne"), ".bin"),
            label=at(self.sensor_dir("lidar", "label_2"), ".txt"),
            lidar_calib=at(self.sensor_dir("lidar", "calib"), ".txt"),
            radar_calib=at(self.sensor_dir("radar", "calib"), ".txt"),
            pose=at(self.sensor_dir("lidar", "pose"), ".json"),
            image=image,
            radar_3scans_bin=at(acc[3], ".bin") if acc[3] else None,
            radar_5scans_bin=at(acc[5], ".bin") if acc[5] else None,
        )

    def _safe_file(self, folder: Path, name: str) -> Path:
        """``safe_join(root, folder/name)``, with the folder resolved once: a file that is not a
        symlink resolves to the resolved folder / name, the path safe_join returns; a symlink,
        or a folder resolving outside the root, takes safe_join itself (same path, same
        reject)."""
        root = Path(self.root)
        real = self._real_dirs.get(folder)
        if real is None:
            try:
                real = safe_join(root, folder.relative_to(root))
            except FormatError:
                return safe_join(root, (folder / name).relative_to(root))
            self._real_dirs[folder] = real
        path = real / name
        return safe_join(root, (folder / name).relative_to(root)) if path.is_symlink() else path
