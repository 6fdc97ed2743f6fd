"""`kdpipe show FRAME_ID`: one frame from above (LiDAR, radar, ground truth, detections) as a PNG.

The frame is looked up in the workspace's committed ingest artifacts, newest first, by its
`frame_id` (`vod/00549`) or, when unique, its native id (`00549`, a nuScenes sample token).
`--detections` overlays a box table: a stage name (its newest committed artifact's first table
with scores: teacher-label's detections, pseudo-label's positive pseudo-labels, evaluate's
predictions) or a Parquet path. Drawing is `kdpipe.stages.audit.bev.render_bev`; `--open3d`
also opens an open3d window where a display exists. `kdpipe.cli` parses the options into a
`ShowCommand`.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from kdpipe.pipeline.errors import KdpipeError

VOD_RANGE_M = (0.0, -25.6, 51.2, 25.6)        # x0, y0, x1, y1: VoD's annotated area ahead
AROUND_RANGE_M = (-51.2, -51.2, 51.2, 51.2)   # nuScenes: all around the car


def find_frame(ws: Any, query: str) -> tuple[Path, dict[str, Any]]:
    """(ingest artifact dir, FRAMES row) of `query`; a KdpipeError with near matches if none."""
    import polars as pl

    recs = ws.committed("ingest")
    if not recs:
        raise KdpipeError(f"no committed ingest artifact in workspace {ws.url}; run "
                          f"`kdpipe run ingest` first")
    known: list[str] = []
    for rec in recs:  # newest first
        art = Path(ws.artifact_dir("ingest", rec["key"]))
        frames = pl.read_parquet(art / "frames.parquet")
        hit = frames.filter(pl.col("frame_id") == query)
        if hit.is_empty():
            hit = frames.filter(pl.col("frame") == query)
        if hit.height == 1:
            return art, hit.row(0, named=True)
        if hit.height > 1:
            raise KdpipeError(f"{query!r} names {hit.height} frames; use a frame id: "
                              f"{', '.join(hit['frame_id'].head(5))}")
        known += frames["frame_id"].to_list()
    near = difflib.get_close_matches(query, known, n=5, cutoff=0.6) \
        or difflib.get_close_matches(query, [k.split("/", 1)[-1] for k in known], n=5, cutoff=0.6)
    hint = f"near matches: {', '.join(near)}" if near else \
        f"ids look like {', '.join(sorted(set(known))[:3])}"
    raise KdpipeError(f"frame {query!r} is not in any ingest artifact of {ws.url} ({hint})")


def detection_table(ws: Any, spec: str) -> tuple[str, Any]:
    """(where it came from, box table with scores) for a stage name or a Parquet path."""
    import polars as pl

    from kdpipe.stages import canonical_name

    if spec.endswith(".parquet"):
        if not Path(spec).is_file():
            raise KdpipeError(f"--detections {spec}: file not found")
        return spec, pl.read_parquet(spec)
    stage = canonical_name(spec)
    recs = ws.committed(stage)
    if not recs:
        raise KdpipeError(f"--detections {spec}: no committed artifact of stage {stage!r} "
                          f"in {ws.url}")
    art = Path(ws.artifact_dir(stage, recs[0]["key"]))
    for out in recs[0]["outputs"].values():
        path = art / out["file"]
        if path.suffix == ".parquet" and {"frame_id", "score", "x_ego_m"} <= \
                set(pl.read_parquet_schema(path)):
            return str(path), pl.read_parquet(path)
    raise KdpipeError(f"--detections {spec}: stage {stage!r} wrote no table of scored boxes")


def o3d_geometries(lidar: Any, radar: Any, gt: Any, pred: Any) -> list[Any]:
    """open3d point clouds (LiDAR grey, radar blue) and box outlines (GT green, pred red)."""
    import numpy as np
    import open3d as o3d

    from kdpipe.schemas.boxes import box_corners
    from kdpipe.stages.audit.bev import GT_COLOR, LIDAR_COLOR, PRED_COLOR, RADAR_COLOR

    def rgb(hex_color: str) -> list[float]:
        return [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]

    geoms = []
    for pts, color in ((lidar, LIDAR_COLOR), (radar, RADAR_COLOR)):
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(
            np.asarray(pts, dtype=np.float64)[:, :3]))
        geoms.append(pc.paint_uniform_color(rgb(color)))
    edges = [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
             [0, 4], [1, 5], [2, 6], [3, 7]]
    for boxes, color in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        for corners in box_corners(boxes) if len(boxes) else []:  # (8, 3)
            ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(corners),
                                      o3d.utility.Vector2iVector(edges))
            geoms.append(ls.paint_uniform_color(rgb(color)))
    return geoms


class FrameView(TypedDict, total=False):
    """What `render_frame` draws over a frame's points and ground truth (every key optional).

    detections: a stage name or Parquet path of scored boxes to overlay.
    min_score: detections below are not drawn (default 0.1).
    range_m: (x0, y0, x1, y1) ego metres (default: the weight map's grid, else the dataset's).
    weights: draw the frame's IMKD weight map (imkd-weights) under the points.
    """

    detections: str | None
    min_score: float
    range_m: tuple[float, float, float, float] | None
    weights: bool


def render_frame(workspace: str, frame: str, out_png: Path | None = None,
                 **view: Unpack[FrameView]) -> dict[str, Any]:
    """Write the PNG of one frame; the arrays and counts drawn (for --json and --open3d)."""
    import polars as pl

    from kdpipe.pipeline.store import Workspace
    from kdpipe.stages.audit.bev import frame_boxes, frame_points, render_bev

    detections, min_score = view.get("detections"), view.get("min_score", 0.1)
    range_m = view.get("range_m")
    ws = Workspace(workspace)
    art, row = find_frame(ws, frame)
    fid = row["frame_id"]
    lidar, radar = frame_points(art, row)
    boxes = pl.read_parquet(art / "boxes.parquet")  # classes outside the label map: native name
    gt, gt_labels = frame_boxes(boxes.with_columns(label=pl.coalesce("label", "class_name")), fid)
    pred, pred_labels, scores, det_from = None, None, None, None
    if detections:
        det_from, table = detection_table(ws, detections)
        rows = table.filter((pl.col("frame_id") == fid) & (pl.col("score") >= min_score))
        if "state" in rows.columns:  # pseudo-labels: the targets, not the ignored band
            rows = rows.filter(pl.col("state") == "positive")
        pred, pred_labels = frame_boxes(rows, fid)
        scores = rows["score"].to_numpy()
    wmap, wrange = None, None
    if view.get("weights", False):  # IMKD weight map under the points, over its own grid
        from kdpipe.runtime.weight_maps import frame_weight_map

        wmap, wrange = frame_weight_map(ws, fid)
        if range_m and tuple(range_m) != tuple(wrange):
            raise KdpipeError(f"--weights draws the map over its own grid {wrange}; drop --range")
    rng = range_m or wrange or (AROUND_RANGE_M if row["dataset"] == "nuscenes" else VOD_RANGE_M)
    png = Path(out_png) if out_png else Path(f"{fid.replace('/', '_')}.png")
    n_pred = 0 if pred is None else len(pred)
    render_bev(png, lidar_xyz_ego=lidar, radar_xyz_ego=radar, gt_boxes=gt, gt_labels=gt_labels,
               pred_boxes=pred, pred_scores=scores, pred_labels=pred_labels, range_m=rng,
               weight_map=wmap,
               title=f"{fid}\nsplit {row['split'] or '-'}, {row['scene']}: {len(lidar)} LiDAR, "
                     f"{len(radar)} radar pts, {len(gt)} GT"
                     + (f", {n_pred} det >= {min_score}" if detections else ""))
    return {"frame_id": fid, "png": str(png), "ingest": str(art), "n_lidar": len(lidar),
            "n_radar": len(radar), "n_gt": len(gt), "n_pred": n_pred, "detections": det_from,
            "_arrays": (lidar, radar, gt, pred if pred is not None else gt[:0])}


@dataclass(frozen=True)
class ShowCommand:
    """`kdpipe show`'s options (see `kdpipe show --help`; `range_` is `--range` as typed)."""

    frame: str
    workspace: str = "workspace"
    out: Path | None = None
    detections: str | None = None
    min_score: float = 0.1
    range_: str | None = None
    open3d: bool = False
    weights: bool = False
    as_json: bool = False


