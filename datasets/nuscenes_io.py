"""nuScenes ingest helpers: the cached table database, transform chains, files, cameras.

The tables (`nuscenes_tables.NusTables`: the devkit's records and reverse index, without the
devkit's ~4 s import) are loaded once per process and cached by (version, dataroot) plus a
fingerprint of the table files, so a Dask worker that runs many scene tasks parses the JSON once.
sample_data records whose calibrated_sensor (or sensor) is missing are set aside and reject their
frame ("calib") instead of failing the whole load. Anything else wrong with the tables fails the
load with one clear error. Radar sweeps: `nuscenes_radar`.
"""
from __future__ import annotations

import io
import json
import os
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from pyquaternion import Quaternion

from kdpipe.datasets.common import ArrayLayout, FileLog, GroupWriter
from kdpipe.datasets.formats.bins import read_raw, safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.nuscenes_tables import NusTables, TableError
from kdpipe.pipeline.errors import ConfigError

T = TypeVar("T")

RADARS = ("RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT",
          "RADAR_BACK_RIGHT")
# Stored radar columns: common fields first (as VoD), then every other native PCD field.
RADAR_FIELDS = ("x", "y", "z", "rcs", "v_r", "v_r_comp", "time", "dyn_prop", "id", "vx", "vy",
                "vx_comp", "vy_comp", "is_quality_valid", "ambig_state", "x_rms", "y_rms",
                "invalid_state", "pdh0", "vx_rms", "vy_rms", "channel", "time_lag")
RADAR_UNITS = ("m", "m", "m", "dBsm", "m/s", "m/s", "sweep", "code", "1", "m/s", "m/s", "m/s",
               "m/s", "code", "code", "code", "code", "code", "code", "code", "code",
               "index into RADARS", "s")
_SPLIT_NAMES = {"mini": {"mini_train": "train", "mini_val": "val"},
                "trainval": {"train": "train", "val": "val"}, "test": {"test": "test"}}
_MAX_CACHED = 2  # datasets kept per process (two nuScenes roots in one run alternate)


@dataclass
class NusDb:
    """One loaded dataroot: the devkit plus the indexes ingest needs."""

    nusc: NusTables
    scene_samples: dict[str, list[tuple[int, dict[str, Any]]]]  # scene token -> (table idx, rec)
    first_index: dict[str, int]                                # sample token -> first table index
    keyframe_orphans: dict[str, list[dict[str, Any]]]          # sample token -> bad sample_data
    labeled: bool                                              # annotation table is non-empty
    mats: dict[tuple[str, str, bool], npt.NDArray[np.float64]] = field(default_factory=dict)


_CACHE: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], NusDb]] = OrderedDict()


def _fingerprint(table_root: Path) -> tuple[Any, ...]:
    """(name, size, mtime_ns) of every table file: changes when any table is rewritten."""
    if not table_root.is_dir():
        return ()
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                        for e in os.scandir(table_root) if e.name.endswith(".json")))


def scene_splits(root: Path, version: str) -> dict[str, str]:
    """Scene name -> split: the devkit's official splits, then `splits.json` custom splits whose
    name ends in train / val / test (e.g. the synthetic world's `synth_train`)."""
    from kdpipe.datasets.nuscenes_devkit_data import official_splits

    kind = next((k for k in _SPLIT_NAMES if k in version), None)
    official = official_splits()
    out = {s: split for name, split in (_SPLIT_NAMES[kind].items() if kind else ())
           for s in official[name]}
    custom = root / version / "splits.json"
    try:
        table = json.loads(custom.read_text()) if custom.is_file() else {}
    except ValueError as e:
        raise ConfigError(f"nuScenes {custom}: not valid JSON ({e})") from None
    for name, scenes in table.items() if isinstance(table, dict) else ():
        split = next((s for s in ("train", "val", "test") if str(name).endswith(s)), "")
        for s in scenes if split and isinstance(scenes, list) else ():
            out.setdefault(str(s), split)
    return out


