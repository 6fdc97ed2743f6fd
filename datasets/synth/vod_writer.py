"""Write a synthetic world in the View-of-Delft on-disk layout (see ``write_vod``)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.datasets.formats.bins import write_float32_bin
from kdpipe.datasets.formats.kitti import (
    KittiLabels,
    alpha_from_rot_y,
    write_kitti_calib,
    write_kitti_labels,
)
from kdpipe.datasets.formats.vod import write_vod_pose
from kdpipe.datasets.synth.camera import render, save_jpeg
from kdpipe.datasets.synth.config import SynthConfig
from kdpipe.datasets.synth.geometry import FloatArray, frame_rng, invert, yaw_pose
from kdpipe.datasets.synth.lidar import VOD_ELEVATIONS_DEG, LidarScan, lidar_spec, scan_lidar
from kdpipe.datasets.synth.radar import (
    VOD_FRGEN21,
    RadarScan,
    RadarSpec,
    scan_radar,
    transform_scan,
)
from kdpipe.datasets.synth.raycast import boxes_in_frame
from kdpipe.datasets.synth.rigs import vod_rig
from kdpipe.datasets.synth.world import ANNOTATED, CLASS_NAMES, Scene, make_scene, scene_map_pose
from kdpipe.schemas.boxes import ego_to_kitti_camera, points_in_boxes, project_to_image_bbox

DATASET_VOD = 1
STREAM_LAYOUT, STREAM_LIDAR, STREAM_RADAR, STREAM_RADAR_PHASE = 0, 1, 2, 3
LIDAR_PERIOD_S = 0.1  # VoD frames follow the 10 Hz LiDAR
_SCAN_KEY_OFFSET = 1000  # radar scan indices can be negative (history before t = 0)
_MAP_ORIGIN_XY = (-750.0, 1020.0)  # near the real VoD map coordinates
T_UTM_MAP = yaw_pose(593_870.0, 5_762_510.0, 0.0, np.deg2rad(1.1))  # Delft, UTM zone 31U
SIDECAR = "synth_scenes.json"
SPLITS = ("train", "val", "unlabeled", "full")


def split_frames(scene_of_frame: list[int], cfg: SynthConfig) -> list[str]:
    """Assign each frame to ``train`` (labeled), ``unlabeled`` or ``val``.

    Whole scenes go to one split when there are at least 3 scenes (no near-duplicate frames
    leak between splits); tiny worlds split their frame sequence into contiguous blocks instead.
    """
    n, n_scenes = len(scene_of_frame), len(set(scene_of_frame))
    if n_scenes >= 3:  # noqa: PLR2004
        n_val = max(1, round(cfg.val_fraction * n_scenes))
        n_lab = max(1, round(cfg.labeled_fraction * (n_scenes - n_val)))
        per_scene = ["train"] * n_lab + ["unlabeled"] * (n_scenes - n_val - n_lab) + ["val"] * n_val
        return [per_scene[s] for s in scene_of_frame]
    n_val = max(1, round(cfg.val_fraction * n)) if n >= 3 else 0  # noqa: PLR2004
    n_lab = max(1, round(cfg.labeled_fraction * (n - n_val)))
    return ["train"] * n_lab + ["unlabeled"] * (n - n_val - n_lab) + ["val"] * n_val


def vod_scene(seed: int, index: int, n_frames: int, cfg: SynthConfig) -> Scene:
    """The (deterministic) world of VoD scene ``index`` holding ``n_frames`` 10 Hz frames."""
    rng = frame_rng(seed, DATASET_VOD, index, 0, STREAM_LAYOUT)
    T_map_world = scene_map_pose(rng, _MAP_ORIGIN_XY)
    return make_scene(rng, n_frames * LIDAR_PERIOD_S, cfg.object_density, T_map_world)


class _SceneGen:
    """Generates the frames of one scene; older radar scans are cached between frames."""

    def __init__(self, seed: int, index: int, n_frames: int, cfg: SynthConfig) -> None:
        self.seed, self.index, self.cfg = seed, index, cfg
        self.rig = vod_rig(cfg.image_scale)
        self.scene = vod_scene(seed, index, n_frames, cfg)
        rng = frame_rng(seed, DATASET_VOD, index, 0, STREAM_RADAR_PHASE)
        self.radar_phase_s = float(rng.uniform(0.0, cfg.vod_radar_period_s))
        # Odometry starts where the recording starts.
        self.T_world_odom = self.scene.ego_at(0.0).T_world_body
        self.spec = RadarSpec(np.deg2rad(cfg.radar_fov_deg), cfg.radar_max_range_m,
                              rate_scale=cfg.radar_object_rate,
                              ground_clutter=cfg.radar_ground_clutter, ghosts=cfg.radar_ghosts,
                              calibration=VOD_FRGEN21)
        self._scans: dict[int, RadarScan] = {}

    def T_world_lidar(self, t_s: float) -> FloatArray:
        return self.scene.ego_at(t_s).T_world_body @ self.rig.T_body_lidar

    def _T_world_radar(self, k: int) -> FloatArray:
        return self.T_world_lidar(self._scan_time(k)) @ self.rig.T_lidar_radar

    def _scan_time(self, k: int) -> float:
        return self.radar_phase_s + k * self.cfg.vod_radar_period_s

    def radar_scan(self, k: int) -> RadarScan:
        """Radar scan ``k`` of the scene's ~13 Hz grid, in its own frame at its own time."""
        if k not in self._scans:
            t_s = self._scan_time(k)
            rng = frame_rng(self.seed, DATASET_VOD, self.index, k + _SCAN_KEY_OFFSET, STREAM_RADAR)
            self._scans[k] = scan_radar(self.scene.state_at(t_s), self.scene.ego_at(t_s),
                                        self._T_world_radar(k), self.spec, rng)
            for old in [j for j in self._scans if j < k - 5]:
                del self._scans[old]
        return self._scans[k]

    def radar_stack(self, t_s: float, n_scans: int) -> list[FloatArray]:
        """Radar ``(M, 7)`` arrays for 1..n_scans accumulated scans at LiDAR time ``t_s``.

        The current scan is the one closest in time to the LiDAR sweep (VoD's sync gap stays
        below half a radar period); older scans are moved into the current radar frame.
        """
        k0 = round((t_s - self.radar_phase_s) / self.cfg.vod_radar_period_s)
        T_cur_world = invert(self._T_world_radar(k0))
        parts, out = [], []
        for j in range(n_scans):
            T_cur_old = T_cur_world @ self._T_world_radar(k0 - j)
            scan = transform_scan(self.radar_scan(k0 - j), T_cur_old)
            parts.append(np.column_stack([scan.xyz_sensor, scan.rcs_dbsm, scan.v_r_mps,
                                          scan.v_r_comp_mps, np.full(len(scan.rcs_dbsm), -j)]))
            out.append(np.concatenate(parts))
        return out


