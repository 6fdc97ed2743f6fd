"""nuScenes ingest (`ingest.format = "nuscenes"`): one task, one Zarr group per scene.

Tables: `nuscenes_tables` (the devkit's records and reverse index without the devkit's ~4 s
import), once per process; files through kdpipe's own readers. Per keyframe sample:

* `lidar` (N, 4) x, y, z, intensity in the ego frame of the LIDAR_TOP keyframe (the ring index,
  5th column of the `.pcd.bin`, is dropped so every dataset's `lidar` has the same 4 columns).
* `radar` (M, 23): the five radars, each accumulated over `radar_sweeps` sweeps (keyframe, then
  its `prev` chain) and taken sensor -> ego(t) -> global -> ego(LiDAR keyframe), velocities
  rotated the same way; `radar_filter` applied per sweep. Columns `RADAR_FIELDS`: x, y, z, rcs,
  v_r, v_r_comp (radial components of (vx, vy) / (vx_comp, vy_comp) along the BEV direction of
  the point from the ego origin), time (sweep index 0, -1, ...), the 14 other native PCD fields
  (velocities in the ego frame), channel (index into `RADARS`), time_lag (s, LiDAR keyframe time
  minus sweep time, the devkit's multisweep time feature).
* `camera/<CH>` (F, H / d, W / d, 3) uint8 downscaled images; the originals by reference.
* Calibration rows: `t_ego_from_sensor` = ego(LiDAR keyframe) <- sensor at its own timestamp
  (the devkit's projection chain), so raw sensor coordinates of every keyframe sample_data are
  `inv(T) @ ego`; cameras also carry [K | 0] and the original image size.
* Boxes: `sample_annotation` -> canonical ego boxes at the LiDAR keyframe pose; `label` is the
  detection class (`category_to_detection_name`, null when unmapped), `class_name` the category.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from kdpipe.datasets.common import SENSOR_FIELDS, FileLog, Storage
from kdpipe.datasets.formats.bins import safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.pcd import read_nuscenes_lidar
from kdpipe.datasets.ingest_format import IngestConfig, register_format
from kdpipe.pipeline.errors import ConfigError
from kdpipe.pipeline.stage import StageConfig
from kdpipe.schemas import boxes as bx

# The devkit (and `nuscenes_io`, built on it) takes ~2 s to import; every plan imports this
# module for `NuscenesIngestConfig`, so the functions that read data import it themselves.
if TYPE_CHECKING:
    from kdpipe.datasets import nuscenes_io as nio

LIDAR = "LIDAR_TOP"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RadarFilter(StageConfig):
    """nuScenes radar point filters (a recorded choice; `None` keeps every value)."""

    invalid_states: list[int] | None = None
    dynprop_states: list[int] | None = None
    ambig_states: list[int] | None = None


class NuscenesIngestConfig(IngestConfig):
    """`ingest` of nuScenes-schema roots (nuScenes, or Lyft in the nuScenes schema)."""

    format: Literal["nuscenes"] = "nuscenes"
    version: str = "v1.0-mini"
    radar_sweeps: int = Field(1, ge=1)   # radar sweeps accumulated per keyframe
    radar_filter: RadarFilter = RadarFilter()
    max_time_gap_ms: float = 100.0       # sensor vs LiDAR keyframe; larger gaps are rejected
    camera_channels: list[str] = Field(default_factory=lambda: ["CAM_FRONT", "CAM_FRONT_LEFT",
                                                                "CAM_FRONT_RIGHT"])
    camera_downscale: int = Field(4, ge=1)


@dataclass(frozen=True)
class NusOptions:
    version: str
    radar_sweeps: int
    radar_filter: RadarFilter
    max_time_gap_ms: float
    cameras: tuple[str, ...]
    downscale: int


@dataclass(frozen=True)
class NusTask:
    root: str
    source: str
    scene: str                 # scene name = Zarr group name
    scene_token: str
    opts: NusOptions
    workdir: str
    zarr_root: str
    storage: Storage
    table_sources: tuple[dict[str, Any], ...] = ()  # the JSON tables, on the first task only
    split: str = ""                                  # train | val | test | "" (unknown)


def make_tasks(cfg: NuscenesIngestConfig, source: str, root: Path, workdir: Path,
               zarr_root: Path, storage: Storage) -> list[NusTask]:
    """One task per scene of `root/cfg.version` (loads the devkit in the driver to list them).

    Raises:
        ConfigError: unreadable tables, a configured camera the dataset lacks, no LIDAR_TOP,
            or scene names that are not unique, safe folder names.
    """
    from kdpipe.datasets import nuscenes_io as nio

    db = nio.load_db(cfg.version, root)
    modality = {s.get("channel"): s.get("modality") for s in db.nusc.sensor}
    if modality.get(LIDAR) != "lidar":
        raise ConfigError(f"nuScenes {root}: no {LIDAR} lidar in the sensor table")
    bad = [c for c in cfg.camera_channels if modality.get(c) != "camera"]
    if bad:
        cams = sorted(str(c) for c, m in modality.items() if m == "camera")
        raise ConfigError(f"ingest.camera_channels: {bad} not cameras of {root} (has {cams})")
    names = [str(s.get("name", "")) for s in db.nusc.scene]
    unsafe = [n for n in names if not _SAFE_NAME.match(n)]
    if unsafe or len(set(names)) != len(names):
        raise ConfigError(f"nuScenes {root}: scene names must be unique folder names, got "
                          f"{unsafe or sorted(n for n in names if names.count(n) > 1)[:3]}")
    log = FileLog()
    for p in sorted((root / cfg.version).glob("*.json")):
        log.add(p)
    opts = NusOptions(cfg.version, cfg.radar_sweeps, cfg.radar_filter, cfg.max_time_gap_ms,
                      tuple(cfg.camera_channels), cfg.camera_downscale)
    split_of = nio.scene_splits(root, cfg.version)
    return [NusTask(str(root), source, name, s["token"], opts, str(workdir), str(zarr_root),
                    storage, tuple(log.rows) if i == 0 else (), split_of.get(name, ""))
            for i, (name, s) in enumerate(zip(names, db.nusc.scene, strict=True))]


def ingest_scene(task: NusTask) -> dict[str, Any]:
    """Ingest one scene's keyframes into its group (skipped if already done)."""
    from kdpipe.datasets import nuscenes_io as nio
    from kdpipe.datasets import nuscenes_radar as nra

    w = nio.SceneWriter(Path(task.workdir), task.source, task.scene, task.storage)
    if w.done():
        return {"scene": task.scene, "resumed": True}
    root, o = Path(task.root), task.opts
    db, log = nio.load_db(o.version, root), w.log
    log.rows += list(task.table_sources)  # the JSON tables, recorded by the first scene
    w.declare("lidar", *SENSOR_FIELDS["lidar"][:2], native_frame=LIDAR)
    w.declare("radar", nio.RADAR_FIELDS, nio.RADAR_UNITS, native_frame="RADAR_* (see channel)")
    w.images = {c: [] for c in o.cameras}
    channels = {s.get("channel") for s in db.nusc.sensor}
    ctx = _Ctx(db, root, o, nra.radar_filter(o.radar_filter), log,
               [c for c in nio.RADARS if c in channels], task.split)
    table = root / o.version
    with log.reading():  # LiDAR and radar files: parsed and digested from one read
        for idx, s in db.scene_samples.get(task.scene_token, []):
            tok = str(s.get("token"))
            try:
                if db.first_index[tok] != idx:
                    raise FormatError(table / "sample.json", "duplicate",
                                      f"sample token {tok} appears more than once in the table.")
                _frame(w, ctx, tok)
            except FormatError as e:
                w.reject(tok, e.path, e.check, e.reason)
            except (KeyError, TypeError, ValueError) as e:  # a record lacking a field / bad value
                w.reject(tok, table, "missing", f"a table record lacks a field or value ({e!r}).")
    w.write(Path(task.zarr_root))
    return {"scene": task.scene, "resumed": False}