def load_db(version: str, root: Path) -> NusDb:
    """The devkit database of `root/version`, loaded once per process (see module doc).

    Raises:
        ConfigError: the version folder is missing or a table cannot be read or indexed.
    """
    key, fp = (version, str(root)), _fingerprint(root / version)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == fp:
        _CACHE.move_to_end(key)
        return hit[1]
    if not fp:
        raise ConfigError(f"nuScenes tables not found: {root / version} (format 'nuscenes' "
                          f"expects {version}/*.json tables and the samples/ and sweeps/ files "
                          f"they name; check ingest.version, ingest.roots and ingest.format)")
    try:
        nusc = NusTables(root / version)
    except TableError as e:
        raise ConfigError(f"nuScenes table {root / version}/{e}") from None
    except Exception as e:  # KeyErrors / TypeErrors on inconsistent tables
        raise ConfigError(f"nuScenes tables at {root / version} are inconsistent: "
                          f"{type(e).__name__}: {e}") from None
    scenes: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    first: dict[str, int] = {}
    for i, s in enumerate(nusc.sample):
        first.setdefault(s["token"], i)
        scenes[s.get("scene_token", "")].append((i, s))
    for lst in scenes.values():
        lst.sort(key=lambda t: (t[1].get("timestamp", 0), t[0]))
    orphans: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in nusc.kd_orphans.values():
        if r.get("is_key_frame"):
            orphans[r.get("sample_token", "")].append(r)
    db = NusDb(nusc, dict(scenes), first, dict(orphans), bool(nusc.sample_annotation))
    _CACHE[key] = (fp, db)
    while len(_CACHE) > _MAX_CACHED:
        _CACHE.popitem(last=False)
    return db


def check_orphans(db: NusDb, sample_token: str, used: set[str]) -> None:
    """`calib` reject if a keyframe of a used channel has no calibrated_sensor record."""
    for r in db.keyframe_orphans.get(sample_token, []):
        if Path(str(r.get("filename", ""))).parent.name in used:
            raise FormatError(str(r.get("filename")), "calib",
                              f"sample_data {r.get('token')} has no calibrated_sensor record.")


def record(db: NusDb, table: str, token: str, path: str, check: Any) -> dict[str, Any]:
    """`nusc.get` that turns a dangling token into a FormatError on the frame's file."""
    try:
        return db.nusc.get(table, token)  # type: ignore[no-any-return]
    except KeyError:
        why = "has no calibrated_sensor record" if token in db.nusc.kd_orphans else "is missing"
        raise FormatError(path, check, f"{table} record {token!r} {why}.") from None


def rigid(translation: Any, rotation: Any, inverse: bool = False) -> npt.NDArray[np.float64]:
    """(4, 4) target <- source of a translation + wxyz quaternion: the devkit's
    `transform_matrix` operation for operation (same bits), inverse in closed form (R^T, -R^T t),
    without importing the devkit."""
    rot = Quaternion(rotation).rotation_matrix  # (3, 3), quaternion normalised first
    tm = np.eye(4)
    if inverse:
        rot_inv = rot.T
        tm[:3, :3] = rot_inv
        tm[:3, 3] = rot_inv.dot(-np.asarray(translation, float))
    else:
        tm[:3, :3] = rot
        tm[:3, 3] = np.asarray(translation, float)
    return tm


def transform(db: NusDb, table: str, token: str, path: str, check: Any,
              inverse: bool = False) -> npt.NDArray[np.float64]:
    """(4, 4) transform of a calibrated_sensor / ego_pose record (`rigid`); calibrated_sensor
    ones (few, reused by every frame) are memoised, ego_pose ones (one per sample_data, each
    used by one keyframe) are not: a worker's memo would grow with every sweep it reads."""
    key = (table, token, inverse)
    hit = db.mats.get(key)
    if hit is not None:
        return hit
    rec = record(db, table, token, path, check)
    try:
        t = rigid(rec["translation"], rec["rotation"], inverse=inverse)
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        raise FormatError(path, check, f"bad {table} translation/rotation ({e}).") from None
    if not np.isfinite(t).all():
        raise FormatError(path, check, f"{table} translation/rotation is not finite.")
    if table == "calibrated_sensor":
        db.mats[key] = t
    return t