def _labels(gen: _SceneGen, t_s: float, lidar: LidarScan, xyz_written: FloatArray) -> KittiLabels:
    """KITTI label rows for the annotated objects (VoD rule: <= 50 m, in the image, LiDAR hits)."""
    cfg, rig = gen.cfg, gen.rig
    state = gen.scene.state_at(t_s)
    boxes = boxes_in_frame(state.boxes, invert(gen.T_world_lidar(t_s)))  # (N, 7) LiDAR frame
    bbox = project_to_image_bbox(boxes, rig.T_cam_lidar, rig.P, rig.image_wh)
    n_pts = np.zeros(len(boxes), dtype=np.int64)
    cand = np.flatnonzero(np.isin(state.cls, ANNOTATED) & np.isfinite(bbox[:, 0])
                          & (np.hypot(boxes[:, 0], boxes[:, 1]) <= cfg.label_max_range_m))
    n_pts[cand] = points_in_boxes(xyz_written, boxes[cand])
    keep = cand[n_pts[cand] >= cfg.label_min_lidar_points]
    loc_cam, dims_hwl, rot_y = ego_to_kitti_camera(boxes[keep], rig.T_cam_lidar)
    visible = lidar.nearest_counts[keep] / np.maximum(lidar.alone_counts[keep], 1)
    occluded = np.digitize(1.0 - visible, [0.3, 0.7])  # 0 visible, 1 partly, 2 largely
    rows = np.column_stack([np.zeros(len(keep)), occluded, alpha_from_rot_y(rot_y, loc_cam),
                            bbox[keep], dims_hwl, loc_cam, rot_y, np.ones(len(keep))])
    order = np.argsort(loc_cam[:, 2], kind="stable")  # near to far, like a reader expects
    return KittiLabels.from_rows(rows[order], [CLASS_NAMES[c] for c in state.cls[keep][order]])


def _poses(gen: _SceneGen, t_s: float) -> dict[str, FloatArray]:
    T_world_cam = gen.T_world_lidar(t_s) @ invert(gen.rig.T_cam_lidar)
    T_map_cam = gen.scene.T_map_world @ T_world_cam
    return {"odomToCamera": invert(gen.T_world_odom) @ T_world_cam, "mapToCamera": T_map_cam,
            "UTMToCamera": T_UTM_MAP @ T_map_cam}


def _dirs(out: Path) -> dict[str, Path]:
    d = {
        "velodyne": out / "lidar/training/velodyne", "label_2": out / "lidar/training/label_2",
        "calib": out / "lidar/training/calib", "pose": out / "lidar/training/pose",
        "image_2": out / "lidar/training/image_2", "radar": out / "radar/training/velodyne",
        "radar_calib": out / "radar/training/calib", "radar_pose": out / "radar/training/pose",
        "radar_3": out / "radar_3frames/training/velodyne",
        "radar_5": out / "radar_5frames/training/velodyne", "sets": out / "lidar/ImageSets",
    }
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    return d


