"""Procedural street scenes: a (possibly curved) road with lanes, sidewalks, parked cars, racks,
poles and building walls, and traffic that moves with constant speed and turn rate.

Frames: the *road* frame ("world" below) has z up with the ground at z = 0; the reference line
d = 0 is the road centre and a point at arc length ``s`` and lateral offset ``d`` (left positive)
lies on a circle of curvature ``kappa``. Every actor keeps its lane offset, so its trajectory is a
constant-velocity / constant-turn-rate arc and no two actors in a lane ever collide (actors in a
lane share one speed). The ego drives in the right lane (d = -1.75 m) towards +s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from kdpipe.datasets.synth.geometry import FloatArray, yaw_pose

IntArray = npt.NDArray[np.int64]

CAR, PEDESTRIAN, CYCLIST, BICYCLE_RACK, WALL, POLE = range(6)
CLASS_NAMES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist", "bicycle_rack", "wall", "pole")
ANNOTATED: tuple[int, ...] = (CAR, PEDESTRIAN, CYCLIST, BICYCLE_RACK)
MEAN_LWH_M: dict[int, tuple[float, float, float]] = {
    CAR: (3.9, 1.6, 1.56), PEDESTRIAN: (0.8, 0.6, 1.73), CYCLIST: (1.76, 0.6, 1.73),
    BICYCLE_RACK: (2.4, 0.8, 1.0),
}
EGO_LANE_D_M = -1.75


@dataclass(frozen=True)
class WorldState:
    """All actors and structures at one instant, in the road frame.

    Attributes:
        boxes: ``(N, 7)`` canonical boxes ``[x, y, z, l, w, h, yaw]``, road frame, metres/rad.
        velocity_mps: ``(N, 3)`` centre velocity, road frame.
        yaw_rate_rps: ``(N,)`` rad/s about +z.
        cls: ``(N,)`` class ids (``CAR`` ... ``POLE``).
        track_id: ``(N,)`` stable id of each actor within its scene.
    """

    boxes: FloatArray
    velocity_mps: FloatArray
    yaw_rate_rps: FloatArray
    cls: IntArray
    track_id: IntArray


@dataclass(frozen=True)
class EgoState:
    """Ego body (ground-level, rear-axle-like origin) at one instant.

    Attributes:
        T_world_body: ``(4, 4)`` pose of the body frame in the road frame.
        velocity_mps: ``(3,)`` body-origin velocity, road frame.
        yaw_rate_rps: turn rate about +z.
    """

    T_world_body: FloatArray
    velocity_mps: FloatArray
    yaw_rate_rps: float


@dataclass(frozen=True)
class Scene:
    """One scene: static layout plus the analytic motion of every actor (see module docstring).

    Attributes:
        kappa: road curvature, 1/m (0 = straight).
        s0_m, d_m: ``(N,)`` arc length at t = 0 and lateral offset of each actor.
        sdot: ``(N,)`` arc-length rate of the reference line, m/s (signed).
        facing_rad: ``(N,)`` yaw relative to the road tangent (0 or pi, plus jitter).
        lwh_m: ``(N, 3)`` box sizes; z_m: ``(N,)`` box centre heights.
        cls: ``(N,)`` class ids.
        ego_sdot: ego arc-length rate, m/s.
        T_map_world: ``(4, 4)`` where this scene's road frame sits in the dataset's global map.
    """

    kappa: float
    s0_m: FloatArray
    d_m: FloatArray
    sdot: FloatArray
    facing_rad: FloatArray
    lwh_m: FloatArray
    z_m: FloatArray
    cls: IntArray
    ego_sdot: float
    T_map_world: FloatArray

    def _road_xy(self, s: FloatArray, d: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Road-frame (x, y, tangent heading) of points at arc length ``s`` and offset ``d``."""
        theta = self.kappa * s
        if self.kappa == 0.0:
            return s.copy(), d.copy(), theta
        x = np.sin(theta) / self.kappa - d * np.sin(theta)
        y = (1.0 - np.cos(theta)) / self.kappa + d * np.cos(theta)
        return x, y, theta

    def road_sd(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Inverse of the road mapping: arc length and lateral offset of road-frame points."""
        if self.kappa == 0.0:
            return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        r = 1.0 / self.kappa
        sgn = np.sign(r)
        theta = np.arctan2(sgn * x, sgn * (r - y))
        return theta * r, r - sgn * np.hypot(x, y - r)

    def state_at(self, t_s: float) -> WorldState:
        """Boxes and velocities of all actors at scene time ``t_s`` (seconds)."""
        s = self.s0_m + self.sdot * t_s
        x, y, theta = self._road_xy(s, self.d_m)
        yaw = np.mod(theta + self.facing_rad + np.pi, 2 * np.pi) - np.pi
        speed = self.sdot * (1.0 - self.kappa * self.d_m)  # signed speed along the tangent
        vel = np.column_stack([speed * np.cos(theta), speed * np.sin(theta), np.zeros_like(s)])
        boxes = np.column_stack([x, y, self.z_m, self.lwh_m, yaw])
        n = len(s)
        return WorldState(boxes, vel, self.kappa * self.sdot, self.cls, np.arange(n))

    def ego_at(self, t_s: float) -> EgoState:
        """Ego body pose and motion at scene time ``t_s``."""
        s = np.array([self.ego_sdot * t_s])
        x, y, theta = self._road_xy(s, np.array([EGO_LANE_D_M]))
        speed = self.ego_sdot * (1.0 - self.kappa * EGO_LANE_D_M)
        vel = np.array([speed * np.cos(theta[0]), speed * np.sin(theta[0]), 0.0])
        return EgoState(yaw_pose(x[0], y[0], 0.0, theta[0]), vel, self.kappa * self.ego_sdot)


def _lane(rng: np.random.Generator, span: tuple[float, float], gap_m: tuple[float, float],
          exclude: tuple[float, float] | None = None) -> list[float]:
    """Arc lengths of actors along one lane: random gaps, optionally keeping a slot free."""
    out: list[float] = []
    s = span[0] + rng.uniform(0.0, gap_m[1])
    while s < span[1]:
        if exclude is None or not exclude[0] < s < exclude[1]:
            out.append(s)
        s += rng.uniform(*gap_m)
    return out


class _Lane(NamedTuple):
    """Actors of one class sharing a lateral offset and a speed (so they never collide)."""

    cls: int
    d: float                       # lateral offset, m (left positive)
    speed: float                   # signed, m/s along +s
    gap_m: tuple[float, float]     # centre-to-centre spacing range
    facing: float | None = None    # yaw relative to the road; default: along the motion


class _Builder:
    """Accumulates actors lane by lane (keeps ``make_scene`` short and readable)."""

    def __init__(self, rng: np.random.Generator, density: float, kappa: float) -> None:
        self.rng, self.density, self.kappa = rng, density, kappa
        self.rows: list[tuple[float, ...]] = []

    def add(self, cls: int, lwh: tuple[float, float, float], at: tuple[float, float],
            motion: tuple[float, float] = (0.0, 0.0)) -> None:
        """One actor at ``at = (s, d)`` with ``motion = (speed, facing)``."""
        (s, d), (speed, facing) = at, motion
        sdot = speed / (1.0 - self.kappa * d)
        self.rows.append((cls, s, d, sdot, facing, *lwh, lwh[2] / 2.0))

    def jitter(self, cls: int) -> tuple[float, float, float]:
        scale = np.clip(1.0 + self.rng.normal(0.0, 0.04, 3), 0.9, 1.1)
        lwh = np.asarray(MEAN_LWH_M[cls]) * scale
        return float(lwh[0]), float(lwh[1]), float(lwh[2])

    def traffic_lane(self, lane: _Lane, span: tuple[float, float],
                     exclude: tuple[float, float] | None = None) -> None:
        """Fill one lane over the arc-length ``span``, keeping ``exclude`` free."""
        # Never closer than 6 m centre to centre: a 4.3 m car plus jitter must not overlap.
        gap = (max(lane.gap_m[0] / self.density, 6.0), max(lane.gap_m[1] / self.density, 7.0))
        facing = lane.facing if lane.facing is not None else (0.0 if lane.speed >= 0 else np.pi)
        for s in _lane(self.rng, span, gap, exclude):
            d = lane.d + self.rng.normal(0.0, 0.1)
            self.add(lane.cls, self.jitter(lane.cls), (s, d), (lane.speed, facing))


def make_scene(rng: np.random.Generator, duration_s: float, density: float,
               T_map_world: FloatArray) -> Scene:
    """Lay out one scene; every random choice comes from ``rng`` (deterministic per scene).

    Args:
        rng: the scene's own generator.
        duration_s: scene length; actors are spawned so the ego sees traffic throughout.
        density: object density multiplier (``SynthConfig.object_density``).
        T_map_world: ``(4, 4)`` placement of the road frame in the global map.
    """
    kappa = 0.0 if rng.random() < 0.5 else float(rng.uniform(-1 / 250, 1 / 250))
    ego_speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(2.0, 9.0))
    b = _Builder(rng, density, kappa)
    reach = 120.0  # sensors see ~100 m; spawn a little beyond so nothing pops into view
    ego_end = ego_speed * duration_s

    def span(speed: float) -> tuple[float, float]:
        travel = abs(speed) * duration_s
        return -reach - travel, ego_end + reach + travel

    # Ego lane: same speed as the ego, so the gap ahead/behind never closes.
    b.traffic_lane(_Lane(CAR, EGO_LANE_D_M, ego_speed, (14, 45), 0.0), span(ego_speed), (-14, 14))
    for d, sign, v_range in ((-5.25, 1, (2, 13)), (1.75, -1, (4, 12)), (5.25, -1, (3, 12))):
        v = sign * float(rng.uniform(*v_range))
        b.traffic_lane(_Lane(CAR, d, v, (10, 45)), span(v))
    for d, sign in ((-8.0, 1), (8.0, -1)):  # bike lanes
        v = sign * float(rng.uniform(3.0, 6.0))
        b.traffic_lane(_Lane(CYCLIST, d, v, (15, 60)), span(v))
    for d in (-12.0, -13.0, -14.0, 12.0, 13.0, 14.0):  # sidewalk "lanes"
        if rng.random() < 0.2:  # people standing around, facing either way
            lane = _Lane(PEDESTRIAN, d, 0.0, (10, 50), float(rng.choice([0.0, np.pi])))
        else:
            v = float(rng.choice([-1, 1]) * rng.uniform(0.9, 1.6))
            lane = _Lane(PEDESTRIAN, d, v, (10, 50))
        b.traffic_lane(lane, span(lane.speed))
    _add_static(b, (-reach, ego_end + reach))
    rows = np.asarray(b.rows, dtype=np.float64).reshape(-1, 9)
    return Scene(
        kappa=kappa, s0_m=rows[:, 1], d_m=rows[:, 2], sdot=rows[:, 3], facing_rad=rows[:, 4],
        lwh_m=rows[:, 5:8], z_m=rows[:, 8], cls=rows[:, 0].astype(np.int64),
        ego_sdot=ego_speed / (1.0 - kappa * EGO_LANE_D_M), T_map_world=T_map_world,
    )


def _add_static(b: _Builder, span: tuple[float, float]) -> None:
    """Parked cars and bicycle racks at the curb, poles, and building walls on both sides."""
    rng = b.rng
    for side in (-1.0, 1.0):
        facing_base = 0.0 if side < 0 else np.pi  # parked with the traffic on that side
        for s in _lane(rng, span, (max(5.0 / b.density, 5.0), max(22.0 / b.density, 6.0))):
            cls = BICYCLE_RACK if rng.random() < 0.2 else CAR
            facing = facing_base + (rng.normal(0.0, 0.03) if cls == CAR else 0.0)
            b.add(cls, b.jitter(cls), (s, side * 9.9 + rng.normal(0.0, 0.05)), (0.0, facing))
        for s in _lane(rng, span, (12.0, 30.0)):
            h = float(rng.uniform(3.0, 6.0))
            b.add(POLE, (0.3, 0.3, h), (s, side * 11.15))
        s = span[0]
        while s < span[1]:
            # Walls stay <= 15 m long so a straight box hugs a curved road within ~10 cm.
            length, depth = float(rng.uniform(8.0, 15.0)), float(rng.uniform(4.0, 8.0))
            if rng.random() < 0.85:  # otherwise an open lot
                h = float(rng.uniform(5.0, 14.0))
                b.add(WALL, (length, depth, h), (s + length / 2, side * (16.5 + depth / 2)))
            s += length + float(rng.uniform(0.3, 8.0))


def scene_map_pose(rng: np.random.Generator, origin_xy: tuple[float, float]) -> FloatArray:
    """Random placement (translation near ``origin_xy`` and heading) of a scene in the map."""
    x = origin_xy[0] + rng.uniform(-400.0, 400.0)
    y = origin_xy[1] + rng.uniform(-400.0, 400.0)
    return yaw_pose(x, y, 0.0, float(rng.uniform(-np.pi, np.pi)))