def stamp_us(rec: dict[str, Any]) -> int:
    """Timestamp in µs as int (Lyft's nuScenes-schema tables store floats)."""
    return round(float(rec["timestamp"]))


def data_file(root: Path, sd: dict[str, Any], log: FileLog | None = None) -> Path:
    """The sample_data file, inside the dataroot and present (else `path` / `missing`)."""
    p = _join(root, str(sd.get("filename", "")))
    if not p.is_file():
        raise FormatError(p, "missing", f"{sd.get('channel', 'sensor')} file is missing.")
    if log is not None:
        log.add(p)
    return p


_DIRS: dict[tuple[str, str], Path] = {}  # (root, relative folder) -> resolved folder in root


def _join(root: Path, rel: str) -> Path:
    """`safe_join(root, rel)` (same result, same errors) without resolving every path component
    of every file: the folder is resolved once per process (`samples/RADAR_FRONT`), then only the
    file name is checked for a symlink (a link may point anywhere: `safe_join` decides)."""
    folder, _, name = rel.rpartition("/")
    if name in ("", ".", "..") or not folder or "\x00" in rel:
        return safe_join(root, rel)
    key = (str(root), folder)
    parent = _DIRS.get(key)
    if parent is None:
        try:
            parent = safe_join(root, folder)
        except FormatError:
            return safe_join(root, rel)  # its error names the file, not the folder
        if len(_DIRS) < 4096:  # noqa: PLR2004 -- a bound, not a tuning knob
            _DIRS[key] = parent
    target = parent / name
    return safe_join(root, rel) if os.path.islink(target) else target


def read_logged(read: Callable[[Path], T], path: Path, log: FileLog) -> T:
    """`read(path)`, then `path` logged, also when the read rejects it (the row order and
    rows of logging first): inside `log.reading()` the digest comes from the parser's bytes,
    one read of the file instead of two."""
    try:
        return read(path)
    finally:
        log.add(path)


@dataclass
class SceneWriter(GroupWriter):
    """A GroupWriter that also stores downscaled camera images as `camera/<CHANNEL>` arrays,
    handed to `GroupWriter.add_array` so they are written before the group's done-marker."""

    images: dict[str, list[npt.NDArray[np.uint8]]] = field(default_factory=dict)
    image_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, zarr_root: Path) -> None:
        for ch, frames in self.images.items():
            data = np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)  # (F, H, W, 3)
            per_shard = max(1, (8 << 20) // max(data[0].nbytes if len(data) else 1, 1))  # ~8 MB
            self.add_array(f"camera/{ch}", data, ArrayLayout(
                (1, *data.shape[1:]), (per_shard, *data.shape[1:]), ("frame", "y", "x", "rgb"),
                {"channel": ch, **self.image_attrs.get(ch, {}),
                 "meaning": "camera/<CH>[i] belongs to frame i"}, shuffle=False))
        super().write(zarr_root)


def load_image(path: Path, factor: int) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """Decode a camera image downscaled by `factor`: `(H // f, W // f, 3)` uint8 and (W, H).
    The bytes are read once (`read_raw`: digested when a FileLog is reading), then decoded."""
    try:
        raw = read_raw(path)
    except OSError as e:
        raise FormatError(path, "payload", f"image cannot be decoded ({e}).") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            wh = im.size
            size = (max(wh[0] // factor, 1), max(wh[1] // factor, 1))
            im.draft("RGB", size)  # JPEG: decode at 1/2..1/8 scale in the DCT, much faster
            im.load()
            small = im if im.mode == "RGB" else im.convert("RGB")  # no copy of an RGB image
            if small.size != size:
                small = small.resize(size, Image.Resampling.BOX)
            return np.asarray(small, dtype=np.uint8), wh
    except UnidentifiedImageError as e:
        raise FormatError(path, "header", f"not an image ({e}).") from None
    except (OSError, ValueError) as e:
        raise FormatError(path, "payload", f"image cannot be decoded ({e}).") from None