def _write_frame(gen: _SceneGen, frame_id: str, t_s: float, d: dict[str, Path],
                 stats: Counter[str]) -> None:
    cfg, rig = gen.cfg, gen.rig
    rng = frame_rng(gen.seed, DATASET_VOD, gen.index, int(frame_id), STREAM_LIDAR)
    state = gen.scene.state_at(t_s)
    spec = lidar_spec(VOD_ELEVATIONS_DEG, cfg.vod_lidar_azimuths, cfg)
    lidar = scan_lidar(gen.scene, state, gen.T_world_lidar(t_s), spec, rng)
    pts = np.column_stack([lidar.xyz_sensor, lidar.intensity]).astype(np.float32)
    write_float32_bin(d["velodyne"] / f"{frame_id}.bin", pts)
    labels = _labels(gen, t_s, lidar, pts[:, :3].astype(np.float64))
    write_kitti_labels(d["label_2"] / f"{frame_id}.txt", labels)
    write_kitti_calib(d["calib"] / f"{frame_id}.txt",
                      {"P2": rig.P, "Tr_velo_to_cam": rig.T_cam_lidar})
    write_kitti_calib(d["radar_calib"] / f"{frame_id}.txt",
                      {"P2": rig.P, "Tr_velo_to_cam": rig.T_cam_radar})
    poses = _poses(gen, t_s)
    write_vod_pose(d["pose"] / f"{frame_id}.json", poses)
    write_vod_pose(d["radar_pose"] / f"{frame_id}.json", poses)  # identical in real VoD too
    radar = gen.radar_stack(t_s, 5)
    for key, arr in (("radar", radar[0]), ("radar_3", radar[2]), ("radar_5", radar[4])):
        write_float32_bin(d[key] / f"{frame_id}.bin", arr)
    T_cam_world = rig.T_cam_lidar @ invert(gen.T_world_lidar(t_s))
    img = render(gen.scene, state, T_cam_world, rig.K, rig.image_wh)
    save_jpeg(img, d["image_2"] / f"{frame_id}.jpg", cfg.jpeg_quality)
    stats["lidar_points"] += len(pts)
    stats["radar_points"] += len(radar[0])
    stats.update(f"label_{c}" for c in labels.class_name)


def write_vod(out: Path, n_frames: int, seed: int,
              cfg: SynthConfig | None = None) -> dict[str, Any]:
    """Write ``n_frames`` synthetic View-of-Delft frames under ``out``.

    Layout: ``lidar/training/{velodyne,label_2,calib,pose,image_2}``, ``lidar/ImageSets/
    {train,val,unlabeled,full}.txt``, ``radar/training/{velodyne,calib,pose}``,
    ``radar_{3,5}frames/training/velodyne`` and the sidecar ``synth_scenes.json`` (frame ->
    scene). Every frame has labels in ``label_2``; the split files say which ones may be trained
    on (``train``), held out (``val``) or must be treated as unlabeled (``unlabeled``).

    Args:
        out: output root (created).
        n_frames: number of 10 Hz frames; scenes hold ``cfg.vod_frames_per_scene`` each.
        seed: world seed; the same seed gives byte-identical files.
        cfg: world and sensor settings.

    Returns:
        Summary: frames, scenes, split sizes, mean LiDAR/radar points per frame, label counts.
    """
    cfg = cfg or SynthConfig()
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    out = Path(out)
    d = _dirs(out)
    per_scene = max(1, cfg.vod_frames_per_scene)
    scene_of_frame = [f // per_scene for f in range(n_frames)]
    splits = split_frames(scene_of_frame, cfg)
    frame_ids = [f"{f:05d}" for f in range(n_frames)]
    stats: Counter[str] = Counter()
    gen: _SceneGen | None = None
    for f, frame_id in enumerate(frame_ids):
        s = scene_of_frame[f]
        if gen is None or gen.index != s:
            gen = _SceneGen(seed, s, min(per_scene, n_frames - s * per_scene), cfg)
        _write_frame(gen, frame_id, (f - s * per_scene) * LIDAR_PERIOD_S, d, stats)
    sets = {name: [i for i, sp in zip(frame_ids, splits, strict=True) if sp == name]
            for name in ("train", "val", "unlabeled")}
    sets["full"] = frame_ids
    for name, ids in sets.items():
        (d["sets"] / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    sidecar = {"generator": "kdpipe.stages.synth", "dataset": "vod", "seed": seed,
               "config": cfg.model_dump(mode="json"),
               "frames": [{"frame_id": i, "scene": s, "index_in_scene": f - s * per_scene,
                           "split": sp}
                          for f, (i, s, sp) in enumerate(zip(frame_ids, scene_of_frame, splits,
                                                             strict=True))]}
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    n = max(n_frames, 1)
    return {"dataset": "vod", "frames": n_frames, "scenes": len(set(scene_of_frame)),
            "splits": {k: len(v) for k, v in sets.items()},
            "lidar_points_per_frame": stats["lidar_points"] / n,
            "radar_points_per_frame": stats["radar_points"] / n,
            "labels": {k[6:]: v for k, v in sorted(stats.items()) if k.startswith("label_")}}
