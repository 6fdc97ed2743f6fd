"""Write a synthetic world as a nuScenes ``v1.0-mini`` dataroot (see ``write_nuscenes``)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from kdpipe.datasets.formats.bins import write_float32_bin
from kdpipe.datasets.formats.pcd import write_radar_pcd
from kdpipe.datasets.synth.camera import render, save_jpeg
from kdpipe.datasets.synth.config import SynthConfig
from kdpipe.datasets.synth.geometry import FloatArray, frame_rng, invert, matrix_to_quat_wxyz, token
from kdpipe.datasets.synth.lidar import NUS_ELEVATIONS_DEG, LidarScan, lidar_spec, scan_lidar
from kdpipe.datasets.synth.nus_radar import ars408_records
from kdpipe.datasets.synth.nuscenes_tables import (
    CATEGORY_OF_CLASS,
    VERSION,
    attribute_name,
    calibration_record,
    scene_name,
    scene_split,
    static_tables,
    visibility_token,
)
from kdpipe.datasets.synth.radar import RadarSpec, scan_radar
from kdpipe.datasets.synth.raycast import boxes_in_frame
from kdpipe.datasets.synth.rigs import (
    NUS_CAMERAS,
    NUS_LIDAR,
    NUS_LIDAR_T_BODY,
    NUS_RADARS,
    nus_camera,
    nus_radar_pose,
)
from kdpipe.datasets.synth.world import ANNOTATED, Scene, make_scene, scene_map_pose
from kdpipe.schemas.boxes import ego_to_nuscenes_global, points_in_boxes

DATASET_NUS = 2
STREAM_LAYOUT, STREAM_LIDAR, STREAM_RADAR, STREAM_RECORDS = 0, 1, 2, 3
SAMPLE_PERIOD_S = 0.5  # keyframes at 2 Hz
_BASE_US = 1_533_201_470_000_000
_MAP_ORIGIN_XY = (1000.0, 1200.0)
# Sensors are not triggered together: small fixed offsets from the LiDAR keyframe time.
_RADAR_OFFSET_S = dict(zip(NUS_RADARS, (-0.012, 0.021, -0.031, 0.008, 0.027), strict=True))
_SWEEP_OFFSET_KEY = 100  # RNG key offset separating sweeps from keyframes
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
          "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")


class _When(NamedTuple):
    """When a sample_data is taken and which keyframe it belongs to."""

    t_s: float          # scene time, seconds
    sample_i: int       # index of the sample (keyframe) it belongs to or precedes
    key: bool           # keyframe (samples/) or sweep (sweeps/)


def _us(t0_us: int, t_s: float) -> int:
    return t0_us + round(t_s * 1e6)


def nuscenes_scene(seed: int, index: int, cfg: SynthConfig) -> Scene:
    """The (deterministic) world of nuScenes scene ``index``; sample ``i`` is at t = 0.5 i s."""
    rng = frame_rng(seed, DATASET_NUS, index, 0, STREAM_LAYOUT)
    return make_scene(rng, cfg.nus_samples_per_scene * SAMPLE_PERIOD_S + 1.0, cfg.object_density,
                      scene_map_pose(rng, _MAP_ORIGIN_XY))


class _SceneWriter:
    """Writes one scene's files and appends its records to the shared tables."""

    def __init__(self, w: _Writer, index: int) -> None:
        self.w, self.index, cfg = w, index, w.cfg
        n = cfg.nus_samples_per_scene
        self.scene = nuscenes_scene(w.seed, index, cfg)
        self.t0_us = _BASE_US + index * 60_000_000  # scenes one minute apart
        self.log = f"n900-2018-08-01-12-{index // 60 % 60:02d}-{index % 60:02d}+0800"
        self.log_token = token(w.seed, "log", index)
        self.sample_tokens = [token(w.seed, "sample", index, i) for i in range(n)]
        self.sd: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.spec = RadarSpec(np.deg2rad(cfg.radar_fov_deg), cfg.radar_max_range_m,
                              rate_scale=cfg.nus_radar_object_rate,
                              ground_clutter=cfg.nus_radar_ground_clutter, ghosts=cfg.radar_ghosts)

    def T_world_body(self, t_s: float) -> FloatArray:
        return self.scene.ego_at(t_s).T_world_body

    def _sample_data(self, channel: str, when: _When, ext: str,
                     wh: tuple[int, int] = (0, 0)) -> Path:
        """Register one sample_data (and its ego pose); returns the file path to write."""
        (t_s, sample_i, key), w = when, self.w
        ts = _us(self.t0_us, t_s)
        folder = "samples" if key else "sweeps"
        rel = f"{folder}/{channel}/{self.log}__{channel}__{ts}.{ext}"
        T = self.scene.T_map_world @ self.T_world_body(t_s)
        pose_tok = token(w.seed, "ego_pose", self.index, channel, ts)
        w.tables["ego_pose"].append({"token": pose_tok, "timestamp": ts,
                                     "rotation": matrix_to_quat_wxyz(T[:3, :3]).tolist(),
                                     "translation": [float(T[0, 3]), float(T[1, 3]), 0.0]})
        rec = {"token": token(w.seed, "sample_data", self.index, channel, ts),
               "sample_token": self.sample_tokens[sample_i], "ego_pose_token": pose_tok,
               "calibrated_sensor_token": token(w.seed, "calibrated_sensor", self.index, channel),
               "timestamp": ts, "fileformat": "jpg" if ext == "jpg" else "pcd",
               "is_key_frame": key, "height": wh[1], "width": wh[0], "filename": rel,
               "prev": "", "next": ""}
        self.sd[channel].append(rec)
        (w.out / folder / channel).mkdir(parents=True, exist_ok=True)
        return w.out / rel

    def lidar(self, when: _When) -> tuple[LidarScan, FloatArray]:
        """Write a LIDAR_TOP sweep; returns the scan and its written points in the body frame."""
        cfg, t_s = self.w.cfg, when.t_s
        path = self._sample_data(NUS_LIDAR, when, "pcd.bin")
        rng = frame_rng(self.w.seed, DATASET_NUS, self.index, _us(0, t_s) + 10**9, STREAM_LIDAR)
        T_world_lidar = self.T_world_body(t_s) @ NUS_LIDAR_T_BODY
        spec = lidar_spec(NUS_ELEVATIONS_DEG, cfg.nus_lidar_azimuths, cfg)
        scan = scan_lidar(self.scene, self.scene.state_at(t_s), T_world_lidar, spec, rng)
        pts = np.column_stack([scan.xyz_sensor, np.round(scan.intensity),
                               scan.ring]).astype(np.float32)  # (M, 5)
        write_float32_bin(path, pts)
        T = NUS_LIDAR_T_BODY
        return scan, pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]

    def radar(self, channel: str, when: _When) -> FloatArray:
        """Write one radar PCD; returns its points ``(M, 3)`` in the road frame."""
        t_s = when.t_s
        path = self._sample_data(channel, when, "pcd")
        k = [self.index, _us(0, t_s) + 10**9, list(NUS_RADARS).index(channel)]
        T_world_radar = self.T_world_body(t_s) @ nus_radar_pose(channel)
        state = self.scene.state_at(t_s)
        scan = scan_radar(state, self.scene.ego_at(t_s), T_world_radar, self.spec,
                          frame_rng(self.w.seed, DATASET_NUS, *k, STREAM_RADAR))
        src = np.maximum(scan.source_id, 0)
        speed = np.where(scan.source_id >= 0, np.hypot(*state.velocity_mps[src, :2].T), 0.0)
        rec = ars408_records(scan, speed, frame_rng(self.w.seed, DATASET_NUS, *k, STREAM_RECORDS))
        write_radar_pcd(path, rec)
        self.w.stats["radar_points"] += len(rec)
        xyz = np.column_stack([rec["x"], rec["y"], rec["z"]]).astype(np.float64)
        return xyz @ T_world_radar[:3, :3].T + T_world_radar[:3, 3]

    def camera(self, channel: str, when: _When) -> None:
        T_body_cam, K, wh = nus_camera(channel, self.w.cfg.image_scale)
        path, t_s = self._sample_data(channel, when, "jpg", wh), when.t_s
        T_cam_world = invert(self.T_world_body(t_s) @ T_body_cam)
        img = render(self.scene, self.scene.state_at(t_s), T_cam_world, K, wh)
        save_jpeg(img, path, self.w.cfg.jpeg_quality)

    def sample(self, i: int) -> None:
        """Keyframe ``i`` with the sweeps leading up to it."""
        cfg, t_s = self.w.cfg, i * SAMPLE_PERIOD_S
        for k in range(cfg.nus_lidar_sweeps, 0, -1):
            self.lidar(_When(t_s - k * SAMPLE_PERIOD_S / (cfg.nus_lidar_sweeps + 1), i, False))
        for ch, off in _RADAR_OFFSET_S.items():
            for k in range(cfg.nus_radar_sweeps, 0, -1):
                dt = k * SAMPLE_PERIOD_S / (cfg.nus_radar_sweeps + 1)
                self.radar(ch, _When(t_s + off - dt, i, False))
        lidar, xyz_body = self.lidar(_When(t_s, i, True))
        radar_w = np.concatenate([self.radar(ch, _When(t_s + off, i, True))
                                  for ch, off in _RADAR_OFFSET_S.items()])
        for j, ch in enumerate(cfg.nus_cameras):
            self.camera(ch, _When(t_s + 0.008 * j, i, True))  # fired as the LiDAR sweeps past
        self.w.stats["lidar_points"] += len(xyz_body)
        self.w.tables["sample"].append({
            "token": self.sample_tokens[i], "timestamp": _us(self.t0_us, t_s),
            "prev": self.sample_tokens[i - 1] if i else "",
            "next": self.sample_tokens[i + 1] if i + 1 < len(self.sample_tokens) else "",
            "scene_token": token(self.w.seed, "scene", self.index)})
        self._annotations(i, lidar, xyz_body, radar_w)

    def _annotations(self, i: int, lidar: LidarScan, xyz_body: FloatArray,
                     radar_w: FloatArray) -> None:
        """Annotate objects near the ego that at least one LiDAR or radar point touches."""
        t_s = i * SAMPLE_PERIOD_S
        w, state = self.w, self.scene.state_at(t_s)
        T_world_body = self.T_world_body(t_s)
        boxes_body = boxes_in_frame(state.boxes, invert(T_world_body))
        cand = np.flatnonzero(np.isin(state.cls, ANNOTATED) & (
            np.hypot(boxes_body[:, 0], boxes_body[:, 1]) <= w.cfg.nus_annotation_range_m))
        n_lidar = points_in_boxes(xyz_body, boxes_body[cand])
        n_radar = points_in_boxes(radar_w, state.boxes[cand])
        T = self.scene.T_map_world @ T_world_body
        trans, size, rot = ego_to_nuscenes_global(boxes_body[cand], T[:3, 3],
                                                  matrix_to_quat_wxyz(T[:3, :3]))
        for j, b in enumerate(cand):
            if n_lidar[j] + n_radar[j] == 0:
                continue
            cls = int(state.cls[b])
            speed = float(np.hypot(*state.velocity_mps[b, :2]))
            attr = attribute_name(cls, speed, parked=abs(self.scene.d_m[b]) > 9.0)
            vis = lidar.nearest_counts[b] / max(int(lidar.alone_counts[b]), 1)
            inst = token(w.seed, "instance", self.index, int(state.track_id[b]))
            w.instances[inst]["category"] = CATEGORY_OF_CLASS[cls]
            ann = {"token": token(w.seed, "sample_annotation", self.index, int(b), i),
                   "sample_token": self.sample_tokens[i], "instance_token": inst,
                   "visibility_token": visibility_token(vis),
                   "attribute_tokens": [token(w.seed, "attribute", attr)] if attr else [],
                   "translation": trans[j].tolist(), "size": size[j].tolist(),
                   "rotation": rot[j].tolist(), "prev": "", "next": "",
                   "num_lidar_pts": int(n_lidar[j]), "num_radar_pts": int(n_radar[j])}
            w.instances[inst]["anns"].append(ann)
            w.stats[f"ann_{CATEGORY_OF_CLASS[cls]}"] += 1

    def finish(self) -> None:
        """Link the per-channel chains and add scene, log and calibration records."""
        w, n = self.w, len(self.sample_tokens)
        for channel, recs in self.sd.items():
            recs.sort(key=lambda r: r["timestamp"])
            for a, b in zip(recs, recs[1:], strict=False):
                a["next"], b["prev"] = b["token"], a["token"]
            w.tables["sample_data"].extend(recs)
            w.tables["calibrated_sensor"].append(
                calibration_record(w.seed, self.index, channel, w.cfg.image_scale))
        w.tables["scene"].append({
            "token": token(w.seed, "scene", self.index), "log_token": self.log_token,
            "nbr_samples": n, "first_sample_token": self.sample_tokens[0],
            "last_sample_token": self.sample_tokens[-1], "name": scene_name(self.index),
            "description": f"synthetic street scene {self.index} (kdpipe synth, seed {w.seed})"})
        w.tables["log"].append({"token": self.log_token, "logfile": self.log, "vehicle": "n900",
                                "date_captured": "2018-08-01", "location": "boston-seaport"})


