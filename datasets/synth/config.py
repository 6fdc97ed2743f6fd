"""Configuration of the synthetic world (defaults live here; workflow files hold only deltas)."""
from __future__ import annotations

from pydantic import BaseModel

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)


class SynthConfig(BaseModel, frozen=True, extra="forbid"):
    """Knobs of the procedural world and of the simulated sensors.

    Everything is deterministic given the seed passed to ``write_vod`` / ``write_nuscenes``; the
    config only changes *what* is generated, so it belongs in the stage cache key.
    """

    # --- world -----------------------------------------------------------------------------
    vod_frames_per_scene: int = 80           # VoD frames are 10 Hz -> 8 s scenes
    nus_samples_per_scene: int = 20          # nuScenes keyframes are 2 Hz -> 10 s scenes
    object_density: float = 1.0              # >1 packs lanes/sidewalks tighter (gaps / density)
    val_fraction: float = 0.2                # share of frames/scenes held out for validation
    labeled_fraction: float = 0.25           # share of the remaining train frames that are labeled

    # --- LiDAR -----------------------------------------------------------------------------
    vod_lidar_azimuths: int = 1024           # columns per revolution, 64 beams (HDL-64-like)
    nus_lidar_azimuths: int = 1024           # columns per revolution, 32 beams (HDL-32E)
    lidar_max_range_m: float = 100.0
    lidar_min_range_m: float = 2.5           # returns closer than this would hit the ego vehicle
    lidar_range_noise_m: float = 0.02        # 1-sigma range noise
    lidar_dropout: float = 0.03              # random missing returns, grows with range

    # --- radar -----------------------------------------------------------------------------
    radar_max_range_m: float = 100.0
    radar_fov_deg: float = 60.0              # half-angle in azimuth
    radar_object_rate: float = 1.0           # multiplies the per-class detection rates
    radar_ground_clutter: float = 380.0      # VoD ground clutter candidates per scan (~45% kept)
    radar_ghosts: float = 3.0                # expected multipath ghosts per scan
    vod_radar_period_s: float = 1.0 / 13.0   # ZF FRGen21 runs at about 13 Hz
    nus_radar_object_rate: float = 0.6       # ARS408 clusters are sparser than 4D radar points
    nus_radar_ground_clutter: float = 60.0

    # --- cameras ---------------------------------------------------------------------------
    image_scale: float = 1.0                 # scales image size and intrinsics together
    jpeg_quality: int = 90
    nus_cameras: tuple[str, ...] = NUSCENES_CAMERAS

    # --- nuScenes sweeps (non-keyframes between 2 Hz samples) -----------------------------
    nus_radar_sweeps: int = 5                # ARS408 runs at about 13 Hz: ~5 sweeps per 0.5 s
    nus_lidar_sweeps: int = 1                # real: 9 (20 Hz); ray casting is the costly part

    # --- labels ----------------------------------------------------------------------------
    label_max_range_m: float = 50.0          # VoD annotation rule: within 50 m of the LiDAR
    label_min_lidar_points: int = 3          # ... and hit by at least a few LiDAR points
    nus_annotation_range_m: float = 80.0     # nuScenes: annotate objects within this ego range
