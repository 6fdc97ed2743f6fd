"""KITTI-style 4D-radar ingest (`ingest.format = "kitti-radar"`), for ZJUODset-like releases.

ZJUODset's file layout is not public, so this reads the common KITTI-derived layout, with or
without a `training/` level::

    root[/training]/velodyne/ | lidar/   <id>.bin  N x 4 float32 x, y, z, reflectance (LiDAR frame)
    root[/training]/radar/               <id>.bin  N x `radar_n_fields` float32 (radar frame)
    root[/training]/label_2/             <id>.txt  KITTI labels, 15 or 16 columns (camera frame)
    root[/training]/calib/               <id>.txt  KITTI calib (+ optional Tr_radar_to_cam)
    root[/training]/image_2/             <id>.png | .jpg   (optional, stored by reference)
    root/ImageSets/{train,val,unlabeled,test}.txt          (optional splits)

Decisions:
* Ego frame = LiDAR frame (as VoD). Radar -> ego: `inv(Tr_velo_to_cam) @ Tr_radar_to_cam` when
  the calib file has `Tr_radar_to_cam` (both map into the same unrectified camera, so R0_rect
  cancels); without it the radar is taken to be already in the LiDAR frame (identity).
* Radar columns: `radar_columns` (name -> column of the .bin) is the declared field map; the
  stored `radar` sensor has x, y, z first, then the other named columns in map order. Unmapped
  columns are not stored.
* No `radar/` folder = a LiDAR-only ingest (plain KITTI): the `radar` sensor is still declared,
  with zero points per frame, so readers asking for it get empty clouds instead of a KeyError;
  frames then have `n_radar = 0`, `radar_path = null` and boxes `num_radar_pts = null`.
* Class names are kept verbatim (the taxonomy is unknown); DontCare rows are dropped from the
  boxes as in VoD ingest. No poses or timestamps: those columns are null.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from kdpipe.datasets.common import (
    SENSOR_FIELDS,
    SPLITS,
    FileLog,
    GroupWriter,
    Storage,
    block_groups,
    image_size,
    kitti_box_rows,
    need_file,
)
from kdpipe.datasets.formats.bins import check_finite_xyz, read_float32_bin, safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.kitti import read_kitti_calib, read_kitti_labels
from kdpipe.datasets.ingest_format import IngestConfig, register_format
from kdpipe.pipeline.errors import ConfigError
from kdpipe.schemas import boxes as bx

_FRAME_ID = re.compile(r"^\d+$")
_UNITS = {"x": "m", "y": "m", "z": "m", "rcs": "dBsm", "v_r": "m/s", "v_r_comp": "m/s",
          "time": "scan"}


class KittiRadarIngestConfig(IngestConfig):
    """`ingest` of KITTI-layout roots with (or without) a 4D radar."""

    format: Literal["kitti-radar"] = "kitti-radar"
    block_frames: int = Field(64, gt=0)  # frames per group (no scene ids)
    # radar .bin columns (name -> column index) and the file's column count
    radar_columns: dict[str, int] = Field(default_factory=lambda: {
        "x": 0, "y": 1, "z": 2, "rcs": 3, "v_r": 4, "v_r_comp": 5, "time": 6})
    radar_n_fields: int = 7


@dataclass(frozen=True)
class KittiLayout:
    """Where the folders of one root are (`radar` is None for a LiDAR-only release)."""

    root: Path
    base: Path           # root, or root/training
    lidar: Path          # velodyne/ or lidar/
    radar: Path | None

    @classmethod
    def find(cls, root: Path) -> KittiLayout:
        base = root / "training" if (root / "training").is_dir() else root
        found = [base / n for n in ("velodyne", "lidar") if (base / n).is_dir()]
        if not found:
            raise ConfigError(f"kitti-radar root {root}: no velodyne/ or lidar/ folder "
                              "(looked in the root and in training/; check ingest.roots and "
                              "ingest.format)")
        if len(found) == 2 and found[0].resolve() != found[1].resolve():
            raise ConfigError(f"kitti-radar root {root}: both velodyne/ and lidar/ exist; keep one")
        radar = base / "radar"
        return cls(root, base, found[0], radar if radar.is_dir() else None)

    def frame_ids(self) -> list[str]:
        """Ids with any per-frame file, so a frame missing its LiDAR is rejected, not lost."""
        files = [(self.lidar, "*.bin"), (self.base / "calib", "*.txt"),
                 (self.base / "label_2", "*.txt")]
        files += [(self.radar, "*.bin")] if self.radar else []
        return sorted({p.stem for d, pat in files for p in d.glob(pat) if _FRAME_ID.match(p.stem)})

    def file(self, folder: str | Path, fid: str, suffix: str) -> Path:
        rel = Path(folder).relative_to(self.base) if Path(folder).is_absolute() else Path(folder)
        return safe_join(self.base, rel / f"{fid}{suffix}")

    def splits(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in SPLITS:
            for d in (self.root / "ImageSets", self.base / "ImageSets"):
                if (d / f"{name}.txt").is_file():
                    ids = (d / f"{name}.txt").read_text(encoding="utf-8").split()
                    if not all(_FRAME_ID.match(i) for i in ids):
                        raise ConfigError(f"{d / f'{name}.txt'}: every entry must be a frame id")
                    for fid in ids:
                        out.setdefault(fid, name)
                    break
        return out


@dataclass(frozen=True)
class KittiTask:
    root: str
    source: str
    scene: str
    frames: tuple[str, ...]
    split_of: dict[str, str]
    radar_columns: tuple[tuple[str, int], ...]  # stored order: x, y, z, then the map's order
    radar_n_fields: int
    workdir: str
    zarr_root: str
    storage: Storage


def radar_columns(cfg: KittiRadarIngestConfig) -> tuple[tuple[str, int], ...]:
    """The validated field map, x/y/z first. Raises ConfigError on a bad map."""
    cols, n = dict(cfg.radar_columns), cfg.radar_n_fields
    missing = [k for k in ("x", "y", "z") if k not in cols]
    bad = {k: v for k, v in cols.items() if not 0 <= v < n}
    if missing or bad or len(set(cols.values())) != len(cols):
        raise ConfigError(f"ingest.radar_columns {cols} must map x, y, z and distinct columns in "
                          f"0..{n - 1} (ingest.radar_n_fields = {n})")
    order = ["x", "y", "z"] + [k for k in cols if k not in ("x", "y", "z")]
    return tuple((k, cols[k]) for k in order)


def make_tasks(cfg: KittiRadarIngestConfig, source: str, root: Path, workdir: Path, zarr_root: Path,
               storage: Storage) -> list[KittiTask]:
    """Groups of `cfg.block_frames` consecutive frame numbers (block = id // block_frames)."""
    lay, cols = KittiLayout.find(root), radar_columns(cfg)
    split_of = lay.splits()
    return [KittiTask(str(root), source, scene, tuple(ids),
                      {f: split_of[f] for f in ids if f in split_of}, cols, cfg.radar_n_fields,
                      str(workdir), str(zarr_root), storage)
            for scene, ids in block_groups(lay.frame_ids(), cfg.block_frames)]


def ingest_block(task: KittiTask) -> dict[str, Any]:
    """Ingest one block of frames into its group (skipped if already done)."""
    w = GroupWriter(Path(task.workdir), task.source, task.scene, task.storage)
    if w.done():
        return {"scene": task.scene, "resumed": True}
    lay, log = KittiLayout.find(Path(task.root)), w.log
    w.declare("lidar", *SENSOR_FIELDS["lidar"][:2], native_frame="lidar")
    names = tuple(k for k, _ in task.radar_columns)
    w.declare("radar", names, tuple(_UNITS.get(k, "unknown") for k in names),
              native_frame="radar" if lay.radar else "none (LiDAR-only release)")
    with log.reading():  # each raw file read once: parsed and digested from one read
        for fid in task.frames:
            try:
                _frame(w, lay, task, fid, log)
            except FormatError as e:
                w.reject(fid, e.path, e.check, e.reason)
    w.write(Path(task.zarr_root))
    return {"scene": task.scene, "resumed": False}


run_task = ingest_block


def _t_ego_from_radar(cal: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """(4, 4) LiDAR <- radar from `Tr_radar_to_cam`, identity without it (see module doc)."""
    tr = cal.get("Tr_radar_to_cam")
    if tr is None:
        return np.eye(4)
    if tr.size != 12:
        raise FormatError(path, "calib", f"Tr_radar_to_cam has {tr.size} values, need 12.")
    t_cam_from_radar = np.vstack([tr.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
    return np.linalg.inv(cal["Tr_velo_to_cam_4x4"]) @ t_cam_from_radar


def _frame(w: GroupWriter, lay: KittiLayout, task: KittiTask, fid: str, log: FileLog) -> None:
    lidar_bin = need_file(lay.file(lay.lidar, fid, ".bin"), "LiDAR")
    lidar = read_float32_bin(lidar_bin, 4)  # (N, 4) LiDAR = ego frame
    calib_txt = need_file(lay.file("calib", fid, ".txt"), "calib")
    cal = read_kitti_calib(calib_txt)
    t_cam_from_lidar = cal["T_rect_from_velo"]
    n_cols = len(task.radar_columns)
    radar, radar_bin, t_ego_radar = np.zeros((0, n_cols), np.float32), None, None
    if lay.radar is not None:
        radar_bin = need_file(lay.file(lay.radar, fid, ".bin"), "radar")
        raw = read_float32_bin(radar_bin, task.radar_n_fields)  # (M, radar_n_fields)
        radar = raw[:, [c for _, c in task.radar_columns]].copy()  # (M, n_cols) field map
        check_finite_xyz(radar_bin, radar)
        t_ego_radar = _t_ego_from_radar(cal, calib_txt)
        radar[:, :3] = bx.transform_points(t_ego_radar, radar[:, :3])
    label = lay.file("label_2", fid, ".txt")
    boxes: list[dict[str, Any]] = []
    if label.is_file():
        boxes = kitti_box_rows(read_kitti_labels(label), t_cam_from_lidar, lidar, radar[:, :3])
        boxes = boxes if lay.radar else [{**b, "num_radar_pts": None} for b in boxes]
        log.add(label)
    images = (lay.file("image_2", fid, ext) for ext in (".png", ".jpg"))
    image = next((p for p in images if p.is_file()), None)
    width, height = image_size(image)
    image_sha = None
    if image is not None:
        log.add(image)
        image_sha = log.rows[-1]["sha256"]
    for f in (lidar_bin, calib_txt, radar_bin):
        if f is not None:
            log.add(f)
    calib = [{"sensor": "lidar", "t_ego_from_sensor": np.eye(4).ravel().tolist()},
             {"sensor": "camera",
              "t_ego_from_sensor": np.linalg.inv(t_cam_from_lidar).ravel().tolist(),
              "intrinsics": cal["P2"].ravel().tolist(), "image_width_px": width,
              "image_height_px": height}]
    if t_ego_radar is not None:
        calib.append({"sensor": "radar", "t_ego_from_sensor": t_ego_radar.ravel().tolist()})
    split = task.split_of.get(fid, "")
    row = {"dataset": "kitti-radar", "frame": fid, "split": split,
           "labeled": label.is_file() and split != "unlabeled", "timestamp_us": None,
           "n_lidar": len(lidar), "n_radar": len(radar), "t_world_from_ego": None,
           "lidar_path": str(lidar_bin), "radar_path": str(radar_bin) if radar_bin else None,
           "image_path": str(image) if image else None, "image_sha256": image_sha}
    w.add_frame(row, {"lidar": lidar, "radar": radar}, boxes, calib)


class KittiRadarFormat:
    """`ingest.format = "kitti-radar"`."""

    name = "kitti-radar"
    config = KittiRadarIngestConfig
    expected_layout = ("[training/]{velodyne|lidar,calib}/ with optional radar/, label_2/, "
                       "image_2/ and ImageSets/*.txt")
    make_tasks = staticmethod(make_tasks)
    run_task = staticmethod(ingest_block)


FORMAT = register_format(KittiRadarFormat())
