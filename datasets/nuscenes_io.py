"""nuScenes ingest helpers: the cached devkit database, transform chains, radar sweeps, cameras.

The devkit (`NuScenes`) is loaded once per process and cached by (version, dataroot) plus a
fingerprint of the table files, so a Dask worker that runs many scene tasks parses the JSON once.
Its reverse index is made tolerant of sample_data records whose calibrated_sensor (or sensor) is
missing: those records are set aside and reject their frame ("calib") instead of failing the
whole load. Anything else wrong with the tables fails the load with one clear error.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path  # noqa: TC003 -- annotations of a dataclass module
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import transform_matrix
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image, UnidentifiedImageError
from pyquaternion import Quaternion

from kdpipe.datasets.common import ArrayLayout, FileLog, GroupWriter
from kdpipe.datasets.formats.bins import safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.pcd import read_radar_pcd
from kdpipe.pipeline.errors import ConfigError
from kdpipe.schemas import boxes as bx

if TYPE_CHECKING:
    from kdpipe.datasets.nuscenes import RadarFilter

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
_COL = {n: i for i, n in enumerate(RADAR_FIELDS)}
_SPLIT_NAMES = {"mini": {"mini_train": "train", "mini_val": "val"},
                "trainval": {"train": "train", "val": "val"}, "test": {"test": "test"}}
_MAX_CACHED = 2  # datasets kept per process (two nuScenes roots in one run alternate)


class _TableError(Exception):
    pass


class TolerantNuScenes(NuScenes):  # type: ignore[misc]
    """`NuScenes` that names a bad table and sets aside sample_data with no calibration."""

    def __load_table__(self, table_name: str) -> Any:
        try:
            table = super().__load_table__(table_name)
        except (OSError, ValueError) as e:  # missing file / bad JSON (JSONDecodeError)
            raise _TableError(f"{table_name}.json: {type(e).__name__}: {e}") from None
        if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
            raise _TableError(f"{table_name}.json: not a JSON array of records")
        return table

    def __make_reverse_index__(self, verbose: bool) -> None:
        cs = {r.get("token"): r.get("sensor_token") for r in self.calibrated_sensor}
        sensors = {r.get("token") for r in self.sensor}
        ok = [cs.get(r.get("calibrated_sensor_token"), "\0") in sensors for r in self.sample_data]
        pairs = list(zip(self.sample_data, ok, strict=True))
        self.kd_orphans = {r.get("token"): r for r, good in pairs if not good}
        self.sample_data = [r for r, good in pairs if good]
        super().__make_reverse_index__(verbose)


@dataclass
class NusDb:
    """One loaded dataroot: the devkit plus the indexes ingest needs."""

    nusc: TolerantNuScenes
    scene_samples: dict[str, list[tuple[int, dict[str, Any]]]]  # scene token -> (table idx, rec)
    first_index: dict[str, int]                                # sample token -> first table index
    keyframe_orphans: dict[str, list[dict[str, Any]]]          # sample token -> bad sample_data
    split_of: dict[str, str]                                   # scene name -> train | val | test
    labeled: bool                                              # annotation table is non-empty
    mats: dict[tuple[str, str, bool], npt.NDArray[np.float64]] = field(default_factory=dict)


_CACHE: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], NusDb]] = OrderedDict()


def _fingerprint(table_root: Path) -> tuple[Any, ...]:
    """(name, size, mtime_ns) of every table file: changes when any table is rewritten."""
    if not table_root.is_dir():
        return ()
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                        for e in os.scandir(table_root) if e.name.endswith(".json")))


def _splits(root: Path, version: str) -> dict[str, str]:
    """Scene name -> split: the devkit's official splits, then `splits.json` custom splits whose
    name ends in train / val / test (e.g. the synthetic world's `synth_train`)."""
    kind = next((k for k in _SPLIT_NAMES if k in version), None)
    official = create_splits_scenes()
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
        nusc = TolerantNuScenes(version=version, dataroot=str(root), verbose=False)
    except _TableError as e:
        raise ConfigError(f"nuScenes table {root / version}/{e}") from None
    except Exception as e:  # devkit asserts / KeyErrors on inconsistent tables
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
    db = NusDb(nusc, dict(scenes), first, dict(orphans), _splits(root, version),
               bool(nusc.sample_annotation))
    _CACHE[key] = (fp, db)
    while len(_CACHE) > _MAX_CACHED:
        _CACHE.popitem(last=False)
    return db


def record(db: NusDb, table: str, token: str, path: str, check: Any) -> dict[str, Any]:
    """`nusc.get` that turns a dangling token into a FormatError on the frame's file."""
    try:
        return db.nusc.get(table, token)  # type: ignore[no-any-return]
    except KeyError:
        why = "has no calibrated_sensor record" if token in db.nusc.kd_orphans else "is missing"
        raise FormatError(path, check, f"{table} record {token!r} {why}.") from None


def transform(db: NusDb, table: str, token: str, path: str, check: Any,
              inverse: bool = False) -> npt.NDArray[np.float64]:
    """(4, 4) transform of a calibrated_sensor / ego_pose record, by the devkit's own function;
    calibrated_sensor ones (few, reused by every frame) are memoised."""
    key = (table, token, inverse)
    if key in db.mats:
        return db.mats[key]
    rec = record(db, table, token, path, check)
    try:
        t = transform_matrix(np.asarray(rec["translation"], float), Quaternion(rec["rotation"]),
                             inverse=inverse)
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
    p = safe_join(root, str(sd.get("filename", "")))
    if not p.is_file():
        raise FormatError(p, "missing", f"{sd.get('channel', 'sensor')} file is missing.")
    if log is not None:
        log.add(p)
    return p


def read_logged(read: Callable[[Path], T], path: Path, log: FileLog) -> T:
    """`read(path)`, then `path` logged, also when the read rejects it (the row order and
    rows of logging first): inside `log.reading()` the digest comes from the parser's bytes,
    one read of the file instead of two."""
    try:
        return read(path)
    finally:
        log.add(path)


def radar_filter(flt: RadarFilter) -> Any:
    """Mask function of the configured state filters (devkit semantics; None keeps all)."""
    tests = [(n, np.asarray(v)) for n, v in (("invalid_state", flt.invalid_states),
                                             ("dyn_prop", flt.dynprop_states),
                                             ("ambig_state", flt.ambig_states)) if v is not None]

    def keep(rec: npt.NDArray[np.void]) -> npt.NDArray[np.bool_]:
        m = np.ones(len(rec), bool)
        for name, allowed in tests:
            m &= np.isin(rec[name], allowed)
        return m

    return keep


@dataclass
class RadarRef:
    """Where one keyframe's radar goes: ego(LiDAR keyframe) <- global, its time, the filter."""

    t_ego_from_global: npt.NDArray[np.float64]  # (4, 4)
    ref_us: int
    sweeps: int
    keep: Any


def radar_channel(db: NusDb, root: Path, sd: dict[str, Any], ref: RadarRef, ch: int,
                  log: FileLog) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Accumulate one radar channel over `ref.sweeps` sweeps (keyframe, then its `prev` chain).

    Each sweep goes sensor -> ego(t) -> global -> ego(LiDAR keyframe), the chain of the devkit's
    `from_file_multisweep` (without its `remove_close`); velocity vectors get the same rotation.

    Returns:
        `(M, 23)` float32 in `RADAR_FIELDS` order (ego frame), and the `(4, 4)` ego-from-sensor
        chain of the keyframe sweep (raw = inv(T) @ ego for `time == 0` points).
    """
    out, t_key = [], None
    for k in range(ref.sweeps):
        f = str(sd.get("filename", ""))
        pose = transform(db, "ego_pose", sd.get("ego_pose_token", ""), f, "pose")
        t = ref.t_ego_from_global @ pose \
            @ transform(db, "calibrated_sensor", sd.get("calibrated_sensor_token", ""), f, "calib")
        t_key = t if t_key is None else t_key  # (4, 4) ego(LiDAR keyframe) <- sensor(t)
        rec = read_logged(read_radar_pcd, data_file(root, sd), log)  # (N,) 18 native fields
        rec = rec[ref.keep(rec)]
        cloud = np.empty((len(rec), len(RADAR_FIELDS)), np.float32)  # (N, 23)
        xyz = bx.transform_points(t, np.column_stack([rec["x"], rec["y"], rec["z"]]))  # (N, 3)
        cloud[:, :3] = xyz
        for name in ("rcs", *RADAR_FIELDS[7:21]):  # rcs, dyn_prop .. vy_rms as stored
            cloud[:, _COL[name]] = rec[name]
        rng = np.hypot(xyz[:, 0], xyz[:, 1])
        los = np.divide(xyz[:, :2], rng[:, None], out=np.zeros((len(xyz), 2)),
                        where=rng[:, None] > 0)  # (N, 2) BEV direction from the ego origin
        for a, b, radial in (("vx", "vy", "v_r"), ("vx_comp", "vy_comp", "v_r_comp")):
            v = np.column_stack([rec[a], rec[b]]).astype(np.float64) @ t[:2, :2].T  # (N, 2) ego
            cloud[:, _COL[a]], cloud[:, _COL[b]] = v[:, 0], v[:, 1]
            cloud[:, _COL[radial]] = (los * v).sum(axis=1)
        cloud[:, _COL["time"]] = -k
        cloud[:, _COL["channel"]] = ch
        cloud[:, _COL["time_lag"]] = (ref.ref_us - stamp_us(sd)) * 1e-6
        out.append(cloud)
        if not sd.get("prev"):
            break
        sd = record(db, "sample_data", sd["prev"], f, "missing")
    assert t_key is not None
    return np.concatenate(out), t_key


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
    """Decode a camera image downscaled by `factor`: `(H // f, W // f, 3)` uint8 and (W, H)."""
    try:
        with Image.open(path) as im:
            wh = im.size
            size = (max(wh[0] // factor, 1), max(wh[1] // factor, 1))
            im.draft("RGB", size)  # JPEG: decode at 1/2..1/8 scale in the DCT, much faster
            small = im.convert("RGB")
            if small.size != size:
                small = small.resize(size, Image.Resampling.BOX)
            return np.asarray(small, dtype=np.uint8), wh
    except UnidentifiedImageError as e:
        raise FormatError(path, "header", f"not an image ({e}).") from None
    except (OSError, ValueError) as e:
        raise FormatError(path, "payload", f"image cannot be decoded ({e}).") from None
