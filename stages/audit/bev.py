"""Bird's-eye views of one frame: LiDAR and radar points, ground truth and detections (matplotlib).

Drawn in the ego frame with x (forward) pointing up the page and y (left) pointing left, so the
picture reads like the view from above the car. Ground truth is filled green, detections are red
outlines with their score; both carry a heading tick from the centre to the front edge.
Used by the audit report (worst frames) and by `kdpipe show`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np
import polars as pl

from kdpipe.datasets.store import IngestStore
from kdpipe.schemas.boxes import box_corners

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BOX_COLUMNS = ["x_ego_m", "y_ego_m", "z_ego_m", "length_m", "width_m", "height_m", "yaw_ego_rad"]
# Colours the audit tests look for in the rendered pixels; keep them distinct from each other.
LIDAR_COLOR = "#808080"
RADAR_COLOR = "#1f5fd6"
GT_COLOR = "#2ca02c"
PRED_COLOR = "#d62728"
_GT_FILL_ALPHA = 0.35


def _boxes_patches(ax: Axes, boxes: np.ndarray, *, color: str, filled: bool, gid: str,
                   texts: Sequence[str] | None) -> None:
    """Draw (K, 7) boxes as BEV rectangles with a heading tick; `gid` tags the artists."""
    from matplotlib.patches import Polygon

    if boxes.shape[0] == 0:
        return
    corners = box_corners(boxes[:, :7])[:, :4, :2]  # (K, 4, 2) bottom face, x/y ego
    for k, quad in enumerate(corners):
        # plot coordinates are (y, x): the horizontal axis is y (inverted), the vertical x
        poly = Polygon(quad[:, ::-1], closed=True, edgecolor=color, linewidth=1.2,
                       facecolor=color if filled else "none",
                       alpha=_GT_FILL_ALPHA if filled else 1.0, gid=f"{gid}-{k}")
        ax.add_patch(poly)
        if filled:  # an opaque outline over the translucent fill
            ax.add_patch(Polygon(quad[:, ::-1], closed=True, edgecolor=color, facecolor="none",
                                 linewidth=1.2))
        front = quad[:2].mean(axis=0)  # corners 0, 1 are the front edge
        ax.plot([boxes[k, 1], front[1]], [boxes[k, 0], front[0]], color=color, linewidth=1.0)
        if texts is not None:
            ax.text(quad[:, 1].max(), quad[:, 0].max(), texts[k], color=color, fontsize=6,
                    ha="left", va="bottom", clip_on=True)


def _points(ax: Axes, xyz: np.ndarray | None, range_m: Sequence[float], *, color: str,
            size: float, label: str) -> None:
    if xyz is None or len(xyz) == 0:
        return
    x0, y0, x1, y1 = range_m
    p = np.asarray(xyz)[:, :3]
    m = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    ax.scatter(p[m, 1], p[m, 0], s=size, c=color, linewidths=0, label=label, rasterized=True)


def _box_texts(labels: Sequence[str] | None, scores: np.ndarray | None, n: int) -> list[str] | None:
    if labels is None and scores is None:
        return None
    names = list(labels) if labels is not None else [""] * n
    if scores is None:
        return [str(s) for s in names]
    return [f"{name} {float(s):.2f}".strip() for name, s in zip(names, scores, strict=True)]


class BevLayers(TypedDict, total=False):
    """What `render_bev` draws; every layer optional, all in the ego frame (metres).

    weight_map: a BEV grid (e.g. a heatmap or loss weight) drawn under the points over the
    view's range, row index along y and column index along x (the models' layout).
    """

    lidar_xyz_ego: np.ndarray | None    # (N, >=3)
    radar_xyz_ego: np.ndarray | None    # (M, >=3)
    gt_boxes: np.ndarray | None         # (K, 7) x, y, z, l, w, h, yaw
    gt_labels: Sequence[str] | None
    pred_boxes: np.ndarray | None       # (P, 7)
    pred_scores: np.ndarray | None      # (P,)
    pred_labels: Sequence[str] | None
    weight_map: np.ndarray | None       # (H, W): rows along y, columns along x


def render_bev(
    ax_or_path: Axes | str | Path, *,
    range_m: tuple[float, float, float, float] = (0.0, -25.6, 51.2, 25.6),  # x0, y0, x1, y1
    title: str = "",
    **layers: Unpack[BevLayers],
) -> Figure | None:
    """Draw one frame from above, x forward pointing up.

    Args:
        ax_or_path: an Axes to draw on, or a PNG path to write (Agg, no display needed).
        range_m: (x_min, y_min, x_max, y_max) in the ego frame; points outside are not drawn.
        title: drawn above the view.
        **layers: the points, boxes and weight map to draw (`BevLayers`).

    Returns:
        The figure drawn on (None when a path was given: the figure is written and closed).
    """
    to_file = isinstance(ax_or_path, str | Path)
    if to_file:
        from matplotlib.figure import Figure as _Figure

        # A bare Figure renders through Agg without pyplot: no backend switch, no display,
        # nothing global left open.
        fig = _Figure(figsize=(6.0, 6.0 * (range_m[2] - range_m[0]) / (range_m[3] - range_m[1])),
                      dpi=110)
        ax = fig.add_subplot(1, 1, 1)
    else:
        ax = ax_or_path  # type: ignore[assignment]
        fig = ax.figure
    x0, y0, x1, y1 = range_m
    weight_map = layers.get("weight_map")
    if weight_map is not None:
        # (H, W) = (y, x) -> the image shown has x up and y along the (inverted) horizontal axis
        ax.imshow(np.asarray(weight_map, dtype=np.float64).T, origin="lower", cmap="Greys",
                  extent=(y0, y1, x0, x1), alpha=0.6, zorder=0, interpolation="nearest")
    _points(ax, layers.get("lidar_xyz_ego"), range_m, color=LIDAR_COLOR, size=0.6,
            label="LiDAR")
    _points(ax, layers.get("radar_xyz_ego"), range_m, color=RADAR_COLOR, size=9.0,
            label="radar")
    gt_boxes, pred_boxes = layers.get("gt_boxes"), layers.get("pred_boxes")
    if gt_boxes is not None:
        gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
        _boxes_patches(ax, gt, color=GT_COLOR, filled=True, gid="gt",
                       texts=_box_texts(layers.get("gt_labels"), None, len(gt)))
    if pred_boxes is not None:
        pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 7)
        _boxes_patches(ax, pred, color=PRED_COLOR, filled=False, gid="pred",
                       texts=_box_texts(layers.get("pred_labels"), layers.get("pred_scores"),
                                        len(pred)))
    ax.set_xlim(y1, y0)  # +y (left of the car) on the left of the picture
    ax.set_ylim(x0, x1)
    ax.set_aspect("equal")
    ax.set_xlabel("y ego (m, left +)")
    ax.set_ylabel("x ego (m, forward)")
    if title:
        ax.set_title(title, fontsize=9)
    if to_file:
        fig.tight_layout()
        Path(ax_or_path).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        fig.savefig(str(ax_or_path), format="png")
        return None
    return fig


def frame_points(store: IngestStore | str | Path, frame_row: Mapping[str, Any], *,
                 radar_sensor: str = "radar") -> tuple[np.ndarray, np.ndarray]:
    """One frame's LiDAR and radar points from an ingest store, x/y/z first.

    Args:
        store: the store (a stage's ports), the ingest artifact directory, or its
            ``points.zarr`` inside it.
        frame_row: a FRAMES row (needs ``frame_id``).
        radar_sensor: store sensor of the radar (``radar``, or an accumulated ``radar_3``...).

    Returns:
        (lidar (N, C) float32, radar (M, C') float32) in the ego frame, every native field.
    """
    from kdpipe.datasets.store_dataset import StoreDataset

    if not isinstance(store, IngestStore):  # a user-given path: artifact dir or its points.zarr
        store = IngestStore.from_artifact(store)
    ds = StoreDataset(store, sensors=("lidar", radar_sensor),
                      where=pl.col("frame_id") == str(frame_row["frame_id"]), with_boxes=False)
    if len(ds) == 0:
        raise KeyError(f"frame {frame_row['frame_id']!r} is not in the store {store.points}")
    item = ds[0]
    return np.asarray(item["lidar"]), np.asarray(item[radar_sensor])


def frame_boxes(boxes_df: pl.DataFrame, frame_id: str) -> tuple[np.ndarray, list[str]]:
    """A frame's boxes from a BOXES / DETECTIONS / PSEUDO_LABELS table: ((K, 7), labels)."""
    rows = boxes_df.filter(pl.col("frame_id") == frame_id)
    return rows.select(BOX_COLUMNS).to_numpy().astype(np.float64).reshape(-1, 7), \
        rows["label"].to_list()