class _Writer:
    """Shared state of one ``write_nuscenes`` call: tables, instances, statistics."""

    def __init__(self, out: Path, seed: int, cfg: SynthConfig) -> None:
        self.out, self.seed, self.cfg = out, seed, cfg
        self.tables: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self.tables.update(static_tables(seed, cfg.nus_cameras))
        self.instances: dict[str, dict[str, Any]] = defaultdict(lambda: {"anns": []})
        self.stats: Counter[str] = Counter()

    def instance_tables(self) -> None:
        cat_tok = {c["name"]: c["token"] for c in self.tables["category"]}
        for inst_tok, inst in self.instances.items():
            anns = inst["anns"]
            for a, b in zip(anns, anns[1:], strict=False):
                a["next"], b["prev"] = b["token"], a["token"]
            self.tables["sample_annotation"].extend(anns)
            self.tables["instance"].append({
                "token": inst_tok, "category_token": cat_tok[inst["category"]],
                "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"]})


def write_nuscenes(out: Path, n_scenes: int, seed: int,
                   cfg: SynthConfig | None = None) -> dict[str, Any]:
    """Write ``n_scenes`` synthetic scenes as a nuScenes ``v1.0-mini`` dataroot under ``out``.

    Files: ``v1.0-mini/*.json`` (the 13 tables, plus ``splits.json`` with the custom splits
    ``synth_train``/``synth_val`` that nuscenes-devkit 1.2.0 evaluates on), ``samples/`` and
    ``sweeps/`` per channel, a placeholder map mask in ``maps/``, and ``synth_scenes.json``.
    The first ten scenes carry the devkit's ``mini_train``/``mini_val`` scene names.

    Args:
        out: dataroot (created).
        n_scenes: number of scenes of ``cfg.nus_samples_per_scene`` keyframes each.
        seed: world seed; the same seed gives byte-identical files.
        cfg: world and sensor settings.

    Returns:
        Summary: scenes, samples, sample_data, annotations by category, mean points per file.
    """
    cfg = cfg or SynthConfig()
    if n_scenes < 1 or cfg.nus_samples_per_scene < 1:
        raise ValueError("need at least one scene with at least one sample")
    unknown = set(cfg.nus_cameras) - set(NUS_CAMERAS)
    if unknown:
        raise ValueError(f"unknown nuScenes camera channel(s) {sorted(unknown)}")
    out = Path(out)
    (out / VERSION).mkdir(parents=True, exist_ok=True)
    w = _Writer(out, seed, cfg)
    for index in range(n_scenes):
        sw = _SceneWriter(w, index)
        for i in range(cfg.nus_samples_per_scene):
            sw.sample(i)
        sw.finish()
    w.instance_tables()
    map_token = token(seed, "map", 0)
    (out / "maps").mkdir(exist_ok=True)
    Image.new("L", (64, 64), 255).save(out / "maps" / f"{map_token}.png")  # devkit needs a file
    w.tables["map"] = [{"category": "semantic_prior", "token": map_token,
                        "filename": f"maps/{map_token}.png",
                        "log_tokens": [r["token"] for r in w.tables["log"]]}]
    for name in TABLES:
        (out / VERSION / f"{name}.json").write_text(json.dumps(w.tables[name], indent=1) + "\n")
    splits: dict[str, list[str]] = {"synth_train": [], "synth_val": []}
    for index in range(n_scenes):
        splits[scene_split(index, cfg.val_fraction)].append(scene_name(index))
    (out / VERSION / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    sidecar = {"generator": "kdpipe.stages.synth", "dataset": "nuscenes", "seed": seed,
               "version": VERSION, "config": cfg.model_dump(mode="json"), "splits": splits}
    (out / "synth_scenes.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    n_samples = max(len(w.tables["sample"]), 1)
    return {"dataset": "nuscenes", "scenes": n_scenes, "samples": len(w.tables["sample"]),
            "sample_data": len(w.tables["sample_data"]),
            "splits": {k: len(v) for k, v in splits.items()},
            "lidar_points_per_keyframe": w.stats["lidar_points"] / n_samples,
            "radar_points_per_file": w.stats["radar_points"]
            / max(sum(1 for r in w.tables["sample_data"] if r["filename"].endswith(".pcd")), 1),
            "annotations": {k[4:]: v for k, v in sorted(w.stats.items()) if k.startswith("ann_")}}