run_task = ingest_scene


@dataclass
class _Ctx:
    db: nio.NusDb
    root: Path
    opts: NusOptions
    keep: Any
    log: FileLog
    radars: list[str]
    split: str


def _keyframe(ctx: _Ctx, sample: dict[str, Any], ch: str,
              ref_us: int | None = None) -> dict[str, Any]:
    """The sample's keyframe sample_data of `ch`, checked against the LiDAR time if `ref_us`."""
    from kdpipe.datasets import nuscenes_io as nio

    tok = sample["data"].get(ch)
    if tok is None:
        raise FormatError(ctx.root / ctx.opts.version / "sample_data.json", "missing",
                          f"sample has no {ch} keyframe.")
    sd = ctx.db.nusc.get("sample_data", tok)
    gap_ms = (nio.stamp_us(sd) - ref_us) / 1e3 if ref_us is not None else 0.0
    if abs(gap_ms) > ctx.opts.max_time_gap_ms:
        raise FormatError(sd["filename"], "time_gap", f"{ch} is {gap_ms:+.1f} ms from the LiDAR "
                          f"keyframe (limit {ctx.opts.max_time_gap_ms} ms).")
    return sd


def _frame(w: nio.SceneWriter, ctx: _Ctx, tok: str) -> None:
    from kdpipe.datasets import nuscenes_io as nio
    from kdpipe.datasets import nuscenes_radar as nra

    db, o, nusc = ctx.db, ctx.opts, ctx.db.nusc
    sample = nusc.get("sample", tok)
    nio.check_orphans(db, tok, {LIDAR, *ctx.radars, *o.cameras})
    lsd = _keyframe(ctx, sample, LIDAR)
    lf, ref_us = str(lsd["filename"]), nio.stamp_us(lsd)
    t_ego_lidar = nio.transform(db, "calibrated_sensor", lsd["calibrated_sensor_token"], lf,
                                "calib")
    pose = nio.record(db, "ego_pose", lsd["ego_pose_token"], lf, "pose")
    t_world_ego = nio.transform(db, "ego_pose", lsd["ego_pose_token"], lf, "pose")
    t_ego_world = nio.transform(db, "ego_pose", lsd["ego_pose_token"], lf, "pose", inverse=True)
    lidar_path = nio.data_file(ctx.root, lsd)
    pts = nio.read_logged(read_nuscenes_lidar, lidar_path, ctx.log)  # (N, 5) sensor frame
    lidar = np.column_stack([bx.transform_points(t_ego_lidar, pts[:, :3]), pts[:, 3]])  # (N, 4)
    calib = [{"sensor": "lidar", "t_ego_from_sensor": t_ego_lidar.ravel().tolist()}]
    radar_path = None
    ref = nra.RadarRef(t_ego_world, ref_us, o.radar_sweeps, ctx.keep)
    for ch in ctx.radars:
        sd = _keyframe(ctx, sample, ch, ref_us)
        t = nra.read_channel(db, ctx.root, sd, ref, nio.RADARS.index(ch), ctx.log)
        calib.append({"sensor": ch, "t_ego_from_sensor": t.ravel().tolist()})
        radar_path = radar_path or str(safe_join(ctx.root, sd["filename"]))
    images, image_path, image_sha = {}, None, None
    for ch in o.cameras:
        sd = _keyframe(ctx, sample, ch, ref_us)
        path, f = nio.data_file(ctx.root, sd), str(sd["filename"])
        img, (width, height) = nio.read_logged(  # (H / d, W / d, 3), digested from one read
            lambda p: nio.load_image(p, o.downscale), path, ctx.log)
        if image_path is None or ch == "CAM_FRONT":
            image_path, image_sha = str(path), ctx.log.rows[-1]["sha256"]
        prior = w.images[ch][0].shape if w.images[ch] else img.shape
        if img.shape != prior:
            raise FormatError(path, "size", f"{width}x{height} image downscales to {img.shape}, "
                              f"the scene's other {ch} images to {prior}.")
        cs = nio.record(db, "calibrated_sensor", sd["calibrated_sensor_token"], f, "calib")
        t = t_ego_world @ nio.transform(db, "ego_pose", sd["ego_pose_token"], f, "pose") \
            @ nio.transform(db, "calibrated_sensor", sd["calibrated_sensor_token"], f, "calib")
        k = np.asarray(cs.get("camera_intrinsic"), dtype=np.float64)
        if k.shape != (3, 3) or not np.isfinite(k).all():
            raise FormatError(f, "calib", f"{ch} camera_intrinsic is not a finite 3x3 matrix.")
        calib.append({"sensor": ch, "t_ego_from_sensor": t.ravel().tolist(),
                      "intrinsics": np.column_stack([k, np.zeros(3)]).ravel().tolist(),
                      "image_width_px": width, "image_height_px": height})
        images[ch] = img
        w.image_attrs.setdefault(ch, {"downscale": o.downscale, "source_wh": [width, height]})
    radar = nra.radar_cloud(ref)  # (M, 23)
    boxes = _boxes(ctx, sample, pose, t_world_ego)
    row = {"dataset": "nuscenes", "frame": tok, "split": ctx.split, "labeled": db.labeled,
           "timestamp_us": ref_us, "n_lidar": len(lidar), "n_radar": len(radar),
           "t_world_from_ego": t_world_ego.ravel().tolist(), "lidar_path": str(lidar_path),
           "radar_path": radar_path, "image_path": image_path, "image_sha256": image_sha}
    w.add_frame(row, {"lidar": lidar, "radar": radar}, boxes, calib)
    for ch, img in images.items():
        w.images[ch].append(img)


