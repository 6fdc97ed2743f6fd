"""kdpipe.stages.audit.bev: the bird's-eye view draws points and boxes where they are, x forward
up."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from kdpipe.stages.audit.bev import GT_COLOR, PRED_COLOR, frame_boxes, render_bev


def _pixel(fig: Figure, ax: object, x_ego: float, y_ego: float) -> np.ndarray:
    """RGB (0..1) of the rendered pixel at an ego position."""
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0  # (H, W, 3), row 0 at the top
    u, v = ax.transData.transform((y_ego, x_ego))  # type: ignore[attr-defined]
    return img[img.shape[0] - 1 - round(v), round(u)]


def test_boxes_and_points_are_drawn_where_they_are() -> None:
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    gt = np.array([[30.0, 10.0, 0.0, 4.0, 2.0, 1.5, 0.0]])  # ahead and to the left
    pred = np.array([[10.0, -12.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]])  # near, to the right
    rng = np.random.default_rng(0)
    lidar = rng.uniform([0, -25, -1], [51, 25, 1], size=(500, 3))
    out = render_bev(ax, lidar_xyz_ego=lidar, radar_xyz_ego=lidar[:20], gt_boxes=gt,
                     gt_labels=["Car"], pred_boxes=pred, pred_scores=np.array([0.7]),
                     pred_labels=["Car"])
    assert out is fig
    # x forward is up: the box at x=30 is higher on the page than the one at x=10, and +y
    # (left of the car) is on the left of the picture
    (ug, vg), (up, vp) = ax.transData.transform([(10.0, 30.0), (-12.0, 10.0)])
    assert vg > vp and ug < up
    # the GT fill is green at its centre; the prediction's outline is red on its front edge
    # (yaw pi/2: the front edge is at y = -12 + 2)
    g = _pixel(fig, ax, 30.0, 10.0)
    assert g[1] > g[0] + 0.1 and g[1] > g[2] + 0.1, g
    assert np.allclose(_pixel(fig, ax, 10.0, -10.0), to_rgb(PRED_COLOR), atol=0.15)
    gids = {p.get_gid() for p in ax.patches}
    assert {"gt-0", "pred-0"} <= gids
    gt_patch = next(p for p in ax.patches if p.get_gid() == "gt-0")
    verts = gt_patch.get_xy()[:4]  # (y, x) plot coordinates of the four corners
    assert np.allclose(sorted(verts[:, 0]), [9, 9, 11, 11])
    assert np.allclose(sorted(verts[:, 1]), [28, 28, 32, 32])
    assert any("Car 0.70" == t.get_text() for t in ax.texts)
    assert np.allclose(to_rgb(gt_patch.get_facecolor()), to_rgb(GT_COLOR))


def test_png_written_non_blank(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "bev.png"
    weight = np.zeros((64, 128))
    weight[:, :10] = 1.0  # a stripe along the near x band, every y
    assert render_bev(out, gt_boxes=np.array([[20.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]]),
                      weight_map=weight, title="frame") is None
    import matplotlib.image as mpimg

    img = mpimg.imread(out)  # (H, W, 4) floats
    assert img.shape[0] > 200 and img.shape[1] > 200
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05  # not one flat colour
    green = np.abs(rgb - np.array(to_rgb(GT_COLOR))).max(axis=1) < 0.05
    assert green.sum() > 20  # the opaque GT outline


def test_frame_boxes_selects_one_frame() -> None:
    df = pl.DataFrame({"frame_id": ["a", "b", "a"], "label": ["Car", "Pedestrian", "Cyclist"],
                       "x_ego_m": [1.0, 2.0, 3.0], "y_ego_m": [0.0] * 3, "z_ego_m": [0.0] * 3,
                       "length_m": [4.0] * 3, "width_m": [2.0] * 3, "height_m": [1.5] * 3,
                       "yaw_ego_rad": [0.0] * 3})
    boxes, labels = frame_boxes(df, "a")
    assert boxes.shape == (2, 7) and labels == ["Car", "Cyclist"]
    assert boxes[:, 0].tolist() == [1.0, 3.0]
    empty, none = frame_boxes(df, "zzz")
    assert empty.shape == (0, 7) and none == []
