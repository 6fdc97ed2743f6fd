"""View-of-Delft ingest: one task per block of consecutive frames (VoD has no scene ids).

Reads LiDAR (N x 4), radar (N x 7: x, y, z, RCS, v_r, v_r_compensated, time) single and
accumulated scans (both folder spellings), calib, pose (JSON lines), labels (15 or 16 columns)
and the image by reference. Points are stored in the ego (= LiDAR) frame; radar->ego comes from
the two calib files (T_ego_from_radar = inv(T_cam_from_lidar) @ T_cam_from_radar).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

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
from kdpipe.datasets.formats.bins import read_text
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.kitti import DONT_CARE, parse_kitti_calib, read_kitti_labels
from kdpipe.datasets.formats.vod import (
    VodLayout,
    read_vod_lidar,
    read_vod_pose,
    read_vod_radar,
    stems,
)
from kdpipe.datasets.ingest_format import IngestConfig, register_format
from kdpipe.schemas import boxes as bx

VOD_CLASSES = frozenset({
    "Car", "Pedestrian", "Cyclist", "rider", "bicycle", "bicycle_rack", "human_depiction",
    "moped_scooter", "motor", "truck", "ride_other", "vehicle_other", "ride_uncertain", DONT_CARE,
})
RADAR_SENSORS = {"radar": None, "radar_3": 3, "radar_5": 5}


class VodIngestConfig(IngestConfig):
    """`ingest` of View-of-Delft roots."""

    format: Literal["vod"] = "vod"
    block_frames: int = Field(64, gt=0)  # frames per group (VoD has no scene ids)
    # source name -> split of the frames no ImageSets file lists (else ""), e.g. a root of raw
    # drives: { vod = "unlabeled" }; listed frames keep their split
    unlisted_split: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unlisted_sources(self) -> VodIngestConfig:
        names = self.names or [Path(r).name for r in self.roots]
        unknown = sorted(set(self.unlisted_split) - set(names))
        if unknown:
            raise ValueError(f"unlisted_split names unknown source(s) {', '.join(unknown)} "
                             f"(sources: {', '.join(names)})")
        bad = sorted(f"{k} = {v!r}" for k, v in self.unlisted_split.items() if v not in SPLITS)
        if bad:
            raise ValueError(f"unlisted_split: {', '.join(bad)} is not a split "
                             f"(one of {', '.join(SPLITS)})")
        return self


@dataclass(frozen=True)
class VodTask:
    root: str
    source: str
    scene: str
    frames: tuple[str, ...]
    split_of: dict[str, str]
    workdir: str
    zarr_root: str
    storage: Storage
    duplicates: dict[str, FormatError] = field(default_factory=dict)  # frame -> its reject
    unlisted_split: str = ""  # the split of frames no ImageSets file lists


def plan_vod(root: Path, source: str, block_frames: int
             ) -> tuple[list[tuple[str, list[str]]], dict[str, str], dict[str, FormatError]]:
    """Groups of consecutive frame ids (block = frame number // block_frames), splits, and the
    frames to reject as duplicates (listed in two splits, or one number spelled twice)."""
    layout = VodLayout(root)
    label_ids = sorted(stems(layout.sensor_dir("lidar", "label_2"), ".txt"))
    # a label file without point files is a frame too: rejected as missing, never dropped
    ids = sorted(set(layout.frame_ids("lidar")) | set(layout.frame_ids("radar"))
                 | {i for i in label_ids if i.isdigit()})
    split_of: dict[str, str] = {}
    dups: dict[str, FormatError] = {}
    for name in SPLITS:
        listed = layout.read_split(name) or []
        for fid in listed:
            if split_of.setdefault(fid, name) != name:
                dups[fid] = FormatError(layout.split_file(name) or name, "duplicate",
                                        f"frame {fid} is listed in splits {split_of[fid]} and "
                                        f"{name}; which one is meant is unknown.")
    first: dict[int, str] = {}
    for fid in ids:  # "549" and "00549" name one frame number: keep the first spelling
        if first.setdefault(int(fid), fid) != fid:
            dups[fid] = FormatError(layout.frame(fid).lidar_bin, "duplicate",
                                    f"frame ids {first[int(fid)]} and {fid} are the same number.")
    return block_groups(ids, block_frames), split_of, dups


def ingest_vod_group(task: VodTask) -> dict[str, Any]:
    w = GroupWriter(Path(task.workdir), task.source, task.scene, task.storage)
    if w.done():
        return {"scene": task.scene, "resumed": True}
    layout, log = VodLayout(Path(task.root)), w.log
    has_acc = {s: layout.accumulated_radar_dir(n) is not None
               for s, n in RADAR_SENSORS.items() if n}
    w.declare("lidar", *SENSOR_FIELDS["lidar"][:2], native_frame="lidar")
    for sensor in ["radar", *[s for s, ok in has_acc.items() if ok]]:
        w.declare(sensor, *SENSOR_FIELDS["vod_radar"][:2], native_frame="radar")
    state = _TaskState(has_acc)
    with log.reading():  # each raw file read once: parsed and digested from one read
        for fid in task.frames:
            try:
                if fid in task.duplicates:
                    raise task.duplicates[fid]
                _frame(w, layout, fid, task.split_of.get(fid, task.unlisted_split), state, log)
            except FormatError as e:
                w.reject(fid, e.path, e.check, e.reason)
    w.write(Path(task.zarr_root))
    return {"scene": task.scene, "resumed": False}


@dataclass
class _TaskState:
    """What one task's frames share: which accumulated radar folders exist, and the
    calibration parsed from each distinct calib file (VoD writes the same two files for every
    frame: each is still read and digested, but parsed and inverted once)."""

    has_acc: dict[str, bool]
    calibs: dict[str, dict[str, npt.NDArray[np.float64]]] = field(default_factory=dict)
    rigs: dict[tuple[str, str], _Rig] = field(default_factory=dict)

    def calib(self, path: Path, what: str) -> tuple[str, dict[str, npt.NDArray[np.float64]]]:
        """(text, parsed) of a calib file, read here (rejects as `read_kitti_calib` gives)."""
        text = read_text(need_file(path, what), "calib")
        cal = self.calibs.get(text)
        if cal is None:
            cal = self.calibs[text] = parse_kitti_calib(path, text)
        return text, cal

    def rig(self, lidar_calib: Path, radar_calib: Path) -> _Rig:
        """The calibration of a frame's two calib files (read and checked in this order)."""
        text_l, cal_l = self.calib(lidar_calib, "LiDAR calib")
        text_r, cal_r = self.calib(radar_calib, "radar calib")
        rig = self.rigs.get((text_l, text_r))
        if rig is None:
            t_cam_from_lidar = cal_l["T_rect_from_velo"]
            rig = self.rigs[text_l, text_r] = _Rig(
                t_cam_from_lidar, np.linalg.inv(t_cam_from_lidar) @ cal_r["T_rect_from_velo"],
                np.linalg.inv(t_cam_from_lidar), cal_l["P2"])
        return rig


@dataclass(frozen=True)
class _Rig:
    t_cam_from_lidar: npt.NDArray[np.float64]   # (4, 4) rectified camera <- LiDAR (= ego)
    t_ego_from_radar: npt.NDArray[np.float64]   # (4, 4)
    t_ego_from_cam: npt.NDArray[np.float64]     # (4, 4)
    p2: npt.NDArray[np.float64]                 # (3, 4) camera intrinsics


def _frame(w: GroupWriter, layout: VodLayout, fid: str, split: str, state: _TaskState,
           log: FileLog) -> None:
    has_acc = state.has_acc
    p = layout.frame(fid)
    lidar = read_vod_lidar(need_file(p.lidar_bin, "LiDAR"))                       # (N, 4)
    radars = {"radar": read_vod_radar(need_file(p.radar_bin, "radar"))}           # (M, 7)
    for sensor, acc_path in (("radar_3", p.radar_3scans_bin), ("radar_5", p.radar_5scans_bin)):
        if has_acc.get(sensor):
            radars[sensor] = read_vod_radar(need_file(acc_path, f"{sensor} accumulated radar"))
    rig = state.rig(p.lidar_calib, p.radar_calib)
    pose = read_vod_pose(need_file(p.pose, "pose"))
    t_cam_from_lidar, t_ego_from_radar = rig.t_cam_from_lidar, rig.t_ego_from_radar
    for cloud in radars.values():  # radar frame -> ego frame, in place on xyz
        cloud[:, :3] = bx.transform_points(t_ego_from_radar, cloud[:, :3])
    boxes: list[dict[str, Any]] = []
    if p.label.is_file():
        boxes = kitti_box_rows(read_kitti_labels(p.label, VOD_CLASSES), t_cam_from_lidar, lidar,
                               radars["radar"])
        log.add(p.label)
    image_sha = None
    if p.image is not None:
        log.add(p.image)
        image_sha = log.rows[-1]["sha256"]
    for f in (p.lidar_bin, p.radar_bin, p.lidar_calib, p.radar_calib, p.pose):
        log.add(f)
    for sensor, f in (("radar_3", p.radar_3scans_bin), ("radar_5", p.radar_5scans_bin)):
        if sensor in radars and f is not None:
            log.add(f)
    # odometry frame <- camera <- ego: poses map odom into the camera frame
    t_world_from_ego = np.linalg.inv(pose["odomToCamera"]) @ t_cam_from_lidar
    width, height = image_size(p.image)
    calib = [
        {"sensor": "lidar", "t_ego_from_sensor": np.eye(4).ravel().tolist()},
        {"sensor": "radar", "t_ego_from_sensor": t_ego_from_radar.ravel().tolist()},
        {"sensor": "camera", "t_ego_from_sensor": rig.t_ego_from_cam.ravel().tolist(),
         "intrinsics": rig.p2.ravel().tolist(), "image_width_px": width,
         "image_height_px": height},
    ]
    row = {"dataset": "vod", "frame": fid, "split": split,
           "labeled": bool(p.label.is_file()) and split != "unlabeled", "timestamp_us": None,
           "n_lidar": len(lidar), "n_radar": len(radars["radar"]),
           "t_world_from_ego": t_world_from_ego.ravel().tolist(), "lidar_path": str(p.lidar_bin),
           "radar_path": str(p.radar_bin), "image_path": str(p.image) if p.image else None,
           "image_sha256": image_sha}
    w.add_frame(row, {"lidar": lidar, **radars}, boxes, calib)


def make_tasks(cfg: VodIngestConfig, source: str, root: Path, workdir: Path, zarr_root: Path,
               storage: Storage) -> list[VodTask]:
    """One task per block of `cfg.block_frames` consecutive frame numbers of `root`."""
    groups, split_of, dups = plan_vod(root, source, cfg.block_frames)
    return [VodTask(str(root), source, scene, tuple(ids),
                    {f: split_of[f] for f in ids if f in split_of}, str(workdir), str(zarr_root),
                    storage, {f: dups[f] for f in ids if f in dups},
                    cfg.unlisted_split.get(source, ""))
            for scene, ids in groups]


run_task = ingest_vod_group


class VodFormat:
    """`ingest.format = "vod"`."""

    name = "vod"
    config = VodIngestConfig
    expected_layout = ("lidar/training/{velodyne,calib,pose,label_2,image_2}/, "
                       "radar/training/{velodyne,calib}/, optional radar_3frames/, "
                       "radar_5frames/ and lidar/ImageSets/*.txt")
    make_tasks = staticmethod(make_tasks)
    run_task = staticmethod(ingest_vod_group)


FORMAT = register_format(VodFormat())
