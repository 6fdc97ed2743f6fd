"""`imkd_weight_maps/1`: the per-frame BEV maps written by the `imkd-weights` stage.

    weight_maps.zarr/                  root attrs: channels, layout, formula, config, kdpipe
      <source>/<scene>/                attrs: frames (F frame ids, "<source>/<native id>")
        maps  (F, 4, H, W) float32     channels [intensity_mean, intensity_max, occupancy,
                                       weight], each in [0, 1]; row y0 first
                                       attrs: channels, frames (== the group's),
                                       point_cloud_range_m (x0, y0, z0, x1, y1, z1), cell_m

H and W follow from the range and the cell: H = (y1 - y0) / cell_m, W = (x1 - x0) / cell_m.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdpipe.schemas.zarr_layout import ZarrLayout, check_array, frame_list, members, unexpected

if TYPE_CHECKING:
    from kdpipe.schemas.zarr_layout import GroupNode

CHANNELS = ("intensity_mean", "intensity_max", "occupancy", "weight")


@dataclass(frozen=True)
class WeightMapsLayout(ZarrLayout):
    """The weight-map store (module docstring): one `maps` array per scene group.

    Attributes:
        channels: The map channels, in order (axis 1 of `maps`).
    """

    channels: tuple[str, ...] = CHANNELS

    def check_root(self, attrs: Mapping[str, Any]) -> list[str]:
        if attrs.get("channels") != list(self.channels):
            return [f"root attribute 'channels' is {attrs.get('channels')!r}, "
                    f"expected {list(self.channels)}"]
        return []

    def check_scene(self, where: str, scene: GroupNode,
                    root_attrs: Mapping[str, Any]) -> list[str]:
        attrs = dict(scene.attrs)
        problems, n_frames = frame_list(where, attrs)
        arrays = members(scene)
        maps = arrays.get("maps")
        problems += unexpected(where, arrays, {"maps"})
        bad = check_array(f"{where}/maps", maps, "float32",
                          (n_frames, len(self.channels), None, None))
        if bad or maps is None:  # a missing `maps` is in `bad`: `is None` is for the type checker
            return problems + bad
        at, ma = f"{where}/maps", dict(maps.attrs)
        if ma.get("channels") != list(self.channels):
            problems.append(f"{at}: attribute 'channels' is {ma.get('channels')!r}, "
                            f"expected {list(self.channels)}")
        if ma.get("frames") != attrs.get("frames"):
            problems.append(f"{at}: attribute 'frames' differs from the group's")
        return problems + _grid(at, ma, maps.shape[2:])


def _grid(where: str, attrs: Mapping[str, Any], hw: tuple[int, ...]) -> list[str]:
    """The (H, W) of `maps` against its point_cloud_range_m and cell_m attributes."""
    rng, cell = attrs.get("point_cloud_range_m"), attrs.get("cell_m")
    if not (isinstance(rng, list) and len(rng) == 6
            and all(isinstance(v, int | float) for v in rng)):
        return [f"{where}: attribute 'point_cloud_range_m' is not 6 numbers"]
    if not isinstance(cell, int | float) or cell <= 0:
        return [f"{where}: attribute 'cell_m' is not a positive number"]
    x0, y0, _, x1, y1, _ = rng
    want = (round((y1 - y0) / cell), round((x1 - x0) / cell))
    if tuple(hw) != want:
        return [f"{where}: grid {tuple(hw)} (H, W) does not follow from the range and "
                f"cell_m {cell} ({want})"]
    return []


IMKD_WEIGHT_MAPS = WeightMapsLayout("imkd_weight_maps", 1, __doc__ or "")
