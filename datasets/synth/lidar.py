"""Spinning LiDAR simulation: one ray per (beam, azimuth column), nearest hit wins.

Per box, only the beams and columns inside its angular extent are tested, which keeps a 64 x 1024
scan of a busy street at a few tens of milliseconds. Occlusion therefore comes for free, and the
per-box "hit if it were alone" counts give the visible fraction used for occlusion labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.synth.geometry import FloatArray, invert
from kdpipe.datasets.synth.raycast import boxes_in_frame, ground_hits, ray_box_hits
from kdpipe.datasets.synth.world import (
    BICYCLE_RACK,
    CAR,
    CYCLIST,
    PEDESTRIAN,
    POLE,
    WALL,
    Scene,
    WorldState,
)
from kdpipe.schemas.boxes import box_corners

if TYPE_CHECKING:
    from kdpipe.datasets.synth.config import SynthConfig

# Diffuse reflectivity by class (0..1): the material model behind the intensity channel.
REFLECTIVITY = np.zeros(6)
REFLECTIVITY[[CAR, PEDESTRIAN, CYCLIST, BICYCLE_RACK, WALL, POLE]] = [
    0.35, 0.12, 0.2, 0.45, 0.25, 0.5]
_ROAD, _SIDEWALK, _MARKING = 0.06, 0.15, 0.6
# HDL-64-like: a denser upper block (-8.33..+2 deg) and a sparser lower block (-24.9..-8.87 deg).
VOD_ELEVATIONS_DEG = tuple(np.concatenate([np.linspace(-24.9, -8.87, 32),
                                           np.linspace(-8.33, 2.0, 32)]).tolist())
NUS_ELEVATIONS_DEG = tuple(np.linspace(-30.67, 10.67, 32).tolist())  # HDL-32E


@dataclass(frozen=True)
class LidarScan:
    """One LiDAR sweep.

    Attributes:
        xyz_sensor: ``(M, 3)`` points in the sensor frame, metres.
        intensity: ``(M,)`` reflectance 0..255.
        ring: ``(M,)`` beam index, 0 = lowest beam.
        hit_id: ``(M,)`` index into the ``WorldState`` boxes; -1 = ground.
        alone_counts: ``(N,)`` rays that would hit each box with nothing in front of it.
        nearest_counts: ``(N,)`` rays for which the box is the nearest surface (before dropout).
    """

    xyz_sensor: FloatArray
    intensity: FloatArray
    ring: npt.NDArray[np.int64]
    hit_id: npt.NDArray[np.int64]
    alone_counts: npt.NDArray[np.int64]
    nearest_counts: npt.NDArray[np.int64]


def _extent(box_corners_s: FloatArray, box_s: FloatArray) -> tuple[float, float, float, float]:
    """Conservative (az_lo, az_hi, el_lo, el_hi) of one box seen from the sensor origin (rad)."""
    x, y, z = box_corners_s[:, 0], box_corners_s[:, 1], box_corners_s[:, 2]
    az_c = np.arctan2(box_s[1], box_s[0])
    daz = np.mod(np.arctan2(y, x) - az_c + np.pi, 2 * np.pi) - np.pi
    # Closest horizontal distance to the footprint (elevation extremes can lie mid-edge).
    c, s = np.cos(box_s[6]), np.sin(box_s[6])
    lx, ly = -(c * box_s[0] + s * box_s[1]), -(-s * box_s[0] + c * box_s[1])
    rho_min = np.hypot(max(abs(lx) - box_s[3] / 2, 0.0), max(abs(ly) - box_s[4] / 2, 0.0))
    rho_max = float(np.hypot(x, y).max())
    z_lo, z_hi = float(z.min()), float(z.max())
    el_lo = np.arctan2(z_lo, rho_min if z_lo < 0 else rho_max)
    el_hi = np.arctan2(z_hi, rho_min if z_hi > 0 else rho_max)
    if rho_min == 0.0:  # the sensor's vertical line passes through the box: all azimuths
        return -np.inf, np.inf, el_lo, el_hi
    return az_c + daz.min(), az_c + daz.max(), el_lo, el_hi


def _ground_reflectivity(scene: Scene, xyz_world: FloatArray) -> FloatArray:
    """Asphalt inside the kerbs, brighter pavement outside, dashed lane markings."""
    s, d = scene.road_sd(xyz_world[:, 0], xyz_world[:, 1])
    rho = np.where(np.abs(d) < 7.0, _ROAD, _SIDEWALK)
    marking = (np.min(np.abs(d[:, None] - np.array([0.0, -3.5, 3.5])), axis=1) < 0.08)
    marking &= np.mod(s, 9.0) < 3.0
    return np.where(marking, _MARKING, rho)


@dataclass(frozen=True)
class LidarSpec:
    """Beam pattern and noise model of a spinning LiDAR.

    Attributes:
        elevations_deg: beam elevations, ascending (ring index = position here).
        n_azimuths: firing columns per revolution.
        min_range_m / max_range_m: returns outside are dropped (ego body, sensor reach).
        range_noise_m: 1-sigma range noise.
        dropout: base probability of a missing return (grows with range).
    """

    elevations_deg: tuple[float, ...]
    n_azimuths: int
    min_range_m: float = 2.5
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.03


def lidar_spec(elevations_deg: tuple[float, ...], n_azimuths: int, cfg: SynthConfig) -> LidarSpec:
    """A :class:`LidarSpec` with the range and noise settings of ``cfg``."""
    return LidarSpec(elevations_deg, n_azimuths, cfg.lidar_min_range_m, cfg.lidar_max_range_m,
                     cfg.lidar_range_noise_m, cfg.lidar_dropout)


@dataclass
class _Hits:
    """Nearest surface per ray of one revolution (flattened beam-major)."""

    t: FloatArray          # (B * A,) metres, inf = no return
    box_id: npt.NDArray[np.int64]  # (B * A,) box index, -1 ground
    cos_inc: FloatArray    # (B * A,) |cos| of the incidence angle
    alone: npt.NDArray[np.int64]  # (N,) rays that would hit each box with nothing in front


def _cast(state: WorldState, T_world_sensor: FloatArray, spec: LidarSpec, az0: float,
          dirs_w: FloatArray) -> _Hits:
    """Ground plus per-box slab tests, each box only against the rays in its angular extent."""
    el = np.deg2rad(np.asarray(spec.elevations_deg))
    d_az, n_az, max_r = 2 * np.pi / spec.n_azimuths, spec.n_azimuths, spec.max_range_m
    origin = T_world_sensor[:3, 3]
    t_ground = ground_hits(origin, dirs_w)
    hits = _Hits(np.where(t_ground <= max_r, t_ground, np.inf),
                 np.full(len(dirs_w), -1, dtype=np.int64), np.abs(dirs_w[:, 2]),
                 np.zeros(state.boxes.shape[0], dtype=np.int64))
    boxes_s = boxes_in_frame(state.boxes, invert(T_world_sensor))
    corners_s = box_corners(boxes_s)  # (N, 8, 3)
    for b in np.flatnonzero(np.hypot(boxes_s[:, 0], boxes_s[:, 1]) < max_r + 20.0):
        az_lo, az_hi, el_lo, el_hi = _extent(corners_s[b], boxes_s[b])
        j_lo, j_hi = np.searchsorted(el, el_lo), np.searchsorted(el, el_hi, side="right")
        if az_hi - az_lo >= 2 * np.pi:
            cols = np.arange(n_az)
        else:
            k_lo, k_hi = int(np.ceil((az_lo - az0) / d_az)), int(np.floor((az_hi - az0) / d_az))
            cols = np.mod(np.arange(k_lo, k_hi + 1), n_az)
        idx = (np.arange(j_lo, j_hi)[:, None] * n_az + cols[None, :]).ravel()
        if idx.size == 0:
            continue
        t, cos_inc = ray_box_hits(origin, dirs_w[idx], state.boxes[b:b + 1])
        t = np.where(t[0] <= max_r, t[0], np.inf)
        hits.alone[b] = int(np.count_nonzero(np.isfinite(t)))
        closer = t < hits.t[idx]
        hits.t[idx[closer]], hits.box_id[idx[closer]] = t[closer], b
        hits.cos_inc[idx[closer]] = cos_inc[0][closer]
    return hits


def scan_lidar(scene: Scene, state: WorldState, T_world_sensor: FloatArray, spec: LidarSpec,
               rng: np.random.Generator) -> LidarScan:
    """Cast one full revolution.

    Args:
        scene: the scene (for ground materials).
        state: actors at the sweep time, world frame.
        T_world_sensor: ``(4, 4)`` sensor pose (x fwd, z up; only yaw relative to the ground).
        spec: beam pattern and noise model.
        rng: the sweep's generator (azimuth phase, noise, dropout, intensity speckle).
    """
    el = np.deg2rad(np.asarray(spec.elevations_deg, dtype=np.float64))
    d_az = 2 * np.pi / spec.n_azimuths
    az0 = -np.pi + rng.uniform(0.0, d_az)  # the firing phase differs from sweep to sweep
    az = az0 + d_az * np.arange(spec.n_azimuths)
    ce = np.cos(el)[:, None]
    dirs_s = np.stack([ce * np.cos(az), ce * np.sin(az),
                       np.broadcast_to(np.sin(el)[:, None], ce.shape[:1] + az.shape)],
                      axis=-1).reshape(-1, 3)  # (B * A, 3), beam-major
    dirs_w = dirs_s @ T_world_sensor[:3, :3].T
    hits = _cast(state, T_world_sensor, spec, az0, dirs_w)
    keep = np.isfinite(hits.t) & (hits.t >= spec.min_range_m)
    nearest = np.bincount(hits.box_id[keep & (hits.box_id >= 0)], minlength=len(hits.alone))
    # Weak returns are lost more often far away.
    p_drop = spec.dropout + 0.25 * (hits.t / spec.max_range_m) ** 2
    keep &= rng.random(hits.t.shape) >= p_drop
    idx = np.flatnonzero(keep)
    r = hits.t[idx] + rng.normal(0.0, spec.range_noise_m, idx.size)
    hit = hits.box_id[idx]
    obj = hit >= 0
    rho = np.empty(idx.size)
    rho[obj] = REFLECTIVITY[state.cls[hit[obj]]]
    ground_w = T_world_sensor[:3, 3] + dirs_w[idx[~obj]] * hits.t[idx[~obj]][:, None]  # (G, 3)
    rho[~obj] = _ground_reflectivity(scene, ground_w)
    speckle = np.exp(rng.normal(0.0, 0.2, idx.size))
    intensity = 255.0 * rho * hits.cos_inc[idx] ** 0.6 * speckle * (1.0 + 8.0 / (8.0 + r))
    return LidarScan(dirs_s[idx] * r[:, None], np.clip(intensity, 1.0, 255.0),
                     idx // spec.n_azimuths, hit, hits.alone, nearest)