def _boxes(ctx: _Ctx, sample: dict[str, Any], pose: dict[str, Any],
           t_world_ego: np.ndarray) -> list[dict[str, Any]]:
    """The sample's annotations as canonical ego boxes (LiDAR keyframe pose), table order."""
    from kdpipe.datasets.nuscenes_devkit_data import detection_name

    nusc, table = ctx.db.nusc, ctx.root / ctx.opts.version / "sample_annotation.json"
    anns = [nusc.get("sample_annotation", a) for a in sample["anns"]]
    if not anns:
        return []
    trans = np.asarray([a["translation"] for a in anns], dtype=np.float64)  # (B, 3) global
    wlh = np.asarray([a["size"] for a in anns], dtype=np.float64)           # (B, 3)
    rot = np.asarray([a["rotation"] for a in anns], dtype=np.float64)       # (B, 4) wxyz
    if not (np.isfinite(trans).all() and np.isfinite(wlh).all() and np.isfinite(rot).all()):
        raise FormatError(table, "finite", "an annotation has a NaN/inf translation/size/rotation.")
    if (wlh <= 0).any():
        raise FormatError(table, "box_size", f"an annotation has a size <= 0 ({wlh.min():.3g} m).")
    b = bx.nuscenes_global_to_ego(trans, wlh, rot, pose["translation"], pose["rotation"])  # (B, 7)
    v_glob = nusc.box_velocities([a["token"] for a in anns])  # (B, 3), NaN if unknown
    v_ego = v_glob @ t_world_ego[:3, :3]  # row form of R_world_ego^T v
    known = np.isfinite(v_ego[:, :2]).all(axis=1).tolist()  # (B,)
    out = []
    for i, (a, box, v) in enumerate(zip(anns, b.tolist(), v_ego[:, :2].tolist(), strict=True)):
        cat = a["category_name"]
        attrs = [nusc.get("attribute", t)["name"] for t in a.get("attribute_tokens", [])]
        vx, vy = v if known[i] else (None, None)
        out.append({"class_name": cat, "label": detection_name(cat),
                    "x_ego_m": box[0], "y_ego_m": box[1], "z_ego_m": box[2],
                    "length_m": box[3], "width_m": box[4], "height_m": box[5],
                    "yaw_ego_rad": box[6], "vx_ego_mps": vx, "vy_ego_mps": vy,
                    "num_lidar_pts": int(a.get("num_lidar_pts", 0)),
                    "num_radar_pts": int(a.get("num_radar_pts", 0)),
                    "instance": a.get("instance_token"), "attribute": ",".join(attrs) or None})
    return out


class NuscenesFormat:
    """`ingest.format = "nuscenes"`."""

    name = "nuscenes"
    config = NuscenesIngestConfig
    expected_layout = ("<version>/*.json tables (sample, sample_data, scene, ...) and the "
                       "samples/ and sweeps/ files they name")
    make_tasks = staticmethod(make_tasks)
    run_task = staticmethod(ingest_scene)


FORMAT = register_format(NuscenesFormat())
