"""Continental ARS408-style cluster records (the 18-field nuScenes radar PCD) from radar scans.

The ARS408 reports 2D clusters (z = 0) quantised on its CAN grid: x on 0.2 m, y on 0.2 m offset
by 0.1 m, RCS on 0.5 dBsm and relative velocity on 0.25 m/s. Velocities are Doppler-only: the
radial speed times the line-of-sight direction. State fields are drawn so the devkit's default
filters (invalid_state 0, dyn_prop 0..6, ambig_state 3) actually remove something.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.formats.pcd import RADAR_PCD_DTYPE
from kdpipe.datasets.synth.radar import KIND_GHOST, KIND_GROUND, RadarScan

if TYPE_CHECKING:
    from kdpipe.datasets.synth.geometry import FloatArray

DYN_MOVING, DYN_STATIONARY, DYN_ONCOMING, DYN_STAT_CANDIDATE, DYN_UNKNOWN = 0, 1, 2, 3, 4
DYN_CROSSING_MOVING, DYN_STOPPED = 6, 7
_VALID_EXTRA = np.array([8, 9, 16, 17])  # valid-but-flagged invalid_state codes
_INVALID = np.array([1, 2, 7, 14])       # codes the default filter drops


def _quantise(v: FloatArray, step: float, offset: float = 0.0) -> FloatArray:
    return np.round((v - offset) / step) * step + offset


def _dyn_prop(scan: RadarScan, speed_mps: FloatArray,
              rng: np.random.Generator) -> npt.NDArray[np.int8]:
    """Dynamic property from the compensated Doppler and the source's true speed."""
    m = len(scan.kind)
    v = scan.v_r_comp_mps
    dyn = np.where(v < -0.5, DYN_ONCOMING, np.where(v > 0.5, DYN_MOVING, DYN_STATIONARY))
    crossing = (np.abs(v) <= 0.5) & (speed_mps > 1.0)  # moving, but across the line of sight
    dyn = np.where(crossing, DYN_CROSSING_MOVING, dyn)
    stopped = (dyn == DYN_STATIONARY) & (scan.source_id >= 0) & (rng.random(m) < 0.1)
    dyn = np.where(stopped, DYN_STOPPED, dyn)
    cand = (dyn == DYN_STATIONARY) & (rng.random(m) < 0.15)
    dyn = np.where(cand, DYN_STAT_CANDIDATE, dyn)
    return np.where(rng.random(m) < 0.03, DYN_UNKNOWN, dyn).astype(np.int8)


def _invalid_state(scan: RadarScan, range_m: FloatArray,
                   rng: np.random.Generator) -> npt.NDArray[np.int8]:
    m = len(scan.kind)
    u = rng.random(m)
    state = np.zeros(m, dtype=np.int64)
    low_rcs = scan.rcs_dbsm < -10.0
    state = np.where(low_rcs & (u < 0.5), 4, state)                      # valid, low RCS
    state = np.where(low_rcs & (u >= 0.5) & (u < 0.7), 1, state)         # invalid, low RCS
    state = np.where((range_m < 5.0) & (u > 0.9), 2, state)              # near-field artefact
    state = np.where((state == 0) & (u > 0.95), rng.choice(_VALID_EXTRA, m), state)
    state = np.where((state == 0) & (u < 0.02), rng.choice(_INVALID, m), state)
    ghost = scan.kind == KIND_GHOST
    state = np.where(ghost & (rng.random(m) < 0.6), 6, state)            # high mirror probability
    return state.astype(np.int8)


def ars408_records(scan: RadarScan, speed_mps: FloatArray,
                   rng: np.random.Generator) -> npt.NDArray[np.void]:
    """Convert a scan (sensor frame) to ``RADAR_PCD_DTYPE`` records.

    Args:
        scan: detections in the radar frame.
        speed_mps: ``(M,)`` true ground speed of each detection's source (0 for clutter/ghosts).
        rng: this file's generator (state flags and rms values).

    Returns:
        ``(M,)`` structured array ready for ``write_radar_pcd``.
    """
    m = len(scan.kind)
    x, y = scan.xyz_sensor[:, 0], scan.xyz_sensor[:, 1]
    r = np.hypot(x, y)
    los = np.column_stack([x, y]) / np.maximum(r, 1e-6)[:, None]  # (M, 2) line of sight
    out = np.zeros(m, dtype=RADAR_PCD_DTYPE)
    out["x"], out["y"] = _quantise(x, 0.2), _quantise(y, 0.2, 0.1)
    out["dyn_prop"] = _dyn_prop(scan, speed_mps, rng)
    out["id"] = np.arange(m) % 32768
    out["rcs"] = _quantise(scan.rcs_dbsm, 0.5)
    v_rel = _quantise(scan.v_r_mps[:, None] * los, 0.25)
    out["vx"], out["vy"] = v_rel[:, 0], v_rel[:, 1]
    v_comp = scan.v_r_comp_mps[:, None] * los
    out["vx_comp"], out["vy_comp"] = v_comp[:, 0], v_comp[:, 1]
    out["is_quality_valid"] = 1
    u = rng.random(m)
    ambig = np.where(u < 0.02, 0, np.where(u < 0.05, 1, 3))
    out["ambig_state"] = np.where((out["dyn_prop"] == DYN_STAT_CANDIDATE) & (u > 0.5), 4, ambig)
    out["x_rms"] = np.clip(np.round(2 + r / 8 + rng.normal(0, 1, m)), 0, 22)
    out["y_rms"] = np.clip(np.round(3 + r / 4 + rng.normal(0, 1.5, m)), 0, 28)
    out["invalid_state"] = _invalid_state(scan, r, rng)
    pdh0 = np.where(scan.kind == KIND_GHOST, rng.integers(3, 7, m), 1)
    out["pdh0"] = np.where((scan.kind == KIND_GROUND) & (rng.random(m) < 0.2), 2, pdh0)
    out["vx_rms"] = np.clip(np.round(3 + rng.normal(0, 1.5, m)), 0, 20)
    out["vy_rms"] = 3
    return out