def show(cmd: ShowCommand) -> None:
    """Render the frame, open it in open3d if asked, print what was drawn or the JSON."""
    import sys

    import typer

    rng = None
    if cmd.range_:
        try:
            x0, y0, x1, y1 = (float(v) for v in cmd.range_.split(","))
        except ValueError:
            raise KdpipeError(f"--range {cmd.range_!r}: expected x0,y0,x1,y1 in metres") from None
        rng = (x0, y0, x1, y1)
    rep = render_frame(cmd.workspace, cmd.frame, cmd.out, detections=cmd.detections,
                       min_score=cmd.min_score, range_m=rng, weights=cmd.weights)
    arrays = rep.pop("_arrays")
    lines = [f"wrote {rep['png']} ({rep['frame_id']}: {rep['n_lidar']} LiDAR, {rep['n_radar']} "
             f"radar points, {rep['n_gt']} GT boxes"
             + (f", {rep['n_pred']} detections" if cmd.detections else "") + ")"]
    if cmd.open3d:
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            import open3d as o3d

            o3d.visualization.draw_geometries(o3d_geometries(*arrays), window_name=rep["frame_id"])
            rep["open3d"] = "opened"
        else:
            lines.append("no display (DISPLAY is not set): no open3d window, the PNG is written")
            rep["open3d"] = "no display"
    if cmd.as_json:
        sys.stdout.write(json.dumps(rep, indent=1) + "\n")
    else:
        for line in lines:
            typer.echo(line)
