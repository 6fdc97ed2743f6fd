"""Static nuScenes tables (category, attribute, visibility, sensor), scene names and splits."""
from __future__ import annotations

from typing import Any

from kdpipe.datasets.synth.geometry import matrix_to_quat_wxyz, token
from kdpipe.datasets.synth.rigs import (
    NUS_LIDAR,
    NUS_LIDAR_T_BODY,
    NUS_RADARS,
    nus_camera,
    nus_radar_pose,
)
from kdpipe.datasets.synth.world import BICYCLE_RACK, CAR, CYCLIST, PEDESTRIAN

VERSION = "v1.0-mini"
# nuscenes/utils/splits.py: sorted, this interleaves the 8 mini_train and 2 mini_val scenes so a
# two-scene world already has one of each (scene-0103 is mini_val).
MINI_SCENES = ("scene-0061", "scene-0103", "scene-0553", "scene-0655", "scene-0757",
               "scene-0796", "scene-0916", "scene-1077", "scene-1094", "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
CUSTOM_SPLITS = ("synth_train", "synth_val")  # in v1.0-mini/splits.json (devkit custom splits)

CATEGORIES = (
    "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.wheelchair",
    "human.pedestrian.stroller", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.construction_worker", "animal",
    "vehicle.car", "vehicle.motorcycle", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.truck", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.trailer", "movable_object.barrier",
    "movable_object.trafficcone", "movable_object.pushable_pullable", "movable_object.debris",
    "static_object.bicycle_rack",
)
CATEGORY_OF_CLASS = {CAR: "vehicle.car", PEDESTRIAN: "human.pedestrian.adult",
                     CYCLIST: "vehicle.bicycle", BICYCLE_RACK: "static_object.bicycle_rack"}
ATTRIBUTES = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider",
    "cycle.without_rider", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "pedestrian.moving",
)
VISIBILITY_LEVELS = ("v0-40", "v40-60", "v60-80", "v80-100")  # tokens "1".."4" as in nuScenes


def scene_name(index: int) -> str:
    """The first ten scenes carry the devkit's mini split names; later ones ``scene-9xxx``."""
    return MINI_SCENES[index] if index < len(MINI_SCENES) else f"scene-{9000 + index:04d}"


def scene_split(index: int, val_fraction: float) -> str:
    """``synth_val`` for the official mini_val names and an even ``val_fraction`` spread after."""
    if index < len(MINI_SCENES):
        return CUSTOM_SPLITS[1] if MINI_SCENES[index] in MINI_VAL else CUSTOM_SPLITS[0]
    is_val = int((index + 1) * val_fraction) > int(index * val_fraction)
    return CUSTOM_SPLITS[1] if is_val else CUSTOM_SPLITS[0]


def static_tables(seed: int, cameras: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """category, attribute, visibility and sensor tables (tokens derived from the seed)."""
    category = [{"token": token(seed, "category", n), "name": n,
                 "description": f"{n} (synthetic world)", "index": i}
                for i, n in enumerate(CATEGORIES)]
    attribute = [{"token": token(seed, "attribute", n), "name": n,
                  "description": f"{n} (synthetic world)"} for n in ATTRIBUTES]
    visibility = [{"token": str(i + 1), "level": lv, "description":
                   f"visibility of whole object is between {lv[1:].replace('-', ' and ')} %"}
                  for i, lv in enumerate(VISIBILITY_LEVELS)]
    channels = [(NUS_LIDAR, "lidar")] + [(c, "radar") for c in NUS_RADARS]
    channels += [(c, "camera") for c in cameras]
    sensor = [{"token": token(seed, "sensor", c), "channel": c, "modality": m} for c, m in channels]
    return {"category": category, "attribute": attribute, "visibility": visibility,
            "sensor": sensor}


def attribute_name(cls: int, speed_mps: float, parked: bool) -> str | None:
    """The one nuScenes attribute of an annotation (bicycle racks have none)."""
    if cls == CAR:
        if speed_mps > 0.5:
            return "vehicle.moving"
        return "vehicle.parked" if parked else "vehicle.stopped"
    if cls == CYCLIST:
        return "cycle.with_rider"
    if cls == PEDESTRIAN:
        return "pedestrian.moving" if speed_mps > 0.3 else "pedestrian.standing"
    return None


def visibility_token(visible_fraction: float) -> str:
    """nuScenes visibility bin ("1" = 0-40 % ... "4" = 80-100 %) of a visible fraction."""
    for i, upper in enumerate((0.4, 0.6, 0.8)):
        if visible_fraction < upper:
            return str(i + 1)
    return "4"


def calibration_record(seed: int, index: int, channel: str, image_scale: float) -> dict[str, Any]:
    """calibrated_sensor record of one channel in scene ``index`` (pose in the body frame)."""
    if channel.startswith("CAM"):
        T, K, _ = nus_camera(channel, image_scale)
        intrinsic = K.tolist()
    else:
        T, intrinsic = (NUS_LIDAR_T_BODY if channel == NUS_LIDAR else nus_radar_pose(channel)), []
    return {"token": token(seed, "calibrated_sensor", index, channel),
            "sensor_token": token(seed, "sensor", channel), "translation": T[:3, 3].tolist(),
            "rotation": matrix_to_quat_wxyz(T[:3, :3]).tolist(), "camera_intrinsic": intrinsic}
